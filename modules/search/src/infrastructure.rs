//! Tables (in `tables`), the module's queue, and rebuilding.

use std::sync::Arc;

use mallbots_migrations::SearchMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::module::Runtime;
use mallbots_platform::{BrokerError, Exchange, PlatformError, QueueSpec, module};
use sea_orm::{
    DatabaseConnection, DbErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::task::JoinHandle;

use crate::application::{self, SearchHandler};

/// The search read model's own tables.
pub(crate) mod tables;

/// Creates or updates the module's tables.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    SearchMigrator::up(db, None).await
}

/// Whether the module's tables are up to date (no migration left to run).
/// Changes nothing: where migrations never ran, their own table is not made.
pub async fn migrated(db: &DatabaseConnection) -> Result<bool, DbErr> {
    mallbots_migrations::up_to_date::<SearchMigrator>(db).await
}

/// The events search keeps its model from (never its own: it publishes on
/// `search.#`).
const SOURCES: [&str; 6] = [
    "stores.#",
    "customers.#",
    "baskets.#",
    "payments.#",
    "ordering.#",
    "depot.#",
];

/// Events applied in one transaction, at most, unless the process says.
/// Catching up on 100,000 queued events, 500 was 10-20% faster than 100;
/// larger gained nothing more (BENCHMARKS.md).
pub const BATCH: u16 = 500;

/// The module's queue: what it handles, and the events it follows.
pub fn queue() -> QueueSpec {
    batched_queue(BATCH)
}

/// The queue, applying up to `batch` events in one transaction.
fn batched_queue(batch: u16) -> QueueSpec {
    // Batched: catching up on a backlog commits (and notifies) once per
    // batch instead of once per event.
    SOURCES.iter().fold(
        // In order, one process at a time (the others stand by).
        QueueSpec::durable("search.events")
            .batched(batch)
            .single_active(),
        |q, pattern| q.bind(Exchange::Events, *pattern),
    )
}

/// Runs the module until `shutdown`, applying up to `batch` events in one
/// transaction.
pub async fn start(runtime: Runtime, batch: u16) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    module::run(runtime, batched_queue(batch), Arc::new(SearchHandler)).await
}

/// Recreates the search rows from the archived integration events, in one
/// transaction, while the system runs (the live projection waits for it).
/// Returns how many events were replayed.
pub async fn rebuild(db: &DatabaseConnection) -> Result<u64, PlatformError> {
    // On SQLite the rebuild is another process than the system's: a
    // transaction that read first could not then write once the system had
    // written meanwhile ("database is locked"). It takes the write lock up
    // front instead, waiting for it like any writer.
    let txn = db
        .begin_with_options(TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        })
        .await?;
    application::lock(&txn).await?;
    let replayed = application::rebuild::replay_all(&txn).await?;
    txn.commit().await?;
    Ok(replayed)
}
