//! Every module's tables. Each module has its own schema (PostgreSQL) or its
//! own file (SQLite), so each has its own [`MigratorTrait`] whose history is
//! kept beside its tables; the platform's tables (outbox, inbox, event store,
//! views, sagas, change log, checkpoints) are part of every module's migrator.

use sea_orm_migration::prelude::*;

mod actors;
mod broker;
mod change_owners;
mod columns;
mod dead_letters;
mod documents;
mod inbox_replies;
mod platform;
mod read_side;
mod retention;
mod search;
mod store_owners;
mod stores_read_model;

pub use sea_orm_migration;

/// Whether `db` has every migration of `M` applied. Changes nothing: where
/// migrations never ran, their own table is not made.
pub async fn up_to_date<M: MigratorTrait>(
    db: &sea_orm_migration::sea_orm::DatabaseConnection,
) -> Result<bool, DbErr> {
    Ok(M::get_pending_migrations_read_only(db).await?.is_empty())
}

/// The platform's migrations written before any module had its own; those
/// written later follow each module's own, in the order they were written
/// (history is checked against it).
fn platform_migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(platform::Migration),
        Box::new(documents::Migration),
        Box::new(read_side::Migration),
        Box::new(inbox_replies::Migration),
        Box::new(retention::Migration),
        Box::new(actors::Migration),
    ]
}

/// The platform's tables alone: for testing the platform itself, and for every
/// module whose read side is documents (views) only.
pub struct PlatformMigrator;

impl MigratorTrait for PlatformMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = platform_migrations();
        all.push(Box::new(change_owners::Migration));
        all
    }
}

pub struct StoresMigrator;

impl MigratorTrait for StoresMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        // In the order they were written: history is checked against it.
        vec![
            Box::new(platform::Migration),
            Box::new(stores_read_model::Migration),
            Box::new(documents::Migration),
            Box::new(read_side::Migration),
            Box::new(inbox_replies::Migration),
            Box::new(retention::Migration),
            Box::new(actors::Migration),
            Box::new(store_owners::Migration),
            Box::new(change_owners::Migration),
        ]
    }
}

/// The search module: the platform's tables and the order search rows.
pub struct SearchMigrator;

impl MigratorTrait for SearchMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = platform_migrations();
        all.push(Box::new(search::Migration));
        all.push(Box::new(change_owners::Migration));
        all
    }
}

/// The in-process broker's own tables (embedded mode), in a database of its own.
pub struct BrokerMigrator;

impl MigratorTrait for BrokerMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(broker::Migration)]
    }
}

/// The dead-letter store an operator works with, in a database of its own.
pub struct DeadLetterMigrator;

impl MigratorTrait for DeadLetterMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(dead_letters::Migration)]
    }
}
