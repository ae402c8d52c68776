//! The query, command round-trip and fan-out scenarios.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;

use crate::cli::Cli;
use crate::client::{
    Client, Latencies, Ws, cpu_seconds, executions_active, rss_kib, subscribe, subscriptions_active,
};

/// A store taking part, with 50 products: (store id, first product id).
pub(crate) async fn setup(client: &Client) -> anyhow::Result<(String, String)> {
    let store = client
        .post(
            "mutation { createStore(input: {name: \"Bench Books\", location: \"Hall\"}) { id } }",
            json!({}),
        )
        .await?["createStore"]["id"]
        .as_str()
        .context("store id")?
        .to_owned();
    client
        .post(
            "mutation($s: ID!) { enableParticipation(storeId: $s) { id } }",
            json!({ "s": store }),
        )
        .await?;
    let mut first = None;
    for n in 0..50 {
        let product = client
            .post(
                "mutation($s: ID!, $n: String!) { addProduct(input: {storeId: $s, name: $n, description: \"a book\", sku: \"B\", price: \"9.99\"}) { id } }",
                json!({ "s": store, "n": format!("Product {n}") }),
            )
            .await?["addProduct"]["id"]
            .as_str()
            .context("product id")?
            .to_owned();
        first.get_or_insert(product);
    }
    Ok((store, first.context("a product")?))
}

/// Mutation to reply, and mutation to the subscription's push of that
/// same change, one at a time. A push is known by its product and price:
/// the catalog may still be pushing the setup's earlier changes when the
/// subscription starts, and taking the first push after each mutation
/// would then time an older change's push, already waiting.
pub(crate) async fn round_trips(
    base: &str,
    store: &str,
    product: &str,
    samples: usize,
) -> anyhow::Result<Value> {
    let client = Client::new(base);
    let mut ws = subscribe(
        base,
        "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor product { id price } } }",
        json!({ "s": store }),
    )
    .await?;
    let price = client
        .post(
            "query($p: ID!) { product(id: $p) { price } }",
            json!({ "p": product }),
        )
        .await?["product"]["price"]
        .as_str()
        .and_then(cents)
        .context("the product's price")?;
    let mut replies = Latencies::default();
    let mut pushes = Latencies::default();
    let (mut delivered, mut others) = (0, 0);
    for n in 0..samples + 1 {
        // Each mutation adds a cent.
        let expected = price + 1 + n as i64;
        let start = Instant::now();
        client
            .post(
                "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }",
                json!({ "p": product }),
            )
            .await?;
        let replied = start.elapsed();
        let pushed = loop {
            let frame =
                tokio::time::timeout_at((start + Duration::from_secs(10)).into(), ws.next())
                    .await
                    .context("no push of the change within 10 s")?
                    .context("the websocket closed")??;
            let WsMessage::Text(text) = frame else {
                continue;
            };
            let message: Value = serde_json::from_str(&text)?;
            if message["type"] != "next" {
                continue;
            }
            let pushed = &message["payload"]["data"]["catalogChanged"]["product"];
            if pushed["id"] == product && pushed["price"].as_str().and_then(cents) == Some(expected)
            {
                break start.elapsed();
            }
            others += 1;
        };
        // The first one may race the subscription's start: not measured.
        if n > 0 {
            replies.0.push(replied);
            pushes.0.push(pushed);
            delivered += 1;
        }
    }
    Ok(json!({
        "mutation_to_reply": replies.summary(),
        "mutation_to_push": pushes.summary(),
        "delivered": delivered,
        "expected": samples,
        "other_pushes_skipped": others,
    }))
}

/// A price as whole cents ("10.78" -> 1078).
fn cents(price: &str) -> Option<i64> {
    let value: f64 = price.parse().ok()?;
    Some((value * 100.0).round() as i64)
}

