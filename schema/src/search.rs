//! The search module's messages: what changed in a read model, after it
//! committed. Gateways push these to subscribers; each change's position in
//! the search change log is the subscription cursor.

use serde::{Deserialize, Serialize};

use crate::message;
use crate::ordering::OrderView;

/// Change topics.
pub const TOPIC_ORDER: &str = "order";
pub const TOPIC_SHOPPING_LIST: &str = "shopping_list";
pub const TOPIC_EVENT: &str = "event";
/// The catalog's changes, keyed by store (`catalogChanged`).
pub const TOPIC_CATALOG: &str = "catalog";

/// A change of a read model (or, on topic `event`, an integration event as
/// archived).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Changed {
    pub topic: String,
    /// What changed: an order id, a list id, an event type.
    pub key: String,
    /// The owner, for filtering (an order's customer), when there is one.
    #[serde(default)]
    pub owner: Option<String>,
    pub body: serde_json::Value,
}

/// A change with its position in the search change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedChange {
    pub position: i64,
    #[serde(flatten)]
    pub change: Changed,
}

/// The changes one search transaction committed, in log order: one notice
/// per transaction, however many events it applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub changes: Vec<LoggedChange>,
}
message!(Committed, "search.Change.Committed");

/// An order as the search read model shows it: the order and its customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderSummary {
    pub order: OrderView,
    pub customer_name: String,
    pub customer_sms_number: String,
}

/// An integration event as the change log archives it (topic `event`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    pub message_type: String,
    pub schema_version: u16,
    /// Its position in its own module's event log.
    pub source_position: Option<i64>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub payload: serde_json::Value,
}
