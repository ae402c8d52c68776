use sea_orm_migration::prelude::*;

/// Who did what: each stored event keeps the actor (`<role>:<uuid>`) its
/// command carried.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::add_column(
            manager,
            "events",
            ColumnDef::new(Alias::new("actor")).text().null(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::drop_column(manager, "events", "actor").await
    }
}
