//! Starting and stopping the system (or one part of it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use axum::serve::ListenerExt;
use futures_util::future::BoxFuture;
use mallbots_baskets::BasketsQueries;
use mallbots_cosec::CosecQueries;
use mallbots_customers::CustomersQueries;
use mallbots_depot::DepotQueries;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_notifications::NotificationsQueries;
use mallbots_ordering::OrderingQueries;
use mallbots_payments::PaymentsQueries;
use mallbots_platform::commands::CommandBus;
use mallbots_platform::db::{DatabaseConfig, StartupLock};
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::module::Runtime;
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::shutdown::ShutdownTrigger;
use mallbots_platform::tls;
use mallbots_platform::{Broker, PlatformError, Shutdown};
use mallbots_search::SearchQueries;
use mallbots_stores::StoresQueries;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::config::runs;
use crate::config::{Part, Settings};
use crate::consistency::database;
use crate::live::LiveFeed;
use crate::metrics::Metrics;
use crate::serve::Starting;

use crate::modules::{DEAD_LETTERS, MODULES, Migrator, Module, readers};
use crate::state::{ARCHIVE, AppState, Queries};

/// A started system; [`Running::stop`] shuts it down gracefully.
pub struct Running {
    /// Where the gateway listens (when this process runs it).
    pub addr: Option<SocketAddr>,
    /// The broker this process uses (tools and tests publish on it).
    pub broker: Arc<dyn Broker>,
    /// The gateway's doors: the listener, websockets, subscriptions.
    doors: ShutdownTrigger,
    door_tasks: Vec<JoinHandle<()>>,
    /// The work behind them: consumers, relays, the reply listener. Stopped
    /// after the doors, so a request in flight still gets its reply.
    work: ShutdownTrigger,
    work_tasks: Vec<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    drain: Duration,
    grace: Duration,
}

impl Running {
    /// Stops at once (Ctrl-C, tests): [`Running::shut_down`] without the drain.
    pub async fn stop(self) {
        self.shut_down(false).await;
    }

    /// Stops gracefully. With `drain` (SIGTERM), `/readyz` says 503 while
    /// the gateway goes on serving for `SHUTDOWN_DRAIN_MS`, so load balancers
    /// stop sending first. Then, within `SHUTDOWN_GRACE_MS`: the listener
    /// closes and in-flight requests finish; subscriptions end with their
    /// cursors and websockets close with 1001; consumers finish the messages
    /// in hand and relays flush the outbox.
    pub async fn shut_down(self, drain: bool) {
        self.draining.store(true, Ordering::Relaxed);
        if drain && !self.drain.is_zero() && self.addr.is_some() {
            tracing::info!(drain = ?self.drain, "draining: not ready, still serving");
            tokio::time::sleep(self.drain).await;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        self.doors.trigger();
        let doors = futures_util::future::join_all(self.door_tasks);
        let doors_closed = tokio::time::timeout_at(deadline, doors).await.is_ok();
        self.work.trigger();
        let work = futures_util::future::join_all(self.work_tasks);
        let work_done = tokio::time::timeout_at(deadline, work).await.is_ok();
        if doors_closed && work_done {
            tracing::info!("stopped");
        } else {
            tracing::warn!(grace = ?self.grace, doors_closed, work_done, "shutdown grace period over; stopping anyway");
        }
    }
}

fn database_config(settings: &Settings) -> anyhow::Result<DatabaseConfig> {
    Ok(DatabaseConfig::from_url_or_dir(
        settings.database_url.as_deref(),
        &settings.data_dir,
    )?)
}

/// Module `name`'s connection: to a schema made here if missing, or, when
/// the process may not `create` (`NO_MIGRATE`), to one migrated before.
async fn open(
    config: &DatabaseConfig,
    name: &str,
    create: bool,
) -> anyhow::Result<DatabaseConnection> {
    let db = if create {
        config.connect(name).await
    } else {
        config.connect_existing(name).await
    };
    db.map_err(|err| match err {
        PlatformError::NotMigrated(_) => anyhow!("{err}: run `mallbots migrate` first"),
        err => anyhow::Error::new(err).context(format!("cannot open the {name} database")),
    })
}

/// Each module's connection, in [`MODULES`] order (see [`open`]).
async fn connect_all(
    config: &DatabaseConfig,
    create: bool,
) -> anyhow::Result<Vec<DatabaseConnection>> {
    let mut all = Vec::with_capacity(MODULES.len());
    for Module { name, .. } in MODULES {
        all.push(open(config, name, create).await?);
    }
    Ok(all)
}

async fn migrate_all(
    config: &DatabaseConfig,
    dbs: &[DatabaseConnection],
    wait: Duration,
) -> anyhow::Result<()> {
    let work = MODULES.iter().zip(dbs);
    migrate_locked(config, wait, work.map(|(m, db)| (m.name, db, m.migrate))).await
}

/// Runs each `(name, db, migrate)` in turn under the start-up lock, taken
/// on the first's database (one lock covers every schema of a database),
/// waiting at most `wait` in all for the lock and for the tables.
async fn migrate_locked<'a>(
    config: &DatabaseConfig,
    wait: Duration,
    work: impl IntoIterator<Item = (&'a str, &'a DatabaseConnection, Migrator)>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut work = work.into_iter().peekable();
    let Some(&(_, first, _)) = work.peek() else {
        return Ok(());
    };
    let lock = StartupLock::take_within(first, wait)
        .await
        .context("cannot lock the database to migrate it")?;
    for (name, db, migrate) in work {
        migrate_patiently(config, name, db, deadline, migrate).await?;
    }
    lock.release().await?;
    Ok(())
}

