//! The projection (live and replayed) and the queries.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::customers::CustomerView;
use mallbots_contracts::depot::ShoppingListView;
use mallbots_contracts::module_of;
use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::{
    ArchivedEvent, CatalogChange, CatalogChangeKind, ChangeBody, Changed, Committed, LoggedChange,
    OrderSummary, TOPIC_EVENT,
};
use mallbots_contracts::stores::{CatalogUpdate, ProductView};
use mallbots_platform::changes::{self, Change};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::db::SecondaryIndexes;
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::event_envelope;
use mallbots_platform::views::{self, Row};
use mallbots_platform::{Envelope, Exchange, Outgoing, PlatformError};
use rust_decimal::Decimal;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, QueryOrder, QuerySelect, QueryTrait,
};
use uuid::Uuid;

use crate::domain::{self, Fold, Positioned, cents, newer, summary};
use crate::infrastructure::tables::{items, orders};

const CUSTOMER: &str = "cache.customer";

fn decode_error(what: &str, reason: impl std::fmt::Display) -> PlatformError {
    PlatformError::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// Serializes the order projection against a rebuild (PostgreSQL; SQLite has
/// one connection, so it is serialized already).
pub(crate) async fn lock<C: ConnectionTrait>(conn: &C) -> Result<(), PlatformError> {
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_unprepared("SELECT pg_advisory_xact_lock(7311)")
            .await?;
    }
    Ok(())
}

/// What an event means to search.
enum Fact {
    Order(OrderView),
    Customer(CustomerView),
    ShoppingList(ShoppingListView),
    Product {
        change: CatalogChangeKind,
        product: ProductView,
    },
    Other,
}

fn fact(event: &ArchivedEvent) -> Result<Fact, PlatformError> {
    let (kind, version, payload) = (
        event.message_type.as_str(),
        event.schema_version,
        &event.payload,
    );
    let fail = |reason: String| decode_error(kind, reason);
    if let Some(order) = OrderView::from_event(kind, version, payload) {
        return Ok(Fact::Order(order.map_err(fail)?));
    }
    if let Some(customer) = CustomerView::from_event(kind, version, payload) {
        return Ok(Fact::Customer(customer.map_err(fail)?));
    }
    if let Some(list) = ShoppingListView::from_event(kind, version, payload) {
        return Ok(Fact::ShoppingList(list.map_err(fail)?));
    }
    let (Some(update), Some(change)) = (
        CatalogUpdate::from_message(kind, version, payload),
        CatalogChangeKind::of(kind),
    ) else {
        return Ok(Fact::Other);
    };
    Ok(match update.map_err(fail)? {
        CatalogUpdate::Product(product) | CatalogUpdate::ProductRemoved(product) => {
            Fact::Product { change, product }
        }
        CatalogUpdate::Store(_) => Fact::Other,
    })
}

/// The order rows and customer cache entries a batch touches: read once,
/// changed in memory event by event (by the same rules as one at a time),
/// written once.
#[derive(Default)]
struct Staged {
    orders: HashMap<Uuid, Positioned<OrderSummary>>,
    customers: HashMap<Uuid, Positioned<CustomerView>>,
    dirty_orders: BTreeSet<Uuid>,
    dirty_customers: BTreeSet<Uuid>,
}

impl Staged {
    /// Reads what `facts` will look at.
    async fn load<C: ConnectionTrait>(conn: &C, facts: &[Fact]) -> Result<Self, PlatformError> {
        let (mut order_ids, mut customer_ids) = (BTreeSet::new(), BTreeSet::new());
        for fact in facts {
            match fact {
                Fact::Order(order) => {
                    order_ids.insert(order.order_id.to_string());
                    customer_ids.insert(order.customer_id);
                }
                Fact::Customer(customer) => {
                    customer_ids.insert(customer.customer_id);
                }
                _ => {}
            }
        }
        let mut staged = Staged::default();
        let order_ids: Vec<String> = order_ids.into_iter().collect();
        for chunk in order_ids.chunks(1000) {
            let rows = orders::Entity::find()
                .filter(orders::Column::OrderId.is_in(chunk.iter().cloned()))
                .all(conn)
                .await?;
            staged.keep_rows(rows)?;
        }
        let customer_ids: Vec<Uuid> = customer_ids.into_iter().collect();
        for (customer, position) in
            views::get_all::<_, CustomerView>(conn, CUSTOMER, &customer_ids).await?
        {
            staged
                .customers
                .insert(customer.customer_id, (customer, position));
        }
        Ok(staged)
    }

