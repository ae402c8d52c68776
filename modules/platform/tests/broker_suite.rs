//! One suite, both brokers: the in-process broker and RabbitMQ must keep the
//! same guarantees. RabbitMQ is the real server scripts/test starts
//! (TEST_AMQP_URL); each test uses its own name prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mallbots_contracts::Message;
use mallbots_migrations::BrokerMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::consumer::{self, HandleError, Handler};
use mallbots_platform::db::DatabaseConfig;
use mallbots_platform::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::telemetry::Messaging;
use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec, Shutdown, WireMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counted {
    aggregate: u32,
    n: u32,
}
impl Message for Counted {
    const TYPE: &'static str = "test.Thing.Counted";
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

async fn rabbit() -> Arc<dyn Broker> {
    rabbit_at(env("TEST_AMQP_URL"), None).await
}

/// RabbitMQ over TLS (amqps://), trusting the test CA.
async fn rabbit_over_tls() -> Arc<dyn Broker> {
    let ca = std::fs::read_to_string(env("TEST_TLS_CA_FILE")).expect("the test CA");
    rabbit_at(env("TEST_AMQPS_URL"), Some(ca)).await
}

async fn rabbit_at(url: String, ca_pem: Option<String>) -> Arc<dyn Broker> {
    let config = RabbitConfig {
        url,
        prefix: format!("suite-{}.", Uuid::new_v4().simple()),
        quorum_queues: false,
        ca_pem,
    };
    Arc::new(
        RabbitBroker::connect(config)
            .await
            .expect("RabbitMQ is reachable"),
    )
}

fn memory() -> Arc<dyn Broker> {
    Arc::new(MemoryBroker::new())
}

/// A fresh SQLite database for the in-process broker's durable queues.
async fn broker_database() -> sea_orm::DatabaseConnection {
    let config = DatabaseConfig::Sqlite {
        dir: std::env::temp_dir().join(format!("mallbots-broker-{}", Uuid::new_v4().simple())),
    };
    let db = config.connect("broker").await.unwrap();
    BrokerMigrator::up(&db, None).await.unwrap();
    db
}

async fn durable_memory() -> Arc<dyn Broker> {
    Arc::new(
        MemoryBroker::durable(broker_database().await)
            .await
            .unwrap(),
    )
}

fn message(aggregate: u32, n: u32) -> WireMessage {
    Envelope::new(&Counted { aggregate, n }).unwrap().to_wire()
}

async fn next(sub: &mut Box<dyn mallbots_platform::Subscription>) -> mallbots_platform::Delivery {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a delivery before the deadline")
        .expect("the subscription is open")
}

fn counted(d: &mallbots_platform::Delivery) -> Counted {
    d.message.decode().unwrap().decode::<Counted>().unwrap()
}

async fn published_messages_reach_bound_queues_in_order(broker: Arc<dyn Broker>) {
    let spec = QueueSpec::durable("suite.ordered").bind(Exchange::Events, "test.Thing.*");
    let mut sub = broker.consume(&spec).await.unwrap();
    let batch = (0..50)
        .map(|n| {
            (
                Exchange::Events,
                Counted::TYPE.to_owned(),
                message(n % 3, n),
            )
        })
        .collect();
    broker.publish_all(batch).await.unwrap();
    broker
        .publish(Exchange::Events, "other.Thing.Counted", message(9, 99))
        .await
        .unwrap();
    for n in 0..50 {
        let d = next(&mut sub).await;
        assert_eq!(
            counted(&d),
            Counted {
                aggregate: n % 3,
                n
            }
        );
        assert_eq!(d.routing_key, Counted::TYPE);
        d.ack().await.unwrap();
    }
}

async fn a_requeued_message_is_delivered_again(broker: Arc<dyn Broker>) {
    let spec = QueueSpec::durable("suite.requeue").bind(Exchange::Events, "test.#");
    let mut sub = broker.consume(&spec).await.unwrap();
    broker
        .publish(Exchange::Events, Counted::TYPE, message(1, 1))
        .await
        .unwrap();
    let first = next(&mut sub).await;
    assert!(!first.redelivered);
    first.requeue().await.unwrap();
    let again = next(&mut sub).await;
    assert!(again.redelivered);
    assert_eq!(counted(&again), Counted { aggregate: 1, n: 1 });
    again.ack().await.unwrap();
}

async fn nothing_is_lost_while_no_consumer_runs(broker: Arc<dyn Broker>) {
    let spec = QueueSpec::durable("suite.later").bind(Exchange::Events, "test.#");
    broker.declare(&spec).await.unwrap();
    for n in 0..5 {
        broker
            .publish(Exchange::Events, Counted::TYPE, message(0, n))
            .await
            .unwrap();
    }
    let mut sub = broker.consume(&spec).await.unwrap();
    for n in 0..5 {
        let d = next(&mut sub).await;
        assert_eq!(counted(&d).n, n);
        d.ack().await.unwrap();
    }
}

async fn replies_reach_a_queue_by_name(broker: Arc<dyn Broker>) {
    let name = format!("suite.replies.{}", Uuid::new_v4().simple());
    let mut sub = broker.consume(&QueueSpec::transient(&name)).await.unwrap();
    broker
        .publish(Exchange::Queue, &name, message(7, 7))
        .await
        .unwrap();
    let d = next(&mut sub).await;
    assert_eq!(counted(&d), Counted { aggregate: 7, n: 7 });
    d.ack().await.unwrap();
}

/// A `Counted`'s n; n == 1 fails permanently.
fn allowed(envelope: &Envelope) -> Result<u32, HandleError> {
    let c: Counted = envelope
        .decode()
        .map_err(|e| HandleError::Permanent(e.to_string()))?;
    if c.n == 1 {
        return Err(HandleError::Permanent("one is not allowed".into()));
    }
    Ok(c.n)
}

/// Publishes an undecodable message, then `Counted` messages numbered `ns`.
async fn publish_garbage_then(broker: &dyn Broker, ns: &[u32]) {
    let garbage = WireMessage {
        body: b"garbage".to_vec(),
        ..WireMessage::default()
    };
    broker
        .publish(Exchange::Events, Counted::TYPE, garbage)
        .await
        .unwrap();
    for n in ns {
        broker
            .publish(Exchange::Events, Counted::TYPE, message(0, *n))
            .await
            .unwrap();
    }
}

/// Fails `Counted` with n == 1 permanently and n == 2 always transiently.
struct Picky(mpsc::UnboundedSender<u32>);

#[async_trait]
impl Handler for Picky {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        match allowed(envelope)? {
            2 => Err(HandleError::Transient("two never works".into())),
            n => {
                let _ = self.0.send(n);
                Ok(())
            }
        }
    }
}

