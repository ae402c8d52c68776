//! The stores bounded context: stores and their products, event sourced.
//!
//! Its public face is its commands and events (in `mallbots-contracts`), its
//! queries ([`StoresQueries`]) and [`start`], which runs the module.

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::queries::{ProductRecord, StoreRecord, StoresQueries};
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "stores";
