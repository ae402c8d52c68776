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
/// version is the one this contract reads.
pub fn decode<'de, M: Message, D: serde::Deserializer<'de>>(
    version: u16,
    payload: D,
) -> Result<M, String> {
    if version != M::VERSION {
        return Err(format!(
            "{} schema version {version} is not the supported {}",
            M::TYPE,
            M::VERSION
        ));
    }
    M::deserialize(payload).map_err(|e| format!("{}: {e}", M::TYPE))
}

/// Declares a message struct's type name (and optionally its version).
macro_rules! message {
    ($ty:ty, $name:literal) => {
        impl $crate::codec::Message for $ty {
            const TYPE: &'static str = $name;
        }
    };
}
pub(crate) use message;

/// Declares events that each carry an aggregate's full view (event-carried
/// state transfer): `Name = "routing.key"`, one newtype per event.
macro_rules! view_events {
    ($view:ty, $($name:ident = $key:literal),+ $(,)?) => {
        $(
            #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
