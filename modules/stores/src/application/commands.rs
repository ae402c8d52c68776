//! The stores command handler. Each command runs in one transaction: load the
//! aggregate, let the domain decide, append the events, update the read
//! model, and put the integration events in the outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::stores as msg;
use mallbots_contracts::{ErrorCode, Message};
use mallbots_platform::aggregate::Aggregate;
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler};
use mallbots_platform::envelope::HEADER_POSITION;
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

/// An integration event, caused by `command`, at `position` of the event log.
fn announce<M: Message>(
    command: &Envelope,
    position: i64,
    message: &M,
) -> Result<(&'static str, Envelope), PlatformError> {
    let mut envelope = command.caused(message)?;
    envelope
        .headers
        .insert(HEADER_POSITION.to_owned(), position.to_string());
    Ok((M::TYPE, envelope))
}

/// What the command pipeline needs of an aggregate beyond the domain: its
/// reply, its integration events and its read-model row.
trait Recorded: Aggregate {
    fn result(id: Uuid, state: &Self) -> serde_json::Value;

    /// The integration event `event` is, given the state after it.
    fn announce(
        id: Uuid,
        state: &Self,
        event: &Self::Event,
        at: DateTime<Utc>,
        command: &Envelope,
        position: i64,
    ) -> Result<(&'static str, Envelope), PlatformError>;

    fn save(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sea_orm::DbErr>> + Send;
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
        command: &Envelope,
        position: i64,
    ) -> Result<(&'static str, Envelope), PlatformError> {
        let view = msg::StoreView {
            store_id: id,
            name: state.name.clone(),
            location: state.location.clone(),
            participating: state.participating,
            occurred_at: at,
        };
        let (c, p) = (command, position);
        match event {
            StoreEvent::StoreCreated { .. } => announce(c, p, &msg::StoreCreated(view)),
            StoreEvent::StoreParticipationEnabled => {
                announce(c, p, &msg::StoreParticipationEnabled(view))
            }
            StoreEvent::StoreParticipationDisabled => {
                announce(c, p, &msg::StoreParticipationDisabled(view))
            }
            StoreEvent::StoreRebranded { .. } => announce(c, p, &msg::StoreRebranded(view)),
        }
    }

    async fn save(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        read_model::save_store(txn, id, state, at).await
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
        command: &Envelope,
        position: i64,
    ) -> Result<(&'static str, Envelope), PlatformError> {
        let view = msg::ProductView {
            product_id: id,
            store_id: state.store_id,
            name: state.name.clone(),
            description: state.description.clone(),
            sku: state.sku.clone(),
            price: state.price,
            occurred_at: at,
        };
        let (c, p) = (command, position);
        match event {
            ProductEvent::ProductAdded { .. } => announce(c, p, &msg::ProductAdded(view)),
            ProductEvent::ProductRebranded { .. } => announce(c, p, &msg::ProductRebranded(view)),
            ProductEvent::ProductPriceIncreased { delta } => {
                let delta = *delta;
                announce(
                    c,
                    p,
                    &msg::ProductPriceIncreased {
                        product: view,
                        delta,
                    },
                )
            }
            ProductEvent::ProductPriceDecreased { delta } => {
                let delta = *delta;
                announce(
                    c,
                    p,
                    &msg::ProductPriceDecreased {
                        product: view,
                        delta,
                    },
                )
            }
            ProductEvent::ProductRemoved => announce(c, p, &msg::ProductRemoved(view)),
        }
    }

    async fn save(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        read_model::save_product(txn, id, state, at).await
    }
}

/// Load, decide, append, project, announce: one command on one aggregate.
async fn execute<A: Recorded>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    command: &Envelope,
    id: Uuid,
    decide: impl FnOnce(&A) -> Result<Vec<A::Event>, StoresError>,
) -> Result<Accepted, CommandError> {
    let stream = id.to_string();
    let current = event_store::load::<A, _>(txn, &stream).await?;
    let events = decide(&current.state).map_err(refused)?;
    let result = A::result(id, &current.applied(&events));
    if events.is_empty() {
        // Nothing changes (enabling a participating store, ...): nothing to record.
        return Ok(Accepted {
            result,
            position: None,
        });
    }
    let cause = Cause {
        correlation_id: command.correlation_id,
        causation_id: command.id,
    };
    let stored = event_store::append(txn, &stream, &current, &events, cause).await?;
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
        let (key, envelope) = A::announce(id, &state, event, *recorded_at, command, *at)?;
        outbox
            .enqueue(txn, Exchange::Events, key, &envelope)
            .await?;
        A::save(txn, id, &state, *recorded_at).await?;
        position = Some(*at);
    }
    Ok(Accepted { result, position })
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
                execute::<Store>(txn, o, c, m.store_id, |s| s.create(&m.name, &m.location)).await
            }
            msg::EnableParticipation::TYPE => {
                let m: msg::EnableParticipation = c.decode()?;
                execute::<Store>(txn, o, c, m.store_id, Store::enable_participation).await
            }
            msg::DisableParticipation::TYPE => {
                let m: msg::DisableParticipation = c.decode()?;
                execute::<Store>(txn, o, c, m.store_id, Store::disable_participation).await
            }
            msg::RebrandStore::TYPE => {
                let m: msg::RebrandStore = c.decode()?;
                execute::<Store>(txn, o, c, m.store_id, |s| s.rebrand(&m.name)).await
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
                execute::<Product>(txn, o, c, m.product_id, |p| p.add(&store.state, new)).await
            }
            msg::RebrandProduct::TYPE => {
                let m: msg::RebrandProduct = c.decode()?;
                execute::<Product>(txn, o, c, m.product_id, |p| {
                    p.rebrand(&m.name, &m.description)
                })
                .await
            }
            msg::IncreaseProductPrice::TYPE => {
                let m: msg::IncreaseProductPrice = c.decode()?;
                execute::<Product>(txn, o, c, m.product_id, |p| p.increase_price(m.delta)).await
            }
            msg::DecreaseProductPrice::TYPE => {
                let m: msg::DecreaseProductPrice = c.decode()?;
                execute::<Product>(txn, o, c, m.product_id, |p| p.decrease_price(m.delta)).await
            }
            msg::RemoveProduct::TYPE => {
                let m: msg::RemoveProduct = c.decode()?;
                execute::<Product>(txn, o, c, m.product_id, Product::remove).await
            }
            other => Err(PlatformError::Decode {
                what: "command".into(),
                reason: format!("unknown command type {other}"),
            }
            .into()),
        }
    }
}
