//! The MallBots GraphQL gateway, and the wiring that runs the whole system
//! (or one part of it) as the `mallbots` binary.

pub mod app;
pub mod asyncapi;
mod clients;
pub mod config;
mod consistency;
pub mod dead_letters;
mod documents;
pub mod graphql;
mod http;
pub mod identity;
mod limits;
pub mod live;
mod metrics;
pub mod modules;
mod playground;
mod serve;
mod shared;
pub mod state;
pub mod traces;
mod ws;

pub use app::{Running, start};
pub use config::{Part, Settings};
