//! The depot bounded context: the shopping list of each order, its stops
//! grouped by store from this module's own cache of the stores, and the bots
//! that take and complete them.
//!
//! Its public face: its messages (in `mallbots-contracts`), [`DepotQueries`]
//! and [`start`].

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::DepotQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "depot";
