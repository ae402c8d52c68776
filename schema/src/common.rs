//! Types several modules' messages share.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A line of a basket or an order: what was bought, with the names and the
/// price copied when it was added (later catalog changes do not alter it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub store_id: Uuid,
    pub store_name: String,
    pub product_id: Uuid,
    pub product_name: String,
    pub price: Decimal,
    pub quantity: i32,
}

impl LineItem {
    pub fn total(&self) -> Decimal {
        self.price * Decimal::from(self.quantity)
    }
}

/// The sum of the lines' totals.
pub fn total(items: &[LineItem]) -> Decimal {
    items.iter().map(LineItem::total).sum()
}