    /// Stored rows, unless this batch holds newer ones already.
    fn keep_rows(&mut self, rows: Vec<orders::Model>) -> Result<(), PlatformError> {
        for row in rows {
            let summary = decode_summary(&row)?;
            self.orders
                .entry(summary.order.order_id)
                .or_insert((summary, row.position));
        }
        Ok(())
    }

    /// Applies one event; returns the changes it made.
    async fn apply<C: ConnectionTrait>(
        &mut self,
        conn: &C,
        event: &ArchivedEvent,
        fact: Fact,
    ) -> Result<Vec<Changed>, PlatformError> {
        let position = event.source_position.unwrap_or(0);
        match fact {
            Fact::Order(order) => {
                let id = order.order_id;
                if !newer(self.orders.get(&id), position) {
                    return Ok(vec![]);
                }
                let customer = self.customers.get(&order.customer_id).map(|(c, _)| c);
                let summary = summary(order, customer);
                let change = order_change(&summary);
                self.orders.insert(id, (summary, position));
                self.dirty_orders.insert(id);
                Ok(vec![change])
            }
            Fact::Customer(customer) => {
                let id = customer.customer_id;
                let before = self.customers.get(&id);
                if !newer(before, position) {
                    return Ok(vec![]);
                }
                let same_contact = before.is_some_and(|(b, _)| {
                    b.name == customer.name && b.sms_number == customer.sms_number
                });
                self.customers.insert(id, (customer.clone(), position));
                self.dirty_customers.insert(id);
                // Orders change only when what they show of the customer does
                // (not when the customer is authorized or disabled).
                if same_contact {
                    return Ok(vec![]);
                }
                self.recontact(conn, &customer).await
            }
            Fact::ShoppingList(list) => Ok(vec![Changed {
                key: list.shopping_list_id.to_string(),
                owner: Some(list.order_id.to_string()),
                body: ChangeBody::ShoppingList(list),
            }]),
            Fact::Product { change, product } => Ok(vec![Changed {
                key: product.store_id.to_string(),
                owner: None,
                body: ChangeBody::Catalog(CatalogChange { change, product }),
            }]),
            Fact::Other => Ok(vec![]),
        }
    }

    /// A customer's new name or number, onto each of their orders (in id
    /// order).
    async fn recontact<C: ConnectionTrait>(
        &mut self,
        conn: &C,
        customer: &CustomerView,
    ) -> Result<Vec<Changed>, PlatformError> {
        let stored = orders::Entity::find()
            .filter(orders::Column::CustomerId.eq(customer.customer_id.to_string()))
            .all(conn)
            .await?;
        self.keep_rows(stored)?;
        let mut theirs: Vec<Uuid> = self
            .orders
            .iter()
            .filter(|(_, (s, _))| s.order.customer_id == customer.customer_id)
            .map(|(id, _)| *id)
            .collect();
        theirs.sort_unstable();
        let mut changed = Vec::with_capacity(theirs.len());
        for id in theirs {
            if let Some((summary, _)) = self.orders.get_mut(&id) {
                *summary = domain::summary(summary.order.clone(), Some(customer));
                changed.push(order_change(summary));
                self.dirty_orders.insert(id);
            }
        }
        Ok(changed)
    }

    /// Writes what changed, many rows to a statement.
    async fn flush<C: ConnectionTrait>(self, conn: &C) -> Result<(), PlatformError> {
        let dirty: Vec<&Positioned<OrderSummary>> = self
            .dirty_orders
            .iter()
            .filter_map(|id| self.orders.get(id))
            .collect();
        write_orders(conn, &dirty, Rows::Replace).await?;
        for id in &self.dirty_customers {
            if let Some((customer, position)) = self.customers.get(id) {
                views::put(conn, customer_row(customer, *position)).await?;
            }
        }
        Ok(())
    }
}

fn customer_row(customer: &CustomerView, position: i64) -> Row<'_, CustomerView> {
    Row {
        kind: CUSTOMER,
        id: customer.customer_id,
        ref_id: None,
        status: None,
        body: customer,
        position,
    }
}

fn order_change(summary: &OrderSummary) -> Changed {
    Changed {
        key: summary.order.order_id.to_string(),
        owner: Some(summary.order.customer_id.to_string()),
        body: ChangeBody::Order(summary.clone()),
    }
}

/// How [`write_orders`] treats rows already there.
#[derive(Clone, Copy, PartialEq)]
enum Rows {
    /// Some may exist: upsert each order and replace its items.
    Replace,
    /// The tables were just emptied (a rebuild): plain inserts. Upserts and
    /// the per-order item deletes cost more than half a rebuild's time.
    Fresh,
}

