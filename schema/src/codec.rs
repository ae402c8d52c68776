//! What every message shares: its type name and version, its module, and
//! decoding a payload of a known version.

use serde::{Serialize, de::DeserializeOwned};

/// The module a message belongs to: the first segment of its type
/// (`ordering.Order.OrderCreated`, `stores.CreateStore`).
pub fn module_of(message_type: &str) -> &str {
    message_type.split('.').next().unwrap_or(message_type)
}

/// A message that crosses the broker.
///
/// `TYPE` is the AMQP `type` property. For events it is also the routing key
/// (`<module>.<Aggregate>.<Event>`); for commands it is `<module>.<Command>`.
pub trait Message: Serialize + DeserializeOwned + Send + Sync {
    const TYPE: &'static str;
    /// Bumped on a breaking change of the payload; consumers check it.
    const VERSION: u16 = 1;
}

/// A message's payload decoded as `M`, after checking that its schema
/// version is the one this contract reads. The reason for a failure does
/// not repeat the message's type, which its caller names.
pub fn decode<'de, M: Message, D: serde::Deserializer<'de>>(
    version: u16,
    payload: D,
) -> Result<M, String> {
    if version != M::VERSION {
        return Err(format!(
            "schema version {version} is not the supported {}",
            M::VERSION
        ));
    }
    M::deserialize(payload).map_err(|e| e.to_string())
}

/// What kind of message a type is, by how it is named: an event's type
/// has three segments (`<module>.<Aggregate>.<Event>`), a command's two
/// (`<module>.<Command>`); the reply is [`crate::CommandReply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Command,
    Event,
    Reply,
}

/// A message type as published: its name, version, kind and JSON Schema.
/// Every type declared with `message!` (or `view_events!`) is one; see
/// [`catalog`].
#[derive(Debug)]
pub struct Described {
    pub message_type: &'static str,
    pub version: u16,
    schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

/// The command reply's type name: the one message that is neither a command
/// nor an event. Named here so the codec needs nothing from the reply's file.
pub(crate) const REPLY_TYPE: &str = "mallbots.CommandReply";

impl Described {
    #[doc(hidden)]
    pub const fn of<M: Message + schemars::JsonSchema>(message_type: &'static str) -> Self {
        Described {
            message_type,
            version: M::VERSION,
            schema: schemars::SchemaGenerator::subschema_for::<M>,
        }
    }

    pub fn kind(&self) -> Kind {
        if self.message_type == REPLY_TYPE {
            Kind::Reply
        } else if self.message_type.split('.').count() >= 3 {
            Kind::Event
        } else {
            Kind::Command
        }
    }

    /// The payload's JSON Schema, its named parts kept as definitions of
    /// `generator` (which a document of several messages shares).
    pub fn schema_in(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        (self.schema)(generator)
    }
}

inventory::collect!(Described);

/// Every message type the contracts declare, by name: what AsyncAPI
/// publishes and what a test checks real messages against.
pub fn catalog() -> Vec<&'static Described> {
    let mut all: Vec<_> = inventory::iter::<Described>.into_iter().collect();
    all.sort_by_key(|d| d.message_type);
    all
}

/// Declares a message struct's type name (and optionally its version), and
/// lists it in the [`catalog`].
macro_rules! message {
    ($ty:ty, $name:expr) => {
        impl $crate::codec::Message for $ty {
            const TYPE: &'static str = $name;
        }
        inventory::submit! {
            $crate::codec::Described::of::<$ty>($name)
        }
    };
}
pub(crate) use message;

/// Declares events that each carry an aggregate's full view (event-carried
/// state transfer): `Name = "routing.key"`, one newtype per event.
macro_rules! view_events {
    ($view:ty, $($name:ident = $key:literal),+ $(,)?) => {
        $(
            #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
            pub struct $name(pub $view);
            $crate::codec::message!($name, $key);
        )+

        impl $view {
            /// The view an event of this aggregate carries, its schema
            /// version checked; `None` when `message_type` is not one.
            pub fn from_event<'de, D: serde::Deserializer<'de>>(
                message_type: &str,
                version: u16,
                payload: D,
            ) -> Option<Result<Self, String>> {
                match message_type {
                    $($key => Some($crate::codec::decode::<$name, D>(version, payload).map(|m| m.0)),)+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use view_events;
