use sea_orm_migration::prelude::*;

/// The reply a command got, kept beside its inbox row when its sender asked
/// for idempotency: a retry of the same command gets the same reply.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::add_column(manager, "inbox", ColumnDef::new(Alias::new("reply")).text())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::columns::drop_column(manager, "inbox", "reply").await
    }
}
