//! Running a module: its outbox relay, and one consumer that hands each
//! message on the module's queue (its commands, the events it reacts to, the
//! replies it waits for) to its handler, in order.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::commands::{CommandHandler, CommandProcessor};
use crate::outbox::Outbox;
use crate::telemetry::Messaging;
use crate::{Broker, BrokerError, QueueSpec, Shutdown, consumer};
use sea_orm::DatabaseConnection;

/// What a module runs on: its database, the broker, the counters its
/// consumer keeps, and the signal to stop.
#[derive(Clone)]
pub struct Runtime {
    pub db: DatabaseConnection,
    pub broker: Arc<dyn Broker>,
    pub messaging: Messaging,
    pub shutdown: Shutdown,
}

/// Runs a module on `runtime`: its outbox relay, and a consumer handing
/// each message on `queue` to `handler`, until its shutdown.
pub async fn run(
    runtime: Runtime,
    queue: QueueSpec,
    handler: Arc<dyn CommandHandler>,
) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    let Runtime {
        db,
        broker,
        messaging,
        shutdown,
    } = runtime;
    let outbox = Outbox::new();
    let relay = {
        let (outbox, db, broker, shutdown) =
            (outbox.clone(), db.clone(), broker.clone(), shutdown.clone());
        let module = mallbots_contracts::module_of(&queue.name).to_owned();
        tokio::spawn(async move { outbox.relay(&module, db, broker, shutdown).await })
    };
    let processor = CommandProcessor::new(queue.name.clone(), db, outbox, handler)
        .refusing_when_unreachable(broker.clone());
    let consumer = consumer::spawn(broker, queue, Arc::new(processor), messaging, shutdown).await?;
    Ok(vec![relay, consumer])
}
