//! A module's own copy of the mall's stores and products, kept from the
//! stores module's events alone (event-carried state transfer): baskets price
//! items from it, depot plans its stops with it. Events carry positions, so
//! a late event never overwrites a newer state; the cache's checkpoint for
//! `stores` lets a client wait until it knows a product it just added.

use std::collections::HashMap;

use mallbots_contracts::common::LineItem;
use mallbots_contracts::stores::{self, CatalogUpdate, ProductView, StoreView};
use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::changes;
use crate::views::{self, Row};
use crate::{Envelope, PlatformError};

const STORE: &str = "cache.store";
const PRODUCT: &str = "cache.product";

/// Applies `envelope` when it is a stores event; false when it is not one.
/// A stores event of a type the cache has no use for (one a newer release
/// of stores sends) is passed over, its position seen, as any subscriber
/// passes over what it does not follow: not dead-lettered.
pub async fn apply<C: ConnectionTrait>(
    conn: &C,
    envelope: &Envelope,
) -> Result<bool, PlatformError> {
    let Some(update) = CatalogUpdate::from_message(
        &envelope.message_type,
        envelope.schema_version,
        envelope.payload.raw(),
    ) else {
        let namespace = stores::EVENTS.trim_end_matches('#');
        if !envelope.message_type.starts_with(namespace) {
            return Ok(false);
        }
        tracing::debug!(message_type = %envelope.message_type, "a stores event the catalog cache does not use: passed over");
        if let Some(position) = envelope.position() {
            changes::advance(conn, "stores", position).await?;
        }
        return Ok(true);
    };
    let update = update.map_err(|reason| PlatformError::Decode {
        what: envelope.message_type.clone(),
        reason,
    })?;
    let position = envelope.position().ok_or_else(|| PlatformError::Decode {
        what: envelope.message_type.clone(),
        reason: "the event has no position".into(),
    })?;
    match update {
        CatalogUpdate::Store(store) => {
            let row = Row {
                kind: STORE,
                id: store.store_id,
                ref_id: None,
                status: None,
                body: &store,
                position,
            };
            views::put(conn, row).await?;
        }
        CatalogUpdate::Product(product) => {
            let row = Row {
                kind: PRODUCT,
                id: product.product_id,
                ref_id: Some(product.store_id),
                status: None,
                body: &product,
                position,
            };
            views::put(conn, row).await?;
        }
        CatalogUpdate::ProductRemoved(product) => {
            views::remove(conn, PRODUCT, product.product_id, position).await?;
        }
    }
    // A consistency token from stores waits for this cache too.
    changes::advance(conn, "stores", position).await?;
    Ok(true)
}

/// What the cache knows of the stores and products of `items`, by id (one
/// it does not know is missing from its map).
pub async fn known<C: ConnectionTrait>(
    conn: &C,
    items: &[LineItem],
) -> Result<(HashMap<Uuid, StoreView>, HashMap<Uuid, ProductView>), PlatformError> {
    let (mut stores, mut products) = (HashMap::new(), HashMap::new());
    for item in items {
        if !stores.contains_key(&item.store_id)
            && let Some(store) = store(conn, item.store_id).await?
        {
            stores.insert(store.store_id, store);
        }
        if let Some(product) = product(conn, item.product_id).await? {
            products.insert(product.product_id, product);
        }
    }
    Ok((stores, products))
}

pub async fn store<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<StoreView>, PlatformError> {
    views::get(conn, STORE, id).await
}

pub async fn product<C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<ProductView>, PlatformError> {
    views::get(conn, PRODUCT, id).await
}
