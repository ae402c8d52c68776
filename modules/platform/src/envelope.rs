//! The message envelope and its wire form.
//!
//! On RabbitMQ the envelope's fields travel as AMQP properties (`message_id`,
//! `type`, `timestamp`, `correlation_id`, `reply_to`) and headers (schema
//! version, causation id, precise timestamp); the body is the JSON payload.
//! The in-process broker carries the same [`WireMessage`], so both brokers
//! decode (and reject) exactly the same messages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mallbots_contracts::identity::HEADER_ACTOR;
use mallbots_contracts::{Actor, Message, Payload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::PlatformError;

pub const HEADER_SCHEMA_VERSION: &str = "x-schema-version";
pub const HEADER_CAUSATION_ID: &str = "x-causation-id";
pub const HEADER_TIMESTAMP: &str = "x-timestamp";
/// An event's position in its module's event log (the order it was stored in).
pub const HEADER_POSITION: &str = "x-position";
/// Set on a command whose sender retries it under one id (an idempotency
/// key): its module keeps the reply and gives it again to a retry. Its value
/// names the request (a digest of the command); another request under the
/// same id is refused. `1` (from senders before requests were named)
/// matches any.
pub const HEADER_IDEMPOTENT: &str = "x-idempotent";
/// Set on a dead-lettered message: why it was dead-lettered.
pub const HEADER_DEAD_LETTER_REASON: &str = "x-dead-letter-reason";
/// The dead-letter reason of a message whose time to live ran out: RabbitMQ's
/// own word, which the in-process broker writes too.
pub const REASON_EXPIRED: &str = "expired";
/// Set on a dead-lettered message: the queue it was taken from.
pub const HEADER_DEAD_LETTER_QUEUE: &str = "x-dead-letter-queue";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    pub message_type: String,
    pub schema_version: u16,
    pub timestamp: DateTime<Utc>,
    /// The id shared by every message one client request caused.
    pub correlation_id: Uuid,
    /// The id of the message that caused this one (itself for a first message).
    pub causation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Anything else worth carrying (identity, positions, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub payload: Payload,
}

impl Envelope {
    /// A first message: it starts its own correlation chain.
    pub fn new<M: Message>(message: &M) -> Result<Self, PlatformError> {
        Ok(Envelope::first(Outgoing::of(message)?))
    }

    /// A first message, already serialized. Made inside a traced span, it
    /// carries that span's trace context.
    pub fn first(message: Outgoing) -> Self {
        let id = Uuid::now_v7();
        let mut headers = BTreeMap::new();
        crate::propagation::inject_current(&mut headers);
        Envelope {
            id,
            message_type: message.message_type.to_owned(),
            schema_version: message.version,
            timestamp: Utc::now(),
            correlation_id: id,
            causation_id: id,
            reply_to: None,
            headers,
            payload: message.payload,
        }
    }

    /// A message caused by `self`: same correlation, causation is `self`.
    pub fn caused<M: Message>(&self, message: &M) -> Result<Self, PlatformError> {
        Ok(self.caused_outgoing(Outgoing::of(message)?))
    }

    /// Like [`Envelope::caused`], for a message already serialized.
    /// The actor stays on what its command causes.
    pub fn caused_outgoing(&self, message: Outgoing) -> Self {
        let mut next = Envelope::first(message);
        next.correlation_id = self.correlation_id;
        next.causation_id = self.id;
        if let Some(actor) = self.headers.get(HEADER_ACTOR) {
            next.headers.insert(HEADER_ACTOR.to_owned(), actor.clone());
        }
        next
    }

    /// Who sent the command (or the command that caused this message).
    pub fn actor(&self) -> Option<Actor> {
        Actor::parse(self.headers.get(HEADER_ACTOR)?)
    }

    pub fn set_actor(&mut self, actor: &Actor) {
        self.headers.insert(HEADER_ACTOR.to_owned(), actor.header());
    }

    /// The event-log position an integration event was stored at.
    pub fn position(&self) -> Option<i64> {
        self.headers.get(HEADER_POSITION)?.parse().ok()
    }

    /// The payload as `M`, checking the type name and schema version.
    pub fn decode<M: Message>(&self) -> Result<M, PlatformError> {
        let fail = |reason: String| PlatformError::Decode {
            what: M::TYPE.to_owned(),
            reason,
        };
        if self.message_type != M::TYPE {
            return Err(fail(format!("message type is {}", self.message_type)));
        }
        if self.schema_version != M::VERSION {
            return Err(fail(format!(
                "schema version {} is not the supported {}",
                self.schema_version,
                M::VERSION
            )));
        }
        self.payload.decode().map_err(|e| fail(e.to_string()))
    }

    pub fn to_wire(&self) -> WireMessage {
        let mut headers = self.headers.clone();
        headers.insert(
            HEADER_SCHEMA_VERSION.to_owned(),
            self.schema_version.to_string(),
        );
        headers.insert(
            HEADER_CAUSATION_ID.to_owned(),
            self.causation_id.to_string(),
        );
        headers.insert(HEADER_TIMESTAMP.to_owned(), self.timestamp.to_rfc3339());
        WireMessage {
            message_id: Some(self.id.to_string()),
            message_type: Some(self.message_type.clone()),
            timestamp: u64::try_from(self.timestamp.timestamp()).ok(),
            correlation_id: Some(self.correlation_id.to_string()),
            reply_to: self.reply_to.clone(),
            headers,
            ttl_ms: None,
            body: self.payload.json().as_bytes().to_vec(),
        }
    }
}

/// Why a body is refused: a message's body is always one JSON object.
const NOT_AN_OBJECT: &str = "the body is not a JSON object";

/// A message serialized but not yet enveloped: what domain code hands the
/// platform to send (an integration event, a saga's command).
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub message_type: &'static str,
    pub version: u16,
    pub payload: Payload,
}

