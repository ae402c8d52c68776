//! The stores command handler. Each command runs in one transaction: load the
//! aggregate, let the domain decide, append the events, update the read
//! model, and put the integration events in the outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::stores as msg;
use mallbots_contracts::{ErrorCode, Message};
use mallbots_platform::aggregate::Aggregate;
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::event_store::{self, Cause, StoredEvent};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::{Envelope, Exchange, PlatformError};
use sea_orm::DatabaseTransaction;
use serde_json::json;
use uuid::Uuid;

use crate::domain::{NewProduct, Product, ProductEvent, Refusal, Store, StoreEvent, StoresError};
use crate::infrastructure::read_model;

pub(crate) struct StoresHandler;

fn refused(err: StoresError) -> CommandError {
    let code = match err.refusal() {
        Refusal::BadInput => ErrorCode::BadUserInput,
        Refusal::NotFound => ErrorCode::NotFound,
        Refusal::Conflict => ErrorCode::Conflict,
    };
    CommandError::rejected(code, err.to_string())
}

fn cause(command: &Envelope) -> Cause {
    Cause {
        correlation_id: command.correlation_id,
        causation_id: command.id,
    }
}

/// Header carrying an event's position in the module's event log.
pub const HEADER_POSITION: &str = "x-position";

async fn publish<M: Message>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    command: &Envelope,
    position: i64,
    message: &M,
) -> Result<(), PlatformError> {
    let mut envelope = command.caused(message)?;
    envelope
        .headers
        .insert(HEADER_POSITION.to_owned(), position.to_string());
    outbox
        .enqueue(txn, Exchange::Events, M::TYPE, &envelope)
        .await
}

fn store_view(id: Uuid, store: &Store, at: DateTime<Utc>) -> msg::StoreView {
    msg::StoreView {
        store_id: id,
        name: store.name.clone(),
        location: store.location.clone(),
        participating: store.participating,
        occurred_at: at,
    }
}

fn product_view(id: Uuid, product: &Product, at: DateTime<Utc>) -> msg::ProductView {
    msg::ProductView {
        product_id: id,
        store_id: product.store_id,
        name: product.name.clone(),
        description: product.description.clone(),
        sku: product.sku.clone(),
        price: product.price,
        occurred_at: at,
    }
}

impl StoresHandler {
    async fn on_store(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
        id: Uuid,
        decide: impl FnOnce(&Store) -> Result<Vec<StoreEvent>, StoresError>,
    ) -> Result<Accepted, CommandError> {
        let stream = id.to_string();
        let current = event_store::load::<Store, _>(txn, &stream).await?;
        let events = decide(&current.state).map_err(refused)?;
        let result = json!({ "storeId": id });
        if events.is_empty() {
            return Ok(Accepted {
                result,
                position: None,
            });
        }
        let stored = event_store::append(txn, &stream, &current, &events, cause(command)).await?;
        let mut state = current.state.clone();
        let mut position = None;
        for StoredEvent {
            position: at,
            event,
            recorded_at,
            ..
        } in &stored
        {
            state.apply(event);
            let view = store_view(id, &state, *recorded_at);
            match event {
                StoreEvent::StoreCreated { .. } => {
                    publish(txn, outbox, command, *at, &msg::StoreCreated(view)).await?
                }
                StoreEvent::StoreParticipationEnabled => {
                    let m = msg::StoreParticipationEnabled(view);
                    publish(txn, outbox, command, *at, &m).await?
                }
                StoreEvent::StoreParticipationDisabled => {
                    let m = msg::StoreParticipationDisabled(view);
                    publish(txn, outbox, command, *at, &m).await?
                }
                StoreEvent::StoreRebranded { .. } => {
                    publish(txn, outbox, command, *at, &msg::StoreRebranded(view)).await?
                }
            }
            read_model::save_store(txn, id, &state, *recorded_at).await?;
            position = Some(*at);
        }
        Ok(Accepted { result, position })
    }

