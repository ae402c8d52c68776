use sea_orm_migration::prelude::*;

/// Indexes the retention's pruning finds old rows by, so it never scans a
/// whole table.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    RecordedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("inbox_received_at")
                    .table(Inbox::Table)
                    .col(Inbox::ReceivedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("changes_recorded_at")
                    .table(Changes::Table)
                    .col(Changes::RecordedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            ("inbox_received_at", Inbox::Table.into_iden()),
            ("changes_recorded_at", Changes::Table.into_iden()),
        ] {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
