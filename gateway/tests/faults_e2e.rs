//! Faults, for real, through the front door, on the fault tests' own
//! services (scripts/test starts them; each test here is the only one on its
//! service, so it has it to itself):
//! - RabbitMQ (TEST_FAULT_AMQP_URL, scripts/fault-rabbit) restarts twice
//!   while clients keep changing prices and one client follows the catalog;
//! - PostgreSQL (TEST_FAULT_DATABASE_URL, scripts/fault-postgres) stops for
//!   40 s while clients query and change things.

mod common;

use std::time::{Duration, Instant};

use common::raisers::{RAISE, Raisers, Unavailable};
use common::{Backend, cents, shop, wait_until};
use serde_json::json;

const CLIENTS: usize = 10;
/// Broker restarts in a row: a consumer lost at any of them fails the test.
const ROUNDS: usize = 5;
const COMMAND_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long a client waits for any answer: the command's own deadline plus
/// the HTTP round trip.
const ANSWER_WITHIN: Duration = Duration::from_millis(4500);

/// Runs the fault service's control script (`stop` or `start`).
async fn control(script_env: &str, action: &'static str) {
    let status = tokio::process::Command::new("bash")
        .arg(common::required_env(script_env))
        .arg(action)
        .status()
        .await
        .expect("run the fault service's script");
    assert!(status.success(), "{script_env} {action} failed");
}

async fn rabbit(action: &'static str) {
    control("TEST_FAULT_RABBIT_CTL", action).await;
}

async fn postgres(action: &'static str) {
    control("TEST_FAULT_POSTGRES_CTL", action).await;
}

/// The raise, reading the product back in its payload.
const RAISE_AND_READ: &str = "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id product { price } } }";

#[tokio::test]
async fn a_broker_restarted_again_and_again_loses_nothing_and_leaves_nobody_hanging() {
    let mut settings = common::settings(Backend::Real).await;
    settings.amqp_url = Some(common::required_env("TEST_FAULT_AMQP_URL"));
    settings.command_timeout_ms = COMMAND_TIMEOUT.as_millis() as u64;
    let mut app = common::start_with(settings).await;
    let (store, products, mut live) =
        common::followed_catalog(&app, "Faulty Towers", CLIENTS).await;

    // A store with a past, followed from now on by a subscription that
    // sees no change until after the restarts: each restart makes it
    // replay from where it began, which is not the start of the log. A
    // witness (another document, another execution) shows when that past
    // has reached the gateway.
    let quiet = shop::store(&app, "Quiet Corner", "Floor").await;
    let mut witness = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { kind } }",
            json!({ "s": quiet }),
        )
        .await;
    app.wait_for_shared("catalogChanged", 2.0, 2.0).await;
    let quiet_product = shop::product(&app, &quiet, "Quiet", "1.00").await;
    app.data(RAISE_AND_READ, json!({ "p": quiet_product }))
        .await;
    while witness.next_data().await["catalogChanged"]["kind"] != "PRICE_INCREASED" {}
    let mut from_now = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { kind product { price } } }",
            json!({ "s": quiet }),
        )
        .await;
    app.wait_for_shared("catalogChanged", 3.0, 3.0).await;

    // A keyed raise, retried across the restarts: applied once, one answer.
    let keyed_product = shop::product(&app, &store, "Keyed", "1.00").await;
    let keyed_raise = || async {
        let (_, answer) = app
            .graphql_with(
                &[("idempotency-key", "raise-across-restarts")],
                "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.50\") {
                   consistencyToken } }",
                json!({ "p": keyed_product }),
            )
            .await;
        answer["data"]["increaseProductPrice"]["consistencyToken"]
            .as_str()
            .map(str::to_owned)
    };
    let mut keyed_answers = Vec::new();
    for _ in 0..5 {
        keyed_answers.push(keyed_raise().await.expect("accepted before the restarts"));
    }

    let raisers = Raisers::start(&app.base, &products, ANSWER_WITHIN, Unavailable::Expected);
    let told = raisers.told.clone();

    for round in 1..=ROUNDS {
        let before = told.applied();
        wait_until("raises applied before the outage", || async {
            (told.applied() >= before + 20).then_some(())
        })
        .await;
        rabbit("stop").await;
        let refused = told.unavailable();
        wait_until(
            "clients told UNAVAILABLE while the broker is down",
            || async { (told.unavailable() >= refused + 10).then_some(()) },
        )
        .await;
        assert_eq!(
            app.readyz().await,
            503,
            "not ready while the broker is down"
        );
        let connected =
            || async { common::metric(&app.metrics().await, "mallbots_broker_connected", &[]) };
        wait_until("/metrics to show the broker gone", || async {
            (connected().await == Some(0.0)).then_some(())
        })
        .await;
        rabbit("start").await;
        let back = Instant::now();
        let applied = told.applied();
        wait_until("raises applied again after the broker's return", || async {
            (told.applied() > applied).then_some(())
        })
        .await;
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "round {round}: serving again only after {:?}",
            back.elapsed()
        );
        wait_until("/metrics to show the broker back", || async {
            (connected().await == Some(1.0)).then_some(())
        })
        .await;
    }
    let after = told.applied();
    wait_until("raises applied after the last outage", || async {
        (told.applied() >= after + 20).then_some(())
    })
    .await;
    // At least 2,000 requests in all, each answered in time.
    wait_until("2,000 requests answered", || async {
        let answered = told.applied() + told.unavailable() + told.unknown();
        (answered >= 2000).then_some(())
    })
    .await;
    for _ in 0..5 {
        keyed_answers.push(keyed_raise().await.expect("accepted after the restarts"));
    }
    assert!(
        keyed_answers.iter().all(|a| *a == keyed_answers[0]),
        "one answer for every retry: {keyed_answers:?}"
    );
    let keyed = app
        .data(
            "query($p: ID!) { product(id: $p) { price } }",
            json!({ "p": keyed_product }),
        )
        .await;
    assert_eq!(
        keyed["product"]["price"], "1.50",
        "the keyed raise applied once"
    );
    // Every acknowledged raise applied exactly once; an answer of TIMEOUT
    // may or may not have applied; UNAVAILABLE never did. The subscription
    // saw every raise of every product, in order, once: 1.01, 1.02, ... up
    // to the final price, across every outage.
    raisers.stop_and_check(&app, &mut live).await;

    app.data(RAISE_AND_READ, json!({ "p": quiet_product }))
        .await;
    let first = from_now.next_data().await;
    assert_eq!(
        first["catalogChanged"],
        json!({ "kind": "PRICE_INCREASED", "product": { "price": "1.02" } }),
        "the first change after it subscribed, not the store's past"
    );
    app.stop().await;
}