    async fn on_product(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
        id: Uuid,
        decide: impl FnOnce(&Product) -> Result<Vec<ProductEvent>, StoresError>,
    ) -> Result<Accepted, CommandError> {
        let stream = id.to_string();
        let current = event_store::load::<Product, _>(txn, &stream).await?;
        let events = decide(&current.state).map_err(refused)?;
        let result = json!({ "productId": id, "storeId": current.applied(&events).store_id });
        if events.is_empty() {
            return Ok(Accepted {
                result,
                position: None,
            });
        }
        let stored = event_store::append(txn, &stream, &current, &events, cause(command)).await?;
        let mut state = current.state.clone();
        let mut position = None;
        for StoredEvent {
            position: at,
            event,
            recorded_at,
            ..
        } in &stored
        {
            state.apply(event);
            let view = product_view(id, &state, *recorded_at);
            match event {
                ProductEvent::ProductAdded { .. } => {
                    publish(txn, outbox, command, *at, &msg::ProductAdded(view)).await?
                }
                ProductEvent::ProductRebranded { .. } => {
                    publish(txn, outbox, command, *at, &msg::ProductRebranded(view)).await?
                }
                ProductEvent::ProductPriceIncreased { delta } => {
                    let m = msg::ProductPriceIncreased {
                        product: view,
                        delta: *delta,
                    };
                    publish(txn, outbox, command, *at, &m).await?
                }
                ProductEvent::ProductPriceDecreased { delta } => {
                    let m = msg::ProductPriceDecreased {
                        product: view,
                        delta: *delta,
                    };
                    publish(txn, outbox, command, *at, &m).await?
                }
                ProductEvent::ProductRemoved => {
                    publish(txn, outbox, command, *at, &msg::ProductRemoved(view)).await?
                }
            }
            read_model::save_product(txn, id, &state, *recorded_at).await?;
            position = Some(*at);
        }
        Ok(Accepted { result, position })
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
                self.on_store(txn, o, c, m.store_id, |s| s.create(&m.name, &m.location))
                    .await
            }
            msg::EnableParticipation::TYPE => {
                let m: msg::EnableParticipation = c.decode()?;
                self.on_store(txn, o, c, m.store_id, Store::enable_participation)
                    .await
            }
            msg::DisableParticipation::TYPE => {
                let m: msg::DisableParticipation = c.decode()?;
                self.on_store(txn, o, c, m.store_id, Store::disable_participation)
                    .await
            }
            msg::RebrandStore::TYPE => {
                let m: msg::RebrandStore = c.decode()?;
                self.on_store(txn, o, c, m.store_id, |s| s.rebrand(&m.name))
                    .await
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
                self.on_product(txn, o, c, m.product_id, |p| p.add(&store.state, new))
                    .await
            }
            msg::RebrandProduct::TYPE => {
                let m: msg::RebrandProduct = c.decode()?;
                self.on_product(txn, o, c, m.product_id, |p| {
                    p.rebrand(&m.name, &m.description)
                })
                .await
            }
            msg::IncreaseProductPrice::TYPE => {
                let m: msg::IncreaseProductPrice = c.decode()?;
                self.on_product(txn, o, c, m.product_id, |p| p.increase_price(m.delta))
                    .await
            }
            msg::DecreaseProductPrice::TYPE => {
                let m: msg::DecreaseProductPrice = c.decode()?;
                self.on_product(txn, o, c, m.product_id, |p| p.decrease_price(m.delta))
                    .await
            }
            msg::RemoveProduct::TYPE => {
                let m: msg::RemoveProduct = c.decode()?;
                self.on_product(txn, o, c, m.product_id, Product::remove)
                    .await
            }
            other => Err(PlatformError::Decode {
                what: "command".into(),
                reason: format!("unknown command type {other}"),
            }
            .into()),
        }
    }
}
