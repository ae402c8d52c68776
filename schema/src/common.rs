//! Types several modules' messages share.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A line of a basket or an order: what was bought, with the names and the
/// price copied when it was added (later catalog changes do not alter it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A character a name must not hold: a control character (NUL, escape
/// sequences, line breaks) or one that reorders or hides text (bidirectional
/// overrides and isolates, zero-width marks), which let a name show
/// something other than what it is.
pub fn is_unsafe_in_names(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// The most any amount of money may be: a price, a basket's total (so an
/// order's and its invoice's), a payment: 1,000,000.00.
pub const MAX_MONEY: Decimal = Decimal::from_parts(100_000_000, 0, 0, false, 2);

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
    fn names_refuse_control_and_reordering_characters() {
        for c in [
            '\0', '\u{1b}', '\r', '\n', '\u{202E}', '\u{2067}', '\u{200B}',
        ] {
            assert!(is_unsafe_in_names(c), "{c:?}");
        }
        for c in ['a', 'é', '中', ' ', '&', '\u{1F600}'] {
            assert!(!is_unsafe_in_names(c), "{c:?}");
        }
    }

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
