//! The benchmark driver. It starts the system (`mallbots run`, a child
//! process, on the PostgreSQL and RabbitMQ of DATABASE_URL and AMQP_URL, in a
//! fresh database and under a fresh queue prefix) and the floors (a minimal
//! async-graphql server: `bench floor-server`, another child), then drives
//! them from this process as real clients would: HTTP and graphql-transport-ws.
//!
//! Scenarios done so far: query throughput (`store(id)`, `catalog` of 50
//! products, against the `{ hello }` and constant-50-object-list floors),
//! command round trip (mutation to reply, mutation to subscription push, one
//! at a time) and subscription fan-out (latency, delivered vs expected, RSS).
//! Projection throughput and the remaining floors are not written yet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "MallBots benchmarks, each next to its floor")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Concurrent HTTP clients in the query scenario.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// How long each query measurement runs, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Mutations in the command round-trip scenario.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Subscribers in the fan-out scenario (`catalogChanged`).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Stores the fan-out subscribers are spread over.
    #[arg(long, default_value_t = 10)]
    stores: usize,
    /// Price changes per store per second in the fan-out scenario.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long the fan-out scenario changes prices, in seconds.
    #[arg(long, default_value_t = 10)]
    fan_out_seconds: u64,
    /// Events queued for the search projection while it is stopped.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// A run of seconds, for CI: checks the bench works, measures nothing.
    #[arg(long)]
    tiny: bool,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// PostgreSQL server to create the bench database on.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The RabbitMQ the system under test uses.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The floor: a minimal async-graphql server on axum (`{ hello }` and a
    /// constant list of 50 objects), the same stack as the gateway.
    FloorServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(SimpleObject, Clone)]
struct Item {
    id: String,
    name: String,
    description: String,
    sku: String,
    price: String,
}

struct FloorQuery;

#[Object]
impl FloorQuery {
    async fn hello(&self) -> &str {
        "world"
    }
    async fn list(&self) -> Vec<Item> {
        (0..50)
            .map(|n| Item {
                id: format!("01900000-0000-7000-8000-{n:012}"),
                name: format!("Product {n}"),
                description: "a book".into(),
                sku: format!("B-{n}"),
                price: "9.99".into(),
            })
            .collect()
    }
}

async fn floor_server(listen: SocketAddr) -> anyhow::Result<()> {
    let schema = Schema::new(FloorQuery, EmptyMutation, EmptySubscription);
    let app = axum::Router::new().route(
        "/graphql",
        axum::routing::post_service(async_graphql_axum::GraphQL::new(schema)),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Latencies, summarized.
#[derive(Debug, Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
    fn summary(&mut self) -> Value {
        json!({
            "count": self.0.len(),
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "max_ms": self.percentile(1.0),
        })
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(base: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            url: format!("{base}/graphql"),
        }
    }

    async fn post(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = response.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].clone())
    }
}

/// `clients` loops posting `query` for `seconds`: requests/s and latencies.
async fn throughput(
    base: &str,
    query: &'static str,
    variables: Value,
    clients: usize,
    seconds: u64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Client::new(base);
        let variables = variables.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let start = Instant::now();
                match client.post(query, variables.clone()).await {
                    Ok(_) => {
                        done += 1;
                        latencies.push(start.elapsed());
                    }
                    Err(_) => failed += 1,
                }
            }
            (done, failed, latencies)
        }));
    }
    let (mut done, mut failed, mut all) = (0, 0, Latencies::default());
    for task in tasks {
        if let Ok((d, f, l)) = task.await {
            done += d;
            failed += f;
            all.0.extend(l);
        }
    }
    let mut result = all.summary();
    result["requests_per_s"] = json!(done as f64 / seconds as f64);
    result["failed"] = json!(failed);
    result
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{base} never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?)
}

/// The `mallbots` binary next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

/// A fresh database on the server of `url`; returns its URL.
async fn fresh_database(url: &str) -> anyhow::Result<String> {
    let name = format!("mallbots_bench_{}", Uuid::new_v4().simple());
    let admin = Database::connect(url)
        .await
        .context("PostgreSQL (DATABASE_URL)")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    let base = url.rsplit_once('/').context("DATABASE_URL has no path")?.0;
    Ok(format!("{base}/{name}"))
}

/// The real services: (PostgreSQL server URL, RabbitMQ URL).
fn services(cli: &Cli) -> anyhow::Result<(&str, &str)> {
    match (&cli.database_url, &cli.amqp_url) {
        (Some(db), Some(amqp)) => Ok((db, amqp)),
        _ => bail!(
            "the bench runs on the real services: set DATABASE_URL and AMQP_URL (scripts/bench does)"
        ),
    }
}

