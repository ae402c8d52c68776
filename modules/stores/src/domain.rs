//! The pure domain: aggregates, their rules and events. No I/O, no async.

mod error;
mod product;
mod store;
mod values;

pub use error::{Refusal, StoresError};
pub use product::{NewProduct, Product, ProductEvent};
pub use store::{Store, StoreEvent};
pub use values::{Price, PriceDelta, ProductName, StoreLocation, StoreName, Text};

#[cfg(test)]
mod tests;
