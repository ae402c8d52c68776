//! Wiring: tables and the module's queue.

use std::sync::Arc;

use mallbots_contracts::baskets::COMMANDS;
use mallbots_contracts::stores;
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::{BrokerError, Exchange, QueueSpec, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::BasketsHandler;

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
    // Its commands, and the stores' events its catalog cache is kept from,
    // on one queue: a product added before an AddItem is known to it.
    QueueSpec::durable("baskets.commands")
        .bind(Exchange::Commands, COMMANDS)
        .bind(Exchange::Events, stores::EVENTS)
        // The catalog cache follows the stores' events in order.
        .single_active()
}

/// Runs the module until `shutdown`.
pub async fn start(runtime: Runtime) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    module::run(runtime, queue(), Arc::new(BasketsHandler)).await
}
