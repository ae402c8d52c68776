//! The broker abstraction. Two implementations keep the same guarantees (one
//! shared test suite runs against both): [`crate::memory::MemoryBroker`] and
//! [`crate::rabbit::RabbitBroker`].
//!
//! Semantics: at-least-once. A delivery stays owned by the broker until it is
//! settled; one dropped unsettled (consumer crash, shutdown) is delivered again.

use async_trait::async_trait;
use futures_util::future::join_all;

use crate::envelope::WireMessage;
use crate::error::BrokerError;

/// Where a message is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exchange {
    /// Topic exchange of integration events, routing key `<module>.<Aggregate>.<Event>`.
    Events,
    /// Topic exchange of commands, routing key `<module>.<Command>`.
    Commands,
    /// Straight to the queue named by the routing key (replies).
    Queue,
    /// The dead-letter exchange: everything lands in [`DEAD_LETTER_QUEUE`].
    DeadLetter,
}

impl Exchange {
    const ALL: [Exchange; 4] = [
        Exchange::Events,
        Exchange::Commands,
        Exchange::Queue,
        Exchange::DeadLetter,
    ];

    /// Its name where it is stored (the outbox, the in-process broker).
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::Events => "events",
            Exchange::Commands => "commands",
            Exchange::Queue => "queue",
            Exchange::DeadLetter => "dead-letter",
        }
    }

    /// The exchange a stored name names.
    pub fn parse(name: &str) -> Option<Self> {
        Exchange::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// The queue every dead letter ends in, with its reason in a header.
pub const DEAD_LETTER_QUEUE: &str = "mallbots.dead-letter";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub exchange: Exchange,
    /// Topic pattern: `*` matches one word, `#` zero or more.
    pub pattern: String,
}

#[derive(Clone, Debug)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<Binding>,
    /// Durable queues outlive their consumers (messages wait for them); the
    /// others (reply queues, per-connection feeds) go away with their consumer.
    pub durable: bool,
    /// Deliveries handed out before earlier ones are settled.
    pub prefetch: u16,
    /// At most this many deliveries already waiting are handled together, as
    /// one unit (one transaction); 1 handles each on its own.
    pub batch: u16,
    /// Deliveries handled at the same time, each on its own (queues without
    /// a batch); 1 handles them one after another, in order.
    pub concurrency: u16,
    /// One consumer at a time, across processes (RabbitMQ's single active
    /// consumer): the others wait as hot standbys and one takes over when it
    /// goes. For queues whose messages must be applied in order (read
    /// models, caches, sagas); a queue of commands alone is shared by
    /// competing consumers instead.
    pub single_active: bool,
}

impl QueueSpec {
    pub fn durable(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            bindings: Vec::new(),
            durable: true,
            prefetch: 32,
            batch: 1,
            concurrency: 1,
            single_active: false,
        }
    }

    /// A queue that lives only as long as its consumer.
    pub fn transient(name: impl Into<String>) -> Self {
        QueueSpec {
            durable: false,
            ..QueueSpec::durable(name)
        }
    }

    /// The modules whose every event this queue receives (it binds
    /// `<module>.#` on the events exchange): a consumer of such a queue can
    /// say how far it has applied each of them (read-your-writes).
    pub fn follows(&self) -> impl Iterator<Item = &str> {
        self.bindings
            .iter()
            .filter(|b| b.exchange == Exchange::Events)
            .filter_map(|b| b.pattern.strip_suffix(".#"))
    }

    pub fn bind(mut self, exchange: Exchange, pattern: impl Into<String>) -> Self {
        self.bindings.push(Binding {
            exchange,
            pattern: pattern.into(),
        });
        self
    }

    /// Handles up to `size` waiting deliveries together (a projection
    /// catching up commits once per batch, not once per event). A batch never
    /// waits to fill: it takes what has already arrived.
    pub fn batched(mut self, size: u16) -> Self {
        self.batch = size.max(1);
        self.prefetch = self.prefetch.max(size.saturating_mul(2));
        self
    }

    /// Handles up to `n` deliveries at the same time, so one slow handler
    /// (a transaction waiting on the database) does not hold up the others.
    /// Their order is not kept: for handlers whose messages do not depend on
    /// each other's order, or that detect it (optimistic concurrency).
    pub fn concurrent(mut self, n: u16) -> Self {
        self.concurrency = n.max(1);
        self.prefetch = self.prefetch.max(n.saturating_mul(2));
        self
    }

    /// Consumed by one process at a time, in order; see
    /// [`QueueSpec::single_active`].
    pub fn single_active(mut self) -> Self {
        self.single_active = true;
        self
    }

    pub fn dead_letters() -> Self {
        QueueSpec::durable(DEAD_LETTER_QUEUE)
    }
}

