//! The benchmark driver. It starts the system (`mallbots run`, a child
//! process, on the PostgreSQL and RabbitMQ of DATABASE_URL and AMQP_URL, in a
//! fresh database and under a fresh queue prefix) and the floors (a minimal
//! async-graphql server: `bench floor-server`, another child), then drives
//! them from this process as real clients would: HTTP and graphql-transport-ws.
//!
//! Scenarios: query throughput (`store(id)`, `catalog` of 50 products,
//! against the `{ hello }` and constant-50-object-list floors), command round
//! trip (mutation to reply, mutation to subscription push, one at a time),
//! subscription fan-out (latency, delivered vs expected, RSS; also resumed
//! from cursors, timed until the executions are shared), and projection
//! catch-up and rebuild (against a raw lapin publish-to-consume floor and a
//! multi-row upsert floor on PostgreSQL), and the limits (see `limits`).
//! `--only` picks some of them.

mod cli;
mod client;
mod curves;
mod floor;
mod limits;
mod projection;
mod report;
mod scenarios;
mod system;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::process::Command;

use cli::{Cli, Scenario, Sub};
use client::{Client, free_addr, load, throughput, wait_listening, wait_ready};
use floor::{FLOOR_STORE, floor_server, request_reply_floor};
use projection::{broker_floor, postgres_floor, projection};
use report::{cpu_row, ratio, row};
use scenarios::{Start, fan_out, fan_out_from, round_trips, setup, sweep};
use system::{fresh_database, services, start_system};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let server = cli.database_url.clone();
    let outcome = run(cli).await;
    // A run's databases hold up to gigabytes (the projection's backlog):
    // none is kept, whatever the outcome.
    if let Some(server) = server
        && let Err(err) = system::drop_databases(&server).await
    {
        eprintln!("could not drop the bench's databases: {err:#}");
    }
    outcome
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    if let Some(Sub::FloorServer {
        listen,
        database_url,
    }) = cli.command
    {
        return floor_server(listen, database_url).await;
    }
    if cli.tiny {
        (cli.clients, cli.seconds, cli.samples, cli.load_clients) = (4, 1, 10, 2);
        (cli.subscribers, cli.stores, cli.fan_out_seconds, cli.rate) = (20, 2, 2, 2.0);
        (cli.sweep_steps, cli.sweep_seconds) = (1, 1);
        cli.events = 200;
        cli.hostile_seconds = 1;
        (cli.curve_subscribers, cli.curve_seconds) = (vec![10, 20], 1);
        (cli.curve_batches, cli.curve_events) = (vec![1, 10], 200);
    }
    let runs = |scenario| cli.only.is_empty() || cli.only.contains(&scenario);
    let (system_addr, floor_addr) = (free_addr()?, free_addr()?);
    let mut system = start_system(&cli, system_addr).await?;
    // The floors' own database: the same server as the system's.
    let floor_database = fresh_database(services(&cli)?.0).await?;
    let mut floor = Command::new(std::env::current_exe()?)
        .args(["floor-server", "--listen", &floor_addr.to_string()])
        .args(["--database-url", &floor_database])
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
        let pid = system.id().context("the system's pid")?;
        let floor_pid = floor.id().context("the floor's pid")?;
        let store_q = throughput(
            (&base, pid),
            "query($s: ID!) { store(id: $s) { id name location participating } }",
            json!({ "s": store }),
            c,
            s,
        )
        .await;
        let hello = throughput((&floor_base, floor_pid), "{ hello }", json!({}), c, s).await;
        let catalog = throughput((&base, pid), "query($s: ID!) { catalog(storeId: $s, first: 50) { edges { node { id name description sku price } } } }", json!({ "s": store }), c, s).await;
        let list = throughput(
            (&floor_base, floor_pid),
            "{ list { id name description sku price } }",
            json!({}),
            c,
            s,
        )
        .await;
        // The database floors: the same stack and one select on equal
        // tables in the same PostgreSQL, nothing else.
        let store_db = throughput(
            (&floor_base, floor_pid),
            "query($s: ID!) { store(id: $s) { id name location participating } }",
            json!({ "s": FLOOR_STORE }),
            c,
            s,
        )
        .await;
        let catalog_db = throughput(
            (&floor_base, floor_pid),
            "query($s: ID!) { catalog(storeId: $s) { id name description sku price } }",
            json!({ "s": FLOOR_STORE }),
            c,
            s,
        )
        .await;
        let rate = |v: &Value| v["requests_per_s"].clone();
        table.extend([
            row("store(id)", &store_q, Some(&store_db)),
            row("  floor: graphql + pk select", &store_db, None),
            cpu_row("store(id)", &store_q, &store_db),
            row("  floor: { hello }", &hello, None),
            format!(
                "  store(id) vs {{ hello }}: {}",
                ratio(&rate(&store_q), &rate(&hello))
            ),
            row("catalog(storeId) 50 products", &catalog, Some(&catalog_db)),
            row("  floor: graphql + 50-row select", &catalog_db, None),
            cpu_row("catalog", &catalog, &catalog_db),
            row("  floor: constant 50-object list", &list, None),
            format!(
                "  catalog vs the constant list: {}",
                ratio(&rate(&catalog), &rate(&list))
            ),
        ]);
        results["query"] = json!({
            "store": store_q, "store_db_floor": store_db, "hello_floor": hello,
            "catalog": catalog, "catalog_db_floor": catalog_db, "list_floor": list,
        });
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
            "other_pushes_skipped": loaded["other_pushes_skipped"],
        });
        eprintln!(
            "pushes of other changes skipped while waiting for each mutation's own: {} alone, {} under load",
            trips["other_pushes_skipped"], loaded["other_pushes_skipped"]
        );
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
        eprintln!("request/reply floor: {} one at a time", cli.samples);
        let floor_trips =
            request_reply_floor(services(&cli)?.1, &floor_database, cli.samples).await?;
        let times = |v: &Value| match (v["p50_ms"].as_f64(), floor_trips["p50_ms"].as_f64()) {
            (Some(v), Some(f)) if f > 0.0 => format!("{:.2}x", v / f),
            _ => "-".into(),
        };
        table.extend([
            row("  floor: lapin req/reply + 1 txn", &floor_trips, None),
            format!(
                "  p50 vs that floor: reply {}, push {}",
                times(&trips["mutation_to_reply"]),
                times(&trips["mutation_to_push"])
            ),
        ]);
        trips["request_reply_floor"] = floor_trips;
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
    if runs(Scenario::Resume) {
        eprintln!(
            "resumed fan-out: {} subscribers over {} stores resume from cursor 0",
            cli.subscribers, cli.stores
        );
        let pid = system.id().context("the system's pid")?;
        let resumed = fan_out_from(&cli, &base, pid, false, Start::Cursor).await?;
        table.push(format!(
            "resumed fan-out: {} subscribers, {} executions while replaying, {} executions after {:.1} s; {}/{} delivered, p50 {:.1} ms, p99 {:.1} ms (from now on: p50 {:.1}, p99 {:.1})",
            resumed["subscribers"],
            resumed["executions_when_subscribed"],
            resumed["executions_shared"],
            resumed["shared_after_s"].as_f64().unwrap_or(f64::NAN),
            resumed["delivered"],
            resumed["expected"],
            resumed["p50_ms"].as_f64().unwrap_or(f64::NAN),
            resumed["p99_ms"].as_f64().unwrap_or(f64::NAN),
            results["fan_out"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            results["fan_out"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
        ));
        results["fan_out_resumed"] = resumed;
    }
    let mut fan_curve = Value::Null;
    if runs(Scenario::Curves) {
        eprintln!(
            "fan-out curve: {:?} subscribers, system and floor",
            cli.curve_subscribers
        );
        let targets = curves::Targets {
            base: &base,
            pid: system.id().context("the system's pid")?,
            floor_base: &floor_base,
            floor_pid: floor.id().context("the floor's pid")?,
        };
        fan_curve = curves::fan_out_curve(&cli, &targets).await?;
        results["fan_out_curve"] = fan_curve.clone();
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
    if runs(Scenario::Curves) {
        eprintln!("projection curve: batch sizes {:?}", cli.curve_batches);
        let batches = curves::batch_curve(&cli).await?;
        let broker = match results["broker_floor"]["messages_per_s"].as_f64() {
            Some(floor) => floor,
            None => broker_floor(&cli, cli.curve_events.min(50_000)).await?["messages_per_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
        };
        table.extend(curves::rows(&fan_curve, &batches));
        table.push(format!(
            "  floor: raw lapin, one queue, confirms, persistent: {broker:.0} messages/s"
        ));
        let plot = cli
            .plot
            .clone()
            .unwrap_or_else(|| cli.json.with_extension("svg"));
        curves::plot(
            &plot,
            &fan_curve,
            &batches,
            Some(broker).filter(|b| b.is_finite()),
        )?;
        eprintln!("curves drawn in {}", plot.display());
        results["projection_curve"] =
            json!({ "points": batches, "broker_floor_messages_per_s": broker });
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
    for fan in ["fan_out", "fan_out_floor", "fan_out_resumed"] {
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