/// The highest deliveries/s held with every delivery made and p99 under
/// 100 ms: fan-out at doubling rates until one step fails.
pub(crate) async fn sweep(cli: &Cli, base: &str, pid: u32, floor: bool) -> anyhow::Result<Value> {
    let mut steps = Vec::new();
    let mut held = None;
    let mut step = cli.clone();
    step.fan_out_seconds = cli.sweep_seconds;
    // From an eighth of `--rate`, doubled before each step.
    step.rate = cli.rate / 16.0;
    for _ in 0..cli.sweep_steps {
        step.rate *= 2.0;
        let fan = fan_out(&step, base, pid, floor).await?;
        let ok = fan["delivered"] == fan["expected"]
            && fan["p99_ms"].as_f64().is_some_and(|p99| p99 < 100.0);
        // The offered rate: deliveries over the step's first and last one
        // overstate a step of a single change per store.
        let offered = step.subscribers as f64 * step.rate;
        steps.push(json!({
            "rate_per_store": step.rate,
            "offered_deliveries_per_s": offered,
            "deliveries_per_s": fan["deliveries_per_s"],
            "p50_ms": fan["p50_ms"],
            "p99_ms": fan["p99_ms"],
            "delivered": fan["delivered"],
            "expected": fan["expected"],
        }));
        if !ok {
            break;
        }
        held = Some(offered);
    }
    Ok(json!({ "steps": steps, "highest_held_deliveries_per_s": held }))
}

/// When each price change was sent: `[store][seq]`.
pub(crate) type Sent = std::sync::Arc<Vec<std::sync::Mutex<Vec<Instant>>>>;

/// One subscriber: the latency of each change it receives, until it has
/// `expected` of them or `deadline`.
pub(crate) async fn subscriber(
    mut ws: Ws,
    store: usize,
    sent: Sent,
    expected: usize,
    deadline: Instant,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(frame))) = tokio::time::timeout(left, ws.next()).await else {
            break;
        };
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let price = &message["payload"]["data"]["catalogChanged"]["product"]["price"];
        let Some(price) = price.as_str().and_then(|p| p.parse::<f64>().ok()) else {
            continue;
        };
        let seq = ((price - 1.0) * 100.0).round() as usize;
        let at = sent[store]
            .lock()
            .ok()
            .and_then(|s| s.get(seq.wrapping_sub(1)).copied());
        if let Some(at) = at {
            latencies.push(at.elapsed());
        }
    }
    latencies
}

/// Fan-out: `subscribers` `catalogChanged` subscriptions from now on spread
/// over `stores` stores, each store's price changed `rate` times a second.
/// On the floor server (`floor`), stores need no setting up: a product's id
/// is its store's.
pub(crate) async fn fan_out(cli: &Cli, base: &str, pid: u32, floor: bool) -> anyhow::Result<Value> {
    fan_out_from(cli, base, pid, floor, Start::Now).await
}

/// Where the fan-out's subscriptions begin.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    Now,
    /// From the start of the change log (cursor "0"), as clients resuming
    /// from their cursors after a gateway restart: each replays its store's
    /// past before it follows.
    Cursor,
}

