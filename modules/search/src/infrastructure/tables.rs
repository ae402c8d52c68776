//! The order rows and their items, as search stores them: the tables, and
//! how summaries are written to and read from them.

use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::OrderSummary;
use mallbots_platform::PlatformError;
use sea_orm::entity::prelude::*;
use std::collections::{BTreeMap, HashMap};

use mallbots_platform::db;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, Condition, ConnectionTrait, DbBackend, Iterable, QueryTrait, Statement,
};
use uuid::Uuid;

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

/// An order's item rows: the store of each product it lists.
pub(crate) type ItemRows = BTreeMap<Uuid, Uuid>;

/// The item rows `order` needs: one per product (an order lists each
/// product once; were one listed twice, its first line would count).
pub(crate) fn item_rows(order: &OrderView) -> ItemRows {
    let mut rows = ItemRows::new();
    for item in &order.items {
        rows.entry(item.product_id).or_insert(item.store_id);
    }
    rows
}

/// What turns the item rows `was` (none: the order has no row yet) into
/// `now`: the products whose rows go, and the rows to add.
fn item_changes(was: Option<&ItemRows>, now: &ItemRows) -> (Vec<Uuid>, Vec<(Uuid, Uuid)>) {
    let empty = ItemRows::new();
    let was = was.unwrap_or(&empty);
    let gone = was
        .iter()
        .filter(|(product, store)| now.get(product) != Some(store))
        .map(|(product, _)| *product)
        .collect();
    let added = now
        .iter()
        .filter(|(product, store)| was.get(product) != Some(store))
        .map(|(product, store)| (*product, *store))
        .collect();
    (gone, added)
}

/// How [`write_orders`] treats rows already there.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// Some orders have rows: upsert each order, and change only the item
    /// rows that differ from those `stored` holds (an order missing from it
    /// has none). An order's items do not change once it is placed, so
    /// this is usually no statement at all. Deleting and inserting every
    /// order's items each batch grew with the table: 200 ms a statement at
    /// 100,000 orders, and catch-up fell from 5,600 to 2,500 events/s.
    Replace { stored: &'a HashMap<Uuid, ItemRows> },
    /// The tables were just emptied (a rebuild): plain inserts. Upserts and
    /// the per-order item deletes cost more than half a rebuild's time.
    Fresh,
}

/// Writes order rows and their item rows, many to a statement. Each
/// statement is built (rows serialized, SQL made) while the database runs
/// the one before it.
pub(crate) async fn write_orders<C: ConnectionTrait>(
    conn: &C,
    rows: &[&Positioned<OrderSummary>],
    mode: Rows<'_>,
) -> Result<(), PlatformError> {
    let statements = OrderStatements {
        // 9 columns a row: well under every backend's bound-parameter limit.
        chunks: rows.chunks(1000),
        mode,
        backend: conn.get_database_backend(),
        items_of: None,
        items: Vec::new().into_iter(),
    };
    db::execute_all(conn, statements).await
}

/// [`write_orders`]' statements, made as they are asked for: a chunk's
/// order rows, then its item rows, then the next chunk's.
struct OrderStatements<'a> {
    chunks: std::slice::Chunks<'a, &'a Positioned<OrderSummary>>,
    mode: Rows<'a>,
    backend: DbBackend,
    /// The chunk whose orders were made and whose items are next.
    items_of: Option<&'a [&'a Positioned<OrderSummary>]>,
    items: std::vec::IntoIter<Statement>,
}

impl Iterator for OrderStatements<'_> {
    type Item = Result<Statement, PlatformError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(statement) = self.items.next() {
                return Some(Ok(statement));
            }
            if let Some(chunk) = self.items_of.take() {
                self.items = items_statements(chunk, self.mode, self.backend).into_iter();
                continue;
            }
            let chunk = self.chunks.next()?;
            self.items_of = Some(chunk);
            return Some(orders_statement(chunk, self.mode, self.backend));
        }
    }
}

/// The insert (or upsert) of `chunk`'s order rows.
fn orders_statement(
    chunk: &[&Positioned<OrderSummary>],
    mode: Rows<'_>,
    backend: DbBackend,
) -> Result<Statement, PlatformError> {
    let models = chunk
        .iter()
        .map(|(summary, position)| order_row(summary, *position))
        .collect::<Result<Vec<_>, _>>()?;
    let mut insert = orders::Entity::insert_many(models);
    if let Rows::Replace { .. } = mode {
        // Every column but the key, from the row.
        let columns = orders::Column::iter().filter(|c| !matches!(c, orders::Column::OrderId));
        insert = insert.on_conflict(
            OnConflict::column(orders::Column::OrderId)
                .update_columns(columns)
                .to_owned(),
        );
    }
    Ok(insert.build(backend))
}

/// The statements that bring `chunk`'s item rows to its orders' items.
fn items_statements(
    chunk: &[&Positioned<OrderSummary>],
    mode: Rows<'_>,
    backend: DbBackend,
) -> Vec<Statement> {
    let stored = match mode {
        Rows::Replace { stored } => Some(stored),
        Rows::Fresh => None,
    };
    let (mut added, mut removed) = (Vec::new(), Condition::any());
    for (summary, _) in chunk {
        let order = &summary.order;
        let id = order.order_id.to_string();
        let was = stored.and_then(|s| s.get(&order.order_id));
        let (gone, new) = item_changes(was, &item_rows(order));
        for product in gone {
            removed = removed.add(
                Condition::all()
                    .add(items::Column::OrderId.eq(id.clone()))
                    .add(items::Column::ProductId.eq(product.to_string())),
            );
        }
        added.extend(new.into_iter().map(|(product, store)| items::ActiveModel {
            order_id: Set(id.clone()),
            product_id: Set(product.to_string()),
            store_id: Set(store.to_string()),
        }));
    }
    let mut statements = Vec::new();
    if !removed.is_empty() {
        statements.push(items::Entity::delete_many().filter(removed).build(backend));
    }
    for lines in added.chunks(5000) {
        statements.push(items::Entity::insert_many(lines.to_vec()).build(backend));
    }
    statements
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

pub(crate) fn decode_summary(row: &orders::Model) -> Result<OrderSummary, PlatformError> {
    serde_json::from_str(&row.body).map_err(|e| unreadable("search row", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_item_rows_that_differ_change() {
        let (p, q, r, s1, s2) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let was = ItemRows::from([(p, s1), (q, s1)]);
        // Unchanged: nothing to write.
        assert_eq!(item_changes(Some(&was), &was), (vec![], vec![]));
        // A new order: every row added.
        assert_eq!(item_changes(None, &was).1.len(), 2);
        // q dropped, r added, p moved to another store (its row replaced).
        let now = ItemRows::from([(p, s2), (r, s1)]);
        let (mut gone, mut added) = item_changes(Some(&was), &now);
        gone.sort_unstable();
        added.sort_unstable();
        let mut expected_gone = vec![p, q];
        expected_gone.sort_unstable();
        let mut expected_added = vec![(p, s2), (r, s1)];
        expected_added.sort_unstable();
        assert_eq!((gone, added), (expected_gone, expected_added));
    }
}
