//! Pure projection rules: no I/O, no async.

use mallbots_contracts::customers::CustomerView;
use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::OrderSummary;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// An amount in whole cents (range filters compare these).
pub fn cents(amount: Decimal) -> i64 {
    (amount * Decimal::ONE_HUNDRED)
        .round()
        .to_i64()
        .unwrap_or(i64::MAX)
}

/// The order as search shows it, with what is known of its customer.
pub fn summary(order: OrderView, customer: Option<&CustomerView>) -> OrderSummary {
    OrderSummary {
        order,
        customer_name: customer.map(|c| c.name.clone()).unwrap_or_default(),
        customer_sms_number: customer.map(|c| c.sms_number.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_are_exact() {
        assert_eq!(cents(Decimal::new(4475, 2)), 4475);
        assert_eq!(cents(Decimal::new(7, 0)), 700);
    }
}