async fn failures_end_in_the_dead_letter_queue_and_the_consumer_goes_on(broker: Arc<dyn Broker>) {
    let (_trigger, shutdown) = Shutdown::new();
    let (tx, mut handled) = mpsc::unbounded_channel();
    let spec = QueueSpec::durable("suite.picky").bind(Exchange::Events, "test.#");
    consumer::spawn(
        broker.clone(),
        spec,
        Arc::new(Picky(tx)),
        Messaging::default(),
        shutdown,
    )
    .await
    .unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    publish_garbage_then(broker.as_ref(), &[1, 2, 3]).await;
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let d = next(&mut dead).await;
        reasons.push(d.message.headers[HEADER_DEAD_LETTER_REASON].clone());
        d.ack().await.unwrap();
    }
    assert_eq!(reasons[0], "missing message id");
    assert_eq!(reasons[1], "one is not allowed");
    assert!(
        reasons[2].starts_with("gave up after 5 attempts: two never works"),
        "{reasons:?}"
    );
    let n = tokio::time::timeout(DEADLINE, handled.recv())
        .await
        .unwrap();
    assert_eq!(n, Some(3));
}

/// Panics on `Counted` n == 1 (a bug in a handler); records the others.
struct Panicky {
    handled: mpsc::UnboundedSender<u32>,
    given_up: mpsc::UnboundedSender<String>,
}

#[async_trait]
impl Handler for Panicky {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let n = envelope
            .decode::<Counted>()
            .map_err(|e| HandleError::Permanent(e.to_string()))?
            .n;
        assert_ne!(n, 1, "a handler bug");
        let _ = self.handled.send(n);
        Ok(())
    }

    async fn gave_up(&self, envelope: &Envelope, reason: &str) {
        let _ = self
            .given_up
            .send(format!("{}: {reason}", envelope.message_type));
    }
}

