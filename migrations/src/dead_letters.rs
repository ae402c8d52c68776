use sea_orm_migration::prelude::*;

/// Dead letters as an operator sees them: why each failed, where it came
/// from, and whether it was sent back.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    MessageId,
    MessageType,
    Queue,
    RoutingKey,
    Reason,
    Properties,
    Body,
    DeadAt,
    State,
    ReplayedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DeadLetters::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(DeadLetters::MessageId).string())
                    .col(ColumnDef::new(DeadLetters::MessageType).string())
                    .col(ColumnDef::new(DeadLetters::Queue).string().not_null())
                    .col(ColumnDef::new(DeadLetters::RoutingKey).string().not_null())
                    .col(ColumnDef::new(DeadLetters::Reason).text().not_null())
                    .col(ColumnDef::new(DeadLetters::Properties).text().not_null())
                    .col(ColumnDef::new(DeadLetters::Body).blob().not_null())
                    .col(
                        ColumnDef::new(DeadLetters::DeadAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DeadLetters::State).string().not_null())
                    .col(ColumnDef::new(DeadLetters::ReplayedAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("dead_letters_state")
                    .table(DeadLetters::Table)
                    .col(DeadLetters::State)
                    .col(DeadLetters::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(DeadLetters::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
