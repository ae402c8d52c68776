//! The in-process broker: the embedded default. Same routing (topic patterns,
//! direct-to-queue, dead letters) and the same at-least-once rules as
//! RabbitMQ, but held in memory: messages live as long as the process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::{Acker, DEAD_LETTER_QUEUE, Settle, topic_matches};
use crate::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use crate::{Broker, BrokerError, Delivery, Exchange, QueueSpec, Subscription, WireMessage};

#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them half-updated (each
    // critical section is one push/pop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    pub fn new() -> Self {
        let broker = MemoryBroker::default();
        broker.ensure_queue(&QueueSpec::dead_letters());
        broker
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
    fn expire(&self, queue: &str, mut expired: Queued) {
        let dead = lock(&self.state).queues.get(DEAD_LETTER_QUEUE).cloned();
        if let Some(dead) = dead {
            let headers = &mut expired.message.headers;
            headers.insert(HEADER_DEAD_LETTER_REASON.to_owned(), "expired".to_owned());
            headers.insert(HEADER_DEAD_LETTER_QUEUE.to_owned(), queue.to_owned());
            expired.message.ttl_ms = None;
            expired.expires_at = None;
            dead.push(expired, false);
        }
    }

    /// Messages waiting in a queue (not counting those delivered and unsettled).
    pub fn queue_len(&self, name: &str) -> usize {
        let queue = lock(&self.state).queues.get(name).cloned();
        queue.map_or(0, |q| lock(&q.messages).len())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        self.ensure_queue(spec);
        Ok(())
    }

    async fn consume(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>, BrokerError> {
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
        let targets: Vec<Arc<Queue>> = {
            let state = lock(&self.state);
            match exchange {
                Exchange::Queue => state.queues.get(routing_key).cloned().into_iter().collect(),
                Exchange::DeadLetter => state
                    .queues
                    .get(DEAD_LETTER_QUEUE)
                    .cloned()
                    .into_iter()
                    .collect(),
                Exchange::Events | Exchange::Commands => {
                    let mut names: Vec<&String> = state
                        .bindings
                        .iter()
                        .filter(|(e, p, _)| *e == exchange && topic_matches(p, routing_key))
                        .map(|(_, _, q)| q)
                        .collect();
                    names.dedup();
                    names
                        .into_iter()
                        .filter_map(|n| state.queues.get(n).cloned())
                        .collect()
                }
            }
        };
        let expires_at = message
            .ttl_ms
            .map(|ms| Instant::now() + std::time::Duration::from_millis(ms));
        // Like AMQP without `mandatory`: a message no queue is bound for is dropped.
        for queue in targets {
            let queued = Queued {
                message: message.clone(),
                routing_key: routing_key.to_owned(),
                redelivered: false,
                expires_at,
            };
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
                    self.broker.expire(&self.name, q);
                    continue;
                }
                let acker = MemoryAcker {
                    queue: self.queue.clone(),
                    pending: Some((q.message.clone(), q.routing_key.clone(), q.expires_at)),
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
    /// Some until settled; a delivery dropped unsettled goes back to the queue.
    pending: Option<(WireMessage, String, Option<Instant>)>,
}

impl MemoryAcker {
    fn requeue(&mut self) {
        if let Some((message, routing_key, expires_at)) = self.pending.take() {
            let queued = Queued {
                message,
                routing_key,
                redelivered: true,
                expires_at,
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
            Settle::Ack => {
                self.pending = None;
            }
            Settle::Requeue => self.requeue(),
        }
        Ok(())
    }
}
