//! Wiring: tables and the saga's queue.

use std::sync::Arc;

use mallbots_contracts::Message;
use mallbots_contracts::ordering::OrderCreated;
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::saga::SagaEngine;
use mallbots_platform::{BrokerError, Exchange, QueueSpec, module};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::task::JoinHandle;

use crate::application::CosecHandler;

/// The saga's durable queue: created orders arrive here, and so do the
/// replies to its commands (it is their `reply_to`), so a restart loses none.
pub(crate) const QUEUE: &str = "cosec.saga";

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
    // A saga: its steps in order, one process at a time.
    QueueSpec::durable(QUEUE)
        .bind(Exchange::Events, OrderCreated::TYPE)
        .single_active()
}

/// Runs the saga until `shutdown`.
pub async fn start(runtime: Runtime) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    let handler = CosecHandler {
        engine: SagaEngine::new(QUEUE),
    };
    module::run(runtime, queue(), Arc::new(handler)).await
}
