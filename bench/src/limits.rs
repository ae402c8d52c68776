//! The limits scenario, on a system of its own with tokens verified:
//! - what verifying a token costs: `store(id)` without a token and with one,
//!   same system, same run;
//! - how fast each hostile query is refused (1,000 aliases, 50 deep, the
//!   depth-11 catalog nesting, a kilobyte of doubling fragments, `first:
//!   1000000`), one at a time;
//! - what a load of each from one client does to everyone else: `/healthz`
//!   and another client's `store(id)`, alone and during each load; once
//!   with the per-client rate limit lifted (what the refusal itself costs)
//!   and once at its defaults (what a deployment sees: the hostile client
//!   is held to RATE_LIMIT_PER_SECOND and answered 429).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mallbots_contracts::{Actor, Role};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli::Cli;
use crate::client::{Latencies, free_addr, wait_ready};
use crate::report::row;
use crate::system::{fresh_database, fresh_prefix, mallbots, services};

const SECRET: &str = "bench-secret";

/// The hostile queries, each with the codes its refusal may carry.
fn hostile() -> Vec<(&'static str, String)> {
    let aliases: String = (0..1000).map(|n| format!("a{n}: __typename ")).collect();
    let deep = format!(
        "{{ stores {{ edges {{ node {{ {} id {} }} }} }} }}",
        "catalog { edges { node { store { ".repeat(12),
        "} } } } ".repeat(12)
    );
    let nested = "{ product(id: \"00000000-0000-7000-8000-000000000000\") { store { catalog(first: 100) { edges { node { store { catalog(first: 100) { edges { node { store { catalog(first: 100) { edges { node { name } } } } } } } } } } } } } }".to_owned();
    // Each of 30 fragments spreads the next twice: 2^30 fields expanded.
    let spreads: String = (0..30)
        .map(|i| format!("fragment F{i} on Query {{ ...F{n} ...F{n} }} ", n = i + 1))
        .collect();
    let doubling = format!("query {{ ...F0 }} {spreads}fragment F30 on Query {{ __typename }}");
    vec![
        ("1,000 aliases", format!("{{ {aliases} }}")),
        ("50 deep", deep),
        ("depth-11 nesting", nested),
        ("doubling fragments", doubling),
        (
            "first: 1000000",
            "{ stores(first: 1000000) { edges { node { id } } } }".to_owned(),
        ),
    ]
}

struct Caller {
    http: reqwest::Client,
    url: String,
    bearer: Option<String>,
}

impl Caller {
    fn new(base: &str, bearer: Option<String>) -> Self {
        Caller {
            http: reqwest::Client::new(),
            url: format!("{base}/graphql"),
            bearer,
        }
    }

    async fn post(&self, query: &str, variables: &Value) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(bearer) = &self.bearer {
            request = request.header("authorization", bearer);
        }
        Ok(request.send().await?.json().await?)
    }

    /// A request that must succeed; its data.
    async fn data(&self, query: &str, variables: &Value) -> anyhow::Result<Value> {
        let response = self.post(query, variables).await?;
        if let Some(errors) = response.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].clone())
    }
}

fn bearer(role: Role) -> anyhow::Result<String> {
    let actor = Actor {
        id: Uuid::now_v7(),
        role,
    };
    let token = mallbots_gateway::identity::mint(SECRET, actor, Duration::from_secs(3600))?;
    Ok(format!("Bearer {token}"))
}

/// One loop of `query` for `seconds`: requests/s and latencies.
async fn timed(caller: &Caller, query: &str, variables: &Value, seconds: f64) -> Value {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut latencies, mut failed) = (Latencies::default(), 0u64);
    let started = Instant::now();
    while Instant::now() < deadline {
        let start = Instant::now();
        match caller.data(query, variables).await {
            Ok(_) => latencies.0.push(start.elapsed()),
            Err(_) => failed += 1,
        }
    }
    let done = latencies.0.len();
    let mut result = latencies.summary();
    result["requests_per_s"] = json!(done as f64 / started.elapsed().as_secs_f64());
    result["failed"] = json!(failed);
    result
}

/// `/healthz` and `store(id)` by a well-behaved client (an identity of its
/// own), one after the other, 40 times a second, for `seconds`.
async fn bystander(base: &str, store: &str, seconds: f64) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let caller = Caller::new(base, Some(bearer(Role::Customer)?));
    let variables = json!({ "s": store });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut health, mut reads) = (Latencies::default(), Latencies::default());
    while Instant::now() < deadline {
        let start = Instant::now();
        http.get(format!("{base}/healthz"))
            .send()
            .await?
            .error_for_status()?;
        health.0.push(start.elapsed());
        let start = Instant::now();
        caller
            .data("query($s: ID!) { store(id: $s) { id name } }", &variables)
            .await?;
        reads.0.push(start.elapsed());
        // A well-behaved client: 40 reads a second, under the default rate.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(json!({ "healthz": health.summary(), "store": reads.summary() }))
}