/// `M`'s migrations, as a [`Migrator`].
fn up<M: MigratorTrait>(db: DatabaseConnection) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move { Ok(M::up(&db, None).await?) })
}

/// Runs `migrate` on `name`'s tables. A statement that waits for a lock
/// on a table holds every later query on it up, so it waits a second at a
/// time ([`DatabaseConfig::migration_pool`]): while running processes hold
/// the tables (a long transaction), it tries again, saying whom it waits for,
/// until `deadline`. A try that gave up left nothing behind.
async fn migrate_patiently(
    config: &DatabaseConfig,
    name: &str,
    db: &DatabaseConnection,
    deadline: tokio::time::Instant,
    migrate: Migrator,
) -> anyhow::Result<()> {
    let pool = config
        .migration_pool(name, db)
        .await
        .with_context(|| format!("cannot open the {name} tables to migrate them"))?;
    let migrated = loop {
        let tried = tokio::time::Instant::now();
        let err = match migrate(pool.clone()).await {
            Ok(()) => break Ok(()),
            Err(err) => err,
        };
        let db_err = err.downcast_ref::<sea_orm::DbErr>();
        if db_err.is_some_and(mallbots_platform::database_unreachable) {
            break Err(err.context(format!(
                "cannot migrate the {name} tables: the database cannot be reached (or is busy)"
            )));
        }
        if !db_err.is_some_and(mallbots_platform::db::is_lock_timeout) {
            break Err(err.context(format!("cannot migrate the {name} tables")));
        }
        let holders = mallbots_platform::db::lock_holders(&pool, tried.elapsed())
            .await
            .map(|holders| holders.join("; "))
            .unwrap_or_else(|err| format!("(cannot tell: {err})"));
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow!(
                "migrating the {name} tables gave up waiting for running processes to let go of them \
                 (MIGRATE_LOCK_WAIT_MS): they hold them in {holders}; end those transactions \
                 or stop those processes, then migrate again; nothing of the waiting migration was applied"
            ));
        }
        tracing::warn!(
            module = name,
            %holders,
            "a migration waits for running processes to let go of its tables; trying again"
        );
        tokio::time::sleep(MIGRATION_PAUSE).await;
    };
    // A pool of its own on PostgreSQL (on SQLite, the module's, kept open);
    // a failure to close it says less than the migration's own.
    if config.is_postgres() {
        let closed = pool.close().await;
        return migrated.and_then(|()| closed.map_err(Into::into));
    }
    migrated
}

/// Between two tries of a migration that waited for a lock: queries held up
/// by the try go through meanwhile.
const MIGRATION_PAUSE: Duration = Duration::from_secs(1);

/// Under `NO_MIGRATE`, refuses tables that lack a migration of this release
/// (made by an older one, `mallbots migrate` not run since): a query on them
/// would fail later, at random, instead.
async fn check_migrated(dbs: &[DatabaseConnection]) -> anyhow::Result<()> {
    for (Module { name, migrated, .. }, db) in MODULES.iter().zip(dbs) {
        let up_to_date = migrated(db.clone())
            .await
            .with_context(|| format!("cannot read which migrations the {name} tables have"))?;
        if !up_to_date {
            bail!(
                "the {name} tables are not up to date with this release, and NO_MIGRATE is set: run `mallbots migrate` first"
            );
        }
    }
    Ok(())
}

