//! Starting and stopping the system (or one part of it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use mallbots_platform::commands::CommandBus;
use mallbots_platform::db::DatabaseConfig;
use mallbots_platform::memory::MemoryBroker;
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::shutdown::ShutdownTrigger;
use mallbots_platform::{Broker, Shutdown};
use mallbots_stores::StoresQueries;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::live::LiveFeed;
use crate::metrics::Metrics;
use crate::{Part, Settings};

/// What every request handler and resolver can reach.
#[derive(Clone)]
pub struct AppState {
    pub bus: CommandBus,
    pub stores: StoresQueries,
    pub live: LiveFeed,
    pub metrics: Arc<Metrics>,
    pub broker: Arc<dyn Broker>,
    pub databases: Vec<DatabaseConnection>,
    pub settings: Arc<Settings>,
}

/// A started system; [`Running::stop`] shuts it down gracefully.
pub struct Running {
    /// Where the gateway listens (when this process runs it).
    pub addr: Option<SocketAddr>,
    /// The broker this process uses (tools and tests publish on it).
    pub broker: Arc<dyn Broker>,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops taking work, lets what is in flight finish (bounded), then returns.
    pub async fn stop(self) {
        self.trigger.trigger();
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not finish within 10 s of shutdown");
        }
    }
}

fn database_config(settings: &Settings) -> anyhow::Result<DatabaseConfig> {
    Ok(DatabaseConfig::from_url_or_dir(
        settings.database_url.as_deref(),
        &settings.data_dir,
    )?)
}

async fn broker(settings: &Settings, part: Part) -> anyhow::Result<Arc<dyn Broker>> {
    match &settings.amqp_url {
        Some(url) => {
            let config = RabbitConfig {
                url: url.clone(),
                prefix: settings.amqp_prefix.clone(),
                quorum_queues: settings.amqp_quorum_queues,
            };
            let broker = RabbitBroker::connect(config)
                .await
                .context("cannot connect to RabbitMQ (AMQP_URL)")?;
            Ok(Arc::new(broker))
        }
        None if part == Part::All => Ok(Arc::new(MemoryBroker::new())),
        None => bail!("running one part alone needs a shared broker: set AMQP_URL"),
    }
}

/// `mallbots migrate`: every module's tables.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let config = database_config(settings)?;
    let stores = config.connect(mallbots_stores::MODULE).await?;
    mallbots_stores::migrate(&stores).await?;
    tracing::info!("migrations applied");
    Ok(())
}

pub async fn start(settings: Settings, part: Part) -> anyhow::Result<Running> {
    let config = database_config(&settings)?;
    if part != Part::All && !config.is_postgres() {
        bail!("running one part alone needs a shared database: set DATABASE_URL");
    }
    let broker = broker(&settings, part).await?;
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = Vec::new();

    let stores_db = config
        .connect(mallbots_stores::MODULE)
        .await
        .context("cannot open the stores database")?;
    if !settings.no_migrate {
        mallbots_stores::migrate(&stores_db).await?;
    }
    if part.runs_stores() {
        tasks.extend(
            mallbots_stores::start(stores_db.clone(), broker.clone(), shutdown.clone()).await?,
        );
    }

    let mut addr = None;
    if part.runs_gateway() {
        let bus =
            CommandBus::start(broker.clone(), settings.command_timeout(), shutdown.clone()).await?;
        let metrics = Arc::new(Metrics::default());
        let live = LiveFeed::start(broker.clone(), metrics.clone(), shutdown.clone()).await?;
        let state = AppState {
            bus,
            stores: StoresQueries::new(stores_db.clone()),
            live,
            metrics,
            broker: broker.clone(),
            databases: vec![stores_db.clone()],
            settings: Arc::new(settings.clone()),
        };
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let local = listener.local_addr()?;
        addr = Some(local);
        let router = crate::http::router(state);
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "HTTP server failed");
            }
        }));
        tracing::info!("GraphQL gateway on http://{local}/ (GraphiQL), http://{local}/graphql");
    }
    Ok(Running {
        addr,
        broker,
        trigger,
        tasks,
    })
}
