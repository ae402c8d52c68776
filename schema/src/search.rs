//! The search module's messages: what changed in a read model, after it
//! committed. Gateways push these to subscribers; each change's position in
//! the search change log is the subscription cursor.

use serde::{Deserialize, Serialize};

use crate::Payload;
use crate::codec::message;
use crate::depot::ShoppingListView;
use crate::ordering::OrderView;
use crate::stores::ProductView;

/// Change topics.
pub const TOPIC_ORDER: &str = "order";
pub const TOPIC_SHOPPING_LIST: &str = "shopping_list";
pub const TOPIC_EVENT: &str = "event";
/// The catalog's changes, keyed by store (`catalogChanged`).
pub const TOPIC_CATALOG: &str = "catalog";

/// A change of a read model (or, on topic `event`, an integration event as
/// archived), as the search module writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Changed {
    /// What changed: an order id, a list id, an event type, a store id.
    pub key: String,
    /// The owner, for filtering (an order's customer), when there is one.
    #[serde(default)]
    pub owner: Option<String>,
    /// On the wire, `topic` and `body` beside `key`.
    #[serde(flatten)]
    pub body: ChangeBody,
}

/// What a read-model change shows, by topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "topic", content = "body", rename_all = "snake_case")]
pub enum ChangeBody {
    /// [`TOPIC_ORDER`]
    Order(OrderSummary),
    /// [`TOPIC_SHOPPING_LIST`]
    ShoppingList(ShoppingListView),
    /// [`TOPIC_EVENT`]
    Event(ArchivedEvent),
    /// [`TOPIC_CATALOG`]
    Catalog(CatalogChange),
}

impl ChangeBody {
    pub fn topic(&self) -> &'static str {
        match self {
            ChangeBody::Order(_) => TOPIC_ORDER,
            ChangeBody::ShoppingList(_) => TOPIC_SHOPPING_LIST,
            ChangeBody::Event(_) => TOPIC_EVENT,
            ChangeBody::Catalog(_) => TOPIC_CATALOG,
        }
    }

    /// The body alone (without its topic), as the change log stores it and
    /// a [`CommittedBodies`] notice carries it.
    pub fn to_json(&self) -> Result<Payload, serde_json::Error> {
        match self {
            ChangeBody::Order(b) => Payload::of(b),
            ChangeBody::ShoppingList(b) => Payload::of(b),
            ChangeBody::Event(b) => Payload::of(b),
            ChangeBody::Catalog(b) => Payload::of(b),
        }
    }

    /// A stored body of `topic` (the change log's row).
    pub fn decode(topic: &str, body: &str) -> Result<Self, String> {
        Self::decode_from(topic, &mut serde_json::Deserializer::from_str(body))
    }

    fn decode_from<'de, D: serde::Deserializer<'de>>(topic: &str, body: D) -> Result<Self, String> {
        let decoded = match topic {
            TOPIC_ORDER => OrderSummary::deserialize(body).map(ChangeBody::Order),
            TOPIC_SHOPPING_LIST => {
                ShoppingListView::deserialize(body).map(ChangeBody::ShoppingList)
            }
            TOPIC_EVENT => ArchivedEvent::deserialize(body).map(ChangeBody::Event),
            TOPIC_CATALOG => CatalogChange::deserialize(body).map(ChangeBody::Catalog),
            other => return Err(format!("unknown change topic {other:?}")),
        };
        decoded.map_err(|e| format!("a change of topic {topic}: {e}"))
    }
}

/// How a product changed, in its store's catalog: the stores event's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CatalogChangeKind {
    ProductAdded,
    ProductRebranded,
    ProductPriceIncreased,
    ProductPriceDecreased,
    ProductRemoved,
}

impl CatalogChangeKind {
    /// The kind a stores product event is; `None` for any other message.
    pub fn of(message_type: &str) -> Option<Self> {
        use crate::codec::Message;
        use crate::stores::{
            ProductAdded, ProductPriceDecreased, ProductPriceIncreased, ProductRebranded,
            ProductRemoved,
        };
        Some(match message_type {
            ProductAdded::TYPE => CatalogChangeKind::ProductAdded,
            ProductRebranded::TYPE => CatalogChangeKind::ProductRebranded,
            ProductPriceIncreased::TYPE => CatalogChangeKind::ProductPriceIncreased,
            ProductPriceDecreased::TYPE => CatalogChangeKind::ProductPriceDecreased,
            ProductRemoved::TYPE => CatalogChangeKind::ProductRemoved,
            _ => return None,
        })
    }
}

/// A product of a store's catalog, as it is after a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CatalogChange {
    pub change: CatalogChangeKind,
    pub product: ProductView,
}

/// A change with its position in the search change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoggedChange {
    pub position: i64,
    #[serde(flatten)]
    pub change: Changed,
}

/// The changes one search transaction committed, in log order: one notice
/// per transaction, however many events it applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Committed {
    pub changes: Vec<LoggedChange>,
}
message!(Committed, "search.Change.Committed");

