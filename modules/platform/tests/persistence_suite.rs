//! The event store, inbox and outbox, on SQLite and on the real PostgreSQL
//! (TEST_DATABASE_URL, a fresh database per test).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Added, Counter, Db, Note, database, note};
use mallbots_contracts::{Affected, CommandReply, ErrorCode, Message, ReplyError};
use mallbots_platform::changes::{self, About, NewChange};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler, CommandProcessor};
use mallbots_platform::consumer::Handler;
use mallbots_platform::db::{DroppedIndexes, empty_tables, execute_all};
use mallbots_platform::event_store::{self, Cause, SNAPSHOT_EVERY};
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::outbox::{self, Outbox};
use mallbots_platform::saga::{self, Saga, SagaEngine, SagaStatus, Step};
use mallbots_platform::{
    Broker, Envelope, Exchange, Outgoing, PlatformError, QueueSpec, Shutdown, Subscription, inbox,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// The id step 2's reply names, which the saga keeps for its compensation.
const KEPT: Uuid = Uuid::from_u128(7);

/// Puts note `n` in `txn`'s outbox, bound for the events exchange.
async fn enqueue_note(outbox: &Outbox, txn: &DatabaseTransaction, n: u32) -> Envelope {
    let envelope = Envelope::new(&note(n)).unwrap();
    outbox
        .enqueue(txn, Exchange::Events, Note::TYPE, &envelope)
        .await
        .unwrap();
    envelope
}

fn cause() -> Cause {
    let id = Uuid::new_v4();
    Cause {
        correlation_id: id,
        causation_id: id,
        actor: None,
    }
}

async fn events_fold_back_into_the_aggregate(db: Db) {
    let conn = database(db).await;
    let current = event_store::load::<Counter, _>(&conn, "c-1").await.unwrap();
    assert!(!current.exists());
    let stored = event_store::append(&conn, "c-1", &current, &[Added(2), Added(3)], cause())
        .await
        .unwrap();
    assert_eq!(stored.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    assert!(stored[1].position > stored[0].position);
    let loaded = event_store::load::<Counter, _>(&conn, "c-1").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (5, 2));
}

async fn a_stale_append_is_a_conflict_not_an_overwrite(db: Db) {
    let conn = database(db).await;
    let stale = event_store::load::<Counter, _>(&conn, "c-2").await.unwrap();
    event_store::append(&conn, "c-2", &stale, &[Added(1)], cause())
        .await
        .unwrap();
    let err = event_store::append(&conn, "c-2", &stale, &[Added(10)], cause())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlatformError::Concurrency { expected: 0, .. }),
        "{err}"
    );
    let loaded = event_store::load::<Counter, _>(&conn, "c-2").await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (1, 1));
}

async fn long_streams_are_snapshotted(db: Db) {
    let conn = database(db).await;
    for _ in 0..(SNAPSHOT_EVERY + 5) {
        let current = event_store::load::<Counter, _>(&conn, "c-3").await.unwrap();
        event_store::append(&conn, "c-3", &current, &[Added(1)], cause())
            .await
            .unwrap();
    }
    assert_eq!(
        event_store::snapshot_version(&conn, "c-3").await.unwrap(),
        SNAPSHOT_EVERY
    );
    let loaded = event_store::load::<Counter, _>(&conn, "c-3").await.unwrap();
    assert_eq!(loaded.state.total, SNAPSHOT_EVERY + 5);
    assert_eq!(loaded.version, SNAPSHOT_EVERY + 5);
}

async fn the_inbox_recognises_a_redelivery(db: Db) {
    let conn = database(db).await;
    let id = Uuid::new_v4();
    assert!(inbox::record(&conn, "consumer-a", id).await.unwrap());
    assert!(!inbox::record(&conn, "consumer-a", id).await.unwrap());
    assert!(inbox::record(&conn, "consumer-b", id).await.unwrap());
    // Rolled back: not recorded.
    let other = Uuid::new_v4();
    let txn = conn.begin().await.unwrap();
    assert!(inbox::record(&txn, "consumer-a", other).await.unwrap());
    txn.rollback().await.unwrap();
    assert!(inbox::record(&conn, "consumer-a", other).await.unwrap());
}

async fn the_inbox_records_a_batch_in_one_go(db: Db) {
    let conn = database(db).await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert!(inbox::record(&conn, "consumer-a", a).await.unwrap());
    // A repeat inside the batch, and one handled before, are not new.
    let new = inbox::record_all(&conn, "consumer-a", &[a, b, c, b])
        .await
        .unwrap();
    assert_eq!(new, [b, c].into_iter().collect());
    let again = inbox::record_all(&conn, "consumer-a", &[a, b, c])
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert!(!inbox::record(&conn, "consumer-a", c).await.unwrap());
    // Another consumer's inbox is its own.
    let other = inbox::record_all(&conn, "consumer-b", &[a]).await.unwrap();
    assert_eq!(other, [a].into_iter().collect());
}

