//! Wiring: tables and the module's queue.

use std::sync::Arc;

use mallbots_contracts::customers::COMMANDS;
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::{Broker, BrokerError, Exchange, QueueSpec, Shutdown, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::CustomersHandler;

/// Creates or updates the module's tables.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    PlatformMigrator::up(db, None).await
}

/// Runs the module until `shutdown`.
pub async fn start(
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    let queue = QueueSpec::durable("customers.commands").bind(Exchange::Commands, COMMANDS);
    module::run(db, broker, queue, Arc::new(CustomersHandler), shutdown).await
}