/// How long a process that migrates waits for tables held by running
/// processes; `None` under `NO_MIGRATE`.
fn migrating(settings: &Settings) -> Option<Duration> {
    (!settings.no_migrate).then(|| settings.migrate_lock_wait())
}

/// The dead-letter store of the system `settings` name (for the
/// `dead-letters` commands).
pub async fn dead_letters(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    dead_letter_store(&database_config(settings)?, migrating(settings)).await
}

/// The dead-letter store's database (`deadletters`), migrated (waiting at
/// most `migrate` for running processes to let go of its tables) unless
/// `migrate` is `None` (`mallbots migrate` did it: gateways started at once
/// must not race to create its tables, nor need the right to).
async fn dead_letter_store(
    config: &DatabaseConfig,
    migrate: Option<Duration>,
) -> anyhow::Result<DatabaseConnection> {
    use mallbots_migrations::DeadLetterMigrator;
    let db = open(config, DEAD_LETTERS, migrate.is_some())
        .await
        .context("cannot open the dead-letter store")?;
    if let Some(wait) = migrate {
        migrate_locked(
            config,
            wait,
            [(DEAD_LETTERS, &db, up::<DeadLetterMigrator> as Migrator)],
        )
        .await?;
    } else if !mallbots_migrations::up_to_date::<DeadLetterMigrator>(&db).await? {
        bail!(
            "the dead-letter store is not up to date with this release, and NO_MIGRATE is set: run `mallbots migrate` first"
        );
    }
    Ok(db)
}

/// The in-process broker, its durable queues kept in a database of its own
/// (`broker`: a SQLite file beside the modules', or a PostgreSQL schema).
async fn in_process_broker(
    config: &DatabaseConfig,
    wait: Duration,
) -> anyhow::Result<Arc<dyn Broker>> {
    use mallbots_migrations::BrokerMigrator;
    let db = config
        .connect("broker")
        .await
        .context("cannot open the in-process broker's database")?;
    migrate_locked(
        config,
        wait,
        [("broker", &db, up::<BrokerMigrator> as Migrator)],
    )
    .await?;
    let broker = MemoryBroker::durable(db)
        .await
        .context("cannot load the in-process broker's queues")?;
    Ok(Arc::new(broker))
}

async fn broker(
    settings: &Settings,
    config: &DatabaseConfig,
    all_in_one: bool,
) -> anyhow::Result<Arc<dyn Broker>> {
    match &settings.amqp_url {
        Some(url) => {
            let ca_pem = settings
                .amqp_ca_file
                .as_deref()
                .map(|path| tls::ca_certificates(path, "AMQP_CA_FILE"))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let config = RabbitConfig {
                url: url.clone(),
                prefix: settings.amqp_prefix.clone(),
                quorum_queues: settings.amqp_quorum_queues,
                ca_pem,
            };
            let broker = RabbitBroker::connect(config)
                .await
                .context("cannot connect to RabbitMQ (AMQP_URL)")?;
            Ok(Arc::new(broker))
        }
        None if all_in_one => in_process_broker(config, settings.migrate_lock_wait()).await,
        None => bail!("running parts of the system alone needs a shared broker: set AMQP_URL"),
    }
}

/// `mallbots migrate`: every module's tables and, on RabbitMQ, every
/// module's queue with its bindings: a command or event published before its
/// module first runs waits in its queue instead of being dropped unrouted.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let config = database_config(settings)?;
    let wait = settings.migrate_lock_wait();
    migrate_all(&config, &connect_all(&config, true).await?, wait).await?;
    dead_letter_store(&config, Some(wait)).await?;
    tracing::info!("migrations applied");
    if settings.amqp_url.is_some() {
        let broker = broker(settings, &config, false).await?;
        for module in &MODULES {
            let queue = (module.queue)();
            broker
                .declare(&queue)
                .await
                .with_context(|| format!("cannot declare the {} queue", queue.name))?;
        }
        tracing::info!("queues declared");
    }
    Ok(())
}

/// The read models `mallbots rebuild` recreates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadModel {
    /// The order search rows, from the archived integration events.
    Search,
}