/// A fresh database, an in-process broker with a queue `queue` of what
/// `exchange` carries under `test.#` (consumed), and an outbox.
async fn probed(
    db: Db,
    queue: &str,
    exchange: Exchange,
) -> (
    DatabaseConnection,
    Arc<MemoryBroker>,
    Box<dyn Subscription>,
    Outbox,
) {
    let conn = database(db).await;
    let broker = Arc::new(MemoryBroker::new());
    let spec = QueueSpec::durable(queue).bind(exchange, "test.#");
    let sub = broker.consume(&spec).await.unwrap();
    (conn, broker, sub, Outbox::new())
}

async fn the_outbox_publishes_only_what_committed(db: Db) {
    let (conn, broker, mut sub, outbox) = probed(db, "outbox.probe", Exchange::Events).await;

    let rolled_back = conn.begin().await.unwrap();
    enqueue_note(&outbox, &rolled_back, 0).await;
    rolled_back.rollback().await.unwrap();

    let txn = conn.begin().await.unwrap();
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(enqueue_note(&outbox, &txn, n).await);
    }
    txn.commit().await.unwrap();

    let (trigger, relay) = spawn_relay(&outbox, &conn, &broker);
    outbox.wake();
    for envelope in &sent {
        let d = next_within_10s(&mut sub).await;
        assert_eq!(&d.message.decode().unwrap(), envelope);
        d.ack().await.unwrap();
    }
    // Marked sent once confirmed.
    stop_when_sent(&conn, (trigger, relay)).await;
    assert_eq!(
        broker.queue_len("outbox.probe"),
        0,
        "nothing else was published"
    );
}

/// What a test's thread logs (a current-thread runtime runs the tasks it
/// spawns there too), one line each, uncolored.
#[derive(Clone, Default)]
struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logged {
    /// Captures this thread's logs at DEBUG and above until the guard drops.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logged, tracing::subscriber::set_default(subscriber))
    }

    /// How many lines at `level` say `what`.
    fn count(&self, level: &str, what: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|line| line.contains(level) && line.contains(what))
            .count()
    }
}

/// While the outbox cannot be read (its table renamed away: a real failure
/// of the real database), the relay fails at every try but says so once,
/// not each time (an outage used to log every module's relay about every
/// second); once it works again it says so, once, and sends what waited.
async fn a_failing_relay_says_so_once_and_once_when_it_works_again(db: Db) {
    let (logged, _capturing) = Logged::capture();
    let (conn, broker, mut sub, outbox) = probed(db, "outbox.probe", Exchange::Events).await;
    let rename = |from: &str, to: &str| {
        Statement::from_string(
            conn.get_database_backend(),
            format!("ALTER TABLE {from} RENAME TO {to}"),
        )
    };
    conn.execute_raw(rename("outbox", "outbox_away"))
        .await
        .unwrap();
    let (trigger, relay) = spawn_relay(&outbox, &conn, &broker);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while logged.count("DEBUG", "outbox relay failed again") < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never failed 4 times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        logged.count("WARN", "outbox relay failed; retrying"),
        1,
        "said once"
    );

    conn.execute_raw(rename("outbox_away", "outbox"))
        .await
        .unwrap();
    let txn = conn.begin().await.unwrap();
    let sent = enqueue_note(&outbox, &txn, 1).await;
    txn.commit().await.unwrap();
    outbox.wake();
    let d = next_within_10s(&mut sub).await;
    assert_eq!(d.message.decode().unwrap(), sent);
    d.ack().await.unwrap();
    stop_when_sent(&conn, (trigger, relay)).await;
    assert_eq!(logged.count("INFO", "outbox relay working again"), 1);
    assert_eq!(logged.count("WARN", "outbox relay failed; retrying"), 1);
}

/// Accepts every command, changing nothing.
struct AcceptAll;

#[async_trait::async_trait]
impl CommandHandler for AcceptAll {
    async fn handle(
        &self,
        _: &sea_orm::DatabaseTransaction,
        _: &Outbox,
        _: &Envelope,
    ) -> Result<Accepted, CommandError> {
        Ok(Accepted::default())
    }
}

/// The outbox's relay, running until the returned trigger fires.
fn spawn_relay(
    outbox: &Outbox,
    conn: &DatabaseConnection,
    broker: &Arc<MemoryBroker>,
) -> (
    mallbots_platform::shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<()>,
) {
    let (trigger, shutdown) = Shutdown::new();
    let (outbox, conn, broker) = (
        outbox.clone(),
        conn.clone(),
        broker.clone() as Arc<dyn Broker>,
    );
    let relay = tokio::spawn(async move { outbox.relay("test", conn, broker, shutdown).await });
    (trigger, relay)
}

/// The next delivery on `sub`, failing the test after 10 s.
async fn next_within_10s(sub: &mut Box<dyn Subscription>) -> mallbots_platform::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription open")
}

