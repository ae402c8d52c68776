use sea_orm_migration::prelude::*;

/// Tables every module may use beside its event store:
/// - `views`: document read models (one JSON row per entity, with the few
///   columns they are looked up by), also the local caches modules keep from
///   other modules' events;
/// - `sagas`: the state of each running saga, saved after every step.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Views {
    Table,
    Kind,
    Id,
    RefId,
    Status,
    Body,
    Position,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Name,
    Id,
    Step,
    Compensating,
    Status,
    Data,
    PendingCommand,
    LastError,
    UpdatedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Views::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Views::Kind).string().not_null())
                    .col(ColumnDef::new(Views::Id).string().not_null())
                    .col(ColumnDef::new(Views::RefId).string())
                    .col(ColumnDef::new(Views::Status).string())
                    .col(ColumnDef::new(Views::Body).text().not_null())
                    .col(ColumnDef::new(Views::Position).big_integer().not_null())
                    .col(
                        ColumnDef::new(Views::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Views::Kind).col(Views::Id))
                    .to_owned(),
            )
            .await?;
        for (name, second) in [("views_ref", Views::RefId), ("views_status", Views::Status)] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Views::Table)
                        .col(Views::Kind)
                        .col(second)
                        .col(Views::Id)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Sagas::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Sagas::Name).string().not_null())
                    .col(ColumnDef::new(Sagas::Id).string().not_null())
                    .col(ColumnDef::new(Sagas::Step).integer().not_null())
                    .col(ColumnDef::new(Sagas::Compensating).boolean().not_null())
                    .col(ColumnDef::new(Sagas::Status).string().not_null())
                    .col(ColumnDef::new(Sagas::Data).text().not_null())
                    .col(ColumnDef::new(Sagas::PendingCommand).string())
                    .col(ColumnDef::new(Sagas::LastError).text())
                    .col(
                        ColumnDef::new(Sagas::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Sagas::Name).col(Sagas::Id))
                    .to_owned(),
            )
            .await?;
        // A reply finds its saga by the command it answers.
        manager
            .create_index(
                Index::create()
                    .name("sagas_pending_command")
                    .table(Sagas::Table)
                    .col(Sagas::PendingCommand)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Views::Table.into_iden(), Sagas::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