async fn a_panicking_handler_is_retried_then_dead_lettered_and_the_queue_goes_on(
    broker: Arc<dyn Broker>,
) {
    let (_trigger, shutdown) = Shutdown::new();
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let (given_up_tx, mut given_up) = mpsc::unbounded_channel();
    let spec = QueueSpec::durable("suite.panicky").bind(Exchange::Events, "test.#");
    let handler = Panicky {
        handled: handled_tx,
        given_up: given_up_tx,
    };
    let task = consumer::spawn(
        broker.clone(),
        spec,
        Arc::new(handler),
        Messaging::default(),
        shutdown,
    )
    .await
    .unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    for n in [1, 2, 3] {
        broker
            .publish(Exchange::Events, Counted::TYPE, message(0, n))
            .await
            .unwrap();
    }
    let d = next(&mut dead).await;
    let reason = d.message.headers[HEADER_DEAD_LETTER_REASON].clone();
    assert!(
        reason.starts_with("gave up after 5 attempts: the handler panicked: assertion"),
        "{reason}"
    );
    assert_eq!(d.message.headers[HEADER_DEAD_LETTER_QUEUE], "suite.panicky");
    d.ack().await.unwrap();
    let told = tokio::time::timeout(DEADLINE, given_up.recv())
        .await
        .unwrap();
    assert!(
        told.is_some_and(|t| t.starts_with("test.Thing.Counted: gave up after 5 attempts")),
        "the handler is told it was given up on"
    );
    for expected in [2, 3] {
        let n = tokio::time::timeout(DEADLINE, handled.recv())
            .await
            .unwrap();
        assert_eq!(n, Some(expected), "the next messages are handled, in order");
    }
    assert!(!task.is_finished(), "the consumer survived the panics");
}

/// All or nothing per batch (as a transaction would be): a batch holding a
/// bad message records none of it; the consumer then handles each alone.
struct Batching {
    handled: mpsc::UnboundedSender<u32>,
    batches: mpsc::UnboundedSender<usize>,
}

#[async_trait]
impl Handler for Batching {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        self.handle_batch(std::slice::from_ref(envelope)).await
    }

    async fn handle_batch(&self, envelopes: &[Envelope]) -> Result<(), HandleError> {
        let ns = envelopes
            .iter()
            .map(allowed)
            .collect::<Result<Vec<_>, _>>()?;
        let _ = self.batches.send(ns.len());
        for n in ns {
            let _ = self.handled.send(n);
        }
        Ok(())
    }
}

async fn a_batched_queue_handles_each_message_once_and_dead_letters_the_bad_one(
    broker: Arc<dyn Broker>,
) {
    let spec = QueueSpec::durable("suite.batched")
        .bind(Exchange::Events, "test.#")
        .batched(8);
    // Queued before anyone consumes, so batches find them waiting.
    broker.declare(&spec).await.unwrap();
    let sent: Vec<u32> = (2..=30).collect();
    // The bad one (n == 1) in the middle, so it shares a batch with others.
    let queued: Vec<u32> = [&sent[..10], &[1], &sent[10..]].concat();
    publish_garbage_then(broker.as_ref(), &queued).await;
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    let (_trigger, shutdown) = Shutdown::new();
    let (handled, mut got) = mpsc::unbounded_channel();
    let (batches, mut sizes) = mpsc::unbounded_channel();
    consumer::spawn(
        broker.clone(),
        spec,
        Arc::new(Batching { handled, batches }),
        Messaging::default(),
        shutdown,
    )
    .await
    .unwrap();
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let d = next(&mut dead).await;
        reasons.push(d.message.headers[HEADER_DEAD_LETTER_REASON].clone());
        d.ack().await.unwrap();
    }
    assert_eq!(reasons, ["missing message id", "one is not allowed"]);
    let mut seen = Vec::new();
    while seen.len() < sent.len() {
        let n = tokio::time::timeout(DEADLINE, got.recv()).await.unwrap();
        seen.push(n.expect("the consumer runs"));
    }
    assert_eq!(seen, sent, "each once, in order");
    let mut largest = 0;
    while let Ok(size) = sizes.try_recv() {
        largest = largest.max(size);
    }
    assert!(largest > 1, "no batch held more than one message");
    assert!(largest <= 8, "a batch held {largest}, over its size");
}

