//! The projection: each event archived, applied and logged as a change;
//! rebuilding it (`rebuild`) and its queries (`queries`).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use mallbots_contracts::customers::CustomerView;
use mallbots_contracts::depot::ShoppingListView;
use mallbots_contracts::module_of;
use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::{
    ArchivedEvent, CatalogChange, CatalogChangeKind, ChangeBody, Changed, Committed,
    CommittedBodies, LoggedBody, OrderSummary,
};
use mallbots_contracts::stores::{CatalogUpdate, ProductView};
use mallbots_platform::changes::{self, NewChange};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::event_envelope;
use mallbots_platform::views::{self, Row};
use mallbots_platform::{Envelope, Exchange, Outgoing, Payload, PlatformError};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{self, Positioned, newer, summary};
use crate::infrastructure::tables::{
    ItemRows, Rows, decode_summary, item_rows, orders, write_orders,
};

pub mod queries;
pub(crate) mod rebuild;

pub(super) const CUSTOMER: &str = "cache.customer";

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
pub(super) enum Fact {
    Order(OrderView),
    Customer(CustomerView),
    ShoppingList(ShoppingListView),
    Product {
        change: CatalogChangeKind,
        product: ProductView,
    },
    Other,
}

pub(super) fn fact(event: &ArchivedEvent) -> Result<Fact, PlatformError> {
    let (kind, version, payload) = (
        event.message_type.as_str(),
        event.schema_version,
        event.payload.raw(),
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
    /// The item rows of each order that has a row (as read, not as changed).
    stored_items: HashMap<Uuid, ItemRows>,
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
            self.stored_items
                .entry(summary.order.order_id)
                .or_insert_with(|| item_rows(&summary.order));
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
        let stored = &self.stored_items;
        write_orders(conn, &dirty, Rows::Replace { stored }).await?;
        for id in &self.dirty_customers {
            if let Some((customer, position)) = self.customers.get(id) {
                views::put(conn, customer_row(customer, *position)).await?;
            }
        }
        Ok(())
    }
}

pub(super) fn customer_row(customer: &CustomerView, position: i64) -> Row<'_, CustomerView> {
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

fn archived(envelope: &Envelope) -> ArchivedEvent {
    ArchivedEvent {
        message_type: envelope.message_type.clone(),
        schema_version: envelope.schema_version,
        source_position: envelope.position(),
        occurred_at: envelope.timestamp,
        payload: envelope.payload.clone(),
    }
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
        let rows: Vec<NewChange> = made
            .iter()
            .zip(&bodies)
            .map(|((_, c), body)| NewChange {
                topic: c.body.topic(),
                key: &c.key,
                owner: c.owner.as_deref(),
                body: body.json(),
            })
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
        for (((i, change), position), body) in made.iter().zip(positions).zip(&bodies) {
            accepted[*i].position = Some(position);
            logged.push(LoggedBody::of(position, change, body));
        }
        for (source, position) in checkpoints {
            changes::advance(txn, source, position).await?;
        }
        if let (Some(cause), Some(last)) = (envelopes.last(), logged.last()) {
            let position = last.position;
            // Each body as serialized for the log, not serialized again.
            let notice = CommittedBodies { changes: logged };
            let body = Payload::of(&notice).map_err(|e| decode_error("notice", e))?;
            let message = Outgoing::of_body::<Committed>(body);
            let key = message.message_type;
            let notice = event_envelope(cause, message, position);
            outbox.enqueue(txn, Exchange::Events, key, &notice).await?;
        }
        Ok(accepted)
    }
}
