//! The benchmark driver. It starts the system (`mallbots run`, a child
//! process, on the PostgreSQL and RabbitMQ of DATABASE_URL and AMQP_URL, in a
//! fresh database and under a fresh queue prefix) and the floors (a minimal
//! async-graphql server: `bench floor-server`, another child), then drives
//! them from this process as real clients would: HTTP and graphql-transport-ws.
//!
//! Scenarios: query throughput (`store(id)`, `catalog` of 50 products,
//! against the `{ hello }` and constant-50-object-list floors), command round
//! trip (mutation to reply, mutation to subscription push, one at a time),
//! subscription fan-out (latency, delivered vs expected, RSS), and projection
//! catch-up and rebuild (against a raw lapin publish-to-consume floor and a
//! multi-row upsert floor on PostgreSQL), and the limits (see `limits`).
//! `--only` picks some of them.

#[path = "bench/limits.rs"]
mod limits;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_graphql::{Object, Schema, SimpleObject};
use axum::serve::ListenerExt;
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

#[derive(Clone, Debug, Parser)]
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
    /// Clients reading `store(id)` while the command round trips are
    /// measured a second time, under load.
    #[arg(long, default_value_t = 10)]
    load_clients: usize,
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
    /// Fan-out sweep: rates doubled from an eighth of `--rate`, this many
    /// steps at most, each `--sweep-seconds` long, until p99 reaches 100 ms or a
    /// delivery is missing (0: no sweep).
    #[arg(long, default_value_t = 8)]
    sweep_steps: usize,
    #[arg(long, default_value_t = 5)]
    sweep_seconds: u64,
    /// Events queued for the search projection while it is stopped.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// A run of seconds, for CI: checks the bench works, measures nothing.
    #[arg(long)]
    tiny: bool,
    /// How long each hostile query is sent in the limits scenario, seconds.
    #[arg(long, default_value_t = 30)]
    hostile_seconds: u64,
    /// Run only these scenarios (comma-separated); all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Query,
    Command,
    FanOut,
    Projection,
    /// Token verification's cost, refusal times, hostile loads.
    Limits,
}

#[derive(Clone, Debug, Subcommand)]
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

