//! The contracts between MallBots modules and the gateway: every integration
//! message (event, command, reply) that crosses the broker, with its type name
//! and schema version. Modules depend on these, never on each other.

pub mod baskets;
pub mod common;
pub mod customers;
pub mod depot;
pub mod identity;
pub mod ordering;
mod payload;
pub mod payments;
pub mod reply;
pub mod search;
pub mod stores;

mod codec;

pub use codec::{Described, Kind, Message, catalog, decode, module_of};
pub use identity::{Actor, Role};
pub use payload::Payload;
pub use reply::{Affected, CommandReply, ErrorCode, ReplyError};