/// Waits until the outbox is all sent, then stops its relay.
async fn stop_when_sent(
    conn: &DatabaseConnection,
    (trigger, relay): (
        mallbots_platform::shutdown::ShutdownTrigger,
        tokio::task::JoinHandle<()>,
    ),
) {
    wait_until_sent(conn).await;
    trigger.trigger();
    relay.await.unwrap();
}

async fn wait_until_sent(conn: &DatabaseConnection) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while outbox::pending(conn).await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox rows never marked sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reply leaves as soon as its transaction commits, without the relay,
/// and is marked sent; with the relay running too it still goes out once;
/// a processor with no broker of its own leaves its replies to the relay.
async fn replies_go_out_express_once(db: Db) {
    let conn = database(db).await;
    let broker = Arc::new(MemoryBroker::new());
    let replies = QueueSpec::durable("replies.probe");
    broker.declare(&replies).await.unwrap();
    let outbox = Outbox::new();
    let express =
        CommandProcessor::new("express", conn.clone(), outbox.clone(), Arc::new(AcceptAll))
            .refusing_when_unreachable(broker.clone());
    let command = || {
        let mut envelope = Envelope::new(&note(1)).unwrap();
        envelope.reply_to = Some(replies.name.clone());
        envelope
    };

    // No relay runs: the processor itself sent it, once, and marked it.
    express.handle(&command()).await.unwrap();
    wait_until_sent(&conn).await;
    assert_eq!(broker.queue_len(&replies.name), 1);

    let (trigger, relay) = spawn_relay(&outbox, &conn, &broker);
    let commands: Vec<_> = (0..100).map(|_| command()).collect();
    futures_util::future::join_all(commands.iter().map(|c| express.handle(c)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    wait_until_sent(&conn).await;
    assert_eq!(broker.queue_len(&replies.name), 101, "each reply sent once");

    let relayed =
        CommandProcessor::new("relayed", conn.clone(), outbox.clone(), Arc::new(AcceptAll));
    relayed.handle(&command()).await.unwrap();
    wait_until_sent(&conn).await;
    assert_eq!(broker.queue_len(&replies.name), 102);
    trigger.trigger();
    relay.await.unwrap();
}

/// Announces notes 1 to 3, then accepts the command, or refuses it when
/// asked to (`Note { n: 0 }`).
struct AnnounceThree;

#[async_trait::async_trait]
impl CommandHandler for AnnounceThree {
    async fn handle(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        for n in 1..=3 {
            enqueue_note(outbox, txn, n).await;
        }
        let asked: Note = command.decode()?;
        if asked.n == 0 {
            return Err(CommandError::rejected(ErrorCode::Conflict, "refused"));
        }
        Ok(Accepted::default())
    }
}

/// A command's outbox rows are written with its reply (one statement),
/// after every row of its events; a reaction's (no reply) when it
/// commits; a refused command's not at all. Each goes out once, in order.
async fn a_commands_rows_go_out_with_its_reply(db: Db) {
    let (conn, broker, mut events, outbox) = probed(db, "staged.probe", Exchange::Events).await;
    let replies = QueueSpec::durable("staged.replies");
    broker.declare(&replies).await.unwrap();
    let processor = CommandProcessor::new(
        "staged",
        conn.clone(),
        outbox.clone(),
        Arc::new(AnnounceThree),
    );
    let (command, reaction, refused) = {
        let with_reply = |n| {
            let mut envelope = Envelope::new(&note(n)).unwrap();
            envelope.reply_to = Some(replies.name.clone());
            envelope
        };
        (
            with_reply(1),
            Envelope::new(&note(1)).unwrap(),
            with_reply(0),
        )
    };
    for handled in [&command, &reaction, &refused] {
        processor.handle(handled).await.unwrap();
    }
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT id, exchange FROM outbox ORDER BY id",
        ))
        .await
        .unwrap();
    let exchanges: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "exchange").unwrap())
        .collect();
    let (event, reply) = (Exchange::Events.as_str(), Exchange::Queue.as_str());
    assert_eq!(
        exchanges,
        [event, event, event, reply, event, event, event, reply],
        "the command's notes and its reply, the reaction's notes, the refusal"
    );

    let (trigger, relay) = spawn_relay(&outbox, &conn, &broker);
    outbox.wake();
    for n in [1, 2, 3, 1, 2, 3] {
        let d = next_within_10s(&mut events).await;
        let noted: Note = d.message.decode().unwrap().decode().unwrap();
        assert_eq!(noted.n, n);
        d.ack().await.unwrap();
    }
    stop_when_sent(&conn, (trigger, relay)).await;
    assert_eq!(
        broker.queue_len("staged.probe"),
        0,
        "no note of the refused command"
    );
    assert_eq!(
        broker.queue_len(&replies.name),
        2,
        "an acceptance and a refusal"
    );
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StepCommand {
    name: String,
    kept: Option<String>,
    why: String,
}
impl Message for StepCommand {
    const TYPE: &'static str = "test.Step";
}

