//! `spawn_app()`: the real system on port 0, embedded (SQLite + in-process
//! broker) or on the real PostgreSQL and RabbitMQ that scripts/test starts.
//! Each app gets its own database and its own broker name prefix, so tests
//! run in parallel without seeing each other. Clients speak only GraphQL over
//! HTTP and websocket.
#![allow(dead_code)]

pub mod logs;
pub mod raisers;
pub mod shop;
pub mod split;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mallbots_gateway::{Part, Running, Settings};
use mallbots_platform::Broker;
use mallbots_platform::db::DatabaseConfig;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream as MaybeTls;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// The modules that handle commands, each on its queue `<module>.commands`.
pub const COMMAND_MODULES: [&str; 6] = [
    "stores",
    "customers",
    "baskets",
    "payments",
    "ordering",
    "depot",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Real,
}

pub struct TestApp {
    pub base: String,
    pub settings: Settings,
    pub running: Option<Running>,
    pub http: reqwest::Client,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the real-service tests need it; run them with scripts/test")
    })
}

/// Settings for a fresh, isolated system on `backend`.
pub async fn settings(backend: Backend) -> Settings {
    let id = Uuid::new_v4().simple().to_string();
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        database_url: None,
        data_dir: std::env::temp_dir().join(format!("mallbots-test-{id}")),
        amqp_url: None,
        amqp_ca_file: None,
        amqp_prefix: String::new(),
        amqp_quorum_queues: false,
        command_timeout_ms: 10_000,
        max_body_bytes: 64 * 1024,
        notifications_webhook_url: None,
        subscription_buffer: 1024,
        consistency_timeout_ms: 10_000,
        socket_send_buffer: None,
        no_migrate: false,
        migrate_lock_wait_ms: 60_000,
        search_batch: mallbots_search::BATCH,
        shutdown_drain_ms: 0,
        ws_init_timeout_ms: 3000,
        http_read_timeout_ms: 30_000,
        max_query_depth: 10,
        max_query_complexity: 5000,
        max_aliases: 30,
        max_page_size: 100,
        max_directives: 5,
        ws_max_subscriptions: 100,
        message_retention_secs: 7 * 24 * 3600,
        change_log_retention_secs: 30 * 24 * 3600,
        shutdown_grace_ms: 10_000,
        auth_jwt_secret: None,
        auth_jwt_public_key: None,
        auth_jwt_issuer: None,
        auth_jwt_audience: None,
        // Tests drive many requests and sockets from one address; the
        // limits' own tests lower these.
        rate_limit_per_second: 1_000_000,
        rate_limit_burst: 1_000_000,
        ws_max_connections: 100_000,
        max_connections_per_address: 100_000,
        cors_origins: Vec::new(),
        introspection: true,
    };
    if backend == Backend::Real {
        settings.database_url = Some(fresh_database("TEST_DATABASE_URL").await);
        settings.amqp_url = Some(required_env("TEST_AMQP_URL"));
        settings.amqp_prefix = format!("test-{id}.");
    }
    settings
}

/// A new database of its own on the PostgreSQL the variable `admin_env`
/// names; its URL.
pub async fn fresh_database(admin_env: &str) -> String {
    let admin_url = required_env(admin_env);
    let admin = Database::connect(admin_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL ({admin_env}) is unreachable: {e}"));
    let name = format!("mallbots_test_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the test database");
    admin.close().await.ok();
    let base = admin_url.rsplit_once('/').expect("URL has a path").0;
    format!("{base}/{name}")
}

/// A participating store named `name` with `n` products at 1.00, and a
/// client following its catalog live (`catalogChanged`): (store, products,
/// the follower).
pub async fn followed_catalog(
    app: &TestApp,
    name: &str,
    n: usize,
) -> (String, Vec<String>, WsClient) {
    let store = shop::store(app, name, "Floor").await;
    let mut products = Vec::with_capacity(n);
    for i in 0..n {
        products.push(shop::product(app, &store, &format!("{name} {i}"), "1.00").await);
    }
    let live = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor kind product { id price } } }",
            json!({ "s": store }),
        )
        .await;
    app.wait_for_subscriptions(1).await;
    (store, products, live)
}

/// A price as whole cents ("1.23" is 123).
pub fn cents(price: &Value) -> i64 {
    let price: rust_decimal::Decimal = price.as_str().expect("a price").parse().expect("a decimal");
    (price * rust_decimal::Decimal::ONE_HUNDRED)
        .try_into()
        .expect("cents")
}