/// How long PostgreSQL stays down.
const DB_OUTAGE: Duration = Duration::from_secs(40);
/// How soon a request must be answered while it is down.
const FAIL_FAST: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_database_outage_is_reported_at_once_and_recovered_from_by_itself() {
    let mut settings = common::settings(Backend::Real).await;
    settings.database_url = Some(common::fresh_database("TEST_FAULT_DATABASE_URL").await);
    settings.command_timeout_ms = 5000;
    let mut app = common::start_with(settings).await;
    let store = shop::store(&app, "Power Cut", "Cellar").await;
    let product = shop::product(&app, &store, "Candle", "1.00").await;
    let price = || async {
        app.graphql(
            "query($p: ID!) { product(id: $p) { price } }",
            json!({ "p": product }),
        )
        .await
    };

    postgres("stop").await;
    let down = Instant::now();
    let (mut probes, mut applied) = (0, 0);
    while down.elapsed() < DB_OUTAGE {
        probes += 1;
        let asked = Instant::now();
        let (status, said) = app.readiness().await;
        assert_eq!(status, 503, "not ready without the database: {said}");
        // Every module's database is named, one a line, not only the first.
        let named: Vec<&str> = said
            .lines()
            .map(|l| l.split(':').next().unwrap_or(l))
            .collect();
        for module in ["stores", "ordering", "search", "notifications"] {
            assert!(
                named.contains(&format!("database of {module}").as_str()),
                "{said}"
            );
        }
        assert!(
            named.iter().all(|n| n.starts_with("database of ")),
            "{said}"
        );
        assert!(
            asked.elapsed() < FAIL_FAST,
            "/readyz took {:?}",
            asked.elapsed()
        );

        // /metrics answers, its database reads cut short.
        let asked = Instant::now();
        assert!(app.metrics().await.ends_with("# EOF\n"));
        assert!(
            asked.elapsed() < FAIL_FAST,
            "/metrics took {:?}",
            asked.elapsed()
        );

        let asked = Instant::now();
        let read = price().await;
        assert_eq!(
            read["errors"][0]["extensions"]["code"], "UNAVAILABLE",
            "{read}"
        );
        assert!(
            asked.elapsed() < FAIL_FAST,
            "a query took {:?}",
            asked.elapsed()
        );

        // A mutation is refused UNAVAILABLE (nothing applied), within its
        // deadline: the module cannot reach its database either. One that
        // was applied (the outage began after its commit) says so, even
        // when its payload cannot read the product back: no 503, which
        // would invite a retry that applies it twice.
        let asked = Instant::now();
        let (status, raised) = app
            .graphql_with(&[], RAISE_AND_READ, json!({ "p": product }))
            .await;
        if raised["data"]["increaseProductPrice"].is_object() {
            assert_eq!(status, 200, "{raised}");
            if let Some(error) = raised["errors"][0]["message"].as_str() {
                assert!(error.contains("the mutation was applied"), "{raised}");
            }
            applied += 1;
        } else {
            match raised["errors"][0]["extensions"]["code"].as_str() {
                Some("UNAVAILABLE") => assert_eq!(status, 503),
                other => panic!("a mutation without the database answered {other:?}: {raised}"),
            }
        }
        assert!(
            asked.elapsed() < COMMAND_TIMEOUT + Duration::from_secs(2),
            "a mutation took {:?}",
            asked.elapsed()
        );
    }
    postgres("start").await;

    // Back by itself: ready, reads and writes work, and only what was
    // acknowledged was applied.
    app.wait_ready("ready again").await;
    let back = Instant::now();
    let mut unknown = 0;
    loop {
        let (_, raised) = app.graphql_with(&[], RAISE, json!({ "p": product })).await;
        match raised["errors"][0]["extensions"]["code"].as_str() {
            None => break,
            Some("TIMEOUT") => unknown += 1,
            Some("UNAVAILABLE") => {}
            other => panic!("after the outage a raise answered {other:?}: {raised}"),
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "no raise accepted 20 s after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = price().await;
    let raised = cents(&read["data"]["product"]["price"]) - 100;
    let acknowledged = applied + 1;
    assert!(
        (acknowledged..=acknowledged + unknown).contains(&raised),
        "raised {raised} times: {acknowledged} acknowledged, {unknown} unknown ({probes} probes)"
    );
    app.stop().await;
}
