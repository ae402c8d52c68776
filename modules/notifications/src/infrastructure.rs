//! The senders (adapters of the application's port), tables and the
//! module's queue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mallbots_contracts::{customers, ordering};
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::{BrokerError, Exchange, QueueSpec, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::{NotificationsHandler, Sender};
use crate::domain::Notification;

/// The default: the record is the delivery.
pub struct RecordOnly;

#[async_trait]
impl Sender for RecordOnly {
    async fn send(&self, _: &Notification) -> Result<(), String> {
        Ok(())
    }
}

/// POSTs each notification as JSON to a URL (an SMS gateway, a chat hook).
pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: impl Into<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Webhook {
            url: url.into(),
            client,
        })
    }
}

#[async_trait]
impl Sender for Webhook {
    async fn send(&self, notification: &Notification) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(notification)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the webhook answered {}", response.status()));
        }
        Ok(())
    }
}

/// Creates or updates the module's tables.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    PlatformMigrator::up(db, None).await
}

/// Whether the module's tables are up to date (no migration left to run).
pub async fn migrated(db: &DatabaseConnection) -> Result<bool, DbErr> {
    mallbots_migrations::up_to_date::<PlatformMigrator>(db).await
}

/// The module's queue: what it handles, and the events it follows.
pub fn queue() -> QueueSpec {
    // Every customers' and ordering event, not only those it tells of: its
    // checkpoints must pass each position (read-your-writes waits on them).
    QueueSpec::durable("notifications.events")
        .bind(Exchange::Events, customers::EVENTS)
        .bind(Exchange::Events, ordering::EVENTS)
        // A read model: in order, one process at a time.
        .single_active()
}

/// Runs the module until `shutdown`, delivering through `sender`.
pub async fn start(
    runtime: Runtime,
    sender: Arc<dyn Sender>,
) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    module::run(runtime, queue(), Arc::new(NotificationsHandler { sender })).await
}
