//! The stores module's commands and integration events.
//!
//! Events carry the full state a consumer needs (event-carried state
//! transfer): baskets and depot keep their caches from them alone.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{message, view_events};

/// Routing pattern of every stores command; the module's command queue binds it.
pub const COMMANDS: &str = "stores.*";
/// Routing pattern of every stores integration event.
pub const EVENTS: &str = "stores.#";

// ---- commands ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateStore {
    pub store_id: Uuid,
    pub name: String,
    pub location: String,
}
message!(CreateStore, "stores.CreateStore");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnableParticipation {
    pub store_id: Uuid,
}
message!(EnableParticipation, "stores.EnableParticipation");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DisableParticipation {
    pub store_id: Uuid,
}
message!(DisableParticipation, "stores.DisableParticipation");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RebrandStore {
    pub store_id: Uuid,
    pub name: String,
}
message!(RebrandStore, "stores.RebrandStore");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AddProduct {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
}
message!(AddProduct, "stores.AddProduct");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RebrandProduct {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
}
message!(RebrandProduct, "stores.RebrandProduct");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IncreaseProductPrice {
    pub product_id: Uuid,
    pub delta: Decimal,
}
message!(IncreaseProductPrice, "stores.IncreaseProductPrice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecreaseProductPrice {
    pub product_id: Uuid,
    pub delta: Decimal,
}
message!(DecreaseProductPrice, "stores.DecreaseProductPrice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RemoveProduct {
    pub product_id: Uuid,
}
message!(RemoveProduct, "stores.RemoveProduct");

// ---- integration events ----

/// A store's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoreView {
    pub store_id: Uuid,
    pub name: String,
    pub location: String,
    pub participating: bool,
    pub occurred_at: DateTime<Utc>,
}

view_events!(
    StoreView,
    StoreCreated = "stores.Store.StoreCreated",
    StoreParticipationEnabled = "stores.Store.StoreParticipationEnabled",
    StoreParticipationDisabled = "stores.Store.StoreParticipationDisabled",
    StoreRebranded = "stores.Store.StoreRebranded",
);

/// A product's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductView {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
    pub occurred_at: DateTime<Utc>,
}

// ProductRemoved carries the product's last state, so consumers can drop it
// knowing its store.
view_events!(
    ProductView,
    ProductAdded = "stores.Product.ProductAdded",
    ProductRebranded = "stores.Product.ProductRebranded",
    ProductRemoved = "stores.Product.ProductRemoved",
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductPriceIncreased {
    pub product: ProductView,
    pub delta: Decimal,
}
message!(
    ProductPriceIncreased,
    "stores.Product.ProductPriceIncreased"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProductPriceDecreased {
    pub product: ProductView,
    pub delta: Decimal,
}
message!(
    ProductPriceDecreased,
    "stores.Product.ProductPriceDecreased"
);

/// What a stores event means to a module that caches stores and products
/// (baskets, depot).
#[derive(Clone, Debug, PartialEq)]
pub enum CatalogUpdate {
    Store(StoreView),
    Product(ProductView),
    ProductRemoved(ProductView),
}

impl CatalogUpdate {
    /// `None` when the message is not a stores event.
    pub fn from_message<'de, D: serde::Deserializer<'de> + Copy>(
        message_type: &str,
        version: u16,
        payload: D,
    ) -> Option<Result<Self, String>> {
        use crate::codec::{Message, decode};
        let (t, v, p) = (message_type, version, payload);
        if let Some(store) = StoreView::from_event(t, v, p) {
            return Some(store.map(Self::Store));
        }
        if t == ProductRemoved::TYPE {
            return Some(decode::<ProductRemoved, D>(v, p).map(|m| Self::ProductRemoved(m.0)));
        }
        if let Some(product) = ProductView::from_event(t, v, p) {
            return Some(product.map(Self::Product));
        }
        Some(match t {
            ProductPriceIncreased::TYPE => {
                decode::<ProductPriceIncreased, D>(v, p).map(|m| Self::Product(m.product))
            }
            ProductPriceDecreased::TYPE => {
                decode::<ProductPriceDecreased, D>(v, p).map(|m| Self::Product(m.product))
            }
            _ => return None,
        })
    }
}
