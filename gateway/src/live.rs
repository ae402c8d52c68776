//! The gateway's live feed: the read side's change notifications (published
//! by the search module after each change commits), consumed on a queue of
//! this gateway process's own and fanned out to its subscriptions through a
//! bounded broadcast. Every change has a position in the read side's change
//! log: the subscription cursor, resumable on any replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mallbots_contracts::Message;
use mallbots_contracts::search::Changed;
use mallbots_platform::changes::Change;
use mallbots_platform::{Broker, BrokerError, Exchange, QueueSpec, Shutdown, consumer};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::metrics::Metrics;

/// A committed read-side change, as pushed.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveChange {
    pub position: i64,
    pub topic: String,
    pub key: String,
    pub body: serde_json::Value,
}

impl From<Change> for LiveChange {
    fn from(change: Change) -> Self {
        LiveChange {
            position: change.position,
            topic: change.topic,
            key: change.key,
            body: change.body,
        }
    }
}

#[derive(Clone)]
pub struct LiveFeed {
    sender: broadcast::Sender<Arc<LiveChange>>,
}

impl LiveFeed {
    /// `buffer`: changes held for a subscriber before it counts as too slow.
    pub async fn start(
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        buffer: usize,
        shutdown: Shutdown,
    ) -> Result<Self, BrokerError> {
        let (sender, _) = broadcast::channel(buffer.max(1));
        let spec = QueueSpec::transient(format!("gateway.live.{}", Uuid::new_v4().simple()))
            .bind(Exchange::Events, Changed::TYPE);
        let feed = LiveFeed {
            sender: sender.clone(),
        };
        consumer::listen(broker.as_ref(), spec, shutdown, move |envelope| {
            let (Ok(changed), Some(position)) = (envelope.decode::<Changed>(), envelope.position())
            else {
                tracing::warn!(message_type = %envelope.message_type, "unreadable change notice dropped");
                return;
            };
            metrics.live_events.fetch_add(1, Ordering::Relaxed);
            // No receivers is fine: nobody is subscribed right now.
            let _ = sender.send(Arc::new(LiveChange {
                position,
                topic: changed.topic,
                key: changed.key,
                body: changed.body,
            }));
        })
        .await?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveChange>> {
        self.sender.subscribe()
    }
}
