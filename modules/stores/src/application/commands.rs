//! The stores command handler: each command is one decision of the domain,
//! recorded by the platform's pipeline (events, read model, outbox) in the
//! command's transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::stores as msg;
use mallbots_contracts::{ErrorCode, Message};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler, DomainError};
use mallbots_platform::event_store;
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{self, Recorded};
use mallbots_platform::{Envelope, Outgoing, PlatformError};
use sea_orm::DatabaseTransaction;
use serde_json::json;
use uuid::Uuid;

use crate::domain::{NewProduct, Product, ProductEvent, Refusal, Store, StoreEvent, StoresError};
use crate::infrastructure::read_model;

pub(crate) struct StoresHandler;

impl DomainError for StoresError {
    fn code(&self) -> ErrorCode {
        match self.refusal() {
            Refusal::BadInput => ErrorCode::BadUserInput,
            Refusal::NotFound => ErrorCode::NotFound,
            Refusal::Conflict => ErrorCode::Conflict,
        }
    }
}

impl Recorded for Store {
    fn result(id: Uuid, _: &Self) -> serde_json::Value {
        json!({ "storeId": id })
    }

    fn announce(
        id: Uuid,
        state: &Self,
        event: &StoreEvent,
        at: DateTime<Utc>,
    ) -> Result<Option<Outgoing>, PlatformError> {
        let view = msg::StoreView {
            store_id: id,
            name: state.name.clone(),
            location: state.location.clone(),
            participating: state.participating,
            occurred_at: at,
        };
        let message = match event {
            StoreEvent::StoreCreated { .. } => Outgoing::of(&msg::StoreCreated(view)),
            StoreEvent::StoreParticipationEnabled => {
                Outgoing::of(&msg::StoreParticipationEnabled(view))
            }
            StoreEvent::StoreParticipationDisabled => {
                Outgoing::of(&msg::StoreParticipationDisabled(view))
            }
            StoreEvent::StoreRebranded { .. } => Outgoing::of(&msg::StoreRebranded(view)),
        };
        message.map(Some)
    }

    async fn project(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
        _position: i64,
    ) -> Result<(), PlatformError> {
        Ok(read_model::save_store(txn, id, state, at).await?)
    }
}

impl Recorded for Product {
    fn result(id: Uuid, state: &Self) -> serde_json::Value {
        json!({ "productId": id, "storeId": state.store_id })
    }

    fn announce(
        id: Uuid,
        state: &Self,
        event: &ProductEvent,
        at: DateTime<Utc>,
    ) -> Result<Option<Outgoing>, PlatformError> {
        let view = msg::ProductView {
            product_id: id,
            store_id: state.store_id,
            name: state.name.clone(),
            description: state.description.clone(),
            sku: state.sku.clone(),
            price: state.price,
            occurred_at: at,
        };
        let message = match event {
            ProductEvent::ProductAdded { .. } => Outgoing::of(&msg::ProductAdded(view)),
            ProductEvent::ProductRebranded { .. } => Outgoing::of(&msg::ProductRebranded(view)),
            &ProductEvent::ProductPriceIncreased { delta } => {
                Outgoing::of(&msg::ProductPriceIncreased {
                    product: view,
                    delta,
                })
            }
            &ProductEvent::ProductPriceDecreased { delta } => {
                Outgoing::of(&msg::ProductPriceDecreased {
                    product: view,
                    delta,
                })
            }
            ProductEvent::ProductRemoved => Outgoing::of(&msg::ProductRemoved(view)),
        };
        message.map(Some)
    }

    async fn project(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
        _position: i64,
    ) -> Result<(), PlatformError> {
        Ok(read_model::save_product(txn, id, state, at).await?)
    }
}

#[async_trait]
impl CommandHandler for StoresHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (txn, o, c) = (txn, outbox, command);
        match command.message_type.as_str() {
            msg::CreateStore::TYPE => {
                let m: msg::CreateStore = c.decode()?;
                pipeline::execute::<Store, _>(txn, o, c, m.store_id, |s| {
                    s.create(&m.name, &m.location)
                })
                .await
            }
            msg::EnableParticipation::TYPE => {
                let m: msg::EnableParticipation = c.decode()?;
                pipeline::execute::<Store, _>(txn, o, c, m.store_id, Store::enable_participation)
                    .await
            }
            msg::DisableParticipation::TYPE => {
                let m: msg::DisableParticipation = c.decode()?;
                pipeline::execute::<Store, _>(txn, o, c, m.store_id, Store::disable_participation)
                    .await
            }
            msg::RebrandStore::TYPE => {
                let m: msg::RebrandStore = c.decode()?;
                pipeline::execute::<Store, _>(txn, o, c, m.store_id, |s| s.rebrand(&m.name)).await
            }
            msg::AddProduct::TYPE => {
                let m: msg::AddProduct = c.decode()?;
                let store = event_store::load::<Store, _>(txn, &m.store_id.to_string()).await?;
                let new = NewProduct {
                    store_id: m.store_id,
                    name: &m.name,
                    description: &m.description,
                    sku: &m.sku,
                    price: m.price,
                };
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.add(&store.state, new)
                })
                .await
            }
            msg::RebrandProduct::TYPE => {
                let m: msg::RebrandProduct = c.decode()?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.rebrand(&m.name, &m.description)
                })
                .await
            }
            msg::IncreaseProductPrice::TYPE => {
                let m: msg::IncreaseProductPrice = c.decode()?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.increase_price(m.delta)
                })
                .await
            }
            msg::DecreaseProductPrice::TYPE => {
                let m: msg::DecreaseProductPrice = c.decode()?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.decrease_price(m.delta)
                })
                .await
            }
            msg::RemoveProduct::TYPE => {
                let m: msg::RemoveProduct = c.decode()?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, Product::remove).await
            }
            other => Err(PlatformError::Decode {
                what: "command".into(),
                reason: format!("unknown command type {other}"),
            }
            .into()),
        }
    }
}
