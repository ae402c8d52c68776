//! Command handling, the catalog cache, and the module's queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::baskets::{self as msg, BasketStatus, BasketView};
use mallbots_contracts::common;
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{
    self, Accepted, CommandError, CommandHandler, DomainError, Owned, actor,
};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{
    self, Document, Recorded, execute, execute_owned, execute_owned_on,
};
use mallbots_platform::views::{self};
use mallbots_platform::{Envelope, Outgoing, PlatformError, catalog_cache};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{Basket, BasketEvent, BasketsError, OnSale};

impl DomainError for BasketsError {
    fn code(&self) -> ErrorCode {
        use BasketsError::*;
        match self {
            NotFound | ProductNotFound => ErrorCode::NotFound,
            AlreadyStarted | NotOpen(_) | StoreNotParticipating(_) | NoLongerSold(_) => {
                ErrorCode::Conflict
            }
            NonPositiveQuantity
            | TooMany
            | TotalTooHigh
            | NotInBasket
            | RemovingMoreThanHeld(_)
            | Empty
            | NoPayment => ErrorCode::BadUserInput,
        }
    }
}

const VIEW: &str = "basket";

impl Recorded for Basket {
    type View = BasketView;

    fn view(id: Uuid, b: &Self, at: DateTime<Utc>) -> BasketView {
        BasketView {
            basket_id: id,
            customer_id: b.customer_id,
            items: b.items.clone(),
            total: common::total(&b.items),
            status: b.status.unwrap_or(BasketStatus::Open),
            payment_id: b.payment_id,
            order_id: b.order_id,
            occurred_at: at,
        }
    }

    fn document(state: &Self, view: &BasketView) -> Option<Document> {
        Some(Document {
            kind: VIEW,
            ref_id: Some(state.customer_id),
            status: Some(view.status.as_str()),
        })
    }

    fn result(id: Uuid, state: &Self) -> Affected {
        Affected::Basket {
            basket_id: id,
            order_id: state.order_id,
        }
    }

    fn announce(event: &BasketEvent, v: Self::View) -> Result<Option<Outgoing>, PlatformError> {
        Outgoing::of_some(match event {
            BasketEvent::BasketStarted { .. } => Outgoing::of(&msg::BasketStarted(v)),
            BasketEvent::BasketItemAdded { .. } => Outgoing::of(&msg::BasketItemAdded(v)),
            BasketEvent::BasketItemRemoved { .. } => Outgoing::of(&msg::BasketItemRemoved(v)),
            BasketEvent::BasketCanceled => Outgoing::of(&msg::BasketCanceled(v)),
            BasketEvent::BasketCheckedOut { .. } => Outgoing::of(&msg::BasketCheckedOut(v)),
        })
    }
}

impl Owned for Basket {
    const OWNER: (Role, &'static str) = (Role::Customer, "the basket");
    fn exists(&self) -> bool {
        self.status.is_some()
    }
    fn owner(&self) -> Option<Uuid> {
        Some(self.customer_id)
    }
}

pub(crate) struct BasketsHandler;

#[async_trait]
impl CommandHandler for BasketsHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (t, o, c) = (txn, outbox, command);
        match command.message_type.as_str() {
            msg::StartBasket::TYPE => {
                let m: msg::StartBasket = c.decode()?;
                commands::authorize(
                    &actor(c)?,
                    Role::Customer,
                    Some(m.customer_id),
                    "the customer",
                )?;
                execute::<Basket, _>(t, o, c, m.basket_id, |b| b.start(m.customer_id)).await
            }
            msg::AddItem::TYPE => {
                let m: msg::AddItem = c.decode()?;
                let product = catalog_cache::product(t, m.product_id).await?;
                let store = match &product {
                    Some(p) => catalog_cache::store(t, p.store_id).await?,
                    None => None,
                };
                execute_owned::<Basket, _>(t, o, c, m.basket_id, |b| {
                    b.add_item(product.as_ref(), store.as_ref(), m.quantity)
                })
                .await
            }
            msg::RemoveItem::TYPE => {
                let m: msg::RemoveItem = c.decode()?;
                execute_owned::<Basket, _>(t, o, c, m.basket_id, |b| {
                    b.remove_item(m.product_id, m.quantity)
                })
                .await
            }
            msg::CancelBasket::TYPE => {
                let m: msg::CancelBasket = c.decode()?;
                execute_owned::<Basket, _>(t, o, c, m.basket_id, Basket::cancel).await
            }
            msg::CheckoutBasket::TYPE => {
                let m: msg::CheckoutBasket = c.decode()?;
                // The catalog as it is now, for what the basket holds.
                let basket = pipeline::load::<Basket>(t, m.basket_id).await?;
                let (stores, products) = catalog_cache::known(t, &basket.state.items).await?;
                let on_sale = OnSale { stores, products };
                execute_owned_on(t, o, c, (m.basket_id, basket), |b: &Basket| {
                    b.checkout(m.payment_id, m.order_id, &on_sale)
                })
                .await
            }
            other => {
                if catalog_cache::apply(t, c).await? {
                    return Ok(Accepted::default());
                }
                Err(PlatformError::unknown_message(other).into())
            }
        }
    }
}

/// The baskets read side.
#[derive(Clone)]
pub struct BasketsQueries {
    db: DatabaseConnection,
}

impl BasketsQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        BasketsQueries { db }
    }

    pub async fn basket(&self, id: Uuid) -> Result<Option<BasketView>, PlatformError> {
        views::get(&self.db, VIEW, id).await
    }
}
