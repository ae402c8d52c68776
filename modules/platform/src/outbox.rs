//! The transactional outbox: a module writes its outgoing messages in the same
//! transaction as its state change; the relay publishes them afterwards, in
//! order, with publisher confirms, and marks them sent. Nothing is published
//! that was not committed, and nothing committed is lost.
//!
//! A reply, which a client waits on and which keeps no order with anything,
//! can also go out *express*: its writer publishes it straight after the
//! commit and marks it sent, while the relay leaves it alone. Should that
//! fail (or the process stop first), the row is still unsent and the relay
//! sends it as it would any other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sea_orm::entity::prelude::*;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::lock;
use crate::streak::FailureStreak;
use crate::{Broker, Envelope, Exchange, PlatformError, Shutdown};

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub exchange: String,
        pub routing_key: String,
        #[sea_orm(column_type = "Text")]
        pub envelope: String,
        pub created_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A module's outbox: where its transactions put what they send.
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
    /// Rows their writers are sending express: the relay skips them.
    express: Arc<Mutex<Claims>>,
    /// In an outbox [`Outbox::staging`] made for one transaction: its rows,
    /// kept back to be written in one statement with its reply (or by
    /// [`Outbox::write_staged`]), a round trip each fewer.
    staged: Option<Arc<Mutex<Vec<entity::ActiveModel>>>>,
}

/// The rows sent express. One sent and marked stays here until the relay's
/// next read: the read under way may have found it still unsent.
#[derive(Default)]
struct Claims {
    sending: HashSet<i64>,
    sent: HashSet<i64>,
}

impl Claims {
    /// A relay read is about to begin (none is under way): it will see
    /// every row marked so far as sent.
    fn next_read(&mut self) {
        self.sent.clear();
    }

    fn skips(&self, id: i64) -> bool {
        self.sending.contains(&id) || self.sent.contains(&id)
    }
}

/// A reply written to the outbox, to publish once its transaction has
/// committed ([`Express::send`]). Dropped unsent, it is left to the
/// relay.
pub struct Express {
    id: i64,
    routing_key: String,
    envelope: Envelope,
    outbox: Outbox,
    /// Published and marked sent.
    sent: bool,
}

impl Express {
    /// Publishes a committed express reply and marks it sent. On failure it
    /// is left to the relay (a reply sent twice is harmless: its waiter
    /// takes the first).
    pub async fn send(mut self, db: &DatabaseConnection, broker: &dyn Broker) {
        let publishing = publish_span(&self.envelope);
        let message = self.envelope.to_wire();
        if let Err(err) = broker
            .publish(Exchange::Queue, &self.routing_key, message)
            .instrument(publishing)
            .await
        {
            tracing::debug!(error = %err, "express reply not sent; the relay sends it");
            return;
        }
        match mark_sent(db, vec![self.id]).await {
            Ok(()) => self.sent = true,
            Err(err) => {
                tracing::debug!(error = %err, "express reply sent but not marked; the relay sends it again");
            }
        }
    }
}

impl Drop for Express {
    fn drop(&mut self) {
        let mut claims = lock(&self.outbox.express);
        claims.sending.remove(&self.id);
        if self.sent {
            claims.sent.insert(self.id);
        }
        drop(claims);
        // Whatever happened to it, the relay looks (again) at what is unsent.
        self.outbox.wake();
    }
}

impl Outbox {
    pub fn new() -> Self {
        Outbox::default()
    }

