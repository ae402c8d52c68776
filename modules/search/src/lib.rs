//! The search read model: one denormalized row per order (customer name and
//! contact, items with store and product names, totals, status, times), kept
//! from customers', ordering's and the catalog's events. It is also the read
//! side's change log: every change it commits (orders, shopping lists, catalog
//! changes, and every integration event, archived) gets a position, which is
//! the cursor of the live subscriptions.
//!
//! Its public face: [`SearchQueries`], [`start`], [`rebuild`].

mod application;
pub mod domain;
mod infrastructure;

pub use application::queries::{OrderFilter, ReplayTurn, SearchQueries};
pub use infrastructure::{BATCH, migrate, migrated, queue, rebuild, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "search";
