//! The gateway's live feed: integration events consumed on a queue of this
//! gateway process's own, fanned out to its subscriptions through a bounded
//! broadcast. A subscription that falls behind the buffer is told and
//! closed, never skipped silently.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mallbots_platform::{Broker, BrokerError, Envelope, Exchange, QueueSpec, Shutdown, consumer};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Events buffered per subscription before a slow one is closed.
pub const BUFFER: usize = 1024;

#[derive(Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<Envelope>>,
}

impl LiveFeed {
    pub async fn start(
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Result<Self, BrokerError> {
        let (sender, _) = broadcast::channel(BUFFER);
        let spec = QueueSpec::transient(format!("gateway.live.{}", Uuid::new_v4().simple()))
            .bind(Exchange::Events, "stores.Product.*");
        let feed = LiveFeed {
            sender: sender.clone(),
        };
        consumer::listen(broker.as_ref(), spec, shutdown, move |envelope| {
            metrics.live_events.fetch_add(1, Ordering::Relaxed);
            // No receivers is fine: nobody is subscribed right now.
            let _ = sender.send(Arc::new(envelope));
        })
        .await?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.sender.subscribe()
    }
}
