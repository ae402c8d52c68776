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
    /// Saturating: no price or quantity a message carries can make a
    /// consumer panic (the modules bound both well below this).
    pub fn total(&self) -> Decimal {
        self.price.saturating_mul(Decimal::from(self.quantity))
    }
}

/// The sum of the lines' totals.
pub fn total(items: &[LineItem]) -> Decimal {
    items
        .iter()
        .map(LineItem::total)
        .fold(Decimal::ZERO, Decimal::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_saturate_instead_of_overflowing() {
        let line = LineItem {
            store_id: Uuid::nil(),
            store_name: String::new(),
            product_id: Uuid::nil(),
            product_name: String::new(),
            price: Decimal::MAX,
            quantity: 3,
        };
        assert_eq!(line.total(), Decimal::MAX);
        assert_eq!(total(&[line.clone(), line]), Decimal::MAX);
    }
}
