//! Wiring: tables and the module's queue.

use std::sync::Arc;

use mallbots_contracts::Message;
use mallbots_contracts::depot::COMMANDS;
use mallbots_contracts::ordering::{OrderCanceled, OrderStarted};
use mallbots_contracts::stores;
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::{BrokerError, Exchange, QueueSpec, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::DepotHandler;

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
    // Its commands, the stores' events its cache is kept from, and the
    // orders' cancels and starts, on one queue.
    QueueSpec::durable("depot.commands")
        .bind(Exchange::Commands, COMMANDS)
        .bind(Exchange::Events, stores::EVENTS)
        .bind(Exchange::Events, OrderCanceled::TYPE)
        .bind(Exchange::Events, OrderStarted::TYPE)
        // The catalog cache follows the stores' events in order.
        .single_active()
}

/// Runs the module until `shutdown`.
pub async fn start(runtime: Runtime) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    module::run(runtime, queue(), Arc::new(DepotHandler)).await
}
