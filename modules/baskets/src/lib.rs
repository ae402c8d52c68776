//! The baskets bounded context: a customer's basket, priced from this
//! module's own cache of the stores' catalogs, checked out into an order.
//!
//! Its public face: its messages (in `mallbots-contracts`), [`BasketsQueries`]
//! and [`start`].

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::BasketsQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "baskets";
