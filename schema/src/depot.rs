//! The depot module's commands and integration events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};
use crate::common::LineItem;

pub const COMMANDS: &str = "depot.*";
pub const EVENTS: &str = "depot.#";

/// Saga command; replies with `{"shoppingListId": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateShoppingList {
    pub order_id: Uuid,
    pub items: Vec<LineItem>,
}
message!(CreateShoppingList, "depot.CreateShoppingList");

/// Saga command (compensation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelShoppingList {
    pub shopping_list_id: Uuid,
}
message!(CancelShoppingList, "depot.CancelShoppingList");

/// Saga command: the list becomes available to the bots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InitiateShopping {
    pub shopping_list_id: Uuid,
}
message!(InitiateShopping, "depot.InitiateShopping");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssignShoppingList {
    pub shopping_list_id: Uuid,
    pub bot_id: Uuid,
}
message!(AssignShoppingList, "depot.AssignShoppingList");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompleteShoppingList {
    pub shopping_list_id: Uuid,
}
message!(CompleteShoppingList, "depot.CompleteShoppingList");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShoppingListStatus {
    Pending,
    Available,
    Assigned,
    Active,
    Completed,
    Canceled,
}

impl ShoppingListStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShoppingListStatus::Pending => "pending",
            ShoppingListStatus::Available => "available",
            ShoppingListStatus::Assigned => "assigned",
            ShoppingListStatus::Active => "active",
            ShoppingListStatus::Completed => "completed",
            ShoppingListStatus::Canceled => "canceled",
        }
    }
}

/// What to pick up at one store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stop {
    pub store_id: Uuid,
    pub store_name: String,
    pub location: String,
    pub items: Vec<StopItem>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StopItem {
    pub product_id: Uuid,
    pub product_name: String,
    pub quantity: i32,
}

/// A shopping list's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShoppingListView {
    pub shopping_list_id: Uuid,
    pub order_id: Uuid,
    pub stops: Vec<Stop>,
    pub status: ShoppingListStatus,
    pub bot_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    ShoppingListView,
    ShoppingListCreated = "depot.ShoppingList.ShoppingListCreated",
    ShoppingListCanceled = "depot.ShoppingList.ShoppingListCanceled",
    ShoppingListInitiated = "depot.ShoppingList.ShoppingListInitiated",
    ShoppingListAssigned = "depot.ShoppingList.ShoppingListAssigned",
    // Its order started (cannot be canceled any more): the bot may complete it.
    ShoppingListActivated = "depot.ShoppingList.ShoppingListActivated",
    ShoppingListCompleted = "depot.ShoppingList.ShoppingListCompleted",
);
