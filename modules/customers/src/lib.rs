//! The customers bounded context: registered customers, their SMS numbers and
//! whether they may order (the create-order saga asks, `AuthorizeCustomer`).
//!
//! Its public face: its messages (in `mallbots-contracts`), [`CustomersQueries`]
//! and [`start`].

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::CustomersQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "customers";
