use sea_orm_migration::prelude::*;

/// A store's owner in the stores read model: the queries a store owner makes
/// filter by it in the database.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Stores {
    Table,
    OwnerId,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("stores", "owner_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Stores::Table)
                        .add_column(ColumnDef::new(Stores::OwnerId).string().null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("stores_owner_id")
                    .table(Stores::Table)
                    .col(Stores::OwnerId)
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
                    .table(Stores::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Stores::Table)
                    .drop_column(Stores::OwnerId)
                    .to_owned(),
            )
            .await
    }
}