impl TestApp {
    /// Waits until `/readyz` says 200 (the gateway may not listen yet).
    pub async fn wait_ready(&self, what: &str) {
        wait_until(what, || async {
            let ready = self
                .http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;
    }

    /// `/readyz`'s status.
    pub async fn readyz(&self) -> u16 {
        self.readiness().await.0
    }

    /// `/readyz`'s status and what it says.
    pub async fn readiness(&self) -> (u16, String) {
        let response = self.http.get(format!("{}/readyz", self.base)).send().await;
        let response = response.expect("/readyz answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("/readyz's body"))
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    start_with(settings(backend).await).await
}

pub async fn start_with(settings: Settings) -> TestApp {
    start_parts(settings, &[Part::All]).await
}

/// Starts `parts` of the system (the gateway among them) in this process.
pub async fn start_parts(settings: Settings, parts: &[Part]) -> TestApp {
    logs::install();
    let running = mallbots_gateway::start(settings.clone(), parts)
        .await
        .expect("the system starts");
    let addr = running.addr.expect("the gateway listens");
    TestApp {
        base: format!("http://{addr}"),
        settings,
        running: Some(running),
        http: reqwest::Client::new(),
    }
}

/// The sum of every sample of `name` in a `/metrics` text whose labels
/// include each of `labels` (`key="value"`); none: `name` has no such sample.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, set) = match series.split_once('{') {
            Some((metric, set)) => (metric, set.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches =
            metric == name && labels.iter().all(|l| set.split(',').any(|pair| pair == *l));
        if matches && let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

impl TestApp {
    /// The text of the gateway's `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send().await;
        response.expect("/metrics").text().await.expect("text")
    }

    pub fn broker(&self) -> Arc<dyn Broker> {
        self.running.as_ref().expect("running").broker.clone()
    }

    /// The stores module's own database, for checks no API exposes (what was stored).
    pub async fn stores_db(&self) -> DatabaseConnection {
        self.db("stores").await
    }

    /// A module's own database, for checks and damage no API allows.
    pub async fn db(&self, module: &str) -> DatabaseConnection {
        let config = DatabaseConfig::from_url_or_dir(
            self.settings.database_url.as_deref(),
            &self.settings.data_dir,
        )
        .unwrap();
        config.connect(module).await.unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// POSTs `body` (any JSON) to `/graphql`.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/graphql", self.base))
            .json(body)
            .send()
            .await
            .expect("POST /graphql")
    }

    /// POSTs a GraphQL request and returns the JSON response (any status).
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .post(&json!({ "query": query, "variables": variables }))
            .await;
        response.json().await.expect("a JSON response")
    }

    /// Like [`graphql`], asserting there are no errors; returns `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let response = self.graphql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.settings.data_dir.clone()
    }

    /// Waits until the gateway counts at least `n` live subscriptions.
    pub async fn wait_for_subscriptions(&self, n: i64) {
        wait_until("the subscription to be registered", || async {
            let text = self
                .http
                .get(format!("{}/metrics", self.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let active = metric(&text, "mallbots_subscriptions_active", &[])?;
            (active >= n as f64).then_some(())
        })
        .await;
    }

    /// Waits until `/metrics` shows exactly `subscriptions` subscriptions to
    /// `field` and `executions` shared executions serving them.
    pub async fn wait_for_shared(&self, field: &str, subscriptions: f64, executions: f64) {
        let label = format!("field=\"{field}\"");
        wait_until("the subscriptions and their executions", || async {
            let text = self.metrics().await;
            let active = metric(&text, "mallbots_subscriptions_active", &[&label]);
            let shared = metric(&text, "mallbots_subscription_executions_active", &[&label]);
            (active == Some(subscriptions) && shared.unwrap_or(0.0) == executions).then_some(())
        })
        .await;
    }

    pub async fn subscribe(&self, protocol: &str, query: &str, variables: Value) -> WsClient {
        WsClient::connect(&self.base, protocol, query, variables, None).await
    }

    /// A `graphql-transport-ws` subscription whose socket takes in at most
    /// about `bytes` before the client reads: a slow client.
    pub async fn subscribe_slow(&self, query: &str, variables: Value, bytes: u32) -> WsClient {
        WsClient::connect(
            &self.base,
            "graphql-transport-ws",
            query,
            variables,
            Some(bytes),
        )
        .await
    }

    /// POSTs a GraphQL request with extra headers; returns the status and JSON.
    pub async fn graphql_with(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /graphql");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON response"))
    }
}

/// Runs the async test fn `$name(Backend)` on both backends: a module
/// `$name` with tests `embedded` and `real`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name($crate::common::Backend::Embedded).await
            }
            #[tokio::test]
            async fn real() {
                super::$name($crate::common::Backend::Real).await
            }
        }
    };
}