/// Step 0 only compensates; 2 keeps what its reply says and compensates
/// with it; 1 and 3 only act.
struct TestSaga;

impl Saga for TestSaga {
    const NAME: &'static str = "test";
    type Data = Option<String>;

    fn steps() -> Vec<Step<Option<String>>> {
        fn command(
            name: &str,
            kept: &Option<String>,
            why: &str,
        ) -> Result<Outgoing, PlatformError> {
            Outgoing::of(&StepCommand {
                name: name.into(),
                kept: kept.clone(),
                why: why.into(),
            })
        }
        vec![
            Step::new("step 0").compensation(|d, why| command("undo-0", d, why)),
            Step::new("step 1").action(|d| command("do-1", d, "")),
            Step::new("step 2")
                .action(|d| command("do-2", d, ""))
                .on_success(|d, result| match result {
                    Affected::Store { store_id } => {
                        *d = Some(store_id.to_string());
                        Ok(())
                    }
                    _ => Err("nothing kept".into()),
                })
                .compensation(|d, why| command("undo-2", d, why)),
            Step::new("step 3").action(|d| command("do-3", d, "")),
        ]
    }
}

async fn a_saga_runs_forward_then_compensates_backwards(db: Db) {
    let (conn, broker, mut sub, outbox) = probed(db, "saga.probe", Exchange::Commands).await;
    let (trigger, relay) = spawn_relay(&outbox, &conn, &broker);
    let engine = SagaEngine::<TestSaga>::new("saga.replies");
    let saga_id = Uuid::now_v7();
    let order = Envelope::new(&note(1)).unwrap();
    let txn = conn.begin().await.unwrap();
    engine
        .start(&txn, &outbox, &order, saga_id, None)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    outbox.wake();

    // Refused for now (the module's database unreachable): sent again.
    let unavailable = || {
        CommandReply::Rejected(ReplyError {
            code: ErrorCode::Unavailable,
            message: "the module's database cannot be reached right now".into(),
        })
    };
    let replies = [
        ("do-1", unavailable()),
        (
            "do-1",
            CommandReply::Accepted {
                result: Affected::Nothing,
                position: None,
            },
        ),
        (
            "do-2",
            CommandReply::Accepted {
                result: Affected::Store { store_id: KEPT },
                position: None,
            },
        ),
        (
            "do-3",
            CommandReply::Rejected(ReplyError {
                code: ErrorCode::Conflict,
                message: "no money".into(),
            }),
        ),
        ("undo-2", unavailable()),
        (
            "undo-2",
            CommandReply::Accepted {
                result: Affected::Nothing,
                position: None,
            },
        ),
        (
            "undo-0",
            CommandReply::Accepted {
                result: Affected::Nothing,
                position: None,
            },
        ),
    ];
    let mut first = None;
    // A step refused for now goes again under the same id, so the module's
    // inbox applies it once however many copies of it arrive.
    let mut refused: Option<Uuid> = None;
    let mut sent = Vec::new();
    for (expected, reply) in replies {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the saga's next command")
            .unwrap();
        let command = delivery.message.decode().unwrap();
        delivery.ack().await.unwrap();
        let step: StepCommand = command.decode().unwrap();
        assert_eq!(step.name, expected);
        assert_eq!(command.reply_to.as_deref(), Some("saga.replies"));
        assert_eq!(command.correlation_id, order.correlation_id);
        match expected {
            "undo-2" => assert_eq!(step.kept, Some(KEPT.to_string())),
            "undo-0" => assert_eq!(step.why, "step 3: no money"),
            _ => {}
        }
        match refused.take() {
            Some(id) => assert_eq!(command.id, id, "{expected} sent again under its id"),
            None => assert!(
                !sent.contains(&command.id),
                "{expected} sent under a new id"
            ),
        }
        sent.push(command.id);
        if matches!(&reply, CommandReply::Rejected(e) if e.code == ErrorCode::Unavailable) {
            refused = Some(command.id);
        }
        let answer = command.caused(&reply).unwrap();
        let txn = conn.begin().await.unwrap();
        assert!(engine.on_reply(&txn, &outbox, &answer).await.unwrap());
        txn.commit().await.unwrap();
        outbox.wake();
        first.get_or_insert(answer);
    }
    // A late duplicate of the first reply moves nothing.
    let txn = conn.begin().await.unwrap();
    assert!(
        !engine
            .on_reply(&txn, &outbox, &first.unwrap())
            .await
            .unwrap()
    );
    txn.rollback().await.unwrap();

    let saga = saga::find::<TestSaga, _>(&conn, saga_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert_eq!(saga.step_name, "step 0");
    assert_eq!(saga.last_error.as_deref(), Some("step 3: no money"));
    trigger.trigger();
    relay.await.unwrap();
    assert_eq!(
        broker.queue_len("saga.probe"),
        0,
        "no other command was sent"
    );
}

async fn the_change_log_reads_by_limit_and_by_window(db: Db) {
    let conn = database(db).await;
    assert_eq!(changes::last(&conn).await.unwrap(), 0);
    // A checkpoint only ever moves forward.
    assert_eq!(changes::applied(&conn, "src").await.unwrap(), 0);
    for (offered, kept) in [(5, 5), (3, 5), (5, 5), (7, 7)] {
        changes::advance(&conn, "src", offered).await.unwrap();
        assert_eq!(changes::applied(&conn, "src").await.unwrap(), kept);
    }
    assert_eq!(changes::applied(&conn, "other").await.unwrap(), 0);
    let bodies: Vec<_> = (0..6).map(|n| json!({ "n": n }).to_string()).collect();
    let rows: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(n, body)| NewChange::new(if n % 2 == 0 { "a" } else { "b" }, "k", body))
        .collect();
    let at = changes::record_all(&conn, &rows).await.unwrap();
    assert_eq!(changes::last(&conn).await.unwrap(), at[5]);

    let first_two = changes::since(&conn, &["a"], 0, 2).await.unwrap();
    let bodies: Vec<_> = first_two.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, [r#"{"n":0}"#, r#"{"n":2}"#]);
    // About one key, or one owner: only those of the topic, after the cursor.
    let more = [
        NewChange::new("a", "other", "{}").owned_by("o"),
        NewChange::new("a", "k", r#"{"n":6}"#).owned_by("p"),
        NewChange::new("b", "k", "{}").owned_by("o"),
    ];
    let more = changes::record_all(&conn, &more).await.unwrap();
    let positions = |changes: Vec<changes::Change>| -> Vec<i64> {
        changes.iter().map(|c| c.position).collect()
    };
    let of_k = changes::since_about(&conn, "a", About::Key("k"), at[0], 10);
    assert_eq!(positions(of_k.await.unwrap()), [at[2], at[4], more[1]]);
    let first = changes::since_about(&conn, "a", About::Key("k"), at[0], 1);
    assert_eq!(positions(first.await.unwrap()), [at[2]]);
    let none = changes::since_about(&conn, "b", About::Key("other"), 0, 10);
    assert!(none.await.unwrap().is_empty());
    // An owner's: its own, and those logged without an owner (older rows).
    let of_o = changes::since_about(&conn, "a", About::Owner("o"), at[2], 10)
        .await
        .unwrap();
    assert_eq!(positions(of_o.clone()), [at[4], more[0]]);
    assert_eq!(of_o[1].owner.as_deref(), Some("o"));
    let of_p = changes::since_about(&conn, "a", About::Owner("p"), at[4], 10);
    assert_eq!(positions(of_p.await.unwrap()), [more[1]]);
    // (at[0], at[4]]: the window excludes its start and includes its end.
    let window: Vec<(i64, serde_json::Value)> = changes::between_as(&conn, &["a"], at[0], at[4])
        .await
        .unwrap();
    assert_eq!(
        window,
        [(at[2], json!({ "n": 2 })), (at[4], json!({ "n": 4 }))]
    );
    let both: Vec<(i64, serde_json::Value)> = changes::between_as(&conn, &["a", "b"], at[3], at[5])
        .await
        .unwrap();
    assert_eq!(
        both.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [at[4], at[5]]
    );
}

/// Retention removes what is old and sent, handled or logged, but never an
/// unsent outbox row nor the archive's topic; and it says how far the log
/// was pruned.
async fn retention_prunes_old_rows_but_never_an_unsent_one(db: Db) {
    use mallbots_platform::retention::{self, Pruned, Retention};

    let conn = database(db).await;
    let broker = Arc::new(MemoryBroker::new());
    let outbox = Outbox::new();
    let txn = conn.begin().await.unwrap();
    for n in 0..3 {
        let envelope = enqueue_note(&outbox, &txn, n).await;
        inbox::record(&txn, "probe", envelope.id).await.unwrap();
    }
    txn.commit().await.unwrap();
    // Two sent (the relay publishes what is there), then one more unsent.
    let (trigger, shutdown) = Shutdown::new();
    let relay = {
        let (outbox, conn, broker) = (outbox.clone(), conn.clone(), broker.clone());
        tokio::spawn(async move { outbox.relay("test", conn, broker, shutdown).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while outbox::pending(&conn).await.unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the relay never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trigger.trigger();
    relay.await.unwrap();
    let txn = conn.begin().await.unwrap();
    let unsent = enqueue_note(&outbox, &txn, 9).await;
    txn.commit().await.unwrap();
    let body = r#"{"n":1}"#;
    let rows = [
        NewChange::new("live", "k", body),
        NewChange::new("archive", "k", body),
    ];
    let logged = changes::record_all(&conn, &rows).await.unwrap();

    // Kept for an hour: nothing goes.
    let hour = Duration::from_secs(3600);
    let kept = Retention {
        messages: hour,
        changes: hour,
    };
    assert_eq!(
        retention::prune(&conn, kept, &["archive"]).await.unwrap(),
        Pruned::default()
    );
    assert_eq!(changes::pruned_through(&conn).await.unwrap(), 0);

    // Kept for no time: everything old goes, but the unsent row and the archive.
    let none = Retention {
        messages: Duration::ZERO,
        changes: Duration::ZERO,
    };
    let pruned = retention::prune(&conn, none, &["archive"]).await.unwrap();
    assert_eq!(
        pruned,
        Pruned {
            outbox: 3,
            inbox: 3,
            changes: 1
        }
    );
    assert_eq!(
        outbox::pending(&conn).await.unwrap(),
        1,
        "the unsent row stays"
    );
    assert!(
        inbox::record(&conn, "probe", unsent.id).await.unwrap(),
        "the inbox was emptied"
    );
    let left = changes::since(&conn, &["live", "archive"], 0, 10)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|c| c.position).collect::<Vec<_>>(),
        [logged[1]]
    );
    assert_eq!(changes::pruned_through(&conn).await.unwrap(), logged[0]);
}

/// Table `t`'s indexes as the catalog describes them: name, definition
/// (storage options included) and comment.
async fn index_names(conn: &DatabaseConnection) -> Vec<String> {
    let sql = match conn.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT indexname || ': ' || indexdef || coalesce(' -- ' || obj_description( \
             format('%I.%I', schemaname, indexname)::regclass, 'pg_class'), '') AS name \
             FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 't' ORDER BY 1"
        }
        _ => {
            "SELECT name || ': ' || coalesce(sql, '') AS name FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 't' ORDER BY 1"
        }
    };
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect()
}

async fn secondary_indexes_are_dropped_and_made_again(db: Db) {
    let conn = database(db).await;
    conn.execute_unprepared(
        "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT NOT NULL, b TEXT NOT NULL UNIQUE); \
         CREATE INDEX t_a ON t (a, id); \
         CREATE UNIQUE INDEX t_ab ON t (a, b);",
    )
    .await
    .unwrap();
    let before = index_names(&conn).await;
    assert!(before.iter().any(|i| i.starts_with("t_a: ")), "{before:?}");

    let txn = conn.begin().await.unwrap();
    let dropped = DroppedIndexes::secondary(&txn, &["t"]).await.unwrap();
    // Only the plain index: keys and unique indexes guard the data.
    assert_eq!(dropped.names().collect::<Vec<_>>(), ["t_a"]);
    // The unique index still refuses a duplicate.
    let rows = "INSERT INTO t VALUES ('1', 'x', 'y'), ('2', 'x', 'z')";
    made_again(
        &conn,
        txn,
        dropped,
        rows,
        &before,
        "INSERT INTO t VALUES ('3', 'x', 'y')",
    )
    .await;
}

/// Writes `rows`, creates `dropped` again and commits `txn`: `t` has the
/// indexes it had `before`, and they refuse `duplicate`.
async fn made_again(
    conn: &DatabaseConnection,
    txn: sea_orm::DatabaseTransaction,
    dropped: DroppedIndexes,
    rows: &str,
    before: &[String],
    duplicate: &str,
) {
    txn.execute_unprepared(rows).await.unwrap();
    dropped.create(&txn).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(index_names(conn).await, before);
    assert!(conn.execute_unprepared(duplicate).await.is_err());
}

async fn primary_keys_are_dropped_and_checked_again(db: Db) {
    let conn = database(db).await;
    conn.execute_unprepared(
        "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT NOT NULL); \
         CREATE INDEX t_a ON t (a, id); INSERT INTO t VALUES ('1', 'x');",
    )
    .await
    .unwrap();
    if matches!(db, Db::Postgres) {
        // Storage options and comments come back too.
        conn.execute_unprepared(
            "ALTER INDEX t_pkey SET (fillfactor = 80); COMMENT ON INDEX t_pkey IS 'the key''s'; \
             ALTER INDEX t_a SET (fillfactor = 70); COMMENT ON INDEX t_a IS 'by a';",
        )
        .await
        .unwrap();
    }
    let before = index_names(&conn).await;
    if matches!(db, Db::Postgres) {
        assert!(
            before
                .iter()
                .any(|i| i.contains("fillfactor='80'") && i.ends_with("the key's")),
            "{before:?}"
        );
    }

    let txn = conn.begin().await.unwrap();
    let dropped = DroppedIndexes::with_primary_keys(&txn, &["t"])
        .await
        .unwrap();
    let names: Vec<_> = dropped.names().collect();
    match db {
        Db::Postgres => assert_eq!(names, ["t_a", "t_pkey"]),
        // SQLite cannot drop a key: it stays and guards the rows.
        Db::Sqlite => assert_eq!(names, ["t_a"]),
    }
    let rows = "INSERT INTO t VALUES ('2', 'y')";
    made_again(
        &conn,
        txn,
        dropped,
        rows,
        &before,
        "INSERT INTO t VALUES ('2', 'z')",
    )
    .await;

    // A duplicate written while the key is away fails the key's rebuild (or,
    // where the key stayed, the insert): the transaction cannot commit it.
    let txn = conn.begin().await.unwrap();
    let dropped = DroppedIndexes::with_primary_keys(&txn, &["t"])
        .await
        .unwrap();
    let duplicate = match txn
        .execute_unprepared("INSERT INTO t VALUES ('1', 'z')")
        .await
    {
        Ok(_) => dropped.create(&txn).await.is_err(),
        Err(_) => true,
    };
    assert!(duplicate, "a duplicate key got through");
    txn.rollback().await.unwrap();
    assert_eq!(index_names(&conn).await, before);
}

async fn tables_are_emptied_in_the_transaction(db: Db) {
    let conn = database(db).await;
    conn.execute_unprepared(
        "CREATE TABLE t (id TEXT PRIMARY KEY); CREATE TABLE u (id TEXT PRIMARY KEY); \
         INSERT INTO t VALUES ('1'), ('2'); INSERT INTO u VALUES ('3');",
    )
    .await
    .unwrap();
    let count = |table: &'static str| {
        let conn = &conn;
        async move {
            let sql = format!("SELECT COUNT(*) AS n FROM {table}");
            let row = conn
                .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };

    // A rollback keeps every row.
    let txn = conn.begin().await.unwrap();
    empty_tables(&txn, &["t", "u"]).await.unwrap();
    txn.rollback().await.unwrap();
    assert_eq!((count("t").await, count("u").await), (2, 1));

    // Emptied and written again in one transaction: only the new rows.
    let txn = conn.begin().await.unwrap();
    empty_tables(&txn, &["t", "u"]).await.unwrap();
    txn.execute_unprepared("INSERT INTO t VALUES ('1')")
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!((count("t").await, count("u").await), (1, 0));
}

async fn statements_run_in_order_up_to_the_first_error(db: Db) {
    let conn = database(db).await;
    conn.execute_unprepared("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        .await
        .unwrap();
    let backend = conn.get_database_backend();
    let insert = |id: &str, n: i32| {
        Ok(Statement::from_string(
            backend,
            format!("INSERT INTO t VALUES ('{id}', {n})"),
        ))
    };
    let update = |n: i32| {
        Ok(Statement::from_string(
            backend,
            format!("UPDATE t SET n = {n}"),
        ))
    };
    let rows = |conn: &DatabaseConnection| {
        let conn = conn.clone();
        async move {
            let sql = "SELECT id, n FROM t ORDER BY id";
            conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await
                .unwrap()
                .iter()
                .map(|row| {
                    (
                        row.try_get::<String>("", "id").unwrap(),
                        row.try_get::<i32>("", "n").unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };

    // In order: the update sees the inserts before it, not the one after.
    execute_all(
        &conn,
        [insert("a", 1), insert("b", 1), update(2), insert("c", 3)],
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&conn).await,
        [("a".into(), 2), ("b".into(), 2), ("c".into(), 3)]
    );

    // A failing statement stops the rest.
    assert!(
        execute_all(&conn, [update(4), insert("a", 5), update(6)])
            .await
            .is_err()
    );
    assert!(rows(&conn).await.iter().all(|(_, n)| *n == 4));

    // So does a statement that could not be made.
    let unmade = Err(PlatformError::Unexpected("no statement".into()));
    assert!(
        execute_all(&conn, [update(7), unmade, update(8)])
            .await
            .is_err()
    );
    assert!(rows(&conn).await.iter().all(|(_, n)| *n == 7));
}

/// SQLite busy (another process writing the same file, past the busy
/// timeout) is the database being unavailable, not the message's fault: it
/// is retried without being counted against the message.
#[tokio::test]
async fn a_busy_sqlite_file_is_unavailable() {
    let dir = std::env::temp_dir().join(format!("mallbots-busy-{}", Uuid::new_v4().simple()));
    let config = mallbots_platform::db::DatabaseConfig::Sqlite { dir: dir.clone() };
    let holder = config.connect("busy").await.unwrap();
    holder
        .execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    let other = config.connect("busy").await.unwrap();
    other
        .execute_unprepared("PRAGMA busy_timeout = 0")
        .await
        .unwrap();
    let writing = holder.begin().await.unwrap();
    writing
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let err = other
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .expect_err("the file is locked by the other connection");
    assert!(PlatformError::from(err).is_unavailable());
    writing.commit().await.unwrap();
    other
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    // A statement that fails for what it says is still not "unavailable".
    let err = other
        .execute_unprepared("INSERT INTO t VALUES (2)")
        .await
        .expect_err("a duplicate key");
    assert!(!PlatformError::from(err).is_unavailable());
    let _ = std::fs::remove_dir_all(dir);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::Sqlite).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Db::Postgres).await;
                }
            )*
        }
    };
}

