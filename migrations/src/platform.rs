use sea_orm_migration::prelude::*;

/// The outbox, inbox, event store and snapshots every module uses.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Exchange,
    RoutingKey,
    Envelope,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum Inbox {
    Table,
    Consumer,
    MessageId,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Position,
    StreamId,
    StreamType,
    Version,
    EventType,
    SchemaVersion,
    Payload,
    CorrelationId,
    CausationId,
    RecordedAt,
}

#[derive(DeriveIden)]
enum Snapshots {
    Table,
    StreamId,
    StreamType,
    Version,
    State,
    TakenAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Outbox::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Outbox::Exchange).string().not_null())
                    .col(ColumnDef::new(Outbox::RoutingKey).string().not_null())
                    .col(ColumnDef::new(Outbox::Envelope).text().not_null())
                    .col(
                        ColumnDef::new(Outbox::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Outbox::SentAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_unsent")
                    .table(Outbox::Table)
                    .col(Outbox::SentAt)
                    .col(Outbox::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Inbox::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Inbox::Consumer).string().not_null())
                    .col(ColumnDef::new(Inbox::MessageId).string().not_null())
                    .col(
                        ColumnDef::new(Inbox::ReceivedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Inbox::Consumer).col(Inbox::MessageId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Events::Position)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Events::StreamId).string().not_null())
                    .col(ColumnDef::new(Events::StreamType).string().not_null())
                    .col(ColumnDef::new(Events::Version).big_integer().not_null())
                    .col(ColumnDef::new(Events::EventType).string().not_null())
                    .col(ColumnDef::new(Events::SchemaVersion).integer().not_null())
                    .col(ColumnDef::new(Events::Payload).text().not_null())
                    .col(ColumnDef::new(Events::CorrelationId).string().not_null())
                    .col(ColumnDef::new(Events::CausationId).string().not_null())
                    .col(
                        ColumnDef::new(Events::RecordedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // The optimistic-concurrency guard: one event per stream version.
        manager
            .create_index(
                Index::create()
                    .name("events_stream_version")
                    .table(Events::Table)
                    .col(Events::StreamId)
                    .col(Events::Version)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Snapshots::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Snapshots::StreamId)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Snapshots::StreamType).string().not_null())
                    .col(ColumnDef::new(Snapshots::Version).big_integer().not_null())
                    .col(ColumnDef::new(Snapshots::State).text().not_null())
                    .col(
                        ColumnDef::new(Snapshots::TakenAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Outbox::Table.into_iden(),
            Inbox::Table.into_iden(),
            Events::Table.into_iden(),
            Snapshots::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