/// `mallbots rebuild <model>`: returns how many events were replayed. Its
/// tables are migrated first, unless `NO_MIGRATE` says the schema is
/// someone else's to change.
pub async fn rebuild(settings: &Settings, model: ReadModel) -> anyhow::Result<u64> {
    let config = database_config(settings)?;
    match model {
        ReadModel::Search => {
            let db = open(&config, mallbots_search::MODULE, !settings.no_migrate).await?;
            if let Some(wait) = migrating(settings) {
                let migrate: Migrator =
                    |db| Box::pin(async move { Ok(mallbots_search::migrate(&db).await?) });
                migrate_locked(&config, wait, [(mallbots_search::MODULE, &db, migrate)]).await?;
            } else if !mallbots_search::migrated(&db).await? {
                bail!(
                    "the search tables are missing or not up to date, and NO_MIGRATE is set: run `mallbots migrate` first"
                );
            }
            Ok(mallbots_search::rebuild(&db).await?)
        }
    }
}

/// A door that listens: where, the task serving it, and where to send the
/// routes it serves once the process has started.
struct Door {
    addr: SocketAddr,
    task: JoinHandle<()>,
    routes: tokio::sync::watch::Sender<axum::Router>,
}

/// Listens on `at` and serves `routes` there until `stopping` (see
/// [`crate::serve::serve`]).
async fn open_door(
    at: SocketAddr,
    settings: &Settings,
    routes: axum::Router,
    stopping: &Shutdown,
) -> anyhow::Result<Door> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot listen on {at}"))?;
    let addr = listener.local_addr()?;
    let send_buffer = settings.socket_send_buffer;
    let listener = listener.tap_io(move |stream| {
        // Small responses go out at once, not after the client's delayed ACK.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY");
        }
        if let Some(bytes) = send_buffer
            && let Err(err) = socket2::SockRef::from(&*stream).set_send_buffer_size(bytes)
        {
            tracing::warn!(error = %err, "cannot set the socket send buffer");
        }
    });
    let listener = crate::clients::Capped::new(listener, settings.max_connections_per_address);
    let (routes, serving) = tokio::sync::watch::channel(routes);
    let task = tokio::spawn(crate::serve::serve(
        listener,
        serving,
        settings.http_read_timeout(),
        stopping.clone(),
    ));
    Ok(Door { addr, task, routes })
}

/// Whether `parts` is the whole system (every part in this process).
fn all_in_one(parts: &[Part]) -> bool {
    parts.contains(&Part::All)
        || (runs(parts, Part::Gateway) && MODULES.iter().all(|m| runs(parts, m.part)))
}