    /// This outbox for one transaction: the rows it is given are kept back
    /// and written together with its reply ([`Outbox::enqueue_express`]),
    /// or by [`Outbox::write_staged`], which whoever commits the
    /// transaction must call first. Dropped unwritten (a rollback), they
    /// are gone with the transaction.
    pub fn staging(&self) -> Outbox {
        Outbox {
            staged: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// Adds a message to send once `txn` commits.
    pub async fn enqueue<C: ConnectionTrait>(
        &self,
        txn: &C,
        exchange: Exchange,
        routing_key: &str,
        envelope: &Envelope,
    ) -> Result<(), PlatformError> {
        let row = row(exchange, routing_key, envelope)?;
        match &self.staged {
            Some(staged) => lock(staged).push(row),
            None => insert(txn, vec![row]).await.map(drop)?,
        }
        Ok(())
    }

    /// Writes the rows a staging outbox kept back (none: nothing to do).
    pub async fn write_staged<C: ConnectionTrait>(&self, txn: &C) -> Result<(), PlatformError> {
        let rows = self.take_staged();
        if !rows.is_empty() {
            insert(txn, rows).await?;
        }
        Ok(())
    }

    fn take_staged(&self) -> Vec<entity::ActiveModel> {
        self.staged
            .as_ref()
            .map(|staged| std::mem::take(&mut *lock(staged)))
            .unwrap_or_default()
    }

    /// Adds a reply to the queue `queue`, to send straight after `txn`
    /// commits with [`Express::send`] rather than wait for the relay. In a
    /// staging outbox, the rows kept back are written in the same
    /// statement.
    pub async fn enqueue_express<C: ConnectionTrait>(
        &self,
        txn: &C,
        queue: &str,
        envelope: &Envelope,
    ) -> Result<Express, PlatformError> {
        let mut rows = self.take_staged();
        rows.push(row(Exchange::Queue, queue, envelope)?);
        // The reply is the last row: its id is the one the insert returns.
        let id = insert(txn, rows).await?;
        // Claimed before the commit, so the relay never sees it unclaimed.
        lock(&self.express).sending.insert(id);
        Ok(Express {
            id,
            routing_key: queue.to_owned(),
            envelope: envelope.clone(),
            outbox: self.clone(),
            sent: false,
        })
    }

    /// Tells the relay there is something new (call after commit).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes what is committed and unsent, until `shutdown`; `module`
    /// names it in its logs.
    pub async fn relay(
        &self,
        module: &str,
        db: DatabaseConnection,
        broker: Arc<dyn Broker>,
        mut shutdown: Shutdown,
    ) {
        const IDLE_POLL: Duration = Duration::from_secs(1);
        let mut streak = FailureStreak::default();
        let worked = |streak: &mut FailureStreak| {
            if let Some((lasted, failures)) = streak.ended() {
                tracing::info!(module, ?lasted, failures, "outbox relay working again");
            }
        };
        loop {
            if shutdown.is_triggered() {
                self.flush(&db, broker.as_ref()).await;
                return;
            }
            match relay_batch(&db, broker.as_ref(), &self.express).await {
                // Another process's relay is publishing: what this one woke
                // for is in that batch or the next; look again shortly.
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(BUSY_POLL) => {}
                        _ = shutdown.wait() => {}
                    }
                }
                Ok(Some(0)) => {
                    worked(&mut streak);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.wait() => {}
                    }
                }
                Ok(Some(_)) => worked(&mut streak),
                Err(err) => {
                    let said = streak.failed();
                    // Capped low: once the broker is back, replies that
                    // clients are waiting on go out within a second.
                    let backoff = Duration::from_millis(100 * 2u64.pow(streak.failures().min(3)));
                    if said {
                        tracing::warn!(module, error = %err, failures = streak.failures(), "outbox relay failed; retrying (said again every 30 s while it fails)");
                    } else {
                        tracing::debug!(module, error = %err, failures = streak.failures(), "outbox relay failed again");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => {}
                    }
                }
            }
        }
    }
}

/// At shutdown: how long the relay waits for one more commit (a consumer
/// finishing the message in hand) before it stops.
const FLUSH_QUIET: Duration = Duration::from_millis(200);
/// At shutdown: the longest the relay goes on publishing.
const FLUSH_AT_MOST: Duration = Duration::from_secs(3);

impl Outbox {
    /// Publishes what is left before stopping: until the outbox stays empty
    /// for [`FLUSH_QUIET`], fails, or [`FLUSH_AT_MOST`] passes. What is not
    /// sent stays in the outbox for the next start.
    async fn flush(&self, db: &DatabaseConnection, broker: &dyn Broker) {
        let until = tokio::time::Instant::now() + FLUSH_AT_MOST;
        while tokio::time::Instant::now() < until {
            match relay_batch(db, broker, &self.express).await {
                Ok(None) => tokio::time::sleep(BUSY_POLL).await,
                Ok(Some(0)) => {
                    let quiet = (tokio::time::Instant::now() + FLUSH_QUIET).min(until);
                    if tokio::time::timeout_at(quiet, self.wake.notified())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "outbox not flushed at shutdown; it is sent at the next start");
                    return;
                }
            }
        }
    }
}

/// An outbox row for `envelope`, not written yet.
fn row(
    exchange: Exchange,
    routing_key: &str,
    envelope: &Envelope,
) -> Result<entity::ActiveModel, PlatformError> {
    let json = serde_json::to_string(envelope).map_err(|e| PlatformError::Decode {
        what: envelope.message_type.clone(),
        reason: e.to_string(),
    })?;
    Ok(entity::ActiveModel {
        exchange: Set(exchange.as_str().to_owned()),
        routing_key: Set(routing_key.to_owned()),
        envelope: Set(json),
        created_at: Set(Utc::now()),
        sent_at: Set(None),
        ..Default::default()
    })
}

/// Writes `rows` (at least one) in one statement, in their order: the id
/// of the last.
async fn insert<C: ConnectionTrait>(
    txn: &C,
    rows: Vec<entity::ActiveModel>,
) -> Result<i64, PlatformError> {
    let inserted = entity::Entity::insert_many(rows).exec(txn).await?;
    inserted
        .last_insert_id
        .ok_or_else(|| PlatformError::Unexpected("an outbox insert of no rows".to_owned()))
}