/// Asserts `body` was refused: its first error has `code` and `message`.
pub fn assert_refused(body: &Value, code: &str, message: &str) {
    assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    assert_eq!(body["errors"][0]["message"], message, "{body}");
}

/// What a request under an `Idempotency-Key` used for another one gets.
pub const KEY_REUSED: &str =
    "this Idempotency-Key was used for a different request: send a new key with a new request";

/// Polls `check` until it yields a value, failing the test at the deadline.
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket GraphQL client speaking `graphql-transport-ws` or `graphql-ws`.
pub struct WsClient {
    ws: Ws,
    protocol: String,
}

impl WsClient {
    async fn connect(
        base: &str,
        protocol: &str,
        query: &str,
        variables: Value,
        receive_buffer: Option<u32>,
    ) -> Self {
        let mut client = WsClient::open(base, protocol, receive_buffer).await;
        client
            .send(json!({ "type": "connection_init", "payload": {} }))
            .await;
        let ack = client.next_message().await;
        assert_eq!(ack["type"], "connection_ack", "got {ack}");
        let start = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        client
            .send(json!({ "type": start, "id": "1", "payload": { "query": query, "variables": variables } }))
            .await;
        client
    }

    /// A connected socket on which nothing was said yet (not even
    /// `connection_init`).
    pub async fn open(base: &str, protocol: &str, receive_buffer: Option<u32>) -> Self {
        let url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let stream = socket.connect(addr).await.expect("TCP connects");
        let (ws, response) = tokio_tungstenite::client_async(request, MaybeTls::Plain(stream))
            .await
            .expect("websocket connects");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol)
        );
        WsClient {
            ws,
            protocol: protocol.to_owned(),
        }
    }

    /// The socket itself, to send frames no protocol message is.
    pub fn raw(&mut self) -> &mut Ws {
        &mut self.ws
    }

    pub async fn send(&mut self, message: Value) {
        self.ws
            .send(WsMessage::Text(message.to_string().into()))
            .await
            .expect("websocket send");
    }

    /// Closes the connection (the client goes away).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The next protocol message, whatever it is (keep-alives skipped).
    pub async fn next_message(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a websocket message before the deadline")
                .expect("the websocket stays open")
                .expect("a websocket frame");
            match frame {
                WsMessage::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    // Keep-alives of the legacy protocol carry nothing.
                    if value["type"] == "ka" {
                        continue;
                    }
                    return value;
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("unexpected websocket frame {other:?}"),
            }
        }
    }

    /// The next pushed result's `data` (fails on an error or the deadline).
    pub async fn next_data(&mut self) -> Value {
        let message = self.next_message().await;
        let data_type = if self.protocol == "graphql-ws" {
            "data"
        } else {
            "next"
        };
        assert_eq!(message["type"], data_type, "got {message}");
        assert!(
            message["payload"].get("errors").is_none(),
            "pushed errors: {message}"
        );
        message["payload"]["data"].clone()
    }
}

