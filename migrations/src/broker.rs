use sea_orm_migration::prelude::*;

/// The in-process broker's durable queues (the embedded mode): what it has
/// accepted survives a crash of the process.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BrokerQueues {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum BrokerBindings {
    Table,
    Exchange,
    Pattern,
    Queue,
}

#[derive(DeriveIden)]
enum BrokerMessages {
    Table,
    Id,
    Queue,
    RoutingKey,
    Meta,
    Body,
    ExpiresAtMs,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BrokerQueues::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BrokerQueues::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BrokerBindings::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(BrokerBindings::Exchange).string().not_null())
                    .col(ColumnDef::new(BrokerBindings::Pattern).string().not_null())
                    .col(ColumnDef::new(BrokerBindings::Queue).string().not_null())
                    .primary_key(
                        Index::create()
                            .col(BrokerBindings::Exchange)
                            .col(BrokerBindings::Pattern)
                            .col(BrokerBindings::Queue),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BrokerMessages::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(BrokerMessages::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(BrokerMessages::Queue).string().not_null())
                    .col(
                        ColumnDef::new(BrokerMessages::RoutingKey)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(BrokerMessages::Meta).text().not_null())
                    .col(ColumnDef::new(BrokerMessages::Body).blob().not_null())
                    .col(ColumnDef::new(BrokerMessages::ExpiresAtMs).big_integer())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BrokerMessages::Table.into_iden(),
            BrokerBindings::Table.into_iden(),
            BrokerQueues::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
