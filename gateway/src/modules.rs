//! Every module as the system runs it: its part, its database, how to
//! migrate and start it, and its queue (what it handles and which events it
//! follows). Start-up, read-your-writes and the AsyncAPI document read this
//! one table.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use mallbots_platform::QueueSpec;
use mallbots_platform::module::Runtime;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::config::{Part, Settings};
use crate::consistency::Readers;

pub type Tasks = anyhow::Result<Vec<JoinHandle<()>>>;
pub type Starter = fn(Runtime, Arc<Settings>) -> BoxFuture<'static, Tasks>;
pub type Migrator = fn(DatabaseConnection) -> BoxFuture<'static, anyhow::Result<()>>;
pub type MigrationCheck = fn(DatabaseConnection) -> BoxFuture<'static, anyhow::Result<bool>>;

/// Every module: its part, its database, how to migrate and start it.
/// A module as the system runs it.
pub struct Module {
    pub part: Part,
    pub name: &'static str,
    pub migrate: Migrator,
    /// Whether its tables have every migration of this release.
    pub migrated: MigrationCheck,
    pub start: Starter,
    /// Its queue: what it handles and which events it follows.
    pub queue: fn() -> QueueSpec,
}

/// Module `$krate` as part `$part`: started with its runtime alone, or by
/// `start`.
macro_rules! module {
    ($part:expr, $krate:ident) => {
        module!($part, $krate, start: |runtime, _| {
            Box::pin(async move { Ok($krate::start(runtime).await?) })
        })
    };
    ($part:expr, $krate:ident, start: $start:expr) => {
        Module {
            part: $part,
            name: $krate::MODULE,
            migrate: |db| Box::pin(async move { Ok($krate::migrate(&db).await?) }),
            migrated: |db| Box::pin(async move { Ok($krate::migrated(&db).await?) }),
            start: $start,
            queue: $krate::queue,
        }
    };
}

pub const MODULES: [Module; 9] = [
    module!(Part::Stores, mallbots_stores),
    module!(Part::Customers, mallbots_customers),
    module!(Part::Baskets, mallbots_baskets),
    module!(Part::Payments, mallbots_payments),
    module!(Part::Ordering, mallbots_ordering),
    module!(Part::Depot, mallbots_depot),
    module!(Part::Cosec, mallbots_cosec),
    module!(Part::Search, mallbots_search, start: |runtime, settings| {
        Box::pin(async move { Ok(mallbots_search::start(runtime, settings.search_batch).await?) })
    }),
    module!(Part::Notifications, mallbots_notifications, start: |runtime, settings| {
        Box::pin(start_notifications(runtime, settings))
    }),
];

async fn start_notifications(runtime: Runtime, settings: Arc<Settings>) -> Tasks {
    let sender: Arc<dyn mallbots_notifications::Sender> = match &settings.notifications_webhook_url
    {
        Some(url) => {
            Arc::new(mallbots_notifications::Webhook::new(url).map_err(anyhow::Error::msg)?)
        }
        None => Arc::new(mallbots_notifications::RecordOnly),
    };
    Ok(mallbots_notifications::start(runtime, sender).await?)
}

/// The database of the dead-letter store the gateway keeps (beside the
/// modules' own).
pub const DEAD_LETTERS: &str = "deadletters";

/// Each module's queue: what it handles and which events it follows.
pub fn queues() -> Vec<(&'static str, QueueSpec)> {
    MODULES.iter().map(|m| (m.name, (m.queue)())).collect()
}

/// Which module's read models follow which modules' events, from their queues.
pub fn readers() -> Readers {
    Readers::of(queues())
}