async fn mark_sent<C: ConnectionTrait>(conn: &C, ids: Vec<i64>) -> Result<(), PlatformError> {
    entity::Entity::update_many()
        .col_expr(entity::Column::SentAt, Expr::value(Utc::now()))
        .filter(entity::Column::Id.is_in(ids))
        .filter(entity::Column::SentAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

const BATCH: u64 = 256;
/// How soon a relay looks again while another process's relay publishes.
const BUSY_POLL: Duration = Duration::from_millis(10);

/// Publishes one batch; `None` when another process's relay holds the
/// outbox right now.
async fn relay_batch(
    db: &DatabaseConnection,
    broker: &dyn Broker,
    express: &Mutex<Claims>,
) -> Result<Option<usize>, PlatformError> {
    // Here, between two reads, even when this batch finds another
    // process's relay at work: the marked rows would pile up otherwise.
    lock(express).next_read();
    if db.get_database_backend() != DbBackend::Postgres {
        // SQLite: one process, one relay.
        return publish_batch(db, broker, express).await.map(Some);
    }
    // Several processes of a module may run, each with a relay on the same
    // outbox: one batch at a time, across all of them, under a lock held
    // until the batch is marked sent, so no row goes out twice and the
    // order per aggregate holds. A relay that finds the lock taken lets the
    // other one work (and takes over when that one stops).
    let txn = db.begin().await?;
    if !crate::db::try_advisory_lock(&txn, "current_schema() || '.outbox'").await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let sent = publish_batch(&txn, broker, express).await?;
    txn.commit().await?;
    Ok(Some(sent))
}

/// A message's publishing, in the trace of the work that wrote it.
fn publish_span(envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "relay",
        message_type = %envelope.message_type,
        correlation_id = %envelope.correlation_id,
        trace_id = tracing::field::Empty,
        otel.name = format!("{} publish", envelope.message_type),
        otel.kind = "producer",
    );
    crate::propagation::continue_from(&span, &envelope.headers);
    span
}

/// Publishes the next unsent rows but those sent express; how many.
async fn publish_batch<C: ConnectionTrait>(
    conn: &C,
    broker: &dyn Broker,
    express: &Mutex<Claims>,
) -> Result<usize, PlatformError> {
    let mut rows = entity::Entity::find()
        .filter(entity::Column::SentAt.is_null())
        .order_by_asc(entity::Column::Id)
        .limit(BATCH)
        .all(conn)
        .await?;
    {
        let claims = lock(express);
        rows.retain(|row| !claims.skips(row.id));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let mut messages = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    // One span per message, in the trace of the work that wrote it, open
    // until the broker confirmed the batch.
    let mut publishing = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.id);
        let exchange = Exchange::parse(&row.exchange);
        let envelope = serde_json::from_str::<Envelope>(&row.envelope);
        match (exchange, envelope) {
            (Some(exchange), Ok(envelope)) => {
                publishing.push(publish_span(&envelope));
                messages.push((exchange, row.routing_key.clone(), envelope.to_wire()))
            }
            // Only this code writes the outbox, so this is a bug, not bad input:
            // say so loudly and do not block the messages behind it.
            _ => tracing::error!(id = row.id, "unreadable outbox row skipped"),
        }
    }
    // Replies first: a client waits on each, and they are not part of any
    // aggregate's order (events keep theirs; the sort is stable).
    messages.sort_by_key(|(exchange, _, _)| *exchange != Exchange::Queue);
    broker.publish_all(messages).await?;
    drop(publishing);
    mark_sent(conn, ids).await?;
    Ok(rows.len())
}

/// Unsent messages (for tests and readiness).
pub async fn pending(db: &DatabaseConnection) -> Result<u64, PlatformError> {
    Ok(entity::Entity::find()
        .filter(entity::Column::SentAt.is_null())
        .count(db)
        .await?)
}

/// When the oldest unsent message was written (none: nothing waits).
pub async fn oldest_unsent(
    db: &DatabaseConnection,
) -> Result<Option<chrono::DateTime<Utc>>, PlatformError> {
    Ok(entity::Entity::find()
        .filter(entity::Column::SentAt.is_null())
        .order_by_asc(entity::Column::Id)
        .one(db)
        .await?
        .map(|row| row.created_at))
}

/// Deletes up to `limit` sent rows sent before `cutoff` (never an unsent
/// one); how many.
pub async fn prune_sent(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
    limit: u64,
) -> Result<u64, PlatformError> {
    use sea_orm::sea_query::Query;
    let old = Query::select()
        .column(entity::Column::Id)
        .from(entity::Entity)
        .and_where(entity::Column::SentAt.is_not_null())
        .and_where(entity::Column::SentAt.lt(cutoff))
        .limit(limit)
        .to_owned();
    Ok(entity::Entity::delete_many()
        .filter(entity::Column::Id.in_subquery(old))
        .exec(db)
        .await?
        .rows_affected)
}