/// Writes order rows and their item rows, many to a statement.
async fn write_orders<C: ConnectionTrait>(
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
    let body = serde_json::to_string(summary).map_err(|e| decode_error("order summary", e))?;
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

fn decode_summary(row: &orders::Model) -> Result<OrderSummary, PlatformError> {
    serde_json::from_str(&row.body).map_err(|e| decode_error("search row", e))
}

fn archived(envelope: &Envelope) -> ArchivedEvent {
    ArchivedEvent {
        message_type: envelope.message_type.clone(),
        schema_version: envelope.schema_version,
        source_position: envelope.position(),
        occurred_at: envelope.timestamp,
        payload: envelope.payload.clone(),
    }
}

/// Rebuild: folds every archived event in memory, in the order search
/// applied them, then writes the model afresh, many rows to a statement.
pub(crate) async fn replay_all(txn: &DatabaseTransaction) -> Result<u64, PlatformError> {
    let started = std::time::Instant::now();
    let mut fold = Fold::default();
    // Windows of log positions, about half of them archived events.
    const WINDOW: i64 = 10_000;
    let (last, mut after, mut replayed) = (changes::last(txn).await?, 0, 0);
    while after < last {
        let upto = after.saturating_add(WINDOW);
        let batch =
            changes::between_as::<_, ArchivedEvent>(txn, &[TOPIC_EVENT], after, upto).await?;
        after = upto;
        for (_, event) in batch {
            let position = event.source_position.unwrap_or(0);
            match fact(&event)? {
                Fact::Order(order) => fold.order(order, position),
                Fact::Customer(customer) => fold.customer(customer, position),
                Fact::ShoppingList(_) | Fact::Product { .. } | Fact::Other => {}
            }
            replayed += 1;
        }
    }
    tracing::info!(replayed, elapsed = ?started.elapsed(), "rebuild: archive read and folded");
    // Rows are written without their secondary indexes, which are built once
    // at the end (queries on the search tables wait until the rebuild commits).
    let tables = [items::Entity.table_name(), orders::Entity.table_name()];
    let indexes = SecondaryIndexes::drop(txn, &tables).await?;
    items::Entity::delete_many().exec(txn).await?;
    orders::Entity::delete_many().exec(txn).await?;
    views::delete_kind(txn, CUSTOMER).await?;
    tracing::info!(elapsed = ?started.elapsed(), "rebuild: old rows deleted");
    let (summaries, customers) = fold.finish();
    write_orders(txn, &summaries.iter().collect::<Vec<_>>(), Rows::Fresh).await?;
    indexes.create(txn).await?;
    let rows: Vec<_> = customers
        .iter()
        .map(|(customer, position)| customer_row(customer, *position))
        .collect();
    views::insert_all(txn, &rows).await?;
    tracing::info!(orders = summaries.len(), elapsed = ?started.elapsed(), "rebuild: rows written");
    Ok(replayed)
}

pub(crate) struct SearchHandler;

#[async_trait]
impl CommandHandler for SearchHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        envelope: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let mut accepted = self.handle_batch(txn, outbox, &[envelope]).await?;
        Ok(accepted.pop().unwrap_or_default())
    }

    /// Per event: archive it, apply it (in memory), log each change. Per
    /// batch: the rows written once, the changes logged in one go, one
    /// checkpoint write per source module and one `Committed` notice.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        envelopes: &[&Envelope],
    ) -> Result<Vec<Accepted>, CommandError> {
        lock(txn).await?;
        let events: Vec<ArchivedEvent> = envelopes.iter().map(|e| archived(e)).collect();
        let facts = events.iter().map(fact).collect::<Result<Vec<_>, _>>()?;
        let mut staged = Staged::load(txn, &facts).await?;
        // Each change with the index of the event that made it.
        let mut made: Vec<(usize, Changed)> = Vec::new();
        let mut checkpoints: Vec<(&str, i64)> = Vec::new();
        for (i, (event, fact)) in events.iter().zip(facts).enumerate() {
            made.push((
                i,
                Changed {
                    key: event.message_type.clone(),
                    owner: None,
                    body: ChangeBody::Event(event.clone()),
                },
            ));
            for change in staged.apply(txn, event, fact).await? {
                made.push((i, change));
            }
            if let Some(position) = event.source_position {
                let source = module_of(&event.message_type);
                match checkpoints.iter_mut().find(|(s, _)| *s == source) {
                    Some((_, at)) => *at = (*at).max(position),
                    None => checkpoints.push((source, position)),
                }
            }
        }
        staged.flush(txn).await?;
        let bodies = made
            .iter()
            .map(|(_, c)| c.body.to_json())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| decode_error("change", e))?;
        let rows: Vec<(&str, &str, &str)> = made
            .iter()
            .zip(&bodies)
            .map(|((_, c), body)| (c.body.topic(), c.key.as_str(), body.as_str()))
            .collect();
        let positions = changes::record_all(txn, &rows).await?;
        if positions.len() != made.len() {
            return Err(PlatformError::Unexpected(format!(
                "{} changes logged as {} positions",
                made.len(),
                positions.len()
            ))
            .into());
        }
        let mut accepted = vec![Accepted::default(); envelopes.len()];
        let mut logged = Vec::with_capacity(made.len());
        for ((i, change), position) in made.into_iter().zip(positions) {
            accepted[i].position = Some(position);
            logged.push(LoggedChange { position, change });
        }
        for (source, position) in checkpoints {
            changes::advance(txn, source, position).await?;
        }
        if let (Some(cause), Some(last)) = (envelopes.last(), logged.last()) {
            let position = last.position;
            let message = Outgoing::of(&Committed { changes: logged })?;
            let key = message.message_type;
            let notice = event_envelope(cause, message, position);
            outbox.enqueue(txn, Exchange::Events, key, &notice).await?;
        }
        Ok(accepted)
    }
}

