//! `/metrics`, in the Prometheus (OpenMetrics) text format: what the
//! messaging runtime counts ([`Messaging`]), what the gateway counts, and
//! what is read from the databases when scraped (outbox backlog, projection
//! lag, dead letters). docs/operations.md lists every metric and the
//! dashboard in docs/grafana/ reads exactly these.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::future::join_all;
use mallbots_platform::telemetry::{Bounded, Durations, Messaging, durations};
use mallbots_platform::{Broker, changes, event_store, outbox};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::consistency::{Databases, Readers, database};
use crate::modules::DEAD_LETTERS;

/// The database-derived gauges are read at most this often, however often
/// `/metrics` is asked.
const READ_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// A read made for a scrape gives up after this long.
const READ_DEADLINE: Duration = Duration::from_secs(1);

type Seconds = Gauge<f64, AtomicU64>;

/// What `/metrics` answers in (Prometheus reads OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestOutcome {
    /// Ran; no error in the answer.
    ok,
    /// Ran; some field failed (its error is in the answer).
    error,
    /// Refused before running: malformed, invalid, too complex, rate limited.
    refused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    outcome: RequestOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DocumentLabels {
    /// `parsed` for the request, or `kept` from an earlier one.
    from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    reader: &'static str,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    queue: String,
    state: String,
}