impl Outgoing {
    /// `Some` of a just-serialized message (for `announce`-style returns).
    pub fn of_some(message: Result<Self, PlatformError>) -> Result<Option<Self>, PlatformError> {
        message.map(Some)
    }

    /// A message of type `M` whose body was serialized from another form
    /// of it (the same JSON, written without building an `M`).
    pub fn of_body<M: Message>(payload: Payload) -> Self {
        Outgoing {
            message_type: M::TYPE,
            version: M::VERSION,
            payload,
        }
    }

    pub fn of<M: Message>(message: &M) -> Result<Self, PlatformError> {
        let fail = |reason: String| PlatformError::Decode {
            what: M::TYPE.to_owned(),
            reason,
        };
        let payload = Payload::of(message).map_err(|e| fail(e.to_string()))?;
        // What receivers take (`WireMessage::decode`), and so what is sent.
        if !payload.is_object() {
            return Err(fail(NOT_AN_OBJECT.to_owned()));
        }
        Ok(Outgoing {
            message_type: M::TYPE,
            version: M::VERSION,
            payload,
        })
    }
}

/// A message as a broker carries it. Anything can arrive on a queue, so every
/// field is optional here and [`WireMessage::decode`] says what is wrong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WireMessage {
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    /// Seconds since the epoch (AMQP's precision).
    pub timestamp: Option<u64>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub headers: BTreeMap<String, String>,
    /// Dropped to the dead-letter queue, unconsumed, this long after publishing
    /// (AMQP per-message TTL). Commands carry their sender's timeout here, so
    /// one the sender gave up on is not applied later.
    pub ttl_ms: Option<u64>,
    pub body: Vec<u8>,
}

/// A wire message's properties, as stored beside its body (the durable
/// in-process broker, the dead-letter store).
#[derive(Serialize, Deserialize)]
struct StoredProperties {
    message_id: Option<String>,
    message_type: Option<String>,
    timestamp: Option<u64>,
    correlation_id: Option<String>,
    reply_to: Option<String>,
    headers: BTreeMap<String, String>,
    ttl_ms: Option<u64>,
}

impl WireMessage {
    /// Everything but the body, as JSON, for storing.
    pub fn properties_json(&self) -> String {
        let properties = StoredProperties {
            message_id: self.message_id.clone(),
            message_type: self.message_type.clone(),
            timestamp: self.timestamp,
            correlation_id: self.correlation_id.clone(),
            reply_to: self.reply_to.clone(),
            headers: self.headers.clone(),
            ttl_ms: self.ttl_ms,
        };
        // Strings, numbers and a map of strings always serialize.
        serde_json::to_string(&properties).unwrap_or_default()
    }

    /// A message stored as [`WireMessage::properties_json`] and its body.
    pub fn from_stored(properties: &str, body: Vec<u8>) -> Result<Self, String> {
        let p: StoredProperties = serde_json::from_str(properties)
            .map_err(|e| format!("unreadable stored properties: {e}"))?;
        Ok(WireMessage {
            message_id: p.message_id,
            message_type: p.message_type,
            timestamp: p.timestamp,
            correlation_id: p.correlation_id,
            reply_to: p.reply_to,
            headers: p.headers,
            ttl_ms: p.ttl_ms,
            body,
        })
    }