/// The filters of `searchOrders`; every one given must hold.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    pub customer_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub store_ids: Vec<Uuid>,
    pub product_ids: Vec<Uuid>,
    pub min_total: Option<Decimal>,
    pub max_total: Option<Decimal>,
    pub status: Option<String>,
}

/// The search read side.
#[derive(Clone)]
pub struct SearchQueries {
    db: DatabaseConnection,
}

impl SearchQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        SearchQueries { db }
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderSummary>, PlatformError> {
        orders::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| decode_summary(&row))
            .transpose()
    }

    /// Orders matching `filter` after `after`, oldest first.
    pub async fn search(
        &self,
        filter: &OrderFilter,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<views::Page<OrderSummary>, PlatformError> {
        use orders::Column as O;
        let mut cond = Condition::all();
        if let Some(c) = filter.customer_id {
            cond = cond.add(O::CustomerId.eq(c.to_string()));
        }
        if let Some(t) = filter.created_after {
            cond = cond.add(O::CreatedAt.gte(t));
        }
        if let Some(t) = filter.created_before {
            cond = cond.add(O::CreatedAt.lt(t));
        }
        if let Some(m) = filter.min_total {
            cond = cond.add(O::TotalCents.gte(cents(m)));
        }
        if let Some(m) = filter.max_total {
            cond = cond.add(O::TotalCents.lte(cents(m)));
        }
        if let Some(s) = &filter.status {
            cond = cond.add(O::Status.eq(s.clone()));
        }
        for (ids, column) in [
            (&filter.store_ids, items::Column::StoreId),
            (&filter.product_ids, items::Column::ProductId),
        ] {
            if !ids.is_empty() {
                let holding = items::Entity::find()
                    .select_only()
                    .column(items::Column::OrderId)
                    .filter(column.is_in(ids.iter().map(Uuid::to_string)))
                    .into_query();
                cond = cond.add(O::OrderId.in_subquery(holding));
            }
        }
        if let Some(after) = after {
            cond = cond.add(O::OrderId.gt(after.to_string()));
        }
        let mut rows = orders::Entity::find()
            .filter(cond)
            .order_by_asc(O::OrderId)
            .limit(first + 1)
            .all(&self.db)
            .await?;
        let has_next = rows.len() as u64 > first;
        rows.truncate(first as usize);
        let items = rows
            .iter()
            .map(|row| {
                let summary = decode_summary(row)?;
                Ok((summary.order.order_id, summary))
            })
            .collect::<Result<_, PlatformError>>()?;
        Ok(views::Page { items, has_next })
    }

    /// The last change pruned from the log (0: none).
    pub async fn pruned_through(&self) -> Result<i64, PlatformError> {
        changes::pruned_through(&self.db).await
    }

    /// Logged changes of `topics` after `after` (subscription replay).
    pub async fn changes(
        &self,
        topics: &[&str],
        after: i64,
        limit: u64,
    ) -> Result<Vec<Change>, PlatformError> {
        changes::since(&self.db, topics, after, limit).await
    }
}
