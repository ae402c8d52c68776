//! The ordering bounded context: an order is created by a checkout, approved
//! or rejected by the create-order saga, readied when its shopping list is
//! completed and completed when its invoice is paid.
//!
//! Its public face: its messages (in `mallbots-contracts`), [`OrderingQueries`]
//! and [`start`].

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::OrderingQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "ordering";