impl WsClient {
    /// The next message's type, or `close <code>` when the server closes
    /// the socket instead.
    pub async fn next_message_or_close(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a message or a close before the deadline");
            match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    return value["type"].as_str().unwrap_or_default().to_owned();
                }
                Some(Ok(WsMessage::Close(close))) => {
                    return format!("close {}", close.map(|c| u16::from(c.code)).unwrap_or(0));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("the socket failed: {err}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    }

    /// Reads until the server closes the socket; its close code (skipping
    /// any other message).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("the server closes before the deadline");
            match frame {
                Some(Ok(WsMessage::Close(Some(close)))) => return close.code.into(),
                Some(Ok(WsMessage::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("the socket failed instead of closing: {err}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    }
}

/// The `mallbots` binary as a process of its own (to kill it, or to send it
/// signals): started on a free port with `args` and `envs`; returned once it
/// runs, with its gateway's base URL (empty when it runs no gateway), both
/// read from its start-up log.
pub struct Process {
    pub child: tokio::process::Child,
    pub base: String,
}

pub async fn launch(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> Process {
    launch_until(args, envs, true).await
}

/// [`launch`], returned as soon as the process listens (its gateway's, or
/// its `/metrics` door's address in `base`), while it may still be starting.
pub async fn launch_listening(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> Process {
    launch_until(args, envs, false).await
}

async fn launch_until(args: &[&std::ffi::OsStr], envs: &[(&str, &str)], running: bool) -> Process {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Many requests and sockets from one address (see `settings`).
        .env("RATE_LIMIT_PER_SECOND", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
        .env("WS_MAX_CONNECTIONS", "100000")
        .env("MAX_CONNECTIONS_PER_ADDRESS", "100000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start mallbots");
    let mut lines = BufReader::new(child.stdout.take().expect("its output")).lines();
    let base = tokio::time::timeout(DEADLINE, async {
        let mut base = String::new();
        while let Some(line) = lines.next_line().await.expect("read its log") {
            let door = line
                .split_once("GraphQL gateway on http://")
                .or_else(|| line.split_once("/metrics on http://"));
            if let Some((_, rest)) = door {
                let addr = rest.split('/').next().expect("an address");
                base = format!("http://{addr}");
                if !running {
                    return base;
                }
            }
            if line.contains(" running") && line.contains("parts=") {
                return base;
            }
        }
        panic!("mallbots exited before it ran");
    })
    .await
    .expect("mallbots runs before the deadline");
    // Keep reading, or a full pipe would stop the process.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process { child, base }
}

impl Process {
    /// A client of this process, for the shop helpers.
    pub async fn client(&self) -> TestApp {
        client_of(self.base.clone()).await
    }
}

/// Runs `mallbots run` with `envs` (no other database or broker) and
/// expects it to stop within 10 s, saying `said`, never retrying, and never
/// showing `secret` (a password in a URL of `envs`).
pub async fn refused_at_start(envs: &[(&str, &str)], said: &str, secret: &str) {
    let dir = std::env::temp_dir().join(format!("mallbots-test-{}", Uuid::new_v4().simple()));
    let asked = Instant::now();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
    command
        .args(["--listen", "127.0.0.1:0", "run"])
        .env("DATA_DIR", &dir)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("RUST_BACKTRACE");
    for (name, value) in envs {
        command.env(name, value);
    }
    let refused = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("it stops within the deadline")
        .expect("mallbots runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "it ran on {said}: {stderr}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "it waited {:?} for: {said}",
        asked.elapsed()
    );
    assert!(stderr.contains(said), "{said}: {stderr}");
    assert!(!stderr.contains("retrying"), "{said}: {stderr}");
    assert!(!stderr.contains(secret), "the password shown: {stderr}");
}

/// Sends SIGTERM to `child`, as an operator stopping it would.
pub async fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("a running process").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}");
}

/// A client of a gateway running elsewhere (another process), at `base`.
pub async fn client_of(base: String) -> TestApp {
    TestApp {
        base,
        settings: settings(Backend::Embedded).await,
        running: None,
        http: reqwest::Client::new(),
    }
}

/// The HS256 key of tests that verify tokens (`settings.auth_jwt_secret`).
pub const JWT_SECRET: &str = "common-test-secret";

/// A token for `id` in `role`, valid for an hour, signed with [`JWT_SECRET`].
pub fn token(role: mallbots_contracts::Role, id: Uuid) -> String {
    let actor = mallbots_contracts::Actor { id, role };
    mallbots_gateway::identity::mint(JWT_SECRET, actor, Duration::from_secs(3600)).expect("a token")
}

/// Runs a tool of the test suite (npm, node) in `dir`, for at most five
/// minutes; its standard output. Fails the test when it fails.
pub async fn run_tool(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(program)
            .args(args)
            .current_dir(dir)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} did not finish in 300 s"))
    .unwrap_or_else(|e| panic!("{program} runs (scripts/test installs npm): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every dead letter (of `queue`, or of all) a test leaves, oldest first.
pub fn all_letters(queue: Option<&str>) -> mallbots_platform::dead_letters::Listing<'_> {
    mallbots_platform::dead_letters::Listing {
        queue,
        after: None,
        limit: 100_000,
    }
}
