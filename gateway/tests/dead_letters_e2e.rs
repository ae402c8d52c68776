//! The operator's side of dead letters, through the `mallbots dead-letters`
//! commands against a running system, on both backends: a failed command is
//! listed with its reason, shown whole, counted in /metrics, replayed (and
//! then handled), and purged. With two gateways (each keeps the dead
//! letters), every replay is sent back once.

mod common;

use std::collections::HashSet;

use common::split::Split;
use common::{Backend, DEADLINE, TestApp, metric, spawn_app, wait_until};
use mallbots_contracts::stores as msg;
use mallbots_contracts::{Actor, Message};
use mallbots_platform::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec, WireMessage};
use serde_json::json;
use uuid::Uuid;

/// `mallbots dead-letters <args>` against `app`'s data, logging at the
/// default level (its logs go to stderr, apart from what it prints).
fn dead_letters(app: &TestApp, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
    match &app.settings.database_url {
        Some(url) => command.args(["--database-url", url]),
        None => command.arg("--data-dir").arg(&app.settings.data_dir),
    };
    command
        .arg("dead-letters")
        .args(args)
        .env("RUST_LOG", "info");
    command
}

/// Runs `mallbots dead-letters <args>` against `app`'s data; its output.
async fn operator(app: &TestApp, args: &[&str]) -> String {
    let output = dead_letters(app, args)
        .output()
        .await
        .expect("run mallbots dead-letters");
    assert!(
        output.status.success(),
        "mallbots dead-letters {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("text")
}

/// A `CreateStore` for a new store, put straight into the dead letters as
/// a broker leaves one that failed on `stores.commands` for `reason`; the
/// store's id.
async fn dead_create_store(app: &TestApp, name: &str, location: &str, reason: &str) -> Uuid {
    let store_id = Uuid::now_v7();
    let letter = create_store_letter(store_id, name, location, "stores.commands", reason);
    app.broker()
        .publish(Exchange::DeadLetter, msg::CreateStore::TYPE, letter)
        .await
        .unwrap();
    store_id
}

/// A `CreateStore` as a broker leaves one that failed on `queue` for `reason`.
fn create_store_letter(
    store_id: Uuid,
    name: &str,
    location: &str,
    queue: &str,
    reason: &str,
) -> WireMessage {
    let command = msg::CreateStore {
        store_id,
        name: name.into(),
        location: location.into(),
    };
    let mut envelope = Envelope::new(&command).unwrap();
    envelope.set_actor(&Actor::OPEN);
    let mut letter = envelope.to_wire();
    letter
        .headers
        .insert(HEADER_DEAD_LETTER_REASON.into(), reason.into());
    letter
        .headers
        .insert(HEADER_DEAD_LETTER_QUEUE.into(), queue.into());
    letter
}

/// The first line `dead-letters list` prints, once it lists a letter of
/// `stores.commands`.
async fn first_listed(app: &TestApp) -> String {
    let listed = wait_until("the dead letter listed", || async {
        let out = operator(app, &["list"]).await;
        out.contains("stores.commands").then_some(out)
    })
    .await;
    listed.lines().next().expect("a line").to_owned()
}

async fn a_dead_letter_is_listed_replayed_and_purged(backend: Backend) {
    let mut app = spawn_app(backend).await;
    // A good command that failed while a bug was in the way: in the
    // dead-letter queue with its reason, as the consumer leaves it.
    let reason = "gave up after 5 attempts: the handler panicked: a bug";
    let store_id = dead_create_store(&app, "Second Chance", "Lost and found", reason).await;
    let line = first_listed(&app).await;
    let fields: Vec<&str> = line.split('\t').collect();
    let id = fields[0];
    assert_eq!(fields[1], "dead", "{line}");
    assert_eq!(fields[3], msg::CreateStore::TYPE, "{line}");
    assert!(line.ends_with("the handler panicked: a bug"), "{line}");
    let shown = operator(&app, &["show", id]).await;
    assert!(shown.contains("\"name\": \"Second Chance\""), "{shown}");
    // A reader that went away (`| head`) ends it quietly, not in a panic.
    let mut unread = dead_letters(&app, &["show", id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mallbots dead-letters");
    drop(unread.stdout.take());
    let ended = unread.wait_with_output().await.expect("its end");
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    // /metrics reads the store at most once a second: wait for a fresh read.
    wait_until("the dead letter counted in /metrics", || async {
        let text = app.metrics().await;
        let dead = ["queue=\"stores.commands\"", "state=\"dead\""];
        (metric(&text, "mallbots_dead_letters", &dead) == Some(1.0)).then_some(())
    })
    .await;
    // Nothing happened to the store yet.
    let query = "query($id: ID!) { store(id: $id) { name } }";
    let none = app.data(query, json!({ "id": store_id })).await;
    assert_eq!(none["store"], serde_json::Value::Null);

    // Sent back: the stores module handles it now.
    let replayed = operator(&app, &["replay", id]).await;
    assert!(
        replayed.starts_with("1 dead letter(s) to replay"),
        "{replayed}"
    );
    wait_until("the replayed command handled", || async {
        let found = app.data(query, json!({ "id": store_id })).await;
        (found["store"]["name"] == "Second Chance").then_some(())
    })
    .await;
    let listed = operator(&app, &["list", "--queue", "stores.commands"]).await;
    assert!(listed.contains("\treplayed\t"), "{listed}");
    // Replaying it again changes nothing: it is no longer dead.
    let again = operator(&app, &["replay", "--all"]).await;
    assert!(again.starts_with("0 dead letter(s)"), "{again}");

    let purged = operator(&app, &["purge"]).await;
    assert_eq!(purged.trim(), "1 dead letter(s) deleted");
    assert_eq!(operator(&app, &["list"]).await.trim(), "no dead letters");
    app.stop().await;
}

on_both_backends!(a_dead_letter_is_listed_replayed_and_purged);

/// Many dead letters are listed a page at a time, each page saying how to
/// get the next, the last one not; a page is oldest first and never
/// repeats a letter.
async fn dead_letters_are_listed_a_page_at_a_time(backend: Backend) {
    let mut app = spawn_app(backend).await;
    for n in 0..5 {
        dead_create_store(&app, &format!("Page {n}"), "Archive", "poison").await;
    }
    wait_until("five dead letters recorded", || async {
        let out = operator(&app, &["list", "--limit", "10"]).await;
        (out.lines().filter(|l| l.contains("\tdead\t")).count() == 5).then_some(())
    })
    .await;
    let ids = |page: &str| -> Vec<i64> {
        page.lines()
            .filter(|l| l.contains("\tdead\t"))
            .map(|l| {
                l.split('\t')
                    .next()
                    .and_then(|id| id.parse().ok())
                    .expect("an id")
            })
            .collect()
    };
    let first = operator(
        &app,
        &["list", "--queue", "stores.commands", "--limit", "2"],
    )
    .await;
    let last_line = first.lines().last().expect("a line");
    let first_ids = ids(&first);
    assert_eq!(first_ids.len(), 2, "{first}");
    assert_eq!(
        last_line,
        format!(
            "more: dead-letters list --queue stores.commands --after {}",
            first_ids[1]
        ),
        "{first}"
    );
    let after = first_ids[1].to_string();
    let rest = operator(&app, &["list", "--after", &after, "--limit", "3"]).await;
    let rest_ids = ids(&rest);
    assert_eq!(rest_ids.len(), 3, "{rest}");
    assert!(
        !rest.contains("more:"),
        "the last page says no more: {rest}"
    );
    let all: Vec<i64> = first_ids.iter().chain(&rest_ids).copied().collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeat: {all:?}"
    );
    // A limit out of range is refused before anything is read.
    let refused = dead_letters(&app, &["list", "--limit", "0"])
        .output()
        .await
        .expect("run mallbots dead-letters");
    assert!(!refused.status.success());
    app.stop().await;
}

on_both_backends!(dead_letters_are_listed_a_page_at_a_time);

/// A command that expired unhandled (its sender answered its client
/// `TIMEOUT`, as during a broker or database outage) is kept as `expired`,
/// not `dead`: it is counted apart, so the alert on dead letters stays
/// quiet, and `replay --all` leaves it. Replayed by id, it is handled.
async fn an_expired_command_is_kept_apart_from_dead_letters(backend: Backend) {
    let mut app = spawn_app(backend).await;
    // What both brokers write on a message whose time to live ran out.
    let store_id = dead_create_store(&app, "Too Late", "Waiting room", "expired").await;
    let line = first_listed(&app).await;
    let fields: Vec<&str> = line.split('\t').collect();
    let id = fields[0];
    assert_eq!(fields[1], "expired", "{line}");
    wait_until("the expired command counted in /metrics", || async {
        let text = app.metrics().await;
        let expired = ["queue=\"stores.commands\"", "state=\"expired\""];
        (metric(&text, "mallbots_dead_letters", &expired) == Some(1.0)).then_some(text)
    })
    .await;
    let text = app.metrics().await;
    let dead = ["queue=\"stores.commands\"", "state=\"dead\""];
    assert_eq!(
        metric(&text, "mallbots_dead_letters", &dead).unwrap_or(0.0),
        0.0
    );

    let all = operator(&app, &["replay", "--all"]).await;
    assert!(all.starts_with("0 dead letter(s)"), "{all}");
    let query = "query($id: ID!) { store(id: $id) { name } }";
    let none = app.data(query, json!({ "id": store_id })).await;
    assert_eq!(none["store"], serde_json::Value::Null);
    let one = operator(&app, &["replay", id]).await;
    assert!(one.starts_with("1 dead letter(s) to replay"), "{one}");
    wait_until("the replayed command handled", || async {
        let found = app.data(query, json!({ "id": store_id })).await;
        (found["store"]["name"] == "Too Late").then_some(())
    })
    .await;
    app.stop().await;
}

on_both_backends!(an_expired_command_is_kept_apart_from_dead_letters);

/// Every gateway keeps the dead letters and sends back what operators ask
/// to replay. With two of them on one database, each letter goes back once:
/// the one that claims it sends it. Enough letters that one gateway's pass
/// cannot finish them before the other's begins.
#[tokio::test]
async fn with_two_gateways_each_replay_is_sent_once() {
    const LETTERS: usize = 300;
    const QUEUE: &str = "replay.probe";
    let split = Split::new().await;
    let mut gateways = [
        split.part(&["gateway"]).await,
        split.part(&["gateway"]).await,
    ];
    let broker = RabbitBroker::connect(RabbitConfig {
        url: split.env("AMQP_URL"),
        prefix: split.env("AMQP_PREFIX"),
        quorum_queues: false,
        ca_pem: None,
    })
    .await
    .unwrap();
    // A queue nobody consumes, where the replays stay to be counted.
    let target = QueueSpec::durable(QUEUE);
    broker.declare(&target).await.unwrap();
    let letters: Vec<WireMessage> = (0..LETTERS)
        .map(|n| {
            let name = format!("Replayed {n}");
            create_store_letter(Uuid::now_v7(), &name, "Twice?", QUEUE, "a bug")
        })
        .collect();
    let sent: HashSet<String> = letters
        .iter()
        .map(|letter| letter.message_id.clone().expect("an id"))
        .collect();
    let dead = letters
        .into_iter()
        .map(|letter| {
            (
                Exchange::DeadLetter,
                msg::CreateStore::TYPE.to_owned(),
                letter,
            )
        })
        .collect();
    broker.publish_all(dead).await.unwrap();

    let listed = |state: &'static str| {
        let split = &split;
        async move {
            let out = split
                .run_to_end(&["dead-letters", "list", "--queue", QUEUE, "--limit", "1000"])
                .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let state = format!("\t{state}\t");
            let text = String::from_utf8(out.stdout).expect("text");
            (text.lines().filter(|line| line.contains(&state)).count() == LETTERS).then_some(())
        }
    };
    wait_until("every letter recorded", || listed("dead")).await;
    let asked = split
        .run_to_end(&["dead-letters", "replay", "--all", "--queue", QUEUE])
        .await;
    let asked = String::from_utf8_lossy(&asked.stdout);
    assert!(
        asked.starts_with(&format!("{LETTERS} dead letter(s) to replay")),
        "{asked}"
    );
    wait_until("every letter replayed", || listed("replayed")).await;
    // Nothing more can be sent once they are gone.
    for gateway in &mut gateways {
        gateway.child.start_kill().expect("kill -9");
        gateway.child.wait().await.expect("gone");
    }

    // Counted up to a marker sent after everything the gateways sent.
    let marker = Envelope::new(&msg::CreateStore {
        store_id: Uuid::now_v7(),
        name: "marker".into(),
        location: "end".into(),
    })
    .unwrap()
    .to_wire();
    let marker_id = marker.message_id.clone();
    broker
        .publish(Exchange::Queue, QUEUE, marker)
        .await
        .unwrap();
    let mut replays = broker.consume(&target).await.unwrap();
    let mut received = Vec::new();
    loop {
        let delivery = tokio::time::timeout(DEADLINE, replays.next())
            .await
            .expect("the next replay within the deadline")
            .expect("the queue open");
        let id = delivery.message.message_id.clone();
        delivery.ack().await.unwrap();
        if id == marker_id {
            break;
        }
        received.push(id.expect("an id"));
    }
    let once: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(once, sent, "every letter sent back");
    assert_eq!(received.len(), LETTERS, "each letter sent back once");
}