async fn an_expired_message_is_dead_lettered_not_delivered(broker: Arc<dyn Broker>) {
    let spec = QueueSpec::durable("suite.expiring").bind(Exchange::Commands, "test.*");
    broker.declare(&spec).await.unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    let mut expiring = message(0, 1);
    expiring.ttl_ms = Some(0);
    let id = expiring.message_id.clone();
    broker
        .publish(Exchange::Commands, "test.Expire", expiring)
        .await
        .unwrap();
    let mut live = broker.consume(&spec).await.unwrap();
    let (delivered, mut got) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(d) = live.next().await {
            let _ = delivered.send(d.message.message_id.clone());
            let _ = d.ack().await;
        }
    });
    let d = next(&mut dead).await;
    assert_eq!(d.message.message_id, id);
    assert_eq!(d.message.headers[HEADER_DEAD_LETTER_REASON], "expired");
    assert_eq!(
        d.message.headers[HEADER_DEAD_LETTER_QUEUE],
        "suite.expiring"
    );
    d.ack().await.unwrap();
    // A fresh message on the same queue is delivered, and it is the first.
    broker
        .publish(Exchange::Commands, "test.Fresh", message(0, 2))
        .await
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, id);
}

/// Holds each message until `meet`'s count of them are in its hands at once.
struct Gathering {
    meet: tokio::sync::Barrier,
    in_hand: AtomicUsize,
    most_in_hand: AtomicUsize,
    handled: mpsc::UnboundedSender<u32>,
}

#[async_trait]
impl Handler for Gathering {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let n = allowed(envelope)?;
        let now = self.in_hand.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_hand.fetch_max(now, Ordering::SeqCst);
        self.meet.wait().await;
        self.in_hand.fetch_sub(1, Ordering::SeqCst);
        let _ = self.handled.send(n);
        Ok(())
    }
}

async fn a_concurrent_queue_handles_that_many_at_once_each_once(broker: Arc<dyn Broker>) {
    let spec = QueueSpec::durable("suite.concurrent")
        .bind(Exchange::Events, "test.#")
        .concurrent(3);
    broker.declare(&spec).await.unwrap();
    let sent: Vec<u32> = (2..=13).collect();
    publish_garbage_then(broker.as_ref(), &sent).await;
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    let (handled, mut got) = mpsc::unbounded_channel();
    let gathering = Arc::new(Gathering {
        // A consumer handling one at a time would wait here forever.
        meet: tokio::sync::Barrier::new(3),
        in_hand: AtomicUsize::new(0),
        most_in_hand: AtomicUsize::new(0),
        handled,
    });
    let (_trigger, shutdown) = Shutdown::new();
    consumer::spawn(
        broker.clone(),
        spec,
        gathering.clone(),
        Messaging::default(),
        shutdown,
    )
    .await
    .unwrap();
    let d = next(&mut dead).await;
    assert_eq!(
        d.message.headers[HEADER_DEAD_LETTER_REASON],
        "missing message id"
    );
    d.ack().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < sent.len() {
        let n = tokio::time::timeout(DEADLINE, got.recv())
            .await
            .expect("three in hand at once, before the deadline");
        seen.push(n.expect("the consumer runs"));
    }
    seen.sort_unstable();
    assert_eq!(seen, sent, "each once");
    assert_eq!(gathering.most_in_hand.load(Ordering::SeqCst), 3);
}

/// Fails every delivery with `Unreachable` until it has failed `times`
/// times. Its `reachable` stays true: the dependency is back by the time
/// anyone checks, as at the edge of an outage.
struct Flapping {
    failures: AtomicUsize,
    times: usize,
    handled: mpsc::UnboundedSender<u32>,
}

#[async_trait]
impl Handler for Flapping {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let n = allowed(envelope)?;
        if self.failures.fetch_add(1, Ordering::SeqCst) < self.times {
            return Err(HandleError::Unreachable("the connection was lost".into()));
        }
        let _ = self.handled.send(n);
        Ok(())
    }
}

