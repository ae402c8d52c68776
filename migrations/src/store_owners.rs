use sea_orm_migration::prelude::*;

/// A store's owner in the stores read model: the queries a store owner makes
/// filter by it in the database.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::add_indexed_column(
            manager,
            "stores",
            ColumnDef::new(Alias::new("owner_id")).string().null(),
            "stores_owner_id",
            &["owner_id"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::drop_indexed_column(manager, "stores", "owner_id", "stores_owner_id").await
    }
}
