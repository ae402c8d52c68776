//! The system under test: the `mallbots` binary in a child process, on a fresh database and queue prefix.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Mutex;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::cli::Cli;
use crate::client::sibling;

/// The databases this run created, dropped by [`drop_databases`].
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A fresh database on the server of `url`; returns its URL.
pub(crate) async fn fresh_database(url: &str) -> anyhow::Result<String> {
    let name = format!("mallbots_bench_{}", Uuid::new_v4().simple());
    let admin = Database::connect(url)
        .await
        .context("PostgreSQL (DATABASE_URL)")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    admin.close().await?;
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    let base = url.rsplit_once('/').context("DATABASE_URL has no path")?.0;
    Ok(format!("{base}/{name}"))
}

/// Drops the databases this run created on the server of `url` (their
/// clients, the system's processes, may be exiting still: `FORCE`).
pub(crate) async fn drop_databases(url: &str) -> anyhow::Result<()> {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    if names.is_empty() {
        return Ok(());
    }
    let admin = Database::connect(url).await?;
    for name in names {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    admin.close().await?;
    Ok(())
}

/// The real services: (PostgreSQL server URL, RabbitMQ URL).
pub(crate) fn services(cli: &Cli) -> anyhow::Result<(&str, &str)> {
    match (&cli.database_url, &cli.amqp_url) {
        (Some(db), Some(amqp)) => Ok((db, amqp)),
        _ => bail!(
            "the bench runs on the real services: set DATABASE_URL and AMQP_URL (scripts/bench does)"
        ),
    }
}

/// `mallbots <args>` on `database`, under the queue-name `prefix`.
pub(crate) fn mallbots(
    args: &[&str],
    database: &str,
    amqp: &str,
    prefix: &str,
) -> anyhow::Result<Command> {
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

pub(crate) fn fresh_prefix() -> String {
    format!("bench-{}.", Uuid::new_v4().simple())
}

pub(crate) async fn start_system(cli: &Cli, addr: SocketAddr) -> anyhow::Result<Child> {
    let (database_url, amqp_url) = services(cli)?;
    let database = fresh_database(database_url).await?;
    mallbots(&["run"], &database, amqp_url, &fresh_prefix())?
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .context("cannot start mallbots (build it first)")
}
