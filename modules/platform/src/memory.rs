//! The in-process broker: the embedded default. Same routing (topic patterns,
//! direct-to-queue, dead letters) and the same at-least-once rules as
//! RabbitMQ. [`MemoryBroker::new`] holds messages in memory only (they live as
//! long as the process); [`MemoryBroker::durable`] also keeps every durable
//! queue's messages, queues and bindings in a database, the way RabbitMQ
//! keeps them on disk: a publish returns once the message is stored (its
//! "confirm"), an ack removes it, and a process killed at any moment finds
//! on restart every message it had not acked, delivered again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::PlatformError;
use crate::lock;

use crate::broker::{Acker, DEAD_LETTER_QUEUE, Settle, topic_matches};
use crate::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON, REASON_EXPIRED};
use crate::{Broker, BrokerError, Delivery, Exchange, QueueSpec, Subscription, WireMessage};

#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    /// Where durable queues are kept, when they are.
    store: Option<Arc<store::Store>>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Arc<Queue>>,
    bindings: Vec<(Exchange, String, String)>,
}

struct Queue {
    durable: bool,
    messages: Mutex<VecDeque<Queued>>,
    arrived: Notify,
}

struct Queued {
    message: WireMessage,
    routing_key: String,
    redelivered: bool,
    /// From the message's TTL: past it, the message is dead-lettered, not delivered.
    expires_at: Option<Instant>,
    /// Its row in the store (durable queues of a durable broker).
    row: Option<i64>,
}

impl Queue {
    /// Adds a message and wakes the consumers waiting on this queue. A
    /// consumer enables its wake-up before it looks at the queue, so waking
    /// the current waiters is enough: none can miss the message.
    fn push(&self, q: Queued, at_front: bool) {
        {
            let mut messages = lock(&self.messages);
            if at_front {
                messages.push_front(q);
            } else {
                messages.push_back(q);
            }
        }
        self.arrived.notify_waiters();
    }
}

impl MemoryBroker {
    /// A broker whose messages live in memory only.
    pub fn new() -> Self {
        let broker = MemoryBroker::default();
        broker.ensure_queue(&QueueSpec::dead_letters());
        broker
    }

    /// A broker whose durable queues live in `db` (its tables made by the
    /// migrations' `BrokerMigrator`): what an earlier process left there
    /// (queues, bindings, unacked messages) is loaded back, every message
    /// marked redelivered.
    pub async fn durable(db: DatabaseConnection) -> Result<Self, PlatformError> {
        let (store, saved) = store::Store::open(db).await?;
        let broker = MemoryBroker {
            state: Arc::default(),
            store: Some(Arc::new(store)),
        };
        broker.ensure_queue(&QueueSpec::dead_letters());
        broker.persist_topology(&QueueSpec::dead_letters()).await?;
        {
            let mut state = lock(&broker.state);
            for queue in saved.queues {
                state.queues.entry(queue).or_insert_with(|| {
                    Arc::new(Queue {
                        durable: true,
                        messages: Mutex::new(VecDeque::new()),
                        arrived: Notify::new(),
                    })
                });
            }
            for binding in saved.bindings {
                if !state.bindings.contains(&binding) {
                    state.bindings.push(binding);
                }
            }
        }
        let count = saved.messages.len();
        for (queue, queued) in saved.messages {
            if let Some(queue) = broker.queue(&queue) {
                queue.push(queued, false);
            }
        }
        if count > 0 {
            tracing::info!(
                messages = count,
                "in-process broker: unacked messages of the last run delivered again"
            );
        }
        Ok(broker)
    }

    fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        lock(&self.state).queues.get(name).cloned()
    }

    /// Keeps a durable queue and its bindings in the store.
    async fn persist_topology(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        match &self.store {
            Some(store) if spec.durable => store.save_queue(spec).await,
            _ => Ok(()),
        }
    }

    fn ensure_queue(&self, spec: &QueueSpec) -> Arc<Queue> {
        let mut state = lock(&self.state);
        let queue = state
            .queues
            .entry(spec.name.clone())
            .or_insert_with(|| {
                Arc::new(Queue {
                    durable: spec.durable,
                    messages: Mutex::new(VecDeque::new()),
                    arrived: Notify::new(),
                })
            })
            .clone();
        for b in &spec.bindings {
            let binding = (b.exchange, b.pattern.clone(), spec.name.clone());
            if !state.bindings.contains(&binding) {
                state.bindings.push(binding);
            }
        }
        queue
    }

    fn remove_queue(&self, name: &str) {
        let mut state = lock(&self.state);
        state.queues.remove(name);
        state.bindings.retain(|(_, _, q)| q != name);
    }

    /// Moves an expired message to the dead-letter queue, as RabbitMQ does for
    /// a queue with a dead-letter exchange.
    async fn expire(&self, queue: &str, mut expired: Queued) {
        let Some(dead) = self.queue(DEAD_LETTER_QUEUE) else {
            return;
        };
        let headers = &mut expired.message.headers;
        headers.insert(
            HEADER_DEAD_LETTER_REASON.to_owned(),
            REASON_EXPIRED.to_owned(),
        );
        headers.insert(HEADER_DEAD_LETTER_QUEUE.to_owned(), queue.to_owned());
        expired.message.ttl_ms = None;
        expired.expires_at = None;
        if let Some(store) = &self.store {
            let moved = store
                .replace(
                    expired.row,
                    DEAD_LETTER_QUEUE,
                    &expired.routing_key,
                    &expired.message,
                )
                .await;
            match moved {
                Ok(row) => expired.row = Some(row),
                Err(err) => {
                    // Kept where it was: the next look at the queue tries again.
                    tracing::warn!(error = %err, "cannot dead-letter an expired message yet");
                    if let Some(original) = self.queue(queue) {
                        original.push(expired, true);
                    }
                    return;
                }
            }
        }
        dead.push(expired, false);
    }

    /// Messages waiting in a queue (not counting those delivered and unsettled).
    pub fn queue_len(&self, name: &str) -> usize {
        let queue = lock(&self.state).queues.get(name).cloned();
        queue.map_or(0, |q| lock(&q.messages).len())
    }
}

