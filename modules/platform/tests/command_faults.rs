//! A command whose handler panics (a bug) on both pairs of real parts
//! (SQLite + in-process broker, PostgreSQL + RabbitMQ): the panic rolls its
//! transaction back, the command is retried a bounded number of times, then
//! dead-lettered; its sender is answered INTERNAL instead of timing out, and
//! the next command on the queue is handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mallbots_contracts::{CommandReply, ErrorCode, Message};
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use mallbots_platform::commands::{Accepted, CommandBus, CommandError, CommandHandler};
use mallbots_platform::db::DatabaseConfig;
use mallbots_platform::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use mallbots_platform::event_store::{self, Cause};
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::outbox::Outbox;
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec, Shutdown, module};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counted(i64);

impl DomainEvent for Counted {
    fn event_type(&self) -> &'static str {
        "Counted"
    }
}

impl Aggregate for Tally {
    const STREAM_TYPE: &'static str = "Tally";
    type Event = Counted;
    fn apply(&mut self, event: &Counted) {
        self.total += event.0;
    }
}

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
        let current = event_store::load::<Tally, _>(txn, &stream).await?;
        let cause = Cause {
            correlation_id: command.correlation_id,
            causation_id: command.id,
        };
        event_store::append(txn, &stream, &current, &[Counted(count.by)], cause).await?;
        assert_ne!(count.by, 13, "a bug in the handler");
        Ok(Accepted::default())
    }
}

enum Parts {
    Embedded,
    Real,
}

async fn parts(parts: Parts) -> (DatabaseConnection, Arc<dyn Broker>) {
    let id = Uuid::new_v4().simple().to_string();
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
    };
    let (config, broker): (_, Arc<dyn Broker>) = match parts {
        Parts::Embedded => (
            DatabaseConfig::Sqlite {
                dir: std::env::temp_dir().join(format!("mallbots-faults-{id}")),
            },
            Arc::new(MemoryBroker::new()),
        ),
        Parts::Real => {
            let admin_url = env("TEST_DATABASE_URL");
            let admin = Database::connect(admin_url.as_str()).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE platform_{id}"))
                .await
                .unwrap();
            let base = admin_url.rsplit_once('/').unwrap().0;
            let config = RabbitConfig {
                url: env("TEST_AMQP_URL"),
                prefix: format!("faults-{id}."),
                quorum_queues: false,
            };
            (
                DatabaseConfig::Postgres {
                    url: format!("{base}/platform_{id}"),
                },
                Arc::new(RabbitBroker::connect(config).await.unwrap()),
            )
        }
    };
    let db = config.connect("platform").await.unwrap();
    PlatformMigrator::up(&db, None).await.unwrap();
    (db, broker)
}

async fn a_panicking_command_is_dead_lettered_and_its_sender_told(parts_: Parts) {
    let (db, broker) = parts(parts_).await;
    let (_trigger, shutdown) = Shutdown::new();
    let queue = QueueSpec::durable("faults.commands").bind(Exchange::Commands, "faults.*");
    module::run(
        db.clone(),
        broker.clone(),
        queue,
        Arc::new(Buggy),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    let bus = CommandBus::start(broker.clone(), Duration::from_secs(20), shutdown)
        .await
        .unwrap();
    let tally = Uuid::now_v7();

    let sent = Instant::now();
    let reply = bus.send(&Count { tally, by: 13 }, None).await.unwrap();
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
    let reply = bus.send(&Count { tally, by: 2 }, None).await.unwrap();
    assert!(matches!(reply, CommandReply::Accepted { .. }), "{reply:?}");
    let stored = event_store::load::<Tally, _>(&db, &tally.to_string())
        .await
        .unwrap();
    assert_eq!((stored.state.total, stored.version), (2, 1));
}

#[tokio::test]
async fn embedded() {
    a_panicking_command_is_dead_lettered_and_its_sender_told(Parts::Embedded).await;
}

#[tokio::test]
async fn real() {
    a_panicking_command_is_dead_lettered_and_its_sender_told(Parts::Real).await;
}
