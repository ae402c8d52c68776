//! Pure projection rules: no I/O, no async.

use std::collections::HashMap;

use mallbots_contracts::customers::CustomerView;
use mallbots_contracts::ordering::OrderView;
use mallbots_contracts::search::OrderSummary;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use uuid::Uuid;

/// An amount in whole cents (range filters compare these).
/// Checked: an amount too large for cents counts as the largest (or
/// smallest) there is, never a panic.
pub fn cents(amount: Decimal) -> i64 {
    amount
        .checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|c| c.round().to_i64())
        .unwrap_or(if amount.is_sign_negative() {
            i64::MIN
        } else {
            i64::MAX
        })
}

/// The order as search shows it, with what is known of its customer.
pub fn summary(order: OrderView, customer: Option<&CustomerView>) -> OrderSummary {
    OrderSummary {
        order,
        customer_name: customer.map(|c| c.name.clone()).unwrap_or_default(),
        customer_sms_number: customer.map(|c| c.sms_number.clone()).unwrap_or_default(),
    }
}

/// The order rows and the customer cache folded in memory from events in
/// the order search applied them (a rebuild). It ends where the live
/// projection does: each order at its newest view, showing its customer's
/// newest contact, because the live one rewrites a customer's orders
/// whenever that contact changes.
#[derive(Default)]
pub struct Fold {
    orders: HashMap<Uuid, (OrderView, i64)>,
    customers: HashMap<Uuid, (CustomerView, i64)>,
}

/// A view and the source position it is as of.
pub type Positioned<T> = (T, i64);

/// Whether a view at `position` replaces what `slot` holds (nothing, or an
/// older one): a late event never rolls a row back.
pub fn newer<T>(slot: Option<&Positioned<T>>, position: i64) -> bool {
    slot.is_none_or(|(_, stored)| *stored < position)
}

impl Fold {
    pub fn order(&mut self, order: OrderView, position: i64) {
        if newer(self.orders.get(&order.order_id), position) {
            self.orders.insert(order.order_id, (order, position));
        }
    }

    pub fn customer(&mut self, customer: CustomerView, position: i64) {
        if newer(self.customers.get(&customer.customer_id), position) {
            self.customers
                .insert(customer.customer_id, (customer, position));
        }
    }

    /// The order rows (summary and position), and the customer cache.
    pub fn finish(self) -> (Vec<Positioned<OrderSummary>>, Vec<Positioned<CustomerView>>) {
        let customers = self.customers;
        let orders = self
            .orders
            .into_values()
            .map(|(order, position)| {
                let customer = customers.get(&order.customer_id).map(|(c, _)| c);
                (summary(order, customer), position)
            })
            .collect();
        (orders, customers.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use mallbots_contracts::ordering::OrderStatus;
    use rust_decimal::Decimal;

    #[test]
    fn cents_never_overflow() {
        assert_eq!(cents(Decimal::new(1234, 2)), 1234);
        assert_eq!(cents(Decimal::MAX), i64::MAX);
        assert_eq!(cents(Decimal::MIN), i64::MIN);
    }

    fn order(id: Uuid, customer: Uuid, status: OrderStatus) -> OrderView {
        OrderView {
            order_id: id,
            customer_id: customer,
            payment_id: Uuid::nil(),
            basket_id: Uuid::nil(),
            shopping_list_id: None,
            items: vec![],
            total: Decimal::ONE,
            status,
            rejection: None,
            created_at: Utc::now(),
            occurred_at: Utc::now(),
        }
    }

    fn customer(id: Uuid, name: &str) -> CustomerView {
        CustomerView {
            customer_id: id,
            name: name.into(),
            sms_number: "555".into(),
            enabled: true,
            occurred_at: Utc::now(),
        }
    }

    #[test]
    fn fold_keeps_newest_views_and_newest_contact() {
        let (o, c) = (Uuid::now_v7(), Uuid::now_v7());
        let mut fold = Fold::default();
        fold.order(order(o, c, OrderStatus::Pending), 1);
        fold.customer(customer(c, "Ann"), 1);
        fold.order(order(o, c, OrderStatus::Approved), 3);
        // Late, older events change nothing.
        fold.order(order(o, c, OrderStatus::Pending), 2);
        fold.customer(customer(c, "Bea"), 2);
        fold.customer(customer(c, "Old"), 1);
        let (orders, customers) = fold.finish();
        assert_eq!(orders.len(), 1);
        let (summary, position) = &orders[0];
        assert_eq!(*position, 3);
        assert_eq!(summary.order.status, OrderStatus::Approved);
        assert_eq!(summary.customer_name, "Bea");
        assert_eq!(customers.len(), 1);
        assert_eq!(customers[0].1, 2);
    }

    #[test]
    fn fold_order_without_customer_shows_no_contact() {
        let mut fold = Fold::default();
        fold.order(
            order(Uuid::now_v7(), Uuid::now_v7(), OrderStatus::Pending),
            1,
        );
        let (orders, customers) = fold.finish();
        assert_eq!(orders[0].0.customer_name, "");
        assert!(customers.is_empty());
    }

    #[test]
    fn cents_are_exact() {
        assert_eq!(cents(Decimal::new(4475, 2)), 4475);
        assert_eq!(cents(Decimal::new(7, 0)), 700);
    }
}