suite!(
    events_fold_back_into_the_aggregate,
    a_failing_relay_says_so_once_and_once_when_it_works_again,
    a_stale_append_is_a_conflict_not_an_overwrite,
    long_streams_are_snapshotted,
    the_inbox_recognises_a_redelivery,
    the_inbox_records_a_batch_in_one_go,
    the_outbox_publishes_only_what_committed,
    replies_go_out_express_once,
    a_commands_rows_go_out_with_its_reply,
    a_saga_runs_forward_then_compensates_backwards,
    secondary_indexes_are_dropped_and_made_again,
    tables_are_emptied_in_the_transaction,
    primary_keys_are_dropped_and_checked_again,
    statements_run_in_order_up_to_the_first_error,
    the_change_log_reads_by_limit_and_by_window,
    retention_prunes_old_rows_but_never_an_unsent_one,
);

mod racing {
    //! Two processors (two replicas of a module) handling commands on one
    //! aggregate at the same time, on PostgreSQL: both load version 0, both
    //! decide; the second append is a conflict, retried on the new version.
    //! Both changes land; neither overwrites the other.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use mallbots_platform::commands::{Accepted, CommandError, CommandHandler, CommandProcessor};
    use mallbots_platform::consumer::Handler;
    use mallbots_platform::outbox::Outbox;
    use mallbots_platform::{Envelope, event_store};
    use sea_orm::DatabaseTransaction;
    use tokio::sync::Barrier;
    use uuid::Uuid;

