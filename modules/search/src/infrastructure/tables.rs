//! The order rows and their items, as search stores them: the tables, and
//! how summaries are written to and read from them.

use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::OrderSummary;
use mallbots_platform::PlatformError;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait};

use crate::domain::{Positioned, cents};

pub(crate) mod orders {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "search_orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        pub customer_id: String,
        pub customer_name: String,
        pub status: String,
        pub total_cents: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub position: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod items {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "search_order_items")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub order_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub product_id: String,
        pub store_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn unreadable(what: &str, reason: impl std::fmt::Display) -> PlatformError {
    PlatformError::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// How [`write_orders`] treats rows already there.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Rows {
    /// Some may exist: upsert each order and replace its items.
    Replace,
    /// The tables were just emptied (a rebuild): plain inserts. Upserts and
    /// the per-order item deletes cost more than half a rebuild's time.
    Fresh,
}

/// Writes order rows and their item rows, many to a statement.
pub(crate) async fn write_orders<C: ConnectionTrait>(
    conn: &C,
    rows: &[&Positioned<OrderSummary>],
    mode: Rows,
) -> Result<(), PlatformError> {
    // 9 columns a row: well under every backend's bound-parameter limit.
    for chunk in rows.chunks(1000) {
        let models = chunk
            .iter()
            .map(|(summary, position)| order_row(summary, *position))
            .collect::<Result<Vec<_>, _>>()?;
        let insert = orders::Entity::insert_many(models);
        if mode == Rows::Fresh {
            insert.exec_without_returning(conn).await?;
        } else {
            insert
                .on_conflict(
                    OnConflict::column(orders::Column::OrderId)
                        .update_columns([
                            orders::Column::CustomerId,
                            orders::Column::CustomerName,
                            orders::Column::Status,
                            orders::Column::TotalCents,
                            orders::Column::CreatedAt,
                            orders::Column::UpdatedAt,
                            orders::Column::Body,
                            orders::Column::Position,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(conn)
                .await?;
            let ids = chunk.iter().map(|(s, _)| s.order.order_id.to_string());
            items::Entity::delete_many()
                .filter(items::Column::OrderId.is_in(ids))
                .exec(conn)
                .await?;
        }
        let lines: Vec<_> = chunk
            .iter()
            .flat_map(|(s, _)| item_rows(&s.order))
            .collect();
        for lines in lines.chunks(5000) {
            items::Entity::insert_many(lines.to_vec())
                .exec_without_returning(conn)
                .await?;
        }
    }
    Ok(())
}

/// An order's row in `search_orders`.
fn order_row(summary: &OrderSummary, position: i64) -> Result<orders::ActiveModel, PlatformError> {
    let order = &summary.order;
    let body = serde_json::to_string(summary).map_err(|e| unreadable("order summary", e))?;
    Ok(orders::ActiveModel {
        order_id: Set(order.order_id.to_string()),
        customer_id: Set(order.customer_id.to_string()),
        customer_name: Set(summary.customer_name.clone()),
        status: Set(order.status.as_str().to_owned()),
        total_cents: Set(cents(order.total)),
        created_at: Set(order.created_at),
        updated_at: Set(order.occurred_at),
        body: Set(body),
        position: Set(position),
    })
}

/// An order's rows in `search_order_items`: one per product (an order
/// lists each product once).
fn item_rows(order: &OrderView) -> Vec<items::ActiveModel> {
    let id = order.order_id.to_string();
    let mut lines: Vec<items::ActiveModel> = Vec::new();
    for item in &order.items {
        let product_id = item.product_id.to_string();
        if lines.iter().any(|l| l.product_id.as_ref() == &product_id) {
            continue;
        }
        lines.push(items::ActiveModel {
            order_id: Set(id.clone()),
            product_id: Set(product_id),
            store_id: Set(item.store_id.to_string()),
        });
    }
    lines
}

pub(crate) fn decode_summary(row: &orders::Model) -> Result<OrderSummary, PlatformError> {
    serde_json::from_str(&row.body).map_err(|e| unreadable("search row", e))
}