/// A system with tokens verified, on a fresh database, with `envs`.
async fn secured(
    cli: &Cli,
    envs: &[(&str, &str)],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let addr = free_addr()?;
    let base = format!("http://{addr}");
    let (database_url, amqp_url) = services(cli)?;
    let database = fresh_database(database_url).await?;
    let mut command = mallbots(&["run"], &database, amqp_url, &fresh_prefix())?;
    command
        .env("LISTEN_ADDR", addr.to_string())
        .env("AUTH_JWT_SECRET", SECRET);
    for (name, value) in envs {
        command.env(name, value);
    }
    let system = command
        .spawn()
        .context("cannot start mallbots (build it first)")?;
    wait_ready(&base).await?;
    Ok((system, base))
}

/// A store its owner created: its id.
async fn store(base: &str) -> anyhow::Result<String> {
    let owner = Caller::new(base, Some(bearer(Role::StoreOwner)?));
    Ok(owner
        .data(
            "mutation { createStore(input: {name: \"Limits\", location: \"Hall\"}) { id } }",
            &json!({}),
        )
        .await?["createStore"]["id"]
        .as_str()
        .context("store id")?
        .to_owned())
}

/// Everyone else, alone and while one client (no token) sends each hostile
/// query as fast as it is answered: table rows and figures.
async fn loads(
    base: &str,
    store: &str,
    seconds: f64,
    label: &str,
) -> anyhow::Result<(Value, Vec<String>)> {
    let alone = bystander(base, store, seconds.min(10.0)).await?;
    let (mut rows, mut loads) = (Vec::new(), Vec::new());
    for (name, query) in hostile() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attacker = {
            let (base, stop) = (base.to_owned(), stop.clone());
            tokio::spawn(async move {
                let caller = Caller::new(&base, None);
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if caller.post(&query, &json!({})).await.is_ok() {
                        sent += 1;
                    }
                }
                sent
            })
        };
        let during = bystander(base, store, seconds).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = attacker.await?;
        let during = during?;
        rows.push(format!(
            "  {label}, during {seconds:.0} s of {name} ({:.0}/s refused): /healthz p99 {:.2} ms (alone {:.2}), another client's store(id) p99 {:.2} ms (alone {:.2})",
            sent as f64 / seconds,
            during["healthz"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            alone["healthz"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            during["store"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            alone["store"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
        ));
        loads.push(
            json!({ "query": name, "refused_per_s": sent as f64 / seconds, "bystander": during }),
        );
    }
    Ok((json!({ "bystander_alone": alone, "during": loads }), rows))
}

pub async fn limits(cli: &Cli) -> anyhow::Result<(Value, Vec<String>)> {
    let (mut system, base) = secured(cli, &[]).await?;
    let store = store(&base).await?;
    let seconds = cli.seconds as f64;
    let read = "query($s: ID!) { store(id: $s) { id name location participating } }";
    let variables = json!({ "s": store });
    let anonymous = timed(&Caller::new(&base, None), read, &variables, seconds).await;
    let customer = Caller::new(&base, Some(bearer(Role::Customer)?));
    let with_token = timed(&customer, read, &variables, seconds).await;

    let mut table = vec![
        row("store(id), no token (tokens on)", &anonymous, None),
        row("store(id), with a verified token", &with_token, None),
    ];
    let hostile_caller = Caller::new(&base, None);
    let mut refusals = Vec::new();
    for (name, query) in hostile() {
        let mut latencies = Latencies::default();
        for _ in 0..cli.samples.max(10) {
            let start = Instant::now();
            let response = hostile_caller.post(&query, &json!({})).await?;
            latencies.0.push(start.elapsed());
            let code = response["errors"][0]["extensions"]["code"].as_str();
            if !matches!(code, Some("QUERY_TOO_COMPLEX" | "BAD_USER_INPUT")) {
                bail!("{name} was not refused: {response}");
            }
        }
        let summary = latencies.summary();
        table.push(row(&format!("refused: {name}"), &summary, None));
        refusals.push(json!({ "query": name, "latency": summary }));
    }
    let load_seconds = cli.hostile_seconds as f64;
    let (lifted, rows) = loads(&base, &store, load_seconds, "rate limit lifted").await?;
    table.extend(rows);
    let _ = system.kill().await;

    // The same loads against the default rate limit (50/s, burst 100).
    let (mut system, base) = secured(
        cli,
        &[("RATE_LIMIT_PER_SECOND", "50"), ("RATE_LIMIT_BURST", "100")],
    )
    .await?;
    let store = self::store(&base).await?;
    let (limited, rows) = loads(&base, &store, load_seconds, "default rate limit").await?;
    table.extend(rows);
    let _ = system.kill().await;
    Ok((
        json!({
            "store_without_token": anonymous,
            "store_with_token": with_token,
            "refusals": refusals,
            "loads_rate_limit_lifted": lifted,
            "loads_default_rate_limit": limited,
        }),
        table,
    ))
}
