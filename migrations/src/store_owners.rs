use sea_orm_migration::prelude::*;

/// A store's owner in the stores read model: the queries a store owner makes
/// filter by it in the database.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::add_column(
            manager,
            "stores",
            ColumnDef::new(Alias::new("owner_id")).string().null(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("stores_owner_id")
                    .table(Alias::new("stores"))
                    .col(Alias::new("owner_id"))
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("stores_owner_id")
                    .table(Alias::new("stores"))
                    .to_owned(),
            )
            .await?;
        crate::columns::drop_column(manager, "stores", "owner_id").await
    }
}