/// A [`Committed`] notice as its writer sends it: the same JSON, from
/// bodies serialized once, for the change log ([`ChangeBody::to_json`]).
#[derive(Serialize)]
pub struct CommittedBodies<'a> {
    pub changes: Vec<LoggedBody<'a>>,
}

/// One change of a [`CommittedBodies`], as a [`LoggedChange`] writes it.
#[derive(Serialize)]
pub struct LoggedBody<'a> {
    pub position: i64,
    pub key: &'a str,
    pub owner: Option<&'a str>,
    pub topic: &'static str,
    pub body: &'a Payload,
}

impl<'a> LoggedBody<'a> {
    pub fn of(position: i64, change: &'a Changed, body: &'a Payload) -> Self {
        LoggedBody {
            position,
            key: &change.key,
            owner: change.owner.as_deref(),
            topic: change.body.topic(),
            body,
        }
    }
}

/// A [`Committed`] notice as a reader takes it: each change's body decoded
/// on its own, so one that cannot be decoded is reported at its position
/// instead of losing the notice's other changes with it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CommittedAsRead {
    pub changes: Vec<ReadChange>,
}

impl crate::codec::Message for CommittedAsRead {
    const TYPE: &'static str = Committed::TYPE;
}

impl Serialize for CommittedAsRead {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "a notice as read is not written; write a Committed",
        ))
    }
}

/// One change of a notice as read: where it is, and its body or why that
/// could not be decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadChange {
    pub position: i64,
    pub topic: String,
    pub key: String,
    pub owner: Option<String>,
    pub body: Result<ChangeBody, String>,
}

impl<'de> Deserialize<'de> for ReadChange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            position: i64,
            topic: String,
            key: String,
            #[serde(default)]
            owner: Option<String>,
            body: Box<serde_json::value::RawValue>,
        }
        let wire = Wire::deserialize(d)?;
        Ok(ReadChange {
            body: ChangeBody::decode_from(&wire.topic, &*wire.body),
            position: wire.position,
            topic: wire.topic,
            key: wire.key,
            owner: wire.owner,
        })
    }
}

/// An order as the search read model shows it: the order and its customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderSummary {
    pub order: OrderView,
    pub customer_name: String,
    pub customer_sms_number: String,
}

/// An integration event as the change log archives it (topic `event`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArchivedEvent {
    pub message_type: String,
    pub schema_version: u16,
    /// Its position in its own module's event log.
    pub source_position: Option<i64>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub payload: crate::Payload,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::depot::ShoppingListStatus;

    fn list() -> ShoppingListView {
        ShoppingListView {
            shopping_list_id: uuid::Uuid::nil(),
            order_id: uuid::Uuid::nil(),
            status: ShoppingListStatus::Available,
            stops: vec![],
            bot_id: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    /// The serde tag of each body is its topic constant, and a notice as
    /// written is read back change by change.
    #[test]
    fn a_committed_notice_reads_back_with_its_topics() {
        let change = Changed {
            key: "k".into(),
            owner: Some("o".into()),
            body: ChangeBody::ShoppingList(list()),
        };
        let written = serde_json::to_value(Committed {
            changes: vec![LoggedChange {
                position: 7,
                change: change.clone(),
            }],
        })
        .unwrap();
        assert_eq!(written["changes"][0]["topic"], TOPIC_SHOPPING_LIST);
        let read = CommittedAsRead::deserialize(&written).unwrap();
        assert_eq!(
            read.changes,
            [ReadChange {
                position: 7,
                topic: TOPIC_SHOPPING_LIST.into(),
                key: "k".into(),
                owner: Some("o".into()),
                body: Ok(change.body.clone()),
            }]
        );
        let stored = change.body.to_json().unwrap();
        assert_eq!(
            ChangeBody::decode(TOPIC_SHOPPING_LIST, stored.json()),
            Ok(change.body.clone())
        );
        // Its writer's form, from the stored body, is the same notice.
        let from_bodies = serde_json::to_value(CommittedBodies {
            changes: vec![LoggedBody::of(7, &change, &stored)],
        })
        .unwrap();
        assert_eq!(from_bodies, written);
    }

    #[test]
    fn an_undecodable_body_is_reported_with_its_position() {
        let notice = serde_json::json!({ "changes": [
            { "position": 3, "topic": "order", "key": "k", "body": { "no": "order" } },
            { "position": 4, "topic": "shopping_list", "key": "l", "body": serde_json::to_value(list()).unwrap() },
        ]});
        let read = CommittedAsRead::deserialize(&notice).unwrap();
        assert_eq!(read.changes[0].position, 3);
        let why = read.changes[0].body.as_ref().unwrap_err();
        assert!(why.starts_with("a change of topic order"), "{why}");
        assert!(read.changes[1].body.is_ok());
        assert!(ChangeBody::decode("nope", "{}").is_err());
    }
}