/// Starts `parts` of the system in this process.
pub async fn start(settings: Settings, parts: &[Part]) -> anyhow::Result<Running> {
    let config = database_config(&settings)?;
    // A key that cannot be read stops the start, before anything runs.
    let auth = crate::identity::Auth::from_settings(&settings)?;
    if runs(parts, Part::Gateway) && auth.is_open() {
        tracing::warn!(
            "no AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY: the gateway is OPEN, every request acts as an operator; set one before exposing it"
        );
    }
    let whole = all_in_one(parts);
    if !whole && !config.is_postgres() {
        bail!("running parts of the system alone needs a shared database: set DATABASE_URL");
    }
    // The doors open first: while the process waits for the broker or the
    // databases, or migrates, probes hear that it lives and why it is not
    // ready yet (and requests that it is starting), not a refused connection.
    let (doors, stopping) = Shutdown::new();
    let starting = Starting::new("connecting to the broker");
    let gateway_door = if runs(parts, Part::Gateway) {
        let routes = crate::http::starting(starting.clone());
        let door = open_door(settings.listen, &settings, routes, &stopping).await?;
        let local = door.addr;
        tracing::info!("GraphQL gateway on http://{local}/ (GraphiQL), http://{local}/graphql");
        Some(door)
    } else {
        None
    };
    let metrics_door = match settings.metrics_listen {
        Some(at) if !runs(parts, Part::Gateway) => {
            let routes = crate::http::starting(starting.clone());
            let door = open_door(at, &settings, routes, &stopping)
                .await
                .context("for /metrics")?;
            tracing::info!("/metrics on http://{}/metrics", door.addr);
            Some(door)
        }
        _ => None,
    };
    let broker = broker(&settings, &config, whole).await?;
    let (work, shutdown) = Shutdown::new();
    let (mut door_tasks, mut tasks) = (Vec::new(), Vec::new());
    let draining = Arc::new(AtomicBool::new(false));

    starting.set("connecting to the databases");
    let dbs = connect_all(&config, !settings.no_migrate).await?;
    if settings.no_migrate {
        check_migrated(&dbs).await?;
    } else {
        starting.set("migrating the tables");
        migrate_all(&config, &dbs, settings.migrate_lock_wait()).await?;
    }
    starting.set("starting the modules");
    let shared = Arc::new(settings.clone());
    let metrics = Arc::new(Metrics::new());
    for (
        Module {
            part, name, start, ..
        },
        db,
    ) in MODULES.iter().zip(&dbs)
    {
        if runs(parts, *part) {
            let runtime = Runtime {
                db: db.clone(),
                broker: broker.clone(),
                messaging: metrics.messaging.clone(),
                shutdown: shutdown.clone(),
            };
            let started = start(runtime, shared.clone());
            tasks.extend(started.await?);
            tasks.push(mallbots_platform::retention::spawn(
                name,
                db.clone(),
                settings.retention(),
                ARCHIVE,
                shutdown.clone(),
            ));
        }
    }

    let mut addr = None;
    if let Some(door) = gateway_door {
        starting.set("starting the gateway");
        let bus =
            CommandBus::start(broker.clone(), settings.command_timeout(), shutdown.clone()).await?;
        // The gateway keeps the dead letters: operators see and replay them
        // with `mallbots dead-letters`.
        let dead_letters = dead_letter_store(&config, migrating(&settings)).await?;
        tasks.extend(
            mallbots_platform::dead_letters::keep(
                dead_letters.clone(),
                broker.clone(),
                shutdown.clone(),
            )
            .await?,
        );
        let live = LiveFeed::start(
            broker.clone(),
            metrics.clone(),
            settings.subscription_buffer,
            stopping.clone(),
        )
        .await?;
        let [
            stores,
            customers,
            baskets,
            payments,
            ordering,
            depot,
            cosec,
            search,
            notifications,
        ] = <[_; 9]>::try_from(dbs.clone())
            .map_err(|_| anyhow::anyhow!("one database per module"))?;
        let queries = Queries {
            stores: StoresQueries::new(stores),
            customers: CustomersQueries::new(customers),
            baskets: BasketsQueries::new(baskets),
            payments: PaymentsQueries::new(payments),
            ordering: OrderingQueries::new(ordering),
            depot: DepotQueries::new(depot),
            cosec: CosecQueries::new(cosec),
            search: SearchQueries::new(search),
            notifications: NotificationsQueries::new(notifications),
        };
        // Subscriptions from now on start at the log's newest change (not
        // at its beginning, should the live feed reset before any change).
        match queries.search.last_position().await {
            Ok(position) => live.begin_at(position),
            Err(err) => tracing::warn!(error = %err, "the change log's newest position is unknown"),
        }
        let readers = readers();
        let databases: Vec<_> = MODULES
            .iter()
            .map(|m| m.name)
            .zip(dbs.clone())
            .chain([(DEAD_LETTERS, dead_letters.clone())])
            .collect();
        if let Some(reader) = readers.missing(&databases).next() {
            bail!("the {reader} read model has no database");
        }
        let state = AppState {
            bus,
            queries,
            live,
            metrics: metrics.clone(),
            broker: broker.clone(),
            readers: Arc::new(readers),
            databases,
            settings: Arc::new(settings.clone()),
            auth: Arc::new(auth),
            stopping: stopping.clone(),
            draining: draining.clone(),
        };
        let _starting = door.routes.send_replace(crate::http::router(state));
        addr = Some(door.addr);
        door_tasks.push(door.task);
    }
    if let Some(door) = metrics_door {
        // A process without the gateway still shows what it counts, and
        // how far behind the read models it runs are (their sources' logs
        // are read for that alone).
        let readers = readers();
        let named = |(m, db): (&Module, &DatabaseConnection)| (m.name, db.clone());
        let modules: Vec<_> = MODULES
            .iter()
            .zip(&dbs)
            .filter(|(m, _)| runs(parts, m.part))
            .map(named)
            .collect();
        let followed_here = |source: &str| {
            readers
                .of_source(source)
                .any(|reader| database(&modules, reader).is_some())
        };
        let sources: Vec<_> = MODULES
            .iter()
            .zip(&dbs)
            .filter(|(m, _)| !runs(parts, m.part) && followed_here(m.name))
            .map(named)
            .collect();
        let router = crate::http::metrics_only(
            metrics,
            broker.clone(),
            modules,
            sources,
            readers,
            stopping.clone(),
        );
        let _starting = door.routes.send_replace(router);
        door_tasks.push(door.task);
    }
    tracing::info!(?parts, "running");
    Ok(Running {
        addr,
        broker,
        doors,
        door_tasks,
        work,
        work_tasks: tasks,
        draining,
        drain: Duration::from_millis(settings.shutdown_drain_ms),
        grace: Duration::from_millis(settings.shutdown_grace_ms),
    })
}
