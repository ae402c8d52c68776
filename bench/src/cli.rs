//! The command line: sizes, scenarios, services.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Clone, Debug, Parser)]
#[command(name = "bench", about = "MallBots benchmarks, each next to its floor")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Sub>,
    /// Concurrent HTTP clients in the query scenario.
    #[arg(long, default_value_t = 50)]
    pub(crate) clients: usize,
    /// How long each query measurement runs, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Mutations in the command round-trip scenario.
    #[arg(long, default_value_t = 500)]
    pub(crate) samples: usize,
    /// Clients reading `store(id)` while the command round trips are
    /// measured a second time, under load.
    #[arg(long, default_value_t = 10)]
    pub(crate) load_clients: usize,
    /// Subscribers in the fan-out scenario (`catalogChanged`).
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Stores the fan-out subscribers are spread over.
    #[arg(long, default_value_t = 10)]
    pub(crate) stores: usize,
    /// Price changes per store per second in the fan-out scenario.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rate: f64,
    /// How long the fan-out scenario changes prices, in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) fan_out_seconds: u64,
    /// Fan-out sweep: rates doubled from an eighth of `--rate`, this many
    /// steps at most, each `--sweep-seconds` long, until p99 reaches 100 ms or a
    /// delivery is missing (0: no sweep).
    #[arg(long, default_value_t = 8)]
    pub(crate) sweep_steps: usize,
    #[arg(long, default_value_t = 5)]
    pub(crate) sweep_seconds: u64,
    /// Events queued for the search projection while it is stopped.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) events: usize,
    /// A run of seconds, for CI: checks the bench works, measures nothing.
    #[arg(long)]
    pub(crate) tiny: bool,
    /// How long each hostile query is sent in the limits scenario, seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) hostile_seconds: u64,
    /// Subscriber counts of the fan-out cost curve (`curves`). This
    /// machine allows 20,000 open files a process: 19,000 is its top.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,19000"
    )]
    pub(crate) curve_subscribers: Vec<usize>,
    /// How long each fan-out point of the curve changes prices, seconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) curve_seconds: u64,
    /// Batch sizes of the projection curve (`SEARCH_BATCH`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,25,50,100,250,500,1000"
    )]
    pub(crate) curve_batches: Vec<u16>,
    /// Events queued for each point of the projection curve.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) curve_events: usize,
    /// Where the curves are drawn (SVG); by default beside `--json`.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
    /// Run only these scenarios (comma-separated); all when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) only: Vec<Scenario>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    pub(crate) json: PathBuf,
    /// PostgreSQL server to create the bench database on.
    #[arg(long, env = "DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// The RabbitMQ the system under test uses.
    #[arg(long, env = "AMQP_URL")]
    pub(crate) amqp_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    Query,
    Command,
    FanOut,
    /// The fan-out's subscriptions resuming from a cursor, as after a
    /// gateway restart: how soon they share executions again.
    Resume,
    Projection,
    /// Token verification's cost, refusal times, hostile loads.
    Limits,
    /// How cost grows: fan-out as subscribers grow, projection as its batch
    /// grows, each beside its floor; drawn as an SVG.
    Curves,
}

#[derive(Clone, Debug, Subcommand)]
pub(crate) enum Sub {
    /// The floor: a minimal async-graphql server on axum (`{ hello }`, a
    /// constant list of 50 objects and, with a database, one primary-key
    /// select and one 50-row select), the same stack as the gateway.
    FloorServer {
        #[arg(long)]
        listen: SocketAddr,
        /// A database of its own for the database floors (`store(id)`,
        /// `catalog`): tables like the system's, made and filled at start.
        #[arg(long)]
        database_url: Option<String>,
    },
}
