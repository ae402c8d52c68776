//! Settings: every one a flag and an environment variable (`mallbots --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

/// Which part of the system a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Everything in one process.
    All,
    /// The GraphQL gateway alone.
    Gateway,
    Stores,
    Customers,
    Baskets,
    Payments,
    Ordering,
    Depot,
    /// The create-order saga.
    Cosec,
    /// The search read model and the read side's change log.
    Search,
    Notifications,
}

/// Whether a process running `parts` runs `part`.
pub fn runs(parts: &[Part], part: Part) -> bool {
    parts.iter().any(|p| *p == Part::All || *p == part)
}

#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// Address the gateway listens on.
    #[arg(
        long,
        global = true,
        env = "LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// Where a process that runs no gateway serves `/metrics` and
    /// `/healthz` (the gateway serves them on its own address). Unset: not
    /// served.
    #[arg(long, global = true, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// PostgreSQL URL (postgres://...). Unset: SQLite files in --data-dir.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the embedded mode keeps its SQLite files (one per module).
    #[arg(long, global = true, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// RabbitMQ URL (amqp://...). Unset: the in-process broker.
    #[arg(long, global = true, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// For amqps:// URLs: a PEM file of the private CA that signed
    /// RabbitMQ's certificate (the public CAs are trusted without it).
    #[arg(long, global = true, env = "AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

    /// Prefix of every exchange and queue name on RabbitMQ.
    #[arg(long, global = true, env = "AMQP_PREFIX", default_value = "")]
    pub amqp_prefix: String,

    /// Declare durable queues as quorum queues (clustered RabbitMQ).
    #[arg(
        long,
        global = true,
        env = "AMQP_QUORUM_QUEUES",
        default_value_t = false,
        value_parser = BoolishValueParser::new()
    )]
    pub amqp_quorum_queues: bool,

    /// How long a mutation waits for its command's reply, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "COMMAND_TIMEOUT_MS",
        default_value_t = 5000,
        // Less than a round trip times every command out, applied or not.
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub command_timeout_ms: u64,

    /// Largest accepted HTTP request body, in bytes.
    #[arg(long, global = true, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Deliver notifications by POSTing them to this URL (besides recording them).
    #[arg(
        long,
        global = true,
        env = "NOTIFICATIONS_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub notifications_webhook_url: Option<String>,

    /// Live-subscription events buffered per subscriber before a slow one is
    /// closed (with a cursor to resume from).
    #[arg(
        long,
        global = true,
        env = "SUBSCRIPTION_BUFFER",
        default_value_t = 1024
    )]
    pub subscription_buffer: usize,

    /// The kernel send buffer of each client connection, in bytes (unset:
    /// the kernel's default). Smaller bounds what a slow websocket client can
    /// hold up per connection; its subscriptions fall behind sooner.
    #[arg(long, global = true, env = "SOCKET_SEND_BUFFER")]
    pub socket_send_buffer: Option<usize>,

    /// How long a query sent with `consistency-token` waits for the read
    /// models, in milliseconds (then TIMEOUT).
    #[arg(
        long,
        global = true,
        env = "CONSISTENCY_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub consistency_timeout_ms: u64,

    /// The deepest a query may nest (then QUERY_TOO_COMPLEX).
    #[arg(long, global = true, env = "MAX_QUERY_DEPTH", default_value_t = 10)]
    pub max_query_depth: usize,

    /// The most a query may cost: each field 1, each list field times its
    /// `first` (then QUERY_TOO_COMPLEX).
    #[arg(
        long,
        global = true,
        env = "MAX_QUERY_COMPLEXITY",
        default_value_t = 5000
    )]
    pub max_query_complexity: usize,

    /// The largest page (`first`) a list field returns (above it:
    /// BAD_USER_INPUT).
    #[arg(long, global = true, env = "MAX_PAGE_SIZE", default_value_t = 100)]
    pub max_page_size: i32,

    /// The most aliased fields in one request (then QUERY_TOO_COMPLEX).
    #[arg(long, global = true, env = "MAX_ALIASES", default_value_t = 30)]
    pub max_aliases: usize,

    /// The most directives on one field (then QUERY_TOO_COMPLEX).
    #[arg(long, global = true, env = "MAX_DIRECTIVES", default_value_t = 5)]
    pub max_directives: usize,

    /// How long a websocket may take to send `connection_init`, in
    /// milliseconds (then it is closed with 4408).
    #[arg(
        long,
        global = true,
        env = "WS_INIT_TIMEOUT_MS",
        default_value_t = 3000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub ws_init_timeout_ms: u64,

    /// How long an HTTP client may take to send a request's headers
    /// (counted from when its connection opens or its last answer went
    /// out, so an idle connection is closed after it too), and to send a
    /// request's body, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "HTTP_READ_TIMEOUT_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(100..)
    )]
    pub http_read_timeout_ms: u64,

    /// Subscriptions open at once on one websocket; one more is refused on
    /// its own (RATE_LIMITED), the others go on.
    #[arg(
        long,
        global = true,
        env = "WS_MAX_SUBSCRIPTIONS",
        default_value_t = 100
    )]
    pub ws_max_subscriptions: usize,

    /// How long sent outbox rows and inbox rows are kept, in seconds (an
    /// Idempotency-Key's reply is kept as long). Default: 7 days.
    #[arg(long, global = true, env = "MESSAGE_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub message_retention_secs: u64,

    /// How long change-log entries (subscription cursors) are kept, in
    /// seconds; resuming from an older cursor is refused with CURSOR_EXPIRED.
    /// The archive of integration events a rebuild replays is kept whole.
    /// Default: 30 days.
    #[arg(long, global = true, env = "CHANGE_LOG_RETENTION_SECS", default_value_t = 30 * 24 * 3600)]
    pub change_log_retention_secs: u64,

    /// Events the search projection applies in one transaction, at most
    /// (it never waits for a batch to fill: it takes what has arrived).
    /// Larger batches catch up on a backlog faster and hold each change
    /// back no longer; see BENCHMARKS.md for the curve.
    #[arg(long, global = true, env = "SEARCH_BATCH", default_value_t = mallbots_search::BATCH,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub search_batch: u16,

    /// On SIGTERM, how long the gateway goes on serving (and accepting)
    /// while `/readyz` already says 503, so a load balancer stops sending
    /// before the listener closes, in milliseconds. Ctrl-C skips it.
    #[arg(long, global = true, env = "SHUTDOWN_DRAIN_MS", default_value_t = 2000)]
    pub shutdown_drain_ms: u64,

    /// The whole shutdown's budget after the drain, in milliseconds: in-flight
    /// requests finish, subscriptions are closed with their cursors, consumers
    /// finish the messages in hand, the outbox is flushed; then the process
    /// exits, done or not.
    #[arg(
        long,
        global = true,
        env = "SHUTDOWN_GRACE_MS",
        default_value_t = 10000
    )]
    pub shutdown_grace_ms: u64,

    /// The HS256 secret bearer tokens are signed with. Neither this nor
    /// AUTH_JWT_PUBLIC_KEY set: the gateway is open (everyone an operator).
    #[arg(long, global = true, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,

    /// A PEM file with the RS256 or ES256 public key bearer tokens are
    /// verified with (instead of AUTH_JWT_SECRET).
    #[arg(long, global = true, env = "AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<PathBuf>,

    /// The `iss` every token must have, when set.
    #[arg(long, global = true, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// The `aud` every token must have, when set.
    #[arg(long, global = true, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// Requests per second one identity (or, without a token, one client
    /// address) may make on average (then 429 RATE_LIMITED).
    #[arg(
        long,
        global = true,
        env = "RATE_LIMIT_PER_SECOND",
        default_value_t = 50
    )]
    pub rate_limit_per_second: u32,

    /// Requests one identity may make at once above its rate.
    #[arg(long, global = true, env = "RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Websockets one identity (or one client address without a token) may
    /// hold open at once (then closed with 4429).
    #[arg(long, global = true, env = "WS_MAX_CONNECTIONS", default_value_t = 20)]
    pub ws_max_connections: usize,

    /// Connections one client address may hold open at once (HTTP and
    /// websockets together); one more is closed as soon as it is accepted.
    #[arg(
        long,
        global = true,
        env = "MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1024
    )]
    pub max_connections_per_address: usize,

    /// Origins browsers may call from, comma-separated. Unset: any origin
    /// while the gateway is open, none once tokens are verified.
    #[arg(long, global = true, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// `false` hides the schema from introspection for everyone but
    /// operators.
    #[arg(
        long,
        global = true,
        env = "INTROSPECTION",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub introspection: bool,

    /// Skip creating/updating tables at start and before a rebuild (run
    /// `mallbots migrate` instead).
    #[arg(
        long,
        global = true,
        env = "NO_MIGRATE",
        default_value_t = false,
        value_parser = BoolishValueParser::new()
    )]
    pub no_migrate: bool,

    /// How long migrating waits in all, in milliseconds, for another process
    /// that migrates and for tables that running processes hold (PostgreSQL):
    /// it tries for a table a second at a time, so their queries never queue
    /// behind it for longer, then gives up naming the holders.
    #[arg(
        long,
        global = true,
        env = "MIGRATE_LOCK_WAIT_MS",
        default_value_t = 60_000
    )]
    pub migrate_lock_wait_ms: u64,
}

impl Settings {
    pub fn retention(&self) -> mallbots_platform::retention::Retention {
        mallbots_platform::retention::Retention {
            messages: Duration::from_secs(self.message_retention_secs),
            changes: Duration::from_secs(self.change_log_retention_secs),
        }
    }

    pub fn migrate_lock_wait(&self) -> Duration {
        Duration::from_millis(self.migrate_lock_wait_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    pub fn http_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http_read_timeout_ms)
    }
}
