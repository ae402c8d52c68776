//! The baskets module's commands and integration events.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};
use crate::common::LineItem;

pub const COMMANDS: &str = "baskets.*";
pub const EVENTS: &str = "baskets.#";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StartBasket {
    pub basket_id: Uuid,
    pub customer_id: Uuid,
}
message!(StartBasket, "baskets.StartBasket");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AddItem {
    pub basket_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}
message!(AddItem, "baskets.AddItem");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RemoveItem {
    pub basket_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
}
message!(RemoveItem, "baskets.RemoveItem");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelBasket {
    pub basket_id: Uuid,
}
message!(CancelBasket, "baskets.CancelBasket");

/// Checks the basket out with an authorized payment; `order_id` is the id the
/// order it creates will have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckoutBasket {
    pub basket_id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
}
message!(CheckoutBasket, "baskets.CheckoutBasket");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BasketStatus {
    Open,
    Canceled,
    CheckedOut,
}

impl BasketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BasketStatus::Open => "open",
            BasketStatus::Canceled => "canceled",
            BasketStatus::CheckedOut => "checked_out",
        }
    }
}

/// A basket's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BasketView {
    pub basket_id: Uuid,
    pub customer_id: Uuid,
    pub items: Vec<LineItem>,
    pub total: Decimal,
    pub status: BasketStatus,
    pub payment_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    BasketView,
    BasketStarted = "baskets.Basket.BasketStarted",
    BasketItemAdded = "baskets.Basket.BasketItemAdded",
    BasketItemRemoved = "baskets.Basket.BasketItemRemoved",
    BasketCanceled = "baskets.Basket.BasketCanceled",
    BasketCheckedOut = "baskets.Basket.BasketCheckedOut",
);