    use super::{Added, Counter, Db, Note, database, note};

    /// Adds the command's note to counter `id`. The first two arrivals load
    /// the counter, then wait for each other before appending, so both
    /// append on the version they loaded: one of them must conflict.
    struct Racer {
        id: Uuid,
        arrivals: Arc<AtomicUsize>,
        meet: Arc<Barrier>,
    }

    #[async_trait]
    impl CommandHandler for Racer {
        async fn handle(
            &self,
            txn: &DatabaseTransaction,
            _: &Outbox,
            command: &Envelope,
        ) -> Result<Accepted, CommandError> {
            let note: Note = command.decode()?;
            let stream = self.id.to_string();
            let current = event_store::load::<Counter, _>(txn, &stream).await?;
            if self.arrivals.fetch_add(1, Ordering::SeqCst) < 2 {
                self.meet.wait().await;
            }
            let added = [Added(i64::from(note.n))];
            event_store::append(txn, &stream, &current, &added, super::cause()).await?;
            Ok(Accepted::default())
        }
    }

    #[tokio::test]
    async fn concurrent_commands_on_one_aggregate_both_land() {
        let conn = database(Db::Postgres).await;
        let id = Uuid::now_v7();
        let arrivals = Arc::new(AtomicUsize::new(0));
        let meet = Arc::new(Barrier::new(2));
        let processor = |name: &str| {
            let racer = Racer {
                id,
                arrivals: arrivals.clone(),
                meet: meet.clone(),
            };
            CommandProcessor::new(name, conn.clone(), Outbox::new(), Arc::new(racer))
        };
        let (a, b) = (processor("replica-a"), processor("replica-b"));
        let (one, two) = (
            Envelope::new(&note(1)).unwrap(),
            Envelope::new(&note(10)).unwrap(),
        );
        let (ra, rb) = tokio::join!(a.handle(&one), b.handle(&two));
        ra.unwrap();
        rb.unwrap();
        let counter = event_store::load::<Counter, _>(&conn, &id.to_string())
            .await
            .unwrap();
        assert_eq!((counter.state.total, counter.version), (11, 2));
        // Two attempts on version 0, then the loser's retry on version 1.
        assert_eq!(arrivals.load(Ordering::SeqCst), 3);
    }
}

