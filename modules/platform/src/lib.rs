//! The event-driven toolkit every MallBots module stands on.
//!
//! - [`envelope`]: the message envelope and its wire form (AMQP properties + headers);
//! - [`broker`]: the broker abstraction, with [`memory`] (in-process, the embedded
//!   default) and [`rabbit`] (RabbitMQ through lapin) implementations;
//! - [`consumer`]: at-least-once consumption with bounded retries and dead letters;
//! - [`outbox`] and [`inbox`]: publish exactly what a transaction committed, and
//!   make redelivery harmless;
//! - [`event_store`] and [`aggregate`]: event-sourced aggregates with optimistic
//!   concurrency and snapshots;
//! - [`commands`]: the command pipeline (inbox, handler, outbox, reply) and the
//!   requester the gateway uses to send a command and wait for its reply;
//! - [`pipeline`]: one command on one event-sourced aggregate, recorded;
//! - [`saga`]: orchestrated sagas with compensations;
//! - [`views`]: document read models and caches;
//! - [`propagation`]: the W3C trace context in every message's headers;
//! - [`telemetry`]: what the messaging runtime counts, for `/metrics`;
//! - [`db`]: connecting a module to its own database (schema or SQLite file).

pub mod aggregate;
pub mod broker;
pub mod catalog_cache;
pub mod changes;
pub mod commands;
pub mod consumer;
pub mod db;
pub mod dead_letters;
pub mod envelope;
mod error;
pub mod event_store;
pub mod inbox;
pub mod memory;
pub mod module;
pub mod outbox;
pub mod pipeline;
pub mod propagation;
pub mod rabbit;
pub mod retention;
pub mod saga;
pub mod shutdown;
pub mod streak;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod views;

pub use broker::{Binding, Broker, Delivery, Exchange, QueueSpec, Settle, Subscription};
pub use envelope::{Envelope, Outgoing, WireMessage};
pub use error::{BrokerError, PlatformError, database_unreachable};
pub use mallbots_contracts::Payload;
pub use shutdown::Shutdown;

/// `mutex` locked, even when a panic poisoned it: every critical section in
/// this crate is one small update that a panic cannot leave half-done.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
