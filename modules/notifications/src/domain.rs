//! What to tell a customer, and when: pure, no I/O.

use chrono::{DateTime, Utc};
use mallbots_contracts::ordering::OrderStatus;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message to a customer about one of their orders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: Uuid,
    pub customer_id: Uuid,
    pub order_id: Uuid,
    /// `created`, `ready`, `canceled` or `completed`.
    pub kind: String,
    pub sms_number: String,
    pub text: String,
    pub sent_at: DateTime<Utc>,
}

/// The kind and text for an order now `status`, when it is one customers hear of.
pub fn message(
    status: OrderStatus,
    customer_name: &str,
    order_id: Uuid,
    total: Decimal,
) -> Option<(&'static str, String)> {
    let short = &order_id.simple().to_string()[..8];
    let hello = if customer_name.is_empty() {
        "Hello".to_owned()
    } else {
        format!("Hello {customer_name}")
    };
    Some(match status {
        OrderStatus::Pending => (
            "created",
            format!("{hello}, we received your order {short} ({total})."),
        ),
        OrderStatus::Ready => (
            "ready",
            format!("{hello}, your order {short} is ready for pickup."),
        ),
        OrderStatus::Canceled => (
            "canceled",
            format!("{hello}, your order {short} was canceled."),
        ),
        OrderStatus::Completed => (
            "completed",
            format!("{hello}, your order {short} is complete. Thank you!"),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_hear_of_four_moments_only() {
        let id = Uuid::nil();
        let (kind, text) = message(OrderStatus::Ready, "Ada", id, Decimal::ONE).unwrap();
        assert_eq!(kind, "ready");
        assert_eq!(text, "Hello Ada, your order 00000000 is ready for pickup.");
        assert!(message(OrderStatus::Approved, "Ada", id, Decimal::ONE).is_none());
        assert!(message(OrderStatus::InProgress, "Ada", id, Decimal::ONE).is_none());
    }
}