impl MemoryBroker {
    /// The queues a message published to `exchange` with `routing_key` goes to.
    fn targets(&self, exchange: Exchange, routing_key: &str) -> Vec<(String, Arc<Queue>)> {
        let state = lock(&self.state);
        let named = |name: &str| state.queues.get(name).map(|q| (name.to_owned(), q.clone()));
        match exchange {
            Exchange::Queue => named(routing_key).into_iter().collect(),
            Exchange::DeadLetter => named(DEAD_LETTER_QUEUE).into_iter().collect(),
            Exchange::Events | Exchange::Commands => {
                let mut names: Vec<&String> = state
                    .bindings
                    .iter()
                    .filter(|(e, p, _)| *e == exchange && topic_matches(p, routing_key))
                    .map(|(_, _, q)| q)
                    .collect();
                names.sort_unstable();
                names.dedup();
                names.into_iter().filter_map(|n| named(n)).collect()
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        self.persist_topology(spec).await?;
        self.ensure_queue(spec);
        Ok(())
    }

    async fn consume(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>, BrokerError> {
        self.persist_topology(spec).await?;
        let queue = self.ensure_queue(spec);
        Ok(Box::new(MemorySubscription {
            broker: self.clone(),
            name: spec.name.clone(),
            queue,
        }))
    }

    async fn publish(
        &self,
        exchange: Exchange,
        routing_key: &str,
        message: WireMessage,
    ) -> Result<(), BrokerError> {
        self.publish_all(vec![(exchange, routing_key.to_owned(), message)])
            .await
    }

    async fn publish_all(
        &self,
        messages: Vec<(Exchange, String, WireMessage)>,
    ) -> Result<(), BrokerError> {
        // Routed first; stored (durable targets of a durable broker) in one
        // transaction; only then queued: nothing is delivered that a crash
        // could still lose.
        let mut routed = Vec::with_capacity(messages.len());
        for (exchange, routing_key, message) in messages {
            let expires_at = message
                .ttl_ms
                .map(|ms| Instant::now() + std::time::Duration::from_millis(ms));
            // Like AMQP without `mandatory`: a message no queue is bound for is dropped.
            for (name, queue) in self.targets(exchange, &routing_key) {
                let queued = Queued {
                    message: message.clone(),
                    routing_key: routing_key.clone(),
                    redelivered: false,
                    expires_at,
                    row: None,
                };
                routed.push((name, queue, queued));
            }
        }
        if let Some(store) = &self.store {
            store.insert(&mut routed).await?;
        }
        for (_, queue, queued) in routed {
            queue.push(queued, false);
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

struct MemorySubscription {
    broker: MemoryBroker,
    name: String,
    queue: Arc<Queue>,
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        if !self.queue.durable {
            self.broker.remove_queue(&self.name);
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let arrived = self.queue.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let next = lock(&self.queue.messages).pop_front();
            if let Some(q) = next {
                if q.expires_at.is_some_and(|at| at <= Instant::now()) {
                    self.broker.expire(&self.name, q).await;
                    continue;
                }
                let acker = MemoryAcker {
                    queue: self.queue.clone(),
                    store: self.broker.store.clone(),
                    pending: Some(Pending {
                        message: q.message.clone(),
                        routing_key: q.routing_key.clone(),
                        expires_at: q.expires_at,
                        row: q.row,
                    }),
                };
                return Some(Delivery::new(
                    q.message,
                    q.routing_key,
                    q.redelivered,
                    Box::new(acker),
                ));
            }
            arrived.await;
        }
    }
}

struct MemoryAcker {
    queue: Arc<Queue>,
    store: Option<Arc<store::Store>>,
    /// Some until settled; a delivery dropped unsettled goes back to the queue.
    pending: Option<Pending>,
}

struct Pending {
    message: WireMessage,
    routing_key: String,
    expires_at: Option<Instant>,
    row: Option<i64>,
}

impl MemoryAcker {
    fn requeue(&mut self) {
        if let Some(p) = self.pending.take() {
            let queued = Queued {
                message: p.message,
                routing_key: p.routing_key,
                redelivered: true,
                expires_at: p.expires_at,
                row: p.row,
            };
            self.queue.push(queued, true);
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn settle(mut self: Box<Self>, how: Settle) -> Result<(), BrokerError> {
        match how {
            // Never asked of this broker (it covers nothing but itself).
            Settle::Ack | Settle::AckThrough => {
                if let Some(Pending { row: Some(row), .. }) = self.pending.take()
                    && let Some(store) = &self.store
                {
                    store.acked(row);
                }
            }
            Settle::Requeue => self.requeue(),
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

mod store {
    //! The durable broker's tables: queues, bindings and the messages of
    //! durable queues until they are acked.

    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use sea_orm::entity::prelude::*;
    use sea_orm::{ActiveValue::Set, DatabaseConnection, QueryOrder, TransactionTrait};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::{Queue, Queued};
    use crate::{BrokerError, Exchange, PlatformError, QueueSpec, WireMessage};

    mod queues {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "broker_queues")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub name: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    mod bindings {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "broker_bindings")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub exchange: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub pattern: String,
            #[sea_orm(primary_key, auto_increment = false)]
            pub queue: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    mod messages {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
        #[sea_orm(table_name = "broker_messages")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub queue: String,
            pub routing_key: String,
            #[sea_orm(column_type = "Text")]
            pub meta: String,
            pub body: Vec<u8>,
            pub expires_at_ms: Option<i64>,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    fn unavailable(err: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!("the in-process broker's store: {err}"))
    }

    /// What an earlier process left.
    pub struct Saved {
        pub queues: Vec<String>,
        pub bindings: Vec<(Exchange, String, String)>,
        pub messages: Vec<(String, Queued)>,
    }

    pub struct Store {
        db: DatabaseConnection,
        /// Acked rows, deleted in batches by a task of their own. An ack
        /// lost to a crash before its delete only means one more
        /// redelivery, which consumers' inboxes make harmless.
        acks: mpsc::UnboundedSender<i64>,
    }

    impl Store {
        pub async fn open(db: DatabaseConnection) -> Result<(Store, Saved), PlatformError> {
            let queues = queues::Entity::find()
                .all(&db)
                .await?
                .into_iter()
                .map(|q| q.name)
                .collect();
            let bindings = bindings::Entity::find()
                .all(&db)
                .await?
                .into_iter()
                .filter_map(|b| Some((Exchange::parse(&b.exchange)?, b.pattern, b.queue)))
                .collect();
            let now_ms = Utc::now().timestamp_millis();
            let mut messages = Vec::new();
            for row in messages::Entity::find()
                .order_by_asc(messages::Column::Id)
                .all(&db)
                .await?
            {
                let expires_at = row.expires_at_ms.map(|at| {
                    let left = u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0);
                    Instant::now() + Duration::from_millis(left)
                });
                let message = match WireMessage::from_stored(&row.meta, row.body) {
                    Ok(message) => message,
                    Err(reason) => {
                        tracing::error!(id = row.id, %reason, "unreadable stored message skipped");
                        continue;
                    }
                };
                let queued = Queued {
                    message,
                    routing_key: row.routing_key,
                    redelivered: true,
                    expires_at,
                    row: Some(row.id),
                };
                messages.push((row.queue, queued));
            }
            let (acks, pending) = mpsc::unbounded_channel();
            tokio::spawn(delete_acked(db.clone(), pending));
            Ok((
                Store { db, acks },
                Saved {
                    queues,
                    bindings,
                    messages,
                },
            ))
        }

        pub async fn save_queue(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
            let txn = self.db.begin().await.map_err(unavailable)?;
            queues::Entity::insert(queues::ActiveModel {
                name: Set(spec.name.clone()),
            })
            .on_conflict_do_nothing_on([queues::Column::Name])
            .exec(&txn)
            .await
            .map_err(unavailable)?;
            for binding in &spec.bindings {
                bindings::Entity::insert(bindings::ActiveModel {
                    exchange: Set(binding.exchange.as_str().to_owned()),
                    pattern: Set(binding.pattern.clone()),
                    queue: Set(spec.name.clone()),
                })
                .on_conflict_do_nothing_on([
                    bindings::Column::Exchange,
                    bindings::Column::Pattern,
                    bindings::Column::Queue,
                ])
                .exec(&txn)
                .await
                .map_err(unavailable)?;
            }
            txn.commit().await.map_err(unavailable)
        }

        fn row(queue: &str, routing_key: &str, message: &WireMessage) -> messages::ActiveModel {
            let expires_at_ms = message.ttl_ms.map(|ttl| {
                Utc::now()
                    .timestamp_millis()
                    .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
            });
            messages::ActiveModel {
                queue: Set(queue.to_owned()),
                routing_key: Set(routing_key.to_owned()),
                meta: Set(message.properties_json()),
                body: Set(message.body.clone()),
                expires_at_ms: Set(expires_at_ms),
                ..Default::default()
            }
        }

        /// Stores the messages routed to durable queues, in one
        /// transaction, and notes each one's row.
        pub async fn insert(
            &self,
            routed: &mut [(String, Arc<Queue>, Queued)],
        ) -> Result<(), BrokerError> {
            let durable: Vec<usize> = (0..routed.len()).filter(|i| routed[*i].1.durable).collect();
            if durable.is_empty() {
                return Ok(());
            }
            let txn = self.db.begin().await.map_err(unavailable)?;
            for i in &durable {
                let (name, _, queued) = &routed[*i];
                let row = Self::row(name, &queued.routing_key, &queued.message)
                    .insert(&txn)
                    .await
                    .map_err(unavailable)?;
                routed[*i].2.row = Some(row.id);
            }
            txn.commit().await.map_err(unavailable)
        }

        /// Moves a stored message (or stores it, `row` None) to `queue`.
        pub async fn replace(
            &self,
            row: Option<i64>,
            queue: &str,
            routing_key: &str,
            message: &WireMessage,
        ) -> Result<i64, BrokerError> {
            let txn = self.db.begin().await.map_err(unavailable)?;
            let moved = Self::row(queue, routing_key, message)
                .insert(&txn)
                .await
                .map_err(unavailable)?;
            if let Some(row) = row {
                messages::Entity::delete_by_id(row)
                    .exec(&txn)
                    .await
                    .map_err(unavailable)?;
            }
            txn.commit().await.map_err(unavailable)?;
            Ok(moved.id)
        }

        pub fn acked(&self, row: i64) {
            let _ = self.acks.send(row);
        }
    }

    /// Deletes acked rows, as many to a statement as have come in.
    async fn delete_acked(db: DatabaseConnection, mut acked: mpsc::UnboundedReceiver<i64>) {
        let mut rows = Vec::new();
        let mut waiting: VecDeque<i64> = VecDeque::new();
        while acked.recv_many(&mut rows, 1000).await > 0 {
            waiting.extend(rows.drain(..));
            while !waiting.is_empty() {
                let batch: Vec<i64> = waiting.iter().copied().collect();
                match messages::Entity::delete_many()
                    .filter(messages::Column::Id.is_in(batch))
                    .exec(&db)
                    .await
                {
                    Ok(_) => waiting.clear(),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot delete acked messages yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}