/// [`fan_out`], its subscriptions beginning `from`. Resuming ones are timed
/// until the system serves them with one execution per store.
pub(crate) async fn fan_out_from(
    cli: &Cli,
    base: &str,
    pid: u32,
    floor: bool,
    from: Start,
) -> anyhow::Result<Value> {
    let client = Client::new(base);
    let mut products = Vec::new();
    for n in 0..cli.stores {
        if floor {
            // Fresh ids each run: a price climbs from 1.00 per product.
            let id = format!("store-{n}-{}", Uuid::new_v4().simple());
            products.push((id.clone(), id));
            continue;
        }
        let store = client
            .post(
                "mutation($n: String!) { createStore(input: {name: $n, location: \"Hall\"}) { id } }",
                json!({ "n": format!("Fan-out {n}") }),
            )
            .await?["createStore"]["id"]
            .as_str()
            .context("store id")?
            .to_owned();
        let product = client
            .post(
                "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Ticker\", price: \"1.00\"}) { id } }",
                json!({ "s": store }),
            )
            .await?["addProduct"]["id"]
            .as_str()
            .context("product id")?
            .to_owned();
        products.push((store, product));
    }
    let changes = ((cli.fan_out_seconds as f64) * cli.rate).round().max(1.0) as usize;
    let before = subscriptions_active(base).await.unwrap_or(0);
    let rss_before = rss_kib(pid).unwrap_or(0);
    let sent: Sent = std::sync::Arc::new((0..cli.stores).map(|_| Default::default()).collect());
    let deadline = Instant::now() + Duration::from_secs(120 + cli.fan_out_seconds);
    let mut tasks = Vec::with_capacity(cli.subscribers);
    let (query, after) = match from {
        Start::Now => (
            "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor product { price } } }",
            Value::Null,
        ),
        Start::Cursor => (
            "subscription($s: ID!, $a: String) { catalogChanged(storeId: $s, after: $a) { cursor product { price } } }",
            json!("0"),
        ),
    };
    let subscribing = Instant::now();
    for batch in (0..cli.subscribers).collect::<Vec<_>>().chunks(100) {
        let connecting = batch.iter().map(|i| {
            let store = i % cli.stores;
            let mut variables = json!({ "s": products[store].0 });
            if !after.is_null() {
                variables["a"] = after.clone();
            }
            subscribe(base, query, variables)
        });
        for (i, ws) in batch
            .iter()
            .zip(futures_util::future::join_all(connecting).await)
        {
            let store = i % cli.stores;
            tasks.push(tokio::spawn(subscriber(
                ws?,
                store,
                sent.clone(),
                changes,
                deadline,
            )));
        }
    }
    let target = before + cli.subscribers as i64;
    while subscriptions_active(base).await.unwrap_or(0) < target {
        if Instant::now() > deadline {
            bail!("the subscriptions never all started");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resuming subscriptions replay on their own first; they are served
    // like the ones from now on once one execution per store is left.
    let executions_before = executions_active(base).await;
    let caught_up = match from {
        Start::Now => None,
        Start::Cursor => loop {
            let executions = executions_active(base).await.unwrap_or(i64::MAX);
            if executions <= cli.stores as i64 {
                break Some((subscribing.elapsed(), executions));
            }
            if Instant::now() > deadline {
                bail!("{executions} executions still serve the resumed subscriptions");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
    };
    let rss_idle = rss_kib(pid).unwrap_or(0);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let tick = Duration::from_secs_f64(1.0 / cli.rate);
    for seq in 1..=changes {
        let at = started + tick.mul_f64((seq - 1) as f64);
        tokio::time::sleep_until(at.into()).await;
        let sends = products.iter().enumerate().map(|(store, (_, product))| {
            if let Ok(mut s) = sent[store].lock() {
                s.push(Instant::now());
            }
            client.post(
                "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }",
                json!({ "p": product }),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result?;
        }
    }
    let rss_busy = rss_kib(pid).unwrap_or(0);
    let mut latencies = Latencies::default();
    for task in tasks {
        latencies.0.extend(task.await.unwrap_or_default());
    }
    let expected = cli.subscribers * changes;
    let elapsed = started.elapsed().as_secs_f64();
    // What serving the changes cost the process, per delivery made.
    let cpu = cpu_before
        .zip(cpu_seconds(pid))
        .map(|(before, after)| after - before);
    // The subscribers' sockets are closed: wait until the server has let go
    // of them, so the next run counts only its own.
    let gone = Instant::now() + Duration::from_secs(30);
    while subscriptions_active(base).await.unwrap_or(0) > before && Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut result = latencies.summary();
    result["delivered"] = json!(latencies.0.len());
    result["expected"] = json!(expected);
    result["deliveries_per_s"] = json!(latencies.0.len() as f64 / elapsed);
    result["cpu_s"] = json!(cpu);
    result["cpu_us_per_delivery"] =
        json!(cpu.map(|cpu| 1e6 * cpu / latencies.0.len().max(1) as f64));
    result["subscribers"] = json!(cli.subscribers);
    result["from"] = json!(match from {
        Start::Now => "now",
        Start::Cursor => "cursor 0",
    });
    result["executions_when_subscribed"] = json!(executions_before);
    if let Some((took, executions)) = caught_up {
        result["shared_after_s"] = json!(took.as_secs_f64());
        result["executions_shared"] = json!(executions);
    }
    result["stores"] = json!(cli.stores);
    result["changes_per_store"] = json!(changes);
    result["gateway_rss_kib"] =
        json!({ "before": rss_before, "idle_subscribed": rss_idle, "busy": rss_busy });
    result["rss_per_idle_subscription_kib"] =
        json!(rss_idle.saturating_sub(rss_before) as f64 / cli.subscribers as f64);
    Ok(result)
}