/// The fan-out floor's state: one in-memory broadcast of (store, price).
struct FloorFeed {
    changes: tokio::sync::broadcast::Sender<(String, String)>,
    prices: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    active: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[derive(SimpleObject)]
struct FloorProduct {
    id: String,
    price: String,
}

#[derive(SimpleObject)]
struct FloorChange {
    cursor: String,
    product: FloorProduct,
}

struct FloorMutation;

#[Object]
impl FloorMutation {
    /// The fan-out floor's price change: the same call the bench makes on
    /// the system; a product's id is its store's.
    async fn increase_product_price(
        &self,
        ctx: &async_graphql::Context<'_>,
        product_id: async_graphql::ID,
        delta: String,
    ) -> async_graphql::Result<FloorProduct> {
        let product_id = product_id.to_string();
        let feed = ctx.data::<FloorFeed>()?;
        let step = (delta.parse::<f64>()? * 100.0).round() as i64;
        let cents = {
            let mut prices = feed.prices.lock().map_err(|_| "poisoned")?;
            let cents = prices.entry(product_id.clone()).or_insert(100);
            *cents += step;
            *cents
        };
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let _ = feed.changes.send((product_id.clone(), price.clone()));
        Ok(FloorProduct {
            id: product_id,
            price,
        })
    }
}

/// Counts a live floor subscription while it exists.
struct Active(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct FloorSubscription;

#[async_graphql::Subscription]
impl FloorSubscription {
    async fn catalog_changed(
        &self,
        ctx: &async_graphql::Context<'_>,
        store_id: async_graphql::ID,
    ) -> async_graphql::Result<impl futures_util::Stream<Item = FloorChange>> {
        let store_id = store_id.to_string();
        let feed = ctx.data::<FloorFeed>()?;
        feed.active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = (
            feed.changes.subscribe(),
            Active(feed.active.clone()),
            store_id,
            0u64,
        );
        Ok(futures_util::stream::unfold(
            state,
            |(mut changes, active, store, mut seq)| async move {
                loop {
                    match changes.recv().await {
                        Ok((changed, price)) if changed == store => {
                            seq += 1;
                            let change = FloorChange {
                                cursor: seq.to_string(),
                                product: FloorProduct { id: changed, price },
                            };
                            return Some((change, (changes, active, store, seq)));
                        }
                        // Another store's, or missed (the bench then counts
                        // fewer deliveries than expected).
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// The floors: a minimal async-graphql server on axum with nothing behind
/// it. `{ hello }` and a constant list for queries; for fan-out, the
/// `catalogChanged` subscription fed by one in-memory broadcast, the same
/// price-change mutation, and `/metrics` with the active subscriptions.
async fn floor_server(listen: SocketAddr) -> anyhow::Result<()> {
    let active = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let feed = FloorFeed {
        changes: tokio::sync::broadcast::channel(1024).0,
        prices: Default::default(),
        active: active.clone(),
    };
    let schema = Schema::build(FloorQuery, FloorMutation, FloorSubscription)
        .data(feed)
        .finish();
    let metrics = move || {
        let n = active.load(std::sync::atomic::Ordering::Relaxed);
        async move { format!("mallbots_subscriptions_active {n}\n") }
    };
    let app = axum::Router::new()
        .route(
            "/graphql",
            axum::routing::post_service(async_graphql_axum::GraphQL::new(schema.clone())),
        )
        .route(
            "/graphql/ws",
            axum::routing::get_service(async_graphql_axum::GraphQLSubscription::new(schema)),
        )
        .route("/metrics", axum::routing::get(metrics));
    // Like the gateway's listener: TCP_NODELAY on every connection.
    let listener = tokio::net::TcpListener::bind(listen)
        .await?
        .tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                eprintln!("floor: cannot set TCP_NODELAY: {err}");
            }
        });
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
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    load(base, query, variables, clients, seconds, never).await
}

/// As [`throughput`], ending early once `stop` is set.
async fn load(
    base: &str,
    query: &'static str,
    variables: Value,
    clients: usize,
    seconds: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Value {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = Client::new(base);
        let variables = variables.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
    result["requests_per_s"] = json!(done as f64 / started.elapsed().as_secs_f64());
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
        // The load comes from one address: the per-client limits would
        // measure themselves.
        .env("RATE_LIMIT_PER_SECOND", "100000000")
        .env("RATE_LIMIT_BURST", "100000000")
        .env("WS_MAX_CONNECTIONS", "1000000")
        .env("MAX_CONNECTIONS_PER_ADDRESS", "1000000")
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
        .declare(
            &QueueSpec::durable("search.events")
                .bind(Exchange::Events, "ordering.#")
                .single_active(),
        )
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

/// Broker floor: raw lapin, one connection, one durable queue, `messages`
/// persistent 300-byte messages with publisher confirms (up to 1,000 in
/// flight), consumed with prefetch 500 and acked one by one: messages/s from
/// the first publish to the last ack.
async fn broker_floor(cli: &Cli, messages: usize) -> anyhow::Result<Value> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    let (_, amqp_url) = services(cli)?;
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let queue = format!("bench-floor-{}", Uuid::new_v4().simple());
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    publisher
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await?;
    let consuming = connection.create_channel().await?;
    consuming.basic_qos(500, BasicQosOptions::default()).await?;
    let mut consumer = consuming
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let consumer_task = tokio::spawn(async move {
        let mut received = 0;
        while received < messages {
            let Some(delivery) = consumer.next().await else {
                break;
            };
            delivery?.acker.ack(BasicAckOptions::default()).await?;
            received += 1;
        }
        anyhow::Ok(received)
    });
    let body = vec![b'x'; 300];
    let properties = lapin::BasicProperties::default().with_delivery_mode(2);
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..messages {
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        in_flight.push_back(confirm);
        if in_flight.len() >= 1000
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.await?;
        }
    }
    for confirm in in_flight {
        confirm.await?;
    }
    let received = consumer_task.await??;
    let seconds = started.elapsed().as_secs_f64();
    publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    if received != messages {
        bail!("broker floor: {received} of {messages} consumed");
    }
    Ok(json!({
        "messages": messages,
        "seconds": seconds,
        "messages_per_s": messages as f64 / seconds,
    }))
}

/// PostgreSQL floor: `rows` rows shaped like the search model's (an id, a
/// body of about 700 bytes, a position) written as multi-row upserts, 1,000
/// rows a statement, in one transaction: rows/s.
async fn postgres_floor(cli: &Cli, rows: usize) -> anyhow::Result<Value> {
    use sea_orm::{Statement, TransactionTrait};
    let (database_url, _) = services(cli)?;
    let database = fresh_database(database_url).await?;
    let db = Database::connect(database.as_str()).await?;
    db.execute_unprepared(
        "CREATE TABLE floor_rows (id text PRIMARY KEY, body text NOT NULL, position bigint NOT NULL)",
    )
    .await?;
    let body = "x".repeat(700);
    let started = Instant::now();
    let txn = db.begin().await?;
    let mut written = 0;
    while written < rows {
        let n = (rows - written).min(1000);
        let mut sql = String::from("INSERT INTO floor_rows (id, body, position) VALUES ");
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(n * 3);
        for i in 0..n {
            let p = i * 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
            values.push(Uuid::now_v7().to_string().into());
            values.push(body.clone().into());
            values.push(((written + i) as i64).into());
        }
        sql.push_str(
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body, position = excluded.position",
        );
        txn.execute_raw(Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await?;
        written += n;
    }
    txn.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({ "rows": rows, "seconds": seconds, "rows_per_s": rows as f64 / seconds }))
}

/// A rate next to its floor's, as a percentage.
fn ratio(value: &Value, floor: &Value) -> String {
    match (value.as_f64(), floor.as_f64()) {
        (Some(v), Some(f)) if f > 0.0 => format!("{:.0}%", 100.0 * v / f),
        _ => "-".into(),
    }
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

/// The highest deliveries/s held with every delivery made and p99 under
/// 100 ms: fan-out at doubling rates until one step fails.
async fn sweep(cli: &Cli, base: &str, pid: u32, floor: bool) -> anyhow::Result<Value> {
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
/// On the floor server (`floor`), stores need no setting up: a product's id
/// is its store's.
async fn fan_out(cli: &Cli, base: &str, pid: u32, floor: bool) -> anyhow::Result<Value> {
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
        (cli.clients, cli.seconds, cli.samples, cli.load_clients) = (4, 1, 10, 2);
        (cli.subscribers, cli.stores, cli.fan_out_seconds, cli.rate) = (20, 2, 2, 2.0);
        (cli.sweep_steps, cli.sweep_seconds) = (1, 1);
        cli.events = 200;
        cli.hostile_seconds = 1;
    }
    let runs = |scenario| cli.only.is_empty() || cli.only.contains(&scenario);
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
    let (c, s) = (cli.clients, cli.seconds);
    let mut results = json!({
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "sizes": {
            "clients": c, "seconds": s, "samples": cli.samples,
            "subscribers": cli.subscribers, "stores": cli.stores, "rate": cli.rate,
            "fan_out_seconds": cli.fan_out_seconds, "events": cli.events,
        },
        "not_measured_yet": [
            "each distinct subscription executed once per event and its result shared (fan-out executes per subscriber)",
        ],
    });
    let mut table = vec![
        "scenario                           req/s       p50 ms    p99 ms  vs floor".to_owned(),
    ];
    if runs(Scenario::Query) {
        // The catalog read is served by the stores module's own tables: no wait.
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
        table.extend([
            row("store(id)", &store_q, Some(&hello)),
            row("  floor: { hello }", &hello, None),
            row("catalog(storeId) 50 products", &catalog, Some(&list)),
            row("  floor: constant 50-object list", &list, None),
        ]);
        results["query"] = json!({ "store": store_q, "hello_floor": hello, "catalog": catalog, "list_floor": list });
    }
    if runs(Scenario::Command) {
        eprintln!("command round trips: {} one at a time", cli.samples);
        let mut trips = round_trips(&base, &store, &product, cli.samples).await?;
        eprintln!(
            "command round trips under load: {} clients reading store(id) meanwhile",
            cli.load_clients
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background = {
            let (base, store, stop) = (base.clone(), store.clone(), stop.clone());
            let clients = cli.load_clients;
            tokio::spawn(async move {
                let query = "query($s: ID!) { store(id: $s) { id name location participating } }";
                load(&base, query, json!({ "s": store }), clients, 600, stop).await
            })
        };
        let loaded = round_trips(&base, &store, &product, cli.samples).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let background = background.await?;
        let loaded = loaded?;
        trips["under_load"] = json!({
            "load_clients": cli.load_clients,
            "load_requests_per_s": background["requests_per_s"],
            "mutation_to_reply": loaded["mutation_to_reply"],
            "mutation_to_push": loaded["mutation_to_push"],
            "delivered": loaded["delivered"],
            "expected": loaded["expected"],
        });
        table.extend([
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
            row(
                "mutation -> reply (under load)",
                &trips["under_load"]["mutation_to_reply"],
                None,
            ),
            row(
                "mutation -> push (under load)",
                &trips["under_load"]["mutation_to_push"],
                None,
            ),
            format!(
                "  the load: {} clients reading store(id), {:.0} req/s",
                cli.load_clients,
                trips["under_load"]["load_requests_per_s"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
        ]);
        results["command"] = trips;
    }
    if runs(Scenario::FanOut) {
        eprintln!(
            "fan-out: {} subscribers over {} stores, {} changes/store/s for {} s",
            cli.subscribers, cli.stores, cli.rate, cli.fan_out_seconds
        );
        let pid = system.id().context("the system's pid")?;
        let fan = fan_out(&cli, &base, pid, false).await?;
        let floor_pid = floor.id().context("the floor's pid")?;
        let fan_floor = fan_out(&cli, &floor_base, floor_pid, true).await?;
        for (name, fan) in [
            ("fan-out", &fan),
            ("  floor: in-memory broadcast", &fan_floor),
        ] {
            table.push(format!(
                "{name}: {} subscribers, {}/{} delivered, {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} KiB RSS per idle subscription",
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
            ));
        }
        results["fan_out_floor"] = fan_floor;
        if cli.sweep_steps > 0 {
            eprintln!("fan-out sweep: doubling rates until p99 reaches 100 ms");
            let system_sweep = sweep(&cli, &base, pid, false).await?;
            let floor_sweep = sweep(&cli, &floor_base, floor_pid, true).await?;
            let highest = |v: &Value| {
                v["highest_held_deliveries_per_s"]
                    .as_f64()
                    .map_or_else(|| "none".to_owned(), |r| format!("{r:.0} deliveries/s"))
            };
            table.push(format!(
                "fan-out held (p99 < 100 ms, none lost): {}; floor {}; {}",
                highest(&system_sweep),
                highest(&floor_sweep),
                ratio(
                    &system_sweep["highest_held_deliveries_per_s"],
                    &floor_sweep["highest_held_deliveries_per_s"]
                ),
            ));
            results["fan_out_sweep"] = json!({ "system": system_sweep, "floor": floor_sweep });
        }
        results["fan_out"] = fan;
    }
    let _ = system.kill().await;
    let _ = floor.kill().await;
    if runs(Scenario::Projection) {
        eprintln!(
            "projection: {} events queued, then search starts",
            cli.events
        );
        let projected = projection(&cli).await?;
        eprintln!("floors: raw lapin publish -> consume, PostgreSQL multi-row upserts");
        let broker = broker_floor(&cli, cli.events.min(50_000)).await?;
        let postgres = postgres_floor(&cli, cli.events).await?;
        table.extend([
            format!(
                "projection catch-up: {} events, {:.0} events/s ({:.1} s), {} of the broker floor",
                projected["events"],
                projected["catch_up_events_per_s"].as_f64().unwrap_or(0.0),
                projected["catch_up_s"].as_f64().unwrap_or(f64::NAN),
                ratio(
                    &projected["catch_up_events_per_s"],
                    &broker["messages_per_s"]
                ),
            ),
            format!(
                "  floor: raw lapin, one queue, confirms, persistent: {:.0} messages/s",
                broker["messages_per_s"].as_f64().unwrap_or(0.0),
            ),
            format!(
                "rebuild: {:.0} events/s ({:.1} s), {} of the PostgreSQL floor",
                projected["rebuild_events_per_s"].as_f64().unwrap_or(0.0),
                projected["rebuild_s"].as_f64().unwrap_or(f64::NAN),
                ratio(&projected["rebuild_events_per_s"], &postgres["rows_per_s"]),
            ),
            format!(
                "  floor: PostgreSQL multi-row upserts: {:.0} rows/s",
                postgres["rows_per_s"].as_f64().unwrap_or(0.0),
            ),
        ]);
        results["projection"] = projected;
        results["broker_floor"] = broker;
        results["postgres_floor"] = postgres;
    }
    if runs(Scenario::Limits) {
        eprintln!(
            "limits: token cost, refusal times, {} s of each hostile query",
            cli.hostile_seconds
        );
        let (measured, rows) = limits::limits(&cli).await?;
        table.extend(rows);
        results["limits"] = measured;
    }
    println!("{}", table.join("\n"));
    std::fs::write(&cli.json, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results written to {}", cli.json.display());
    for trips in [&results["command"], &results["command"]["under_load"]] {
        if trips["delivered"] != trips["expected"] {
            bail!("pushes delivered != expected: {trips}");
        }
    }
    for fan in ["fan_out", "fan_out_floor"] {
        if results[fan]["delivered"] != results[fan]["expected"] {
            bail!("{fan}: delivered != expected: {}", results[fan]);
        }
    }
    for r in [&results["query"]["store"], &results["query"]["catalog"]] {
        if r["failed"] != 0 && !r.is_null() {
            bail!("failed requests: {r}");
        }
    }
    Ok(())
}
