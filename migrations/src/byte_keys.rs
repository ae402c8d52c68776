use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

/// Key columns (ids, names of kinds and topics, statuses) compare byte by
/// byte on PostgreSQL. They were under the database's default collation,
/// for which every comparison in an index goes through the C library's
/// locale-aware `strcoll`, and sorts cannot use abbreviated keys: building
/// the search model's indexes in a rebuild took about a third longer.
/// The order of these values does not change: they are lowercase hex ids
/// with their dashes in the same places, or plain ASCII words. Human text
/// (names, descriptions) keeps the database's collation. SQLite compares
/// bytes already (its default collation is BINARY).
#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each table's key columns; a table a module does not have is passed over.
const KEYS: &[(&str, &[&str])] = &[
    ("inbox", &["consumer", "message_id"]),
    ("events", &["stream_id", "stream_type"]),
    ("snapshots", &["stream_id"]),
    ("views", &["kind", "id", "ref_id", "status"]),
    ("sagas", &["name", "id", "pending_command"]),
    ("changes", &["topic", "key", "owner"]),
    ("stores", &["id"]),
    ("products", &["id", "store_id"]),
    ("search_orders", &["order_id", "customer_id", "status"]),
    (
        "search_order_items",
        &["order_id", "product_id", "store_id"],
    ),
];

async fn collate(manager: &SchemaManager<'_>, collation: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for (table, columns) in KEYS {
        if !manager.has_table(*table).await? {
            continue;
        }
        // One statement a table: its indexes are built again once.
        let changes = columns
            .iter()
            .map(|column| format!("ALTER COLUMN \"{column}\" TYPE varchar COLLATE \"{collation}\""))
            .collect::<Vec<_>>()
            .join(", ");
        manager
            .get_connection()
            .execute_unprepared(&format!("ALTER TABLE \"{table}\" {changes}"))
            .await?;
    }
    Ok(())
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "C").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        collate(manager, "default").await
    }
}