async fn failures_saying_unreachable_never_use_up_the_attempts(broker: Arc<dyn Broker>) {
    let (_trigger, shutdown) = Shutdown::new();
    let (tx, mut handled) = mpsc::unbounded_channel();
    let times = consumer::MAX_ATTEMPTS as usize + 1;
    let flapping = Arc::new(Flapping {
        failures: AtomicUsize::new(0),
        times,
        handled: tx,
    });
    let spec = QueueSpec::durable("suite.flapping").bind(Exchange::Events, "test.#");
    consumer::spawn(
        broker.clone(),
        spec,
        flapping.clone(),
        Messaging::default(),
        shutdown,
    )
    .await
    .unwrap();
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await.unwrap();
    broker
        .publish(Exchange::Events, Counted::TYPE, message(0, 7))
        .await
        .unwrap();
    let n = tokio::time::timeout(DEADLINE, handled.recv())
        .await
        .expect("handled once the failures stop");
    assert_eq!(n, Some(7));
    assert_eq!(flapping.failures.load(Ordering::SeqCst), times + 1);
    let none = tokio::time::timeout(Duration::from_millis(300), dead.next()).await;
    assert!(none.is_err(), "nothing dead-lettered");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )*
        }
        mod on_durable_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::durable_memory().await).await;
                }
            )*
        }
        mod on_rabbitmq {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::rabbit().await).await;
                }
            )*
        }
        mod on_rabbitmq_over_tls {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::rabbit_over_tls().await).await;
                }
            )*
        }
    };
}

suite!(
    published_messages_reach_bound_queues_in_order,
    a_requeued_message_is_delivered_again,
    nothing_is_lost_while_no_consumer_runs,
    replies_reach_a_queue_by_name,
    failures_end_in_the_dead_letter_queue_and_the_consumer_goes_on,
    a_panicking_handler_is_retried_then_dead_lettered_and_the_queue_goes_on,
    an_expired_message_is_dead_lettered_not_delivered,
    a_batched_queue_handles_each_message_once_and_dead_letters_the_bad_one,
    a_concurrent_queue_handles_that_many_at_once_each_once,
    failures_saying_unreachable_never_use_up_the_attempts,
);

/// The embedded mode's promise: what the in-process broker accepted and was
/// not acked is there again for the next process on the same database (a
/// crash is a broker dropped without settling); what was acked is not.
#[tokio::test]
async fn the_durable_in_process_broker_keeps_what_was_not_acked_across_a_restart() {
    use sea_orm::ConnectionTrait;

    let db = broker_database().await;
    let first = MemoryBroker::durable(db.clone()).await.unwrap();
    let spec = QueueSpec::durable("suite.kept").bind(Exchange::Events, "test.#");
    first.declare(&spec).await.unwrap();
    let transient = QueueSpec::transient("suite.gone").bind(Exchange::Events, "test.#");
    let mut gone = first.consume(&transient).await.unwrap();
    for n in 1..=4 {
        first
            .publish(Exchange::Events, Counted::TYPE, message(0, n))
            .await
            .unwrap();
    }
    let mut sub = first.consume(&spec).await.unwrap();
    next(&mut sub).await.ack().await.unwrap(); // 1: done
    let two = next(&mut sub).await; // 2: in hand when the process dies
    let stored = || async {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM broker_messages",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while stored().await != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ack of 1 never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counted(&next(&mut gone).await).n, 1);
    std::mem::forget(two); // a crash settles nothing
    drop((sub, gone, first));

    let second = MemoryBroker::durable(db.clone()).await.unwrap();
    let mut sub = second.consume(&spec).await.unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next(&mut sub).await;
        assert!(
            d.redelivered,
            "a message of the last run is marked redelivered"
        );
        again.push(counted(&d).n);
        d.ack().await.unwrap();
    }
    assert_eq!(
        again,
        [2, 3, 4],
        "every unacked message, in order, and not the acked one"
    );
    // Routing kept too: a queue bound in the last run receives before anyone declares it.
    second
        .publish(Exchange::Events, Counted::TYPE, message(0, 5))
        .await
        .unwrap();
    next(&mut sub).await.ack().await.unwrap();
    // Everything acked leaves the store; the transient queue's copies were
    // never in it.
    let deadline = std::time::Instant::now() + DEADLINE;
    while stored().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "acked messages stay stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
