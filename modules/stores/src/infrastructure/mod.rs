//! Infrastructure: tables, the module's wiring to the broker.

pub(crate) mod read_model;

use std::sync::Arc;

use mallbots_contracts::stores::COMMANDS;
use mallbots_migrations::StoresMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::{Broker, BrokerError, Exchange, QueueSpec, Shutdown, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::commands::StoresHandler;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// The queue the module's commands arrive on.
pub const COMMAND_QUEUE: &str = "stores.commands";

/// Creates or updates the module's tables.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), ModuleError> {
    Ok(StoresMigrator::up(db, None).await?)
}

/// Runs the module: its command consumer and its outbox relay, until `shutdown`.
pub async fn start(
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, ModuleError> {
    let queue = QueueSpec::durable(COMMAND_QUEUE).bind(Exchange::Commands, COMMANDS);
    Ok(module::run(db, broker, queue, Arc::new(StoresHandler), shutdown).await?)
}