mod outages {
    //! On PostgreSQL: a connection the server ends (an administrator's
    //! command, a shutdown) is the database being unavailable, not an
    //! internal error: a request is told to retry, a consumer retries.

    use mallbots_platform::PlatformError;
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

    use super::{Db, database};

    #[tokio::test]
    async fn a_connection_the_server_terminates_is_unavailable() {
        let admin = database(Db::Postgres).await;
        let url = std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL");
        let victim = Database::connect(ConnectOptions::new(url)).await.unwrap();
        // A query under way when the server ends its connection.
        let marker = format!("victim-{}", uuid::Uuid::new_v4().simple());
        let sleeping = {
            let sql = format!("SELECT pg_sleep(30), '{marker}'");
            tokio::spawn(async move { victim.execute_unprepared(&sql).await })
        };
        let find = format!(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%{marker}%' \
             AND query NOT LIKE '%pg_stat_activity%'"
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let pid: i32 = loop {
            let row = admin
                .query_one_raw(Statement::from_string(DbBackend::Postgres, find.clone()))
                .await
                .unwrap();
            if let Some(row) = row {
                break row.try_get("", "pid").unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the query never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        admin
            .execute_unprepared(&format!("SELECT pg_terminate_backend({pid})"))
            .await
            .unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeping)
            .await
            .expect("the query ended with its connection")
            .unwrap()
            .expect_err("the connection was terminated");
        let err = PlatformError::from(err);
        assert!(err.is_unavailable(), "{err:?}");
    }
}
