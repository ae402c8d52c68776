//! A message's body as JSON text, serialized once.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A message's body, kept as the JSON text it was made (or received) as
/// until a reader decodes it into its contract type. It is copied through
/// envelopes, the outbox, the broker and the change log without being
/// parsed into a tree and serialized again at each step.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Payload(#[schemars(with = "serde_json::Value")] Box<RawValue>);

impl Payload {
    /// `value` serialized.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Payload)
    }

    /// A body received as bytes, checked to be one JSON value.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body).map(Payload)
    }

    /// The body decoded as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The body as a deserializer, for decoders generic over one.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The body as a JSON tree, for those who hand it out as one.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }
}

/// Two bodies are equal when their texts are.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Ping {
        n: u32,
    }

    #[test]
    fn a_payload_keeps_its_text_through_a_containing_document() {
        let payload = Payload::of(&Ping { n: 7 }).unwrap();
        assert_eq!(payload.json(), r#"{"n":7}"#);
        #[derive(Serialize, Deserialize)]
        struct Outer {
            payload: Payload,
        }
        let text = serde_json::to_string(&Outer { payload }).unwrap();
        assert_eq!(text, r#"{"payload":{"n":7}}"#);
        let back: Outer = serde_json::from_str(&text).unwrap();
        assert_eq!(back.payload.decode::<Ping>().unwrap(), Ping { n: 7 });
    }

    #[test]
    fn a_body_that_is_not_json_is_refused() {
        assert!(Payload::from_slice(b"{not json").is_err());
        assert!(Payload::from_slice(b"{} trailing").is_err());
        let list = Payload::from_slice(b" [1, 2] ").unwrap();
        assert_eq!(list.to_value().unwrap(), serde_json::json!([1, 2]));
    }
}
