use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::{Parser, Subcommand};
use mallbots_gateway::{Part, Settings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc: glibc's malloc and free took about a fifth of the gateway's CPU
/// under query load (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// MallBots: an event-driven shopping mall behind a GraphQL gateway.
///
/// With no configuration everything runs in one process on SQLite files and
/// an in-process broker; set DATABASE_URL and AMQP_URL for PostgreSQL and
/// RabbitMQ. Logging follows RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "mallbots", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the system, or some parts of it (default: all).
    Run {
        #[arg(value_enum, default_value = "all", num_args = 1..)]
        parts: Vec<Part>,
    },
    /// Create or update every module's tables, then exit.
    Migrate,
    /// Print the GraphQL schema (SDL), then exit.
    Schema,
    /// Print the message contracts as an AsyncAPI 3 document, then exit.
    Asyncapi,
    /// Recreate a read model from the stored events (safe while the system
    /// runs), then exit.
    Rebuild {
        #[arg(value_enum)]
        model: mallbots_gateway::app::ReadModel,
    },
    /// Print a bearer token signed with AUTH_JWT_SECRET (for the playground's
    /// Headers tab and for scripts), then exit.
    Token {
        /// customer, store_owner, bot or operator.
        #[arg(long)]
        role: String,
        /// The principal's UUID (a customer's is its customer id).
        #[arg(long)]
        sub: uuid::Uuid,
        /// How long it is valid: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = mallbots_gateway::identity::parse_ttl)]
        ttl: std::time::Duration,
    },
    /// See, replay and purge the messages that could not be handled.
    DeadLetters {
        #[command(subcommand)]
        action: mallbots_gateway::dead_letters::Action,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // What a command prints for scripts (a schema, a token, dead letters)
    // goes to stdout alone, its logs to stderr; a process that serves logs
    // to stdout.
    let prints = matches!(
        cli.command,
        Some(
            Command::Schema
                | Command::Asyncapi
                | Command::Token { .. }
                | Command::DeadLetters { .. }
        )
    );
    let (writer, ansi) = if prints {
        let ansi = std::io::stderr().is_terminal();
        (BoxMakeWriter::new(std::io::stderr), ansi)
    } else {
        let ansi = std::io::stdout().is_terminal();
        (BoxMakeWriter::new(std::io::stdout), ansi)
    };
    let filter = log_filter()?;
    // Human text by default; one JSON object a line for log collectors,
    // each with the fields of the spans it is in (a request's or a
    // message's correlation id, and trace id when traced).
    let logs = match std::env::var("LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        Ok("json") => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
        Ok(other) => anyhow::bail!("LOG_FORMAT is {other:?}: it is text (the default) or json"),
    };
    let traces = mallbots_gateway::traces::provider().map_err(anyhow::Error::msg)?;
    // Spans are traced at info whatever RUST_LOG keeps of the logs.
    let traced = traces
        .as_ref()
        .map(|provider| mallbots_gateway::traces::layer(provider).with_filter(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traced)
        .init();
    let outcome = run(cli).await;
    if let Some(provider) = traces {
        mallbots_gateway::traces::flush(provider).await;
    }
    outcome
}

/// Prints `text` to stdout. A reader that went away (`| head`) ends the
/// command quietly, as it does any Unix tool.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("cannot print"))
        }
        _ => Ok(()),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run {
        parts: vec![Part::All],
    }) {
        Command::Schema => emit(&mallbots_gateway::graphql::sdl()),
        Command::Asyncapi => emit(&mallbots_gateway::asyncapi::document()),
        Command::Migrate => mallbots_gateway::app::migrate(&cli.settings).await,
        Command::Token { role, sub, ttl } => {
            let secret = cli
                .settings
                .auth_jwt_secret
                .as_deref()
                .context("set AUTH_JWT_SECRET: tokens are signed with it")?;
            let role = mallbots_contracts::Role::from_claim(&role).with_context(|| {
                format!("{role:?} is not a role: customer, store_owner, bot or operator")
            })?;
            let actor = mallbots_contracts::Actor { id: sub, role };
            emit(&format!(
                "{}\n",
                mallbots_gateway::identity::mint(secret, actor, ttl)?
            ))
        }
        Command::DeadLetters { action } => {
            emit(&mallbots_gateway::dead_letters::run(&cli.settings, action).await?)
        }
        Command::Rebuild { model } => {
            let replayed = mallbots_gateway::app::rebuild(&cli.settings, model).await?;
            tracing::info!(?model, replayed, "read model rebuilt");
            Ok(())
        }
        Command::Run { parts } => {
            let running = mallbots_gateway::start(cli.settings, &parts)
                .await
                .context("cannot start")?;
            let terminated = wait_for_signal().await;
            tracing::info!(terminated, "shutting down");
            running.shut_down(terminated).await;
            Ok(())
        }
    }
}

/// Waits for Ctrl-C (false) or SIGTERM (true: an orchestrator's stop,
/// which gets the drain).
async fn wait_for_signal() -> bool {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => false,
                    _ = term.recv() => true,
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
                false
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        false
    }
}

/// What RUST_LOG asks for (default `info`), less two sources of lines an
/// operator does not act on, unless RUST_LOG names them: PostgreSQL's
/// notices ("relation ... already exists, skipping" on every migration
/// check) go at WARN, and the AMQP client's own lines not at all (it logs
/// a lost connection at ERROR, which the broker adapter handles and logs
/// once itself). A RUST_LOG that cannot be read stops the start rather
/// than quietly logging something else.
fn log_filter() -> anyhow::Result<EnvFilter> {
    const QUIETER: [(&str, &str); 2] = [("sqlx::postgres::notice", "warn"), ("lapin", "off")];
    let asked = std::env::var("RUST_LOG")
        .ok()
        .filter(|asked| !asked.trim().is_empty())
        .unwrap_or_else(|| "info".to_owned());
    let mut directives: Vec<String> = QUIETER
        .iter()
        .filter(|(target, _)| !asked.contains(target))
        .map(|(target, level)| format!("{target}={level}"))
        .collect();
    directives.push(asked.clone());
    let directives = directives.join(",");
    EnvFilter::builder().parse(&directives).map_err(|err| {
        anyhow::anyhow!(
            "RUST_LOG is {asked:?}, which cannot be read ({err}): it is like `info` or `info,mallbots_platform=debug`"
        )
    })
}
