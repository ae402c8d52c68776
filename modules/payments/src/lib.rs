//! The payments bounded context: payments authorized before checkout (and
//! confirmed by the create-order saga), and the invoice of every ready order.
//!
//! Its public face: its messages (in `mallbots-contracts`), [`PaymentsQueries`]
//! and [`start`].

pub mod application;
pub mod domain;
mod infrastructure;

pub use application::PaymentsQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "payments";
