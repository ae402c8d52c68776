use sea_orm_migration::prelude::*;

/// The search read model: one denormalized row per order, and the stores and
/// products each order holds (for the store and product filters), indexed
/// for every filter of `searchOrders`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SearchOrders {
    Table,
    OrderId,
    CustomerId,
    CustomerName,
    Status,
    TotalCents,
    CreatedAt,
    UpdatedAt,
    Body,
    Position,
}

#[derive(DeriveIden)]
enum SearchOrderItems {
    Table,
    OrderId,
    StoreId,
    ProductId,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use SearchOrders as O;
        manager
            .create_table(
                Table::create()
                    .table(O::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(O::OrderId).string().not_null().primary_key())
                    .col(ColumnDef::new(O::CustomerId).string().not_null())
                    .col(ColumnDef::new(O::CustomerName).string().not_null())
                    .col(ColumnDef::new(O::Status).string().not_null())
                    // Cents, for range filters; the exact decimal is in the body.
                    .col(ColumnDef::new(O::TotalCents).big_integer().not_null())
                    .col(
                        ColumnDef::new(O::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(O::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(O::Body).text().not_null())
                    .col(ColumnDef::new(O::Position).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("search_orders_customer", O::CustomerId),
            ("search_orders_created", O::CreatedAt),
            ("search_orders_status", O::Status),
            ("search_orders_total", O::TotalCents),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(O::Table)
                        .col(col)
                        .col(O::OrderId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        use SearchOrderItems as I;
        manager
            .create_table(
                Table::create()
                    .table(I::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(I::OrderId).string().not_null())
                    .col(ColumnDef::new(I::StoreId).string().not_null())
                    .col(ColumnDef::new(I::ProductId).string().not_null())
                    .primary_key(Index::create().col(I::OrderId).col(I::ProductId))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("search_items_store", I::StoreId),
            ("search_items_product", I::ProductId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(I::Table)
                        .col(col)
                        .col(I::OrderId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            SearchOrders::Table.into_iden(),
            SearchOrderItems::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
