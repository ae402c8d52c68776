//! Infrastructure: tables, the module's wiring to the broker.

pub(crate) mod read_model;

use std::sync::Arc;

use mallbots_contracts::stores::COMMANDS;
use mallbots_migrations::StoresMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::{BrokerError, Exchange, QueueSpec, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::commands::StoresHandler;

/// The queue the module's commands arrive on.
pub const COMMAND_QUEUE: &str = "stores.commands";

/// Creates or updates the module's tables.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    StoresMigrator::up(db, None).await
}

/// Whether the module's tables are up to date (no migration left to run).
pub async fn migrated(db: &DatabaseConnection) -> Result<bool, DbErr> {
    mallbots_migrations::up_to_date::<StoresMigrator>(db).await
}

/// Commands handled at the same time.
const CONCURRENT_COMMANDS: u16 = 8;

/// The module's queue: what it handles, and the events it follows.
pub fn queue() -> QueueSpec {
    // Commands on different stores and products do not wait for each other;
    // two on one aggregate race, and the loser retries on the winner's
    // version (optimistic concurrency). The pool has 10 connections.
    QueueSpec::durable(COMMAND_QUEUE)
        .bind(Exchange::Commands, COMMANDS)
        .concurrent(CONCURRENT_COMMANDS)
}

/// Runs the module: its command consumer and its outbox relay, until `shutdown`.
pub async fn start(runtime: Runtime) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    module::run(runtime, queue(), Arc::new(StoresHandler)).await
}
