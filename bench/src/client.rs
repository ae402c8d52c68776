//! The bench's clients: HTTP GraphQL requests, a graphql-transport-ws subscriber, and what they measure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Latencies, summarized.
#[derive(Debug, Default)]
pub(crate) struct Latencies(pub(crate) Vec<Duration>);

impl Latencies {
    pub(crate) fn percentile(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
    pub(crate) fn summary(&mut self) -> Value {
        json!({
            "count": self.0.len(),
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "max_ms": self.percentile(1.0),
        })
    }
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
}

impl Client {
    pub(crate) fn new(base: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            url: format!("{base}/graphql"),
        }
    }

    pub(crate) async fn post(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
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

/// `clients` loops posting `query` for `seconds` to the server process
/// `pid`: requests/s, latencies, and the CPU time the server spent per
/// request (steadier than the rate on a machine whose speed varies).
pub(crate) async fn throughput(
    (base, pid): (&str, u32),
    query: &'static str,
    variables: Value,
    clients: usize,
    seconds: u64,
) -> Value {
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = cpu_seconds(pid);
    let mut result = load(base, query, variables, clients, seconds, never).await;
    let requests = result["requests"].as_f64().unwrap_or(0.0);
    if let (Some(before), Some(after)) = (before, cpu_seconds(pid))
        && requests > 0.0
    {
        result["server_cpu_us_per_request"] = json!(1e6 * (after - before) / requests);
    }
    result
}

/// As [`throughput`], ending early once `stop` is set.
pub(crate) async fn load(
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
    result["requests"] = json!(done);
    result["requests_per_s"] = json!(done as f64 / started.elapsed().as_secs_f64());
    result["failed"] = json!(failed);
    result
}

pub(crate) async fn wait_ready(base: &str) -> anyhow::Result<()> {
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

pub(crate) async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?)
}

/// The `mallbots` binary next to this one.
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn subscribe(base: &str, query: &str, variables: Value) -> anyhow::Result<Ws> {
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

/// The resident memory of process `pid`, in KiB (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time a process has used so far (user and system), in seconds, from
/// `/proc/<pid>/stat`. Its clock ticks are USER_HZ, 100 a second on Linux.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces: count from after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 / 100.0)
}

/// Live subscriptions the gateway counts (its `/metrics`).
pub(crate) async fn subscriptions_active(base: &str) -> Option<i64> {
    gauge_sum(base, "mallbots_subscriptions_active").await
}

/// Shared executions serving subscriptions now, by the system's `/metrics`.
pub(crate) async fn executions_active(base: &str) -> Option<i64> {
    gauge_sum(base, "mallbots_subscription_executions_active").await
}

/// The sum of a gauge's samples (one per field) in the system's `/metrics`.
async fn gauge_sum(base: &str, name: &str) -> Option<i64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{");
    let samples = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<i64>().ok()));
    samples.sum::<Option<i64>>().or(Some(0))
}
