use sea_orm_migration::prelude::*;

/// What a module that keeps read models from other modules' events needs:
/// - `changes`: its change log. Each committed change to a read model gets a
///   position; live subscriptions push changes and resume from a position;
/// - `checkpoints`: per source module, the highest event position applied
///   (read-your-writes waits on it).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Changes {
    Table,
    Position,
    Topic,
    Key,
    Body,
    RecordedAt,
}

#[derive(DeriveIden)]
enum Checkpoints {
    Table,
    Source,
    Position,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Changes::Position)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Changes::Topic).string().not_null())
                    .col(ColumnDef::new(Changes::Key).string().not_null())
                    .col(ColumnDef::new(Changes::Body).text().not_null())
                    .col(
                        ColumnDef::new(Changes::RecordedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("changes_topic_key")
                    .table(Changes::Table)
                    .col(Changes::Topic)
                    .col(Changes::Key)
                    .col(Changes::Position)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Checkpoints::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Checkpoints::Source)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Checkpoints::Position)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Changes::Table.into_iden(), Checkpoints::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
