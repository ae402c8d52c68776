//! A message's body as JSON text, serialized once.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A message's body, kept as the JSON text it was made (or received) as
/// until a reader decodes it into its contract type. It is copied through
/// envelopes, the outbox, the broker and the change log without being
/// parsed into a tree and serialized again at each step.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

/// Any JSON value, as the schema of a `serde_json::Value` says.
impl schemars::JsonSchema for Payload {
    fn inline_schema() -> bool {
        <serde_json::Value as schemars::JsonSchema>::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <serde_json::Value as schemars::JsonSchema>::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        <serde_json::Value as schemars::JsonSchema>::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <serde_json::Value as schemars::JsonSchema>::json_schema(generator)
    }
}

impl Payload {
    /// `value` serialized.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Payload)
    }

    /// A body received as bytes, checked to be one JSON value as strictly
    /// as a parse into a tree would check it: capturing the text alone only
    /// skims it (no depth limit, escapes in strings unchecked), and a body
    /// kept as text is handed on, archived and decoded again later.
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<Checked>(body)?;
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

    /// Whether the body is a JSON object (its text has no blank around it).
    pub fn is_object(&self) -> bool {
        self.json().starts_with('{')
    }
}

/// A JSON value walked in full and kept nowhere: every string decoded,
/// every number read, nesting within the parser's depth limit.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
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
        // What a parse into a tree refuses, though a raw capture would not.
        let deep = format!("{{\"x\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(Payload::from_slice(deep.as_bytes()).is_err());
        assert!(Payload::from_slice(br#"{"x": "\ud800"}"#).is_err());
        assert!(Payload::from_slice(br#"{"x": 1e999999}"#).is_err());
        let nested = format!("{{\"x\": {}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(Payload::from_slice(nested.as_bytes()).is_ok());
        let escaped = br#"{"\u00e9": ["\ud83d\ude00", -1, 2.5, true, null, {}]}"#;
        assert_eq!(
            Payload::from_slice(escaped).unwrap().json(),
            std::str::from_utf8(escaped).unwrap()
        );
        let list = Payload::from_slice(b" [1, 2] ").unwrap();
        assert!(!list.is_object());
        assert!(Payload::from_slice(b" {} ").unwrap().is_object());
        assert_eq!(
            list.decode::<serde_json::Value>().unwrap(),
            serde_json::json!([1, 2])
        );
    }
}
