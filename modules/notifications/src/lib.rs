//! The notifications bounded context: keeps a cache of customers (name, SMS
//! number) and tells a customer when their order is created, ready, canceled
//! or completed, through a pluggable [`Sender`]. Every notification is also
//! recorded, so it can be queried.
//!
//! Its public face: [`NotificationsQueries`], [`start`] and the senders.

mod application;
pub mod domain;
mod infrastructure;

pub use application::{NotificationsQueries, Sender};
pub use domain::Notification;
pub use infrastructure::{RecordOnly, Webhook, migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "notifications";
