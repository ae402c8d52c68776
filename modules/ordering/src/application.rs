//! Command handling, the reactions to other modules' events, and queries.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mallbots_contracts::baskets::BasketCheckedOut;
use mallbots_contracts::common;
use mallbots_contracts::depot::{ShoppingListAssigned, ShoppingListCompleted};
use mallbots_contracts::ordering::{self as msg, OrderStatus, OrderView};
use mallbots_contracts::payments::InvoicePaid;
use mallbots_contracts::{Affected, ErrorCode, Message, Role};
use mallbots_platform::commands::{Accepted, CommandError, CommandHandler, DomainError, Owned};
use mallbots_platform::outbox::Outbox;
use mallbots_platform::pipeline::{Document, Recorded, execute, execute_owned};
use mallbots_platform::views::{self};
use mallbots_platform::{Envelope, Outgoing, PlatformError};
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use uuid::Uuid;

use crate::domain::{NewOrder, Order, OrderEvent, OrderingError};

impl DomainError for OrderingError {
    fn code(&self) -> ErrorCode {
        match self {
            OrderingError::NotFound => ErrorCode::NotFound,
            OrderingError::NoItems => ErrorCode::BadUserInput,
            OrderingError::AlreadyExists
            | OrderingError::WrongStatus(..)
            | OrderingError::BeingShopped => ErrorCode::Conflict,
        }
    }
}

const VIEW: &str = "order";

impl Recorded for Order {
    type View = OrderView;

    fn view(id: Uuid, o: &Self, at: DateTime<Utc>) -> OrderView {
        OrderView {
            order_id: id,
            customer_id: o.customer_id,
            payment_id: o.payment_id,
            basket_id: o.basket_id,
            shopping_list_id: o.shopping_list_id,
            items: o.items.clone(),
            total: common::total(&o.items),
            status: o.status.unwrap_or(OrderStatus::Pending),
            rejection: o.rejection.clone(),
            created_at: o.created_at.unwrap_or(at),
            occurred_at: at,
        }
    }

    fn document(state: &Self, view: &OrderView) -> Option<Document> {
        Some(Document {
            kind: VIEW,
            ref_id: Some(state.customer_id),
            status: Some(view.status.as_str()),
        })
    }

    fn result(id: Uuid, _: &Self) -> Affected {
        Affected::Order { order_id: id }
    }

    fn announce(event: &OrderEvent, v: Self::View) -> Result<Option<Outgoing>, PlatformError> {
        Outgoing::of_some(match event {
            OrderEvent::ShoppingListTakenEarly => return Ok(None),
            OrderEvent::OrderCreated(_) => Outgoing::of(&msg::OrderCreated(v)),
            OrderEvent::OrderRejected { .. } => Outgoing::of(&msg::OrderRejected(v)),
            OrderEvent::OrderApproved { .. } => Outgoing::of(&msg::OrderApproved(v)),
            OrderEvent::OrderStarted => Outgoing::of(&msg::OrderStarted(v)),
            OrderEvent::OrderReadied => Outgoing::of(&msg::OrderReadied(v)),
            OrderEvent::OrderCompleted => Outgoing::of(&msg::OrderCompleted(v)),
            OrderEvent::OrderCanceled => Outgoing::of(&msg::OrderCanceled(v)),
        })
    }
}

impl Owned for Order {
    const OWNER: (Role, &'static str) = (Role::Customer, "the order");
    fn exists(&self) -> bool {
        self.status.is_some()
    }
    fn owner(&self) -> Option<Uuid> {
        Some(self.customer_id)
    }
}

pub(crate) struct OrderingHandler;

#[async_trait]
impl CommandHandler for OrderingHandler {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        message: &Envelope,
    ) -> Result<Accepted, CommandError> {
        let (t, o, c) = (txn, outbox, message);
        match message.message_type.as_str() {
            msg::RejectOrder::TYPE => {
                let m: msg::RejectOrder = c.decode()?;
                execute::<Order, _>(t, o, c, m.order_id, |x| x.reject(&m.reason)).await
            }
            msg::ApproveOrder::TYPE => {
                let m: msg::ApproveOrder = c.decode()?;
                execute::<Order, _>(t, o, c, m.order_id, |x| x.approve(m.shopping_list_id)).await
            }
            msg::CancelOrder::TYPE => {
                let m: msg::CancelOrder = c.decode()?;
                execute_owned::<Order, _>(t, o, c, m.order_id, Order::cancel).await
            }
            BasketCheckedOut::TYPE => {
                let basket = c.decode::<BasketCheckedOut>()?.0;
                let Some(order_id) = basket.order_id else {
                    return Err(PlatformError::Decode {
                        what: BasketCheckedOut::TYPE.into(),
                        reason: "a checked-out basket without an order id".into(),
                    }
                    .into());
                };
                let new = NewOrder {
                    customer_id: basket.customer_id,
                    payment_id: basket.payment_id.unwrap_or_default(),
                    basket_id: basket.basket_id,
                    items: basket.items,
                    created_at: basket.occurred_at,
                };
                execute::<Order, _>(t, o, c, order_id, |x| x.create(new)).await
            }
            ShoppingListAssigned::TYPE => {
                let list = c.decode::<ShoppingListAssigned>()?.0;
                execute::<Order, _>(t, o, c, list.order_id, Order::start).await
            }
            ShoppingListCompleted::TYPE => {
                let list = c.decode::<ShoppingListCompleted>()?.0;
                execute::<Order, _>(t, o, c, list.order_id, Order::ready).await
            }
            InvoicePaid::TYPE => {
                let invoice = c.decode::<InvoicePaid>()?.0;
                execute::<Order, _>(t, o, c, invoice.order_id, Order::complete).await
            }
            other => Err(PlatformError::unknown_message(other).into()),
        }
    }
}

/// The ordering read side.
#[derive(Clone)]
pub struct OrderingQueries {
    db: DatabaseConnection,
}

impl OrderingQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        OrderingQueries { db }
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderView>, PlatformError> {
        views::get(&self.db, VIEW, id).await
    }
}
