use sea_orm_migration::prelude::*;

/// The reply a command got, kept beside its inbox row when its sender asked
/// for idempotency: a retry of the same command gets the same reply.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    Reply,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("inbox", "reply").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .add_column(ColumnDef::new(Inbox::Reply).text())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .drop_column(Inbox::Reply)
                    .to_owned(),
            )
            .await
    }
}