/// `mallbots <args>` on `database`, under the queue-name `prefix`.
fn mallbots(args: &[&str], database: &str, amqp: &str, prefix: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(sibling("mallbots")?);
    command
        .args(args)
        .env("DATABASE_URL", database)
        .env("AMQP_URL", amqp)
        .env("AMQP_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

fn fresh_prefix() -> String {
    format!("bench-{}.", Uuid::new_v4().simple())
}

async fn start_system(cli: &Cli, addr: SocketAddr) -> anyhow::Result<Child> {
    let (database_url, amqp_url) = services(cli)?;
    let database = fresh_database(database_url).await?;
    mallbots(&["run"], &database, amqp_url, &fresh_prefix())?
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .context("cannot start mallbots (build it first)")
}

/// How far the search projection has applied the ordering module's events.
async fn search_checkpoint(db: &sea_orm::DatabaseConnection) -> anyhow::Result<i64> {
    let statement = sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT position FROM search.checkpoints WHERE source = 'ordering'",
    );
    Ok(match db.query_one_raw(statement).await? {
        Some(row) => row.try_get::<i64>("", "position")?,
        None => 0,
    })
}

/// Projection: `events` new orders queued while the search module is not
/// running, then it starts: events/s to catch up. Then the rebuild of the
/// same model from its archive, timed.
async fn projection(cli: &Cli) -> anyhow::Result<Value> {
    use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
    use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec};
    let (database_url, amqp_url) = services(cli)?;
    let database = fresh_database(database_url).await?;
    let prefix = fresh_prefix();
    let db = Database::connect(database.as_str()).await?;
    let broker = RabbitBroker::connect(RabbitConfig {
        url: amqp_url.to_owned(),
        prefix: prefix.clone(),
        quorum_queues: false,
    })
    .await?;
    // The search module's durable queue as it declares it (for ordering's
    // events): what is published now waits there until search starts.
    broker
        .declare(&QueueSpec::durable("search.events").bind(Exchange::Events, "ordering.#"))
        .await?;
    let (customer_id, store_id, product_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut batch = Vec::new();
    for n in 1..=cli.events {
        // Orders: each one a search row with its items (what a rebuild rewrites).
        let now = chrono::Utc::now();
        let event =
            mallbots_contracts::ordering::OrderCreated(mallbots_contracts::ordering::OrderView {
                order_id: Uuid::now_v7(),
                customer_id,
                payment_id: Uuid::now_v7(),
                basket_id: Uuid::now_v7(),
                shopping_list_id: None,
                items: vec![mallbots_contracts::common::LineItem {
                    store_id,
                    store_name: "Bench Books".into(),
                    product_id,
                    product_name: "Ticker".into(),
                    price: rust_decimal::Decimal::new(999, 2),
                    quantity: 1,
                }],
                total: rust_decimal::Decimal::new(999, 2),
                status: mallbots_contracts::ordering::OrderStatus::Pending,
                rejection: None,
                created_at: now,
                occurred_at: now,
            });
        let mut envelope = Envelope::new(&event)?;
        envelope.headers.insert(
            mallbots_platform::envelope::HEADER_POSITION.to_owned(),
            n.to_string(),
        );
        let key = "ordering.Order.OrderCreated".to_owned();
        batch.push((Exchange::Events, key, envelope.to_wire()));
        if batch.len() == 1000 || n == cli.events {
            broker.publish_all(std::mem::take(&mut batch)).await?;
        }
    }
    let started = Instant::now();
    let mut search = mallbots(&["run", "search"], &database, amqp_url, &prefix)?.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while search_checkpoint(&db).await.unwrap_or(0) < cli.events as i64 {
        if Instant::now() > deadline {
            bail!("the projection did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catch_up = started.elapsed().as_secs_f64();
    let rebuilding = Instant::now();
    let status = mallbots(&["rebuild", "search"], &database, amqp_url, &prefix)?
        .status()
        .await?;
    let rebuild = rebuilding.elapsed().as_secs_f64();
    let _ = search.kill().await;
    if !status.success() {
        bail!("mallbots rebuild search failed: {status}");
    }
    Ok(json!({
        "events": cli.events,
        "catch_up_s": catch_up,
        "catch_up_events_per_s": cli.events as f64 / catch_up,
        "rebuild_s": rebuild,
        "rebuild_events_per_s": cli.events as f64 / rebuild,
    }))
}

/// A store taking part, with 50 products: (store id, first product id).
async fn setup(client: &Client) -> anyhow::Result<(String, String)> {
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(base: &str, query: &str, variables: Value) -> anyhow::Result<Ws> {
    let url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let send = |v: Value| WsMessage::Text(v.to_string().into());
    ws.send(send(json!({ "type": "connection_init" }))).await?;
    ws.next().await.context("connection_ack")??;
    ws.send(send(json!({ "type": "subscribe", "id": "1",
        "payload": { "query": query, "variables": variables } })))
        .await?;
    Ok(ws)
}

/// Mutation to reply, and mutation to the subscription's push, one at a time.
async fn round_trips(
    base: &str,
    store: &str,
    product: &str,
    samples: usize,
) -> anyhow::Result<Value> {
    let client = Client::new(base);
    let mut ws = subscribe(
        base,
        "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor product { price } } }",
        json!({ "s": store }),
    )
    .await?;
    // The subscription is live once a change made after it arrives.
    let mut replies = Latencies::default();
    let mut pushes = Latencies::default();
    let mut delivered = 0;
    for n in 0..samples + 1 {
        let start = Instant::now();
        client
            .post(
                "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }",
                json!({ "p": product }),
            )
            .await?;
        let replied = start.elapsed();
        let pushed = loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .context("no push within 10 s")?
                .context("the websocket closed")??;
            if let WsMessage::Text(text) = frame {
                let message: Value = serde_json::from_str(&text)?;
                if message["type"] == "next" {
                    break start.elapsed();
                }
            }
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
    }))
}

/// The resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Live subscriptions the gateway counts (its `/metrics`).
async fn subscriptions_active(base: &str) -> Option<i64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("mallbots_subscriptions_active "))?
        .trim()
        .parse()
        .ok()
}

/// When each price change was sent: `[store][seq]`.
type Sent = std::sync::Arc<Vec<std::sync::Mutex<Vec<Instant>>>>;

/// One subscriber: the latency of each change it receives, until it has
/// `expected` of them or `deadline`.
async fn subscriber(
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

/// Fan-out: `subscribers` `catalogChanged` subscriptions spread over
/// `stores` stores, each store's price changed `rate` times a second.
async fn fan_out(cli: &Cli, base: &str, pid: u32) -> anyhow::Result<Value> {
    let client = Client::new(base);
    let mut products = Vec::new();
    for n in 0..cli.stores {
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
    let query =
        "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor product { price } } }";
    for batch in (0..cli.subscribers).collect::<Vec<_>>().chunks(100) {
        let connecting = batch.iter().map(|i| {
            let store = i % cli.stores;
            subscribe(base, query, json!({ "s": products[store].0 }))
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
    let rss_idle = rss_kib(pid).unwrap_or(0);
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
    let mut result = latencies.summary();
    result["delivered"] = json!(latencies.0.len());
    result["expected"] = json!(expected);
    result["deliveries_per_s"] = json!(latencies.0.len() as f64 / elapsed);
    result["subscribers"] = json!(cli.subscribers);
    result["stores"] = json!(cli.stores);
    result["changes_per_store"] = json!(changes);
    result["gateway_rss_kib"] =
        json!({ "before": rss_before, "idle_subscribed": rss_idle, "busy": rss_busy });
    result["rss_per_idle_subscription_kib"] =
        json!(rss_idle.saturating_sub(rss_before) as f64 / cli.subscribers as f64);
    Ok(result)
}

fn row(name: &str, result: &Value, floor: Option<&Value>) -> String {
    let rate = result["requests_per_s"].as_f64();
    let ratio = match (rate, floor.and_then(|f| f["requests_per_s"].as_f64())) {
        (Some(r), Some(f)) if f > 0.0 => format!("{:.0}%", 100.0 * r / f),
        _ => "-".into(),
    };
    format!(
        "{name:<34} {:>10} {:>9.2} {:>9.2} {:>8}",
        rate.map_or("-".into(), |r| format!("{r:.0}")),
        result["p50_ms"].as_f64().unwrap_or(f64::NAN),
        result["p99_ms"].as_f64().unwrap_or(f64::NAN),
        ratio
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Sub::FloorServer { listen }) = cli.command {
        return floor_server(listen).await;
    }
    if cli.tiny {
        (cli.clients, cli.seconds, cli.samples) = (4, 1, 10);
        (cli.subscribers, cli.stores, cli.fan_out_seconds, cli.rate) = (20, 2, 2, 2.0);
        cli.events = 200;
    }
    let (system_addr, floor_addr) = (free_addr()?, free_addr()?);
    let mut system = start_system(&cli, system_addr).await?;
    let mut floor = Command::new(std::env::current_exe()?)
        .args(["floor-server", "--listen", &floor_addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let (base, floor_base) = (
        format!("http://{system_addr}"),
        format!("http://{floor_addr}"),
    );
    wait_ready(&base).await?;
    wait_listening(floor_addr).await?;
    let client = Client::new(&base);
    let (store, product) = setup(&client).await?;
    // The catalog read is served by the stores module's own tables: no wait.
    let (c, s) = (cli.clients, cli.seconds);
    eprintln!("query throughput: {c} clients x {s} s each");
    let store_q = throughput(
        &base,
        "query($s: ID!) { store(id: $s) { id name location participating } }",
        json!({ "s": store }),
        c,
        s,
    )
    .await;
    let hello = throughput(&floor_base, "{ hello }", json!({}), c, s).await;
    let catalog = throughput(&base, "query($s: ID!) { catalog(storeId: $s, first: 50) { edges { node { id name description sku price } } } }", json!({ "s": store }), c, s).await;
    let list = throughput(
        &floor_base,
        "{ list { id name description sku price } }",
        json!({}),
        c,
        s,
    )
    .await;
    eprintln!("command round trips: {} one at a time", cli.samples);
    let trips = round_trips(&base, &store, &product, cli.samples).await?;
    eprintln!(
        "fan-out: {} subscribers over {} stores, {} changes/store/s for {} s",
        cli.subscribers, cli.stores, cli.rate, cli.fan_out_seconds
    );
    let pid = system.id().context("the system's pid")?;
    let fan = fan_out(&cli, &base, pid).await?;
    eprintln!(
        "projection: {} events queued, then search starts",
        cli.events
    );
    let projected = projection(&cli).await?;

    let table = [
        "scenario                           req/s       p50 ms    p99 ms  vs floor".to_owned(),
        row("store(id)", &store_q, Some(&hello)),
        row("  floor: { hello }", &hello, None),
        row("catalog(storeId) 50 products", &catalog, Some(&list)),
        row("  floor: constant 50-object list", &list, None),
        row(
            "mutation -> reply (one at a time)",
            &trips["mutation_to_reply"],
            None,
        ),
        row(
            "mutation -> push (one at a time)",
            &trips["mutation_to_push"],
            None,
        ),
        format!(
            "fan-out: {} subscribers, {}/{} delivered, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} KiB RSS per idle subscription",
            fan["subscribers"],
            fan["delivered"],
            fan["expected"],
            fan["deliveries_per_s"].as_f64().unwrap_or(0.0),
            fan["p50_ms"].as_f64().unwrap_or(f64::NAN),
            fan["p99_ms"].as_f64().unwrap_or(f64::NAN),
            fan["max_ms"].as_f64().unwrap_or(f64::NAN),
            fan["rss_per_idle_subscription_kib"]
                .as_f64()
                .unwrap_or(f64::NAN),
        ),
        format!(
            "projection: {} events, catch-up {:.0} events/s ({:.1} s), rebuild {:.0} events/s ({:.1} s)",
            projected["events"],
            projected["catch_up_events_per_s"].as_f64().unwrap_or(0.0),
            projected["catch_up_s"].as_f64().unwrap_or(f64::NAN),
            projected["rebuild_events_per_s"].as_f64().unwrap_or(0.0),
            projected["rebuild_s"].as_f64().unwrap_or(f64::NAN),
        ),
    ];
    println!("{}", table.join("\n"));
    let results = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "sizes": { "clients": c, "seconds": s, "samples": cli.samples },
        "query": { "store": store_q, "hello_floor": hello, "catalog": catalog, "list_floor": list },
        "command": trips,
        "fan_out": fan,
        "projection": projected,
        "not_measured_yet": ["fan-out floor and the highest rate held under 100 ms p99", "command round trip under load", "broker and PostgreSQL floors"],
    });
    std::fs::write(&cli.json, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results written to {}", cli.json.display());
    let _ = system.kill().await;
    let _ = floor.kill().await;
    if results["command"]["delivered"] != results["command"]["expected"] {
        bail!("pushes delivered != expected: {}", results["command"]);
    }
    if results["fan_out"]["delivered"] != results["fan_out"]["expected"] {
        bail!("fan-out delivered != expected: {}", results["fan_out"]);
    }
    for r in [&results["query"]["store"], &results["query"]["catalog"]] {
        if r["failed"] != 0 {
            bail!("failed requests: {r}");
        }
    }
    Ok(())
}