    pub fn decode(&self) -> Result<Envelope, String> {
        let uuid = |name: &str, value: Option<&String>| -> Result<Uuid, String> {
            let value = value.ok_or_else(|| format!("missing {name}"))?;
            Uuid::parse_str(value).map_err(|_| format!("{name} {value:?} is not a UUID"))
        };
        let id = uuid("message id", self.message_id.as_ref())?;
        let message_type = self
            .message_type
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or("missing message type")?;
        let correlation_id = uuid("correlation id", self.correlation_id.as_ref())?;
        let causation_id = uuid("causation id", self.headers.get(HEADER_CAUSATION_ID))?;
        let schema_version = self
            .headers
            .get(HEADER_SCHEMA_VERSION)
            .ok_or("missing schema version")?
            .parse::<u16>()
            .map_err(|_| "schema version is not a number")?;
        let timestamp = match self.headers.get(HEADER_TIMESTAMP) {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|_| format!("timestamp {t:?} is not RFC 3339"))?
                .with_timezone(&Utc),
            None => self
                .timestamp
                .and_then(|s| DateTime::from_timestamp(i64::try_from(s).ok()?, 0))
                .ok_or("missing timestamp")?,
        };
        let payload = Payload::from_slice(&self.body)
            .map_err(|e| format!("the body is not valid JSON: {e}"))?;
        // A list would pass for a struct otherwise. Every contract's body is
        // an object (a test of the AsyncAPI document holds that), and
        // `Outgoing::of` sends nothing else.
        if !payload.is_object() {
            return Err(NOT_AN_OBJECT.into());
        }
        let headers = self
            .headers
            .iter()
            .filter(|(k, _)| {
                ![HEADER_SCHEMA_VERSION, HEADER_CAUSATION_ID, HEADER_TIMESTAMP]
                    .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Envelope {
            id,
            message_type,
            schema_version,
            timestamp,
            correlation_id,
            causation_id,
            reply_to: self.reply_to.clone(),
            headers,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ping {
        n: u32,
    }
    impl Message for Ping {
        const TYPE: &'static str = "test.Ping";
    }

    #[test]
    fn an_envelope_survives_its_wire_form() {
        let mut env = Envelope::new(&Ping { n: 7 }).unwrap();
        env.reply_to = Some("replies".into());
        env.headers.insert("x-position".into(), "12".into());
        let back = env.to_wire().decode().unwrap();
        assert_eq!(back, env);
        assert_eq!(back.decode::<Ping>().unwrap(), Ping { n: 7 });
    }

    #[test]
    fn a_caused_message_keeps_the_correlation() {
        let first = Envelope::new(&Ping { n: 1 }).unwrap();
        let next = first.caused(&Ping { n: 2 }).unwrap();
        assert_eq!(next.correlation_id, first.correlation_id);
        assert_eq!(next.causation_id, first.id);
        assert_ne!(next.id, first.id);
    }

    #[test]
    fn garbage_is_rejected_with_its_reason() {
        let mut wire = Envelope::new(&Ping { n: 1 }).unwrap().to_wire();
        wire.body = b"{not json".to_vec();
        assert!(wire.decode().unwrap_err().contains("not valid JSON"));
        // Refused on arrival, as a tree parse would: the body is kept as
        // text, and archived, and must decode again wherever it goes.
        let deep = format!(r#"{{"n": 1, "x": {}{}}}"#, "[".repeat(500), "]".repeat(500));
        wire.body = deep.into_bytes();
        assert!(wire.decode().unwrap_err().contains("recursion limit"));
        wire.body = br#"{"n": 1, "x": "\ud800"}"#.to_vec();
        assert!(wire.decode().unwrap_err().contains("not valid JSON"));
        // A list a struct would be read from, or any other non-object.
        for body in [&b"[1]"[..], b"\"{}\"", b"null", b"7"] {
            wire.body = body.to_vec();
            assert_eq!(wire.decode().unwrap_err(), "the body is not a JSON object");
        }
        wire.body = b" \n{\"n\": 2} ".to_vec();
        assert_eq!(
            wire.decode().unwrap().decode::<Ping>().unwrap(),
            Ping { n: 2 }
        );
        let bare = WireMessage {
            body: b"hello".to_vec(),
            ..WireMessage::default()
        };
        assert_eq!(bare.decode().unwrap_err(), "missing message id");
    }

    #[test]
    fn a_message_that_is_not_an_object_is_not_sent() {
        #[derive(Serialize, Deserialize)]
        struct Bare(u32);
        impl Message for Bare {
            const TYPE: &'static str = "test.Bare";
        }
        assert!(Envelope::new(&Bare(1)).is_err());
    }

    #[test]
    fn a_wrong_version_is_a_decode_error() {
        let mut env = Envelope::new(&Ping { n: 1 }).unwrap();
        env.schema_version = 2;
        assert!(env.decode::<Ping>().is_err());
    }
}
