//! Scale-out, for real, on PostgreSQL + RabbitMQ: the system as separate
//! `mallbots` processes, with two of stores (competing consumers of its
//! commands) and two of search (one active, one standing by). Under load,
//! one of each is killed with kill -9: every acknowledged change is applied
//! once, the catalog's live pushes go on in order with no gap, and the
//! survivors carry on.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use common::{Backend, Process, shop, wait_until};
use rust_decimal::Decimal;
use serde_json::{Value, json};

const CLIENTS: usize = 6;
const RAISE: &str =
    "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }";

fn cents(price: &Value) -> i64 {
    let price: Decimal = price.as_str().expect("a price").parse().expect("a decimal");
    (price * Decimal::ONE_HUNDRED).try_into().expect("cents")
}

/// Raises `product` until `stop`: (acknowledged, unknown outcome).
async fn client(
    base: String,
    product: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> (i64, i64) {
    let http = reqwest::Client::new();
    let (mut ok, mut unknown) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let body: Value = http
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": RAISE, "variables": { "p": product } }))
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("JSON");
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => {
                ok += 1;
                acked.fetch_add(1, Ordering::SeqCst);
            }
            // A command in the killed process's hands: its outcome comes later.
            Some("TIMEOUT") => unknown += 1,
            Some(other) => panic!("unexpected {other}: {body}"),
        }
    }
    (ok, unknown)
}

#[tokio::test]
async fn a_killed_process_of_stores_and_of_search_loses_nothing() {
    let settings = common::settings(Backend::Real).await;
    let url = settings.database_url.clone().expect("a database");
    let amqp = settings.amqp_url.clone().expect("a broker");
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("AMQP_URL", amqp.as_str()),
        ("AMQP_PREFIX", settings.amqp_prefix.as_str()),
        ("COMMAND_TIMEOUT_MS", "3000"),
        ("NO_MIGRATE", "true"),
    ];
    let migrated = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
        .arg("migrate")
        .envs(envs)
        .output()
        .await
        .expect("run mallbots migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let part = |parts: &'static [&'static str]| {
        let args: Vec<&std::ffi::OsStr> = std::iter::once("run")
            .chain(parts.iter().copied())
            .map(std::ffi::OsStr::new)
            .collect();
        async move { common::launch(&args, &envs).await }
    };
    let rest = part(&[
        "gateway",
        "customers",
        "baskets",
        "payments",
        "ordering",
        "depot",
        "cosec",
        "notifications",
    ])
    .await;
    // The first of each starts first: it is search's active consumer.
    let mut stores: Vec<Process> = vec![part(&["stores"]).await, part(&["stores"]).await];
    let mut search: Vec<Process> = vec![part(&["search"]).await, part(&["search"]).await];

    let app = rest.client().await;
    let store = shop::store(&app, "Twin Towers", "Both sides").await;
    let mut products = Vec::new();
    for i in 0..CLIENTS {
        products.push(shop::product(&app, &store, &format!("Pair {i}"), "1.00").await);
    }
    let mut live = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor kind product { id price } } }",
            json!({ "s": store }),
        )
        .await;
    app.wait_for_subscriptions(1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = products
        .iter()
        .map(|p| {
            tokio::spawn(client(
                app.base.clone(),
                p.clone(),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    wait_until("load before the kill", || async {
        (acked.load(Ordering::SeqCst) >= 60).then_some(())
    })
    .await;
    for killed in [&mut stores[0], &mut search[0]] {
        killed.child.start_kill().expect("kill -9");
        killed.child.wait().await.expect("gone");
    }
    let at_kill = acked.load(Ordering::SeqCst);
    let killed = Instant::now();
    wait_until("the survivors carry the load", || async {
        (acked.load(Ordering::SeqCst) >= at_kill + 120).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut finals = HashMap::new();
    for (product, c) in products.iter().zip(clients) {
        let (ok, unknown) = c.await.expect("a client");
        let price = wait_until("the price to settle", || async {
            let read = app
                .data(
                    "query($p: ID!) { product(id: $p) { price } }",
                    json!({ "p": product }),
                )
                .await;
            let raised = cents(&read["product"]["price"]) - 100;
            (raised >= ok).then_some(raised)
        })
        .await;
        assert!(
            price <= ok + unknown,
            "{product}: {price} raises, {ok} acknowledged, {unknown} unknown"
        );
        finals.insert(product.clone(), price + 100);
    }

    // The standby search applied everything after the active one died, in
    // order: every product's pushes step by one cent up to its price.
    let mut seen: HashMap<String, i64> = products.iter().map(|p| (p.clone(), 100)).collect();
    while seen != finals {
        let data = live.next_data().await;
        let change = &data["catalogChanged"];
        if change["kind"] != "PRICE_INCREASED" {
            continue;
        }
        let product = change["product"]["id"].as_str().expect("an id").to_owned();
        let price = cents(&change["product"]["price"]);
        let last = seen.get_mut(&product).expect("one of the store's products");
        assert_eq!(price, *last + 1, "{product}: a gap or a duplicate");
        *last = price;
    }
    eprintln!(
        "{} raises acknowledged, {} after the kill, within {:?}",
        acked.load(Ordering::SeqCst),
        acked.load(Ordering::SeqCst) - at_kill,
        killed.elapsed()
    );
}