/// Everything `/metrics` shows, registered in one registry per running system.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The consumers' counters, handed to the modules this process runs.
    pub messaging: Messaging,
    websockets: Gauge,
    subscriptions: Family<FieldLabels, Gauge>,
    executions: Family<FieldLabels, Gauge>,
    closed_slow: Family<FieldLabels, Counter>,
    live_changes: Counter,
    commands_sent: Family<CommandLabels, Counter>,
    commands_timed_out: Family<CommandLabels, Counter>,
    command_seconds: Durations<CommandLabels>,
    requests: Durations<RequestLabels>,
    documents: Family<DocumentLabels, Counter>,
    operations: Bounded,
    broker_connected: Gauge,
    outbox_backlog: Family<ModuleLabels, Gauge>,
    outbox_oldest: Family<ModuleLabels, Seconds>,
    lag_positions: Family<LagLabels, Gauge>,
    lag_seconds: Family<LagLabels, Seconds>,
    dead_letters: Family<DeadLetterLabels, Gauge>,
    last_read: Mutex<Option<Instant>>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let messaging = Messaging::register(&mut registry);
        let m = Metrics {
            registry: Registry::default(),
            messaging,
            websockets: Gauge::default(),
            subscriptions: Family::default(),
            executions: Family::default(),
            closed_slow: Family::default(),
            live_changes: Counter::default(),
            commands_sent: Family::default(),
            commands_timed_out: Family::default(),
            command_seconds: durations(),
            requests: durations(),
            documents: Family::default(),
            operations: Bounded::default(),
            broker_connected: Gauge::default(),
            outbox_backlog: Family::default(),
            outbox_oldest: Family::default(),
            lag_positions: Family::default(),
            lag_seconds: Family::default(),
            dead_letters: Family::default(),
            last_read: Mutex::new(None),
        };
        let r = registry.sub_registry_with_prefix("mallbots");
        r.register(
            "websocket_connections",
            "Open websockets (GraphQL subscriptions' connections)",
            m.websockets.clone(),
        );
        r.register(
            "subscriptions_active",
            "Live GraphQL subscriptions, by field",
            m.subscriptions.clone(),
        );
        r.register(
            "subscription_executions_active",
            "Executions serving live subscriptions, by field: one serves every socket that asked for the same subscription",
            m.executions.clone(),
        );
        r.register(
            "subscriptions_closed_slow",
            "Subscriptions closed because their client fell behind, by field",
            m.closed_slow.clone(),
        );
        r.register(
            "live_changes",
            "Read-side changes received for live subscriptions",
            m.live_changes.clone(),
        );
        r.register(
            "commands_sent",
            "Commands sent by mutations, by command",
            m.commands_sent.clone(),
        );
        r.register(
            "commands_timed_out",
            "Commands whose reply did not come in time, by command",
            m.commands_timed_out.clone(),
        );
        r.register(
            "command_round_trip_seconds",
            "From sending a command to its reply (or the timeout), by command",
            m.command_seconds.clone(),
        );
        r.register(
            "graphql_request_seconds",
            "GraphQL requests over HTTP and how long they took, by operation name (\"anonymous\" without one, \"other\" past 256 names) and outcome",
            m.requests.clone(),
        );
        r.register(
            "graphql_documents",
            "GraphQL documents of HTTP requests, by whether each was parsed for its request or kept parsed from an earlier one",
            m.documents.clone(),
        );
        r.register(
            "broker_connected",
            "1 while the broker takes messages (publisher session open), else 0",
            m.broker_connected.clone(),
        );
        r.register(
            "outbox_backlog",
            "Messages written to a module's outbox and not yet published, by module",
            m.outbox_backlog.clone(),
        );
        r.register(
            "outbox_oldest_unsent_seconds",
            "Age of the oldest unpublished outbox message (0 when none), by module",
            m.outbox_oldest.clone(),
        );
        r.register(
            "projection_lag_positions",
            "Event-log positions a read model is behind the module it follows, by reader and source",
            m.lag_positions.clone(),
        );
        r.register(
            "projection_lag_seconds",
            "Age of the oldest event a read model has yet to apply (0 when caught up), by reader and source",
            m.lag_seconds.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters kept, by the queue they failed on and their state (dead, replay, replayed)",
            m.dead_letters.clone(),
        );
        // Both series from the start, at zero.
        for from in ["parsed", "kept"] {
            drop(m.documents.get_or_create(&DocumentLabels { from }));
        }
        Metrics { registry, ..m }
    }

    /// Counts an open websocket until the returned guard drops.
    pub fn websocket(&self) -> Held {
        Held::new(self.websockets.clone())
    }

    /// Counts a live subscription to `field` until the returned guard drops.
    pub fn subscription(&self, field: &'static str) -> Held {
        // Its closings exist (at 0) from the first subscription on.
        self.closed_slow
            .get_or_create(&FieldLabels { field })
            .inc_by(0);
        Held::new(
            self.subscriptions
                .get_or_create_owned(&FieldLabels { field }),
        )
    }

    /// Live subscriptions to `field` now.
    #[cfg(test)]
    pub(crate) fn subscriptions_active(&self, field: &'static str) -> i64 {
        self.subscriptions
            .get_or_create(&FieldLabels { field })
            .get()
    }

    /// Counts an execution of `field` shared by sockets until the returned
    /// guard drops.
    pub fn execution(&self, field: &'static str) -> Held {
        Held::new(self.executions.get_or_create_owned(&FieldLabels { field }))
    }

    /// Counts `count` subscriptions to `field` closed for falling behind.
    pub fn closed_slow(&self, field: &'static str, count: u64) {
        self.closed_slow
            .get_or_create(&FieldLabels { field })
            .inc_by(count);
    }

    pub fn live_changes(&self, count: u64) {
        self.live_changes.inc_by(count);
    }

    pub fn command_sent(&self, command: &'static str) {
        let labels = CommandLabels { command };
        self.commands_sent.get_or_create(&labels).inc();
        // Its timeouts exist (at 0) from the first command on.
        self.commands_timed_out.get_or_create(&labels).inc_by(0);
    }

    /// A command's round trip, ended by its reply or (`timed_out`) not.
    pub fn command_done(&self, command: &'static str, took: Duration, timed_out: bool) {
        let labels = CommandLabels { command };
        self.command_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if timed_out {
            self.commands_timed_out.get_or_create(&labels).inc();
        }
    }

    /// Counts a request's document: parsed for it, or `kept` parsed.
    pub fn document(&self, kept: bool) {
        let from = if kept { "kept" } else { "parsed" };
        self.documents.get_or_create(&DocumentLabels { from }).inc();
    }

    /// A GraphQL request over HTTP, named `operation` by its client. Only
    /// a request that ran gives its name a place among the 256: one
    /// refused before (a name the document does not have, a parse error)
    /// counts under its name only if that name has one already.
    pub fn request(&self, operation: Option<&str>, outcome: RequestOutcome, took: Duration) {
        let operation = operation.map_or("anonymous", |name| match outcome {
            RequestOutcome::refused => self.operations.known(name),
            _ => self.operations.admit(name),
        });
        let labels = RequestLabels {
            operation: operation.to_owned(),
            outcome,
        };
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The text of `/metrics`, with the database-derived gauges read anew
    /// (at most once a second) from `databases`: the modules' (their
    /// outboxes and read models) and, when among them, the dead-letter
    /// store. `sources` are modules not run here that a read model run here
    /// follows: read only for that read model's lag.
    pub async fn scrape(
        &self,
        broker: &dyn Broker,
        databases: &Databases,
        sources: &Databases,
        readers: &Readers,
    ) -> String {
        let due = {
            let mut last = self.last_read.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= READ_AT_MOST_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.read(broker, databases, sources, readers).await;
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "cannot encode /metrics");
        }
        text
    }

    /// Reads every database-derived gauge at once (all reads run
    /// concurrently, each within [`READ_DEADLINE`]): a database that does
    /// not answer delays `/metrics` by that deadline at most.
    async fn read(
        &self,
        broker: &dyn Broker,
        databases: &Databases,
        sources: &Databases,
        readers: &Readers,
    ) {
        let now = chrono::Utc::now();
        let age = |at: Option<chrono::DateTime<chrono::Utc>>| {
            at.map_or(0.0, |at| {
                (now - at).to_std().unwrap_or_default().as_secs_f64()
            })
        };
        let db_of = |name: &str| database(databases, name);
        let connected = async {
            let checked = tokio::time::timeout(READ_DEADLINE, broker.check()).await;
            self.broker_connected
                .set(i64::from(matches!(checked, Ok(Ok(())))));
        };
        let modules = databases.iter().filter(|(name, _)| *name != DEAD_LETTERS);
        let outboxes = join_all(modules.map(|(module, db)| async move {
            let read = async { Ok((outbox::pending(db).await?, outbox::oldest_unsent(db).await?)) };
            let labels = ModuleLabels { module };
            match deadline(read).await {
                Ok((backlog, oldest)) => {
                    let backlog = i64::try_from(backlog).unwrap_or(i64::MAX);
                    self.outbox_backlog.get_or_create(&labels).set(backlog);
                    self.outbox_oldest.get_or_create(&labels).set(age(oldest));
                }
                Err(error) => {
                    tracing::warn!(module, %error, "cannot read the outbox backlog for /metrics")
                }
            }
        }));
        let source_of = |name: &str| db_of(name).or_else(|| database(sources, name));
        let lags = join_all(readers.pairs().filter_map(|(reader, source)| {
            let (reader_db, source_db) = (db_of(reader)?, source_of(source)?);
            Some(async move {
                let read = async {
                    let applied = changes::applied(reader_db, source).await?;
                    let head = event_store::head(source_db).await?;
                    let waiting = if head > applied {
                        event_store::recorded_after(source_db, applied).await?
                    } else {
                        None
                    };
                    Ok(((head - applied).max(0), waiting))
                };
                let labels = LagLabels {
                    reader,
                    source: source.to_owned(),
                };
                match deadline(read).await {
                    Ok((behind, waiting)) => {
                        self.lag_positions.get_or_create(&labels).set(behind);
                        self.lag_seconds.get_or_create(&labels).set(age(waiting));
                    }
                    Err(error) => tracing::warn!(
                        reader,
                        source,
                        %error,
                        "cannot read a projection's lag for /metrics"
                    ),
                }
            })
        }));
        let dead = async {
            let Some(db) = db_of(DEAD_LETTERS) else {
                return;
            };
            match deadline(mallbots_platform::dead_letters::counts(db)).await {
                Ok(counts) => {
                    self.dead_letters.clear();
                    for (queue, state, n) in counts {
                        self.dead_letters
                            .get_or_create(&DeadLetterLabels { queue, state })
                            .set(n);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot count dead letters for /metrics"),
            }
        };
        futures_util::join!(connected, outboxes, lags, dead);
    }
}

/// Why a read made for a scrape has no value.
#[derive(Debug, thiserror::Error)]
enum ReadFailed {
    #[error(transparent)]
    Database(#[from] mallbots_platform::PlatformError),
    #[error("no answer within {} ms", READ_DEADLINE.as_millis())]
    TooSlow,
}

/// `read`'s value within [`READ_DEADLINE`], or why not.
async fn deadline<T>(
    read: impl Future<Output = Result<T, mallbots_platform::PlatformError>>,
) -> Result<T, ReadFailed> {
    tokio::time::timeout(READ_DEADLINE, read)
        .await
        .map_err(|_| ReadFailed::TooSlow)?
        .map_err(ReadFailed::from)
}

/// A gauge counted up while this lives.
#[derive(Debug)]
pub struct Held(Gauge);

impl Held {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}
