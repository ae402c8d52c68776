//! A command whose handler panics (a bug) on both pairs of real parts
//! (SQLite + in-process broker, PostgreSQL + RabbitMQ): the panic rolls its
//! transaction back, the command is retried a bounded number of times, then
//! dead-lettered; its sender is answered INTERNAL instead of timing out, and
//! the next command on the queue is handled.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{Added, Counter, Db, database};
use mallbots_contracts::{Actor, CommandReply, ErrorCode, Message};
use mallbots_platform::commands::{Accepted, CommandBus, CommandError, CommandHandler};
use mallbots_platform::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use mallbots_platform::event_store::{self, Cause};
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::outbox::Outbox;
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::telemetry::Messaging;
use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec, Shutdown, module};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Count {
    tally: Uuid,
    by: i64,
}
impl Message for Count {
    const TYPE: &'static str = "faults.Count";
}

/// Appends `by` to the tally, then panics when `by` is 13: the append must
/// not survive.
struct Buggy;

#[async_trait]
impl CommandHandler for Buggy {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        _: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let count: Count = command.decode()?;
        let stream = count.tally.to_string();
        let current = event_store::load::<Counter, _>(txn, &stream).await?;
        let cause = Cause {
            correlation_id: command.correlation_id,
            causation_id: command.id,
            actor: command.actor(),
        };
        event_store::append(txn, &stream, &current, &[Added(count.by)], cause).await?;
        assert_ne!(count.by, 13, "a bug in the handler");
        Ok(Accepted::default())
    }
}

/// The embedded pair (SQLite, in-process broker) or the real one
/// (PostgreSQL, RabbitMQ).
async fn parts(db: Db) -> (DatabaseConnection, Arc<dyn Broker>) {
    let broker: Arc<dyn Broker> = match db {
        Db::Sqlite => Arc::new(MemoryBroker::new()),
        Db::Postgres => {
            let url = std::env::var("TEST_AMQP_URL")
                .expect("TEST_AMQP_URL is not set: run the tests with scripts/test");
            let config = RabbitConfig {
                url,
                prefix: format!("faults-{}.", Uuid::new_v4().simple()),
                quorum_queues: false,
                ca_pem: None,
            };
            Arc::new(RabbitBroker::connect(config).await.unwrap())
        }
    };
    (database(db).await, broker)
}

async fn a_panicking_command_is_dead_lettered_and_its_sender_told(on: Db) {
    let (db, broker) = parts(on).await;
    let (_trigger, shutdown) = Shutdown::new();
    let queue = QueueSpec::durable("faults.commands").bind(Exchange::Commands, "faults.*");
    let runtime = module::Runtime {
        db: db.clone(),
        broker: broker.clone(),
        messaging: Messaging::default(),
        shutdown: shutdown.clone(),
    };
    module::run(runtime, queue, Arc::new(Buggy)).await.unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    let bus = CommandBus::start(broker.clone(), Duration::from_secs(20), shutdown)
        .await
        .unwrap();
    let tally = Uuid::now_v7();

    let sent = Instant::now();
    let reply = bus
        .send(&Count { tally, by: 13 }, None, &Actor::OPEN)
        .await
        .unwrap();
    let CommandReply::Rejected(error) = reply else {
        panic!("a panicking command was accepted: {reply:?}");
    };
    assert_eq!(error.code, ErrorCode::Internal);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "answered after the retries, well before the 20 s timeout: {:?}",
        sent.elapsed()
    );
    let letter = tokio::time::timeout(Duration::from_secs(20), dead.next())
        .await
        .expect("a dead letter")
        .expect("the dead-letter queue is open");
    assert!(
        letter.message.headers[HEADER_DEAD_LETTER_REASON]
            .contains("the handler panicked: assertion"),
        "{:?}",
        letter.message.headers
    );
    assert_eq!(
        letter.message.headers[HEADER_DEAD_LETTER_QUEUE],
        "faults.commands"
    );
    letter.ack().await.unwrap();

    // The queue goes on, and the panicked attempts left nothing behind.
    let reply = bus
        .send(&Count { tally, by: 2 }, None, &Actor::OPEN)
        .await
        .unwrap();
    assert!(matches!(reply, CommandReply::Accepted { .. }), "{reply:?}");
    let stored = event_store::load::<Counter, _>(&db, &tally.to_string())
        .await
        .unwrap();
    assert_eq!((stored.state.total, stored.version), (2, 1));
}

#[tokio::test]
async fn embedded() {
    a_panicking_command_is_dead_lettered_and_its_sender_told(Db::Sqlite).await;
}

#[tokio::test]
async fn real() {
    a_panicking_command_is_dead_lettered_and_its_sender_told(Db::Postgres).await;
}