/// How a delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Done: remove it.
    Ack,
    /// Done, and so is every delivery before it that [`Acker::covers`]
    /// said this one covers: one acknowledgement for them all.
    AckThrough,
    /// Not done: deliver it again.
    Requeue,
}

#[async_trait]
pub trait Acker: Send {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), BrokerError>;

    /// Whether settling this delivery with [`Settle::AckThrough`] acks
    /// `earlier` too (delivered before it, none settled yet). Only then is it
    /// asked to.
    fn covers(&self, _earlier: &[Box<dyn Acker>]) -> bool {
        false
    }

    /// What the broker's own [`Acker::covers`] looks at.
    fn as_any(&self) -> &dyn std::any::Any;
}

pub struct Delivery {
    pub message: WireMessage,
    pub routing_key: String,
    /// True when the broker delivered it before (and it was not acked).
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(
        message: WireMessage,
        routing_key: String,
        redelivered: bool,
        acker: Box<dyn Acker>,
    ) -> Self {
        Delivery {
            message,
            routing_key,
            redelivered,
            acker,
        }
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        self.acker.settle(Settle::Ack).await
    }

    /// Acks `deliveries`, received in this order from one subscription, with
    /// every delivery that subscription gave before the last of them either
    /// among them or settled already (a consumer that handles its queue in
    /// order, one batch at a time): with one acknowledgement when the broker
    /// can, else all at once.
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<(), BrokerError> {
        let mut ackers: Vec<Box<dyn Acker>> = deliveries.into_iter().map(|d| d.acker).collect();
        let Some(last) = ackers.pop() else {
            return Ok(());
        };
        if last.covers(&ackers) {
            return last.settle(Settle::AckThrough).await;
        }
        ackers.push(last);
        let settled = join_all(ackers.into_iter().map(|a| a.settle(Settle::Ack))).await;
        settled
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    pub async fn requeue(self) -> Result<(), BrokerError> {
        self.acker.settle(Settle::Requeue).await
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("routing_key", &self.routing_key)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription can deliver no more.
    /// Cancel-safe: dropping the future loses no delivery.
    async fn next(&mut self) -> Option<Delivery>;

    /// Changes each time the queue behind this subscription was made anew,
    /// empty (a transient queue after a reconnect to the broker): what was
    /// routed to it in between is lost, and a reader that must not miss
    /// anything catches up from its own records. It changes before the first
    /// delivery from the new queue is handed out. `None`: never happens.
    fn resets(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares the queue and its bindings (idempotent), so messages routed to
    /// it are kept even before anyone consumes.
    async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError>;

    /// Declares the queue and starts consuming it.
    async fn consume(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>, BrokerError>;

    /// Publishes and returns once the broker has taken responsibility for the
    /// message (publisher confirm).
    async fn publish(
        &self,
        exchange: Exchange,
        routing_key: &str,
        message: WireMessage,
    ) -> Result<(), BrokerError>;

    /// Publishes in order and returns once every message is confirmed.
    async fn publish_all(
        &self,
        messages: Vec<(Exchange, String, WireMessage)>,
    ) -> Result<(), BrokerError> {
        for (exchange, key, message) in messages {
            self.publish(exchange, &key, message).await?;
        }
        Ok(())
    }

    /// Reachable and usable (readiness).
    async fn check(&self) -> Result<(), BrokerError>;
}

/// Topic matching as RabbitMQ does it: words split on `.`, `*` is exactly one
/// word, `#` is zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&word, rest)) => match k.split_first() {
                Some((&kw, krest)) => (word == "*" || word == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("stores.#", "stores.Store.StoreCreated"));
        assert!(topic_matches("stores.#", "stores"));
        assert!(topic_matches("stores.*", "stores.CreateStore"));
        assert!(!topic_matches("stores.*", "stores.Store.StoreCreated"));
        assert!(topic_matches("*.Product.*", "stores.Product.ProductAdded"));
        assert!(!topic_matches("*.Product.*", "stores.Store.StoreCreated"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches(
            "#.ProductAdded",
            "stores.Product.ProductAdded"
        ));
        assert!(!topic_matches("baskets.#", "stores.Product.ProductAdded"));
    }
}
