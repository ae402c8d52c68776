//! SIGTERM under load, for real: the `mallbots` binary drains (not ready,
//! still serving), then closes its doors gracefully: no request sent during
//! the drain fails, in-flight ones finish, a subscription ends with its
//! cursor and its socket closes with 1001, the process exits in time; after
//! a restart, resuming from that cursor misses nothing.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::raisers::RAISE;
use common::{cents, wait_until};
use serde_json::{Value, json};

const CLIENTS: usize = 5;
const DRAIN: Duration = Duration::from_millis(1500);
const FOLLOW: &str = "subscription($s: ID!, $after: String) {
  catalogChanged(storeId: $s, after: $after) { cursor kind product { id price } } }";

/// One request's fate: when it was sent, and whether it was applied.
struct Sent {
    at: Instant,
    ok: bool,
}

async fn client(base: String, product: String, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let http = reqwest::Client::new();
    let mut sent = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let answer = http
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": RAISE, "variables": { "p": product } }))
            .send()
            .await;
        let ok = match answer {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|body| body.get("errors").is_none()),
            // The listener is closed: the process is on its way out.
            Err(_) => {
                sent.push(Sent { at, ok: false });
                break;
            }
        };
        sent.push(Sent { at, ok });
    }
    sent
}

#[tokio::test]
async fn sigterm_drains_then_closes_gracefully_and_loses_nothing() {
    let data_dir = std::env::temp_dir().join(format!(
        "mallbots-sigterm-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let args = ["--data-dir".as_ref(), data_dir.as_os_str(), "run".as_ref()];
    let drain_ms = DRAIN.as_millis().to_string();
    let envs = [
        ("SHUTDOWN_DRAIN_MS", drain_ms.as_str()),
        ("SHUTDOWN_GRACE_MS", "10000"),
    ];
    let mut first = common::launch(&args, &envs).await;
    let app = first.client().await;
    // A subscriber of the store's catalog: every raise it is pushed must be
    // the next one of its product (no gap, no duplicate), across the restart.
    let (store, products, mut live) = common::followed_catalog(&app, "Closing Time", CLIENTS).await;
    let mut prices: HashMap<String, i64> = products.iter().map(|p| (p.clone(), 100)).collect();
    let mut cursor = 0i64;
    let push = |prices: &mut HashMap<String, i64>, change: &Value| -> i64 {
        let at: i64 = change["cursor"]
            .as_str()
            .expect("a cursor")
            .parse()
            .expect("a number");
        if change["kind"] == "PRICE_INCREASED" {
            let product = change["product"]["id"].as_str().expect("an id");
            let last = prices
                .get_mut(product)
                .expect("one of the store's products");
            let price = cents(&change["product"]["price"]);
            assert_eq!(price, *last + 1, "{product}: a gap or a duplicate");
            *last = price;
        }
        at
    };

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = products
        .iter()
        .map(|p| tokio::spawn(client(app.base.clone(), p.clone(), stop.clone())))
        .collect();
    wait_until("load before the signal", || async {
        let metrics = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .ok()?;
        let text = metrics.text().await.ok()?;
        let sent = common::metric(&text, "mallbots_commands_sent_total", &[])?;
        (sent > 50.0).then_some(())
    })
    .await;
    let signalled = Instant::now();
    common::sigterm(&first.child).await;
    // Draining: not ready (once the signal is handled), still serving.
    wait_until("not ready while draining", || async {
        let ready = app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .expect("still serving while draining");
        (ready.status().as_u16() == 503).then_some(())
    })
    .await;
    assert!(
        signalled.elapsed() < DRAIN,
        "readiness was still 200 after the drain"
    );

    // The subscription gets what was pushed, then ends with its cursor; the
    // socket closes with 1001.
    let last_cursor = loop {
        let message = live.next_message().await;
        assert_eq!(message["type"], "next", "{message}");
        if let Some(error) = message["payload"]["errors"].get(0) {
            assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{message}");
            let at = error["extensions"]["cursor"]
                .as_str()
                .expect("a cursor")
                .to_owned();
            assert!(
                at.parse::<i64>().expect("a number") >= cursor,
                "the cursor went back"
            );
            break at;
        }
        cursor = push(&mut prices, &message["payload"]["data"]["catalogChanged"]);
    };
    assert_eq!(live.next_message().await["type"], "complete");
    assert_eq!(live.close_code().await, 1001);

    let status = tokio::time::timeout(DRAIN + Duration::from_secs(12), first.child.wait())
        .await
        .expect("the process exits within the drain and the grace period")
        .expect("its status");
    assert!(status.success(), "a clean exit: {status}");
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for (product, c) in products.iter().zip(clients) {
        let sent = c.await.expect("a client");
        // Nothing sent before the drain ended failed.
        let drained = signalled + DRAIN - Duration::from_millis(100);
        let failed = sent.iter().filter(|s| s.at < drained && !s.ok).count();
        assert_eq!(
            failed, 0,
            "{product}: {failed} requests failed during the drain"
        );
        acked.push(sent.iter().filter(|s| s.ok).count() as i64);
    }

    // Restarted on the same data: every acknowledged raise is there, and a
    // resume from the cursor pushes each raise after it, once.
    let second = common::launch(&args, &envs).await;
    let app = second.client().await;
    let mut finals = HashMap::new();
    for (product, acked) in products.iter().zip(&acked) {
        let read = app
            .data(
                "query($p: ID!) { product(id: $p) { price } }",
                json!({ "p": product }),
            )
            .await;
        let price = cents(&read["product"]["price"]);
        assert_eq!(
            price,
            100 + acked,
            "{product}: every acknowledged raise, once"
        );
        finals.insert(product.clone(), price);
    }
    let mut resumed = app
        .subscribe(
            "graphql-transport-ws",
            FOLLOW,
            json!({ "s": store, "after": last_cursor }),
        )
        .await;
    while prices != finals {
        let data = resumed.next_data().await;
        push(&mut prices, &data["catalogChanged"]);
    }
}
