//! The ordering module's commands and integration events.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};
use crate::common::LineItem;

pub const COMMANDS: &str = "ordering.*";
pub const EVENTS: &str = "ordering.#";

/// Saga command (compensation of the create-order saga).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RejectOrder {
    pub order_id: Uuid,
    pub reason: String,
}
message!(RejectOrder, "ordering.RejectOrder");

/// Saga command: the order's shopping list is ready for the bots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApproveOrder {
    pub order_id: Uuid,
    pub shopping_list_id: Uuid,
}
message!(ApproveOrder, "ordering.ApproveOrder");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelOrder {
    pub order_id: Uuid,
}
message!(CancelOrder, "ordering.CancelOrder");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Rejected,
    Approved,
    InProgress,
    Ready,
    Completed,
    Canceled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Approved => "approved",
            OrderStatus::InProgress => "in_progress",
            OrderStatus::Ready => "ready",
            OrderStatus::Completed => "completed",
            OrderStatus::Canceled => "canceled",
        }
    }
}

/// An order's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub basket_id: Uuid,
    pub shopping_list_id: Option<Uuid>,
    pub items: Vec<LineItem>,
    pub total: Decimal,
    pub status: OrderStatus,
    /// Why the order was rejected, when it was.
    pub rejection: Option<String>,
    pub created_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    OrderView,
    OrderCreated = "ordering.Order.OrderCreated",
    OrderRejected = "ordering.Order.OrderRejected",
    OrderApproved = "ordering.Order.OrderApproved",
    OrderStarted = "ordering.Order.OrderStarted",
    OrderReadied = "ordering.Order.OrderReadied",
    OrderCompleted = "ordering.Order.OrderCompleted",
    OrderCanceled = "ordering.Order.OrderCanceled",
);
