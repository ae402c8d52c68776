//! The stores module's commands and integration events.
//!
//! Events carry the full state a consumer needs (event-carried state
//! transfer): baskets and depot keep their caches from them alone.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::message;

/// Routing pattern of every stores command; the module's command queue binds it.
pub const COMMANDS: &str = "stores.*";
/// Routing pattern of every stores integration event.
pub const EVENTS: &str = "stores.#";

// ---- commands ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateStore {
    pub store_id: Uuid,
    pub name: String,
    pub location: String,
}
message!(CreateStore, "stores.CreateStore");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnableParticipation {
    pub store_id: Uuid,
}
message!(EnableParticipation, "stores.EnableParticipation");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisableParticipation {
    pub store_id: Uuid,
}
message!(DisableParticipation, "stores.DisableParticipation");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebrandStore {
    pub store_id: Uuid,
    pub name: String,
}
message!(RebrandStore, "stores.RebrandStore");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddProduct {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
}
message!(AddProduct, "stores.AddProduct");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebrandProduct {
    pub product_id: Uuid,
    pub name: String,
    pub description: String,
}
message!(RebrandProduct, "stores.RebrandProduct");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncreaseProductPrice {
    pub product_id: Uuid,
    pub delta: Decimal,
}
message!(IncreaseProductPrice, "stores.IncreaseProductPrice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecreaseProductPrice {
    pub product_id: Uuid,
    pub delta: Decimal,
}
message!(DecreaseProductPrice, "stores.DecreaseProductPrice");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveProduct {
    pub product_id: Uuid,
}
message!(RemoveProduct, "stores.RemoveProduct");

// ---- integration events ----

/// A store's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreView {
    pub store_id: Uuid,
    pub name: String,
    pub location: String,
    pub participating: bool,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreCreated(pub StoreView);
message!(StoreCreated, "stores.Store.StoreCreated");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreParticipationEnabled(pub StoreView);
message!(
    StoreParticipationEnabled,
    "stores.Store.StoreParticipationEnabled"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreParticipationDisabled(pub StoreView);
message!(
    StoreParticipationDisabled,
    "stores.Store.StoreParticipationDisabled"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreRebranded(pub StoreView);
message!(StoreRebranded, "stores.Store.StoreRebranded");

/// A product's full state after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductView {
    pub product_id: Uuid,
    pub store_id: Uuid,
    pub name: String,
    pub description: String,
    pub sku: String,
    pub price: Decimal,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductAdded(pub ProductView);
message!(ProductAdded, "stores.Product.ProductAdded");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductRebranded(pub ProductView);
message!(ProductRebranded, "stores.Product.ProductRebranded");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductPriceIncreased {
    pub product: ProductView,
    pub delta: Decimal,
}
message!(
    ProductPriceIncreased,
    "stores.Product.ProductPriceIncreased"
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductPriceDecreased {
    pub product: ProductView,
    pub delta: Decimal,
}
message!(
    ProductPriceDecreased,
    "stores.Product.ProductPriceDecreased"
);

/// The product's last state, so consumers can drop it knowing its store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductRemoved(pub ProductView);
message!(ProductRemoved, "stores.Product.ProductRemoved");

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
    pub fn from_message<'de, D: serde::Deserializer<'de>>(
        message_type: &str,
        version: u16,
        payload: D,
    ) -> Option<Result<Self, String>> {
        use crate::codec::{Message, decode};
        let (v, p) = (version, payload);
        Some(match message_type {
            StoreCreated::TYPE => decode::<StoreCreated, D>(v, p).map(|m| Self::Store(m.0)),
            StoreParticipationEnabled::TYPE => {
                decode::<StoreParticipationEnabled, D>(v, p).map(|m| Self::Store(m.0))
            }
            StoreParticipationDisabled::TYPE => {
                decode::<StoreParticipationDisabled, D>(v, p).map(|m| Self::Store(m.0))
            }
            StoreRebranded::TYPE => decode::<StoreRebranded, D>(v, p).map(|m| Self::Store(m.0)),
            ProductAdded::TYPE => decode::<ProductAdded, D>(v, p).map(|m| Self::Product(m.0)),
            ProductRebranded::TYPE => {
                decode::<ProductRebranded, D>(v, p).map(|m| Self::Product(m.0))
            }
            ProductPriceIncreased::TYPE => {
                decode::<ProductPriceIncreased, D>(v, p).map(|m| Self::Product(m.product))
            }
            ProductPriceDecreased::TYPE => {
                decode::<ProductPriceDecreased, D>(v, p).map(|m| Self::Product(m.product))
            }
            ProductRemoved::TYPE => {
                decode::<ProductRemoved, D>(v, p).map(|m| Self::ProductRemoved(m.0))
            }
            _ => return None,
        })
    }
}
