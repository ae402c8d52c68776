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

/// Every module: its part, its database, how to migrate and start it.
/// A module as the system runs it.
pub struct Module {
    pub part: Part,
    pub name: &'static str,
    pub migrate: Migrator,
    pub start: Starter,
    /// Its queue: what it handles and which events it follows.
    pub queue: fn() -> QueueSpec,
}

pub const MODULES: [Module; 9] = [
    Module {
        part: Part::Stores,
        name: mallbots_stores::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_stores::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_stores::start(runtime).await?) }),
        queue: mallbots_stores::queue,
    },
    Module {
        part: Part::Customers,
        name: mallbots_customers::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_customers::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_customers::start(runtime).await?) }),
        queue: mallbots_customers::queue,
    },
    Module {
        part: Part::Baskets,
        name: mallbots_baskets::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_baskets::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_baskets::start(runtime).await?) }),
        queue: mallbots_baskets::queue,
    },
    Module {
        part: Part::Payments,
        name: mallbots_payments::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_payments::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_payments::start(runtime).await?) }),
        queue: mallbots_payments::queue,
    },
    Module {
        part: Part::Ordering,
        name: mallbots_ordering::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_ordering::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_ordering::start(runtime).await?) }),
        queue: mallbots_ordering::queue,
    },
    Module {
        part: Part::Depot,
        name: mallbots_depot::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_depot::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_depot::start(runtime).await?) }),
        queue: mallbots_depot::queue,
    },
    Module {
        part: Part::Cosec,
        name: mallbots_cosec::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_cosec::migrate(&db).await?) }),
        start: |runtime, _| Box::pin(async move { Ok(mallbots_cosec::start(runtime).await?) }),
        queue: mallbots_cosec::queue,
    },
    Module {
        part: Part::Search,
        name: mallbots_search::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_search::migrate(&db).await?) }),
        start: |runtime, settings| {
            Box::pin(
                async move { Ok(mallbots_search::start(runtime, settings.search_batch).await?) },
            )
        },
        queue: mallbots_search::queue,
    },
    Module {
        part: Part::Notifications,
        name: mallbots_notifications::MODULE,
        migrate: |db| Box::pin(async move { Ok(mallbots_notifications::migrate(&db).await?) }),
        start: |runtime, settings| Box::pin(start_notifications(runtime, settings)),
        queue: mallbots_notifications::queue,
    },
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
