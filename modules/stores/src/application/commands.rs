//! The stores command handler: each command is one decision of the domain,
//! recorded by the platform's pipeline (events, read model, outbox) in the
//! command's transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::stores as msg;
use mallbots_contracts::{Actor, Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{
    self, Accepted, CommandError, CommandHandler, DomainError, Owned,
};
use mallbots_platform::event_store;
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{self, Document, Recorded};
use mallbots_platform::{Envelope, Outgoing, PlatformError};
use sea_orm::DatabaseTransaction;
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
    type View = msg::StoreView;

    fn result(id: Uuid, _: &Self) -> Affected {
        Affected::Store { store_id: id }
    }

    fn view(id: Uuid, state: &Self, at: DateTime<Utc>) -> msg::StoreView {
        msg::StoreView {
            store_id: id,
            name: state.name.clone(),
            location: state.location.clone(),
            participating: state.participating,
            occurred_at: at,
        }
    }

    /// Stores keeps tables of its own ([`read_model`]).
    fn document(_: &Self, _: &msg::StoreView) -> Option<Document> {
        None
    }

    fn announce(event: &StoreEvent, view: Self::View) -> Result<Option<Outgoing>, PlatformError> {
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
    type View = msg::ProductView;

    fn view(id: Uuid, state: &Self, at: DateTime<Utc>) -> msg::ProductView {
        msg::ProductView {
            product_id: id,
            store_id: state.store_id,
            name: state.name.clone(),
            description: state.description.clone(),
            sku: state.sku.clone(),
            price: state.price,
            occurred_at: at,
        }
    }

    fn document(_: &Self, _: &msg::ProductView) -> Option<Document> {
        None
    }

    fn result(id: Uuid, state: &Self) -> Affected {
        Affected::Product {
            product_id: id,
            store_id: state.store_id,
        }
    }

    fn announce(event: &ProductEvent, view: Self::View) -> Result<Option<Outgoing>, PlatformError> {
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

impl Owned for Store {
    const OWNER: (Role, &'static str) = (Role::StoreOwner, "the store");
    fn exists(&self) -> bool {
        self.created
    }
    fn owner(&self) -> Option<Uuid> {
        self.owner
    }
}

/// Refuses an actor who does not own the store of product `id`, when the
/// product exists (a product's owner is its store's).
async fn owns_product(
    txn: &DatabaseTransaction,
    actor: &Actor,
    id: Uuid,
) -> Result<(), CommandError> {
    if actor.is_trusted() {
        return Ok(());
    }
    let product = event_store::load::<Product, _>(txn, &id.to_string()).await?;
    if !product.state.created {
        return Ok(());
    }
    let store = event_store::load::<Store, _>(txn, &product.state.store_id.to_string()).await?;
    commands::authorize_owner(actor, &store.state)
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
        // A store's owner may change it and its products; an operator any.
        // Each command is decoded first: an undecodable one is dead-lettered.
        match command.message_type.as_str() {
            msg::CreateStore::TYPE => {
                let m: msg::CreateStore = c.decode()?;
                let actor = commands::actor(c)?;
                commands::require_role(&actor, &[Role::StoreOwner])?;
                let owner = (actor.role == Role::StoreOwner).then_some(actor.id);
                pipeline::execute::<Store, _>(txn, o, c, m.store_id, |s| {
                    s.create(&m.name, &m.location, owner)
                })
                .await
            }
            msg::EnableParticipation::TYPE => {
                let m: msg::EnableParticipation = c.decode()?;
                let decide = Store::enable_participation;
                pipeline::execute_owned::<Store, _>(txn, o, c, m.store_id, decide).await
            }
            msg::DisableParticipation::TYPE => {
                let m: msg::DisableParticipation = c.decode()?;
                let decide = Store::disable_participation;
                pipeline::execute_owned::<Store, _>(txn, o, c, m.store_id, decide).await
            }
            msg::RebrandStore::TYPE => {
                let m: msg::RebrandStore = c.decode()?;
                pipeline::execute_owned::<Store, _>(txn, o, c, m.store_id, |s| s.rebrand(&m.name))
                    .await
            }
            msg::AddProduct::TYPE => {
                let m: msg::AddProduct = c.decode()?;
                let actor = commands::actor(c)?;
                let store = event_store::load::<Store, _>(txn, &m.store_id.to_string()).await?;
                commands::authorize_owner(&actor, &store.state)?;
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
                owns_product(txn, &commands::actor(c)?, m.product_id).await?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.rebrand(&m.name, &m.description)
                })
                .await
            }
            msg::IncreaseProductPrice::TYPE => {
                let m: msg::IncreaseProductPrice = c.decode()?;
                owns_product(txn, &commands::actor(c)?, m.product_id).await?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.increase_price(m.delta)
                })
                .await
            }
            msg::DecreaseProductPrice::TYPE => {
                let m: msg::DecreaseProductPrice = c.decode()?;
                owns_product(txn, &commands::actor(c)?, m.product_id).await?;
                pipeline::execute::<Product, _>(txn, o, c, m.product_id, |p| {
                    p.decrease_price(m.delta)
                })
                .await
            }
            msg::RemoveProduct::TYPE => {
                let m: msg::RemoveProduct = c.decode()?;
                owns_product(txn, &commands::actor(c)?, m.product_id).await?;
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
