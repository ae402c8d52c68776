//! cosec: the create-order saga, orchestrated. An order created by a checkout
//! is taken through the steps below; a refused step runs the compensations
//! of the steps before it, backwards.
//!
//! | step | command (to)                  | on success     | compensation        |
//! |------|-------------------------------|----------------|---------------------|
//! | 0    | -                             | -              | RejectOrder         |
//! | 1    | AuthorizeCustomer (customers) | next           | -                   |
//! | 2    | CreateShoppingList (depot)    | keep list id   | CancelShoppingList  |
//! | 3    | ConfirmPayment (payments)     | next           | ReleasePayment      |
//! | 4    | InitiateShopping (depot)      | next           | -                   |
//! | 5    | ApproveOrder (ordering)       | saga done      | -                   |
//!
//! Its public face: [`CosecQueries`] and [`start`]; it owns no messages.

mod application;
pub mod domain;
mod infrastructure;

pub use application::CosecQueries;
pub use infrastructure::{migrate, migrated, queue, start};

/// The module's name: its database schema (or file) and queue prefix.
pub const MODULE: &str = "cosec";
