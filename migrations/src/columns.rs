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

/// Adds `column` to `table` and the index `index` on `indexed` (columns of
/// `table`), each unless it is there already.
pub(crate) async fn add_indexed_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &mut ColumnDef,
    index: &str,
    indexed: &[&str],
) -> Result<(), DbErr> {
    add_column(manager, table, column).await?;
    let mut create = Index::create();
    create.name(index).table(Alias::new(table)).if_not_exists();
    for name in indexed {
        create.col(Alias::new(*name));
    }
    manager.create_index(create.to_owned()).await
}

/// Drops the index `index`, then `column` from `table` (the `down` of
/// [`add_indexed_column`]).
pub(crate) async fn drop_indexed_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &str,
    index: &str,
) -> Result<(), DbErr> {
    manager
        .drop_index(
            Index::drop()
                .name(index)
                .table(Alias::new(table))
                .to_owned(),
        )
        .await?;
    drop_column(manager, table, column).await
}
