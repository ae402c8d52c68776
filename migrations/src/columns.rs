//! Column changes that later migrations share.

use sea_orm_migration::prelude::*;

/// Adds `column` to `table` unless it is there already (a database that got
/// it before the migration history recorded it).
pub(crate) async fn add_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &mut ColumnDef,
) -> Result<(), DbErr> {
    let name = column.get_column_name();
    if manager.has_column(table, &name).await? {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .add_column(column.to_owned())
                .to_owned(),
        )
        .await
}

/// Drops `column` from `table` (a migration's `down`).
pub(crate) async fn drop_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &str,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(Alias::new(table))
                .drop_column(Alias::new(column))
                .to_owned(),
        )
        .await
}
