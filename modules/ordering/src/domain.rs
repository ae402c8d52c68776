//! The pure domain: the Order aggregate and its life cycle. No I/O, no async.

use chrono::{DateTime, Utc};
use mallbots_contracts::common::LineItem;
use mallbots_contracts::ordering::OrderStatus;
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderingError {
    #[error("the order was not found")]
    NotFound,
    #[error("the order already exists")]
    AlreadyExists,
    #[error("an order needs at least one item")]
    NoItems,
    #[error("the order is {0} and cannot be {1}")]
    WrongStatus(&'static str, &'static str),
    #[error("a bot is shopping for the order: it can no longer be canceled")]
    BeingShopped,
}

/// `Default`: an order not created yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub basket_id: Uuid,
    pub shopping_list_id: Option<Uuid>,
    pub items: Vec<LineItem>,
    pub status: Option<OrderStatus>,
    pub rejection: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    /// A bot took the shopping list before the order was approved: the
    /// order starts as soon as it is.
    #[serde(default)]
    pub taken_early: bool,
}

/// What a checkout orders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub basket_id: Uuid,
    pub items: Vec<LineItem>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderCreated(NewOrder),
    OrderRejected {
        reason: String,
    },
    OrderApproved {
        shopping_list_id: Uuid,
    },
    OrderStarted,
    /// A bot took the list of an order not approved yet. Kept in the
    /// order's stream only: no integration event, the status stays.
    ShoppingListTakenEarly,
    OrderReadied,
    OrderCompleted,
    OrderCanceled,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated(_) => "OrderCreated",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::OrderApproved { .. } => "OrderApproved",
            OrderEvent::OrderStarted => "OrderStarted",
            OrderEvent::ShoppingListTakenEarly => "ShoppingListTakenEarly",
            OrderEvent::OrderReadied => "OrderReadied",
            OrderEvent::OrderCompleted => "OrderCompleted",
            OrderEvent::OrderCanceled => "OrderCanceled",
        }
    }
}

impl Aggregate for Order {
    const STREAM_TYPE: &'static str = "Order";
    type Event = OrderEvent;

    fn apply(&mut self, event: &OrderEvent) {
        use OrderStatus::*;
        match event {
            OrderEvent::OrderCreated(new) => {
                self.customer_id = new.customer_id;
                self.payment_id = new.payment_id;
                self.basket_id = new.basket_id;
                self.items = new.items.clone();
                self.created_at = Some(new.created_at);
                self.status = Some(Pending);
            }
            OrderEvent::OrderRejected { reason } => {
                self.status = Some(Rejected);
                self.rejection = Some(reason.clone());
            }
            OrderEvent::OrderApproved { shopping_list_id } => {
                self.status = Some(Approved);
                self.shopping_list_id = Some(*shopping_list_id);
            }
            OrderEvent::OrderStarted => self.status = Some(InProgress),
            OrderEvent::ShoppingListTakenEarly => self.taken_early = true,
            OrderEvent::OrderReadied => self.status = Some(Ready),
            OrderEvent::OrderCompleted => self.status = Some(Completed),
            OrderEvent::OrderCanceled => self.status = Some(Canceled),
        }
    }
}

type Decision = Result<Vec<OrderEvent>, OrderingError>;

impl Order {
    /// Passes when the order is in one of `allowed`, for becoming `becoming`.
    fn expect(&self, allowed: &[OrderStatus], becoming: &'static str) -> Result<(), OrderingError> {
        match self.status {
            None => Err(OrderingError::NotFound),
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(s) => Err(OrderingError::WrongStatus(s.as_str(), becoming)),
        }
    }

    pub fn create(&self, new: NewOrder) -> Decision {
        if self.status.is_some() {
            return Err(OrderingError::AlreadyExists);
        }
        if new.items.is_empty() {
            return Err(OrderingError::NoItems);
        }
        Ok(vec![OrderEvent::OrderCreated(new)])
    }

    /// The saga rejects an order when a later step of it fails. An order
    /// that already ended without going ahead (the customer canceled it
    /// while it was pending, or it was rejected before) stays as it is:
    /// what the rejection is for holds already, so it is not refused.
    pub fn reject(&self, reason: &str) -> Decision {
        if matches!(
            self.status,
            Some(OrderStatus::Canceled | OrderStatus::Rejected)
        ) {
            return Ok(vec![]);
        }
        self.expect(&[OrderStatus::Pending], "rejected")?;
        Ok(vec![OrderEvent::OrderRejected {
            reason: reason.to_owned(),
        }])
    }

    pub fn approve(&self, shopping_list_id: Uuid) -> Decision {
        self.expect(&[OrderStatus::Pending], "approved")?;
        let approved = OrderEvent::OrderApproved { shopping_list_id };
        Ok(if self.taken_early {
            vec![approved, OrderEvent::OrderStarted]
        } else {
            vec![approved]
        })
    }

    /// A bot took the shopping list. From here the order can no longer be
    /// canceled, and depot lets the bot complete the list (it does so only
    /// after this, so a cancel and a completion never both apply). Before
    /// the approval (the list is offered to the bots one saga step
    /// earlier), the order remembers it and starts once approved.
    pub fn start(&self) -> Decision {
        use OrderStatus::*;
        match self.status {
            Some(Pending) if !self.taken_early => Ok(vec![OrderEvent::ShoppingListTakenEarly]),
            _ => {
                self.expect(&[Approved], "in progress")?;
                Ok(vec![OrderEvent::OrderStarted])
            }
        }
    }

    /// The shopping list was completed: everything is picked up. Depot
    /// completes a list once its order started; APPROVED is for lists a bot
    /// took before that rule, which depot still completes from ASSIGNED.
    pub fn ready(&self) -> Decision {
        use OrderStatus::*;
        self.expect(&[Approved, InProgress], "ready")?;
        Ok(vec![OrderEvent::OrderReadied])
    }

    /// The invoice was paid.
    pub fn complete(&self) -> Decision {
        self.expect(&[OrderStatus::Ready], "completed")?;
        Ok(vec![OrderEvent::OrderCompleted])
    }

    /// Allowed until a bot takes the order's shopping list. Not after: the
    /// bot may complete it at any moment, in another module (depot), and a
    /// cancel racing that completion would leave a canceled order with its
    /// shopping done and its payment released.
    pub fn cancel(&self) -> Decision {
        use OrderStatus::*;
        if self.status == Some(InProgress) {
            return Err(OrderingError::BeingShopped);
        }
        self.expect(&[Pending, Approved], "canceled")?;
        Ok(vec![OrderEvent::OrderCanceled])
    }
}

#[cfg(test)]
mod tests {
    use mallbots_platform::testing::given;
    use rust_decimal::Decimal;

    use super::*;

    fn created() -> OrderEvent {
        OrderEvent::OrderCreated(NewOrder {
            customer_id: Uuid::now_v7(),
            payment_id: Uuid::now_v7(),
            basket_id: Uuid::now_v7(),
            items: vec![LineItem {
                store_id: Uuid::now_v7(),
                store_name: "S".into(),
                product_id: Uuid::now_v7(),
                product_name: "P".into(),
                price: Decimal::ONE,
                quantity: 1,
            }],
            created_at: Utc::now(),
        })
    }

    #[test]
    fn an_order_walks_its_life_cycle() {
        let list = Uuid::now_v7();
        let done = given::<Order>([created()])
            .when(|o| o.approve(list))
            .then([OrderEvent::OrderApproved {
                shopping_list_id: list,
            }])
            .when(Order::start)
            .then([OrderEvent::OrderStarted])
            .when(Order::cancel)
            .then_refused(OrderingError::BeingShopped)
            .when(Order::ready)
            .then([OrderEvent::OrderReadied])
            .when(Order::cancel)
            .then_refused(OrderingError::WrongStatus("ready", "canceled"))
            .when(Order::complete)
            .then([OrderEvent::OrderCompleted]);
        assert_eq!(done.state().status, Some(OrderStatus::Completed));
    }

    #[test]
    fn a_rejected_order_stays_rejected() {
        let rejected = given::<Order>([created()])
            .when(|o| o.reject("the customer is disabled"))
            .then([OrderEvent::OrderRejected {
                reason: "the customer is disabled".into(),
            }]);
        assert_eq!(
            rejected.state().rejection.as_deref(),
            Some("the customer is disabled")
        );
        rejected
            .when(|o| o.approve(Uuid::nil()))
            .then_refused(OrderingError::WrongStatus("rejected", "approved"))
            .when(|o| o.reject("again"))
            .then([]);
        // Canceled while pending: the saga's rejection finds it ended.
        given::<Order>([created(), OrderEvent::OrderCanceled])
            .when(|o| o.reject("approve order: the order is canceled"))
            .then([]);
        given::<Order>([
            created(),
            OrderEvent::OrderApproved {
                shopping_list_id: Uuid::nil(),
            },
        ])
        .when(|o| o.reject("too late"))
        .then_refused(OrderingError::WrongStatus("approved", "rejected"));
        given::<Order>([])
            .when(Order::cancel)
            .then_refused(OrderingError::NotFound);
    }

    #[test]
    fn a_list_taken_before_the_approval_starts_the_order_once_approved() {
        let list = Uuid::now_v7();
        let started = given::<Order>([created()])
            .when(Order::start)
            .then([OrderEvent::ShoppingListTakenEarly])
            .when(Order::start)
            .then_refused(OrderingError::WrongStatus("pending", "in progress"))
            .when(Order::ready)
            .then_refused(OrderingError::WrongStatus("pending", "ready"))
            .when(|o| o.approve(list))
            .then([
                OrderEvent::OrderApproved {
                    shopping_list_id: list,
                },
                OrderEvent::OrderStarted,
            ]);
        assert_eq!(started.state().status, Some(OrderStatus::InProgress));
        started
            .when(Order::cancel)
            .then_refused(OrderingError::BeingShopped);
        // Canceled before the approval: it never starts.
        given::<Order>([created(), OrderEvent::ShoppingListTakenEarly])
            .when(Order::cancel)
            .then([OrderEvent::OrderCanceled])
            .when(Order::start)
            .then_refused(OrderingError::WrongStatus("canceled", "in progress"))
            .when(|o| o.approve(list))
            .then_refused(OrderingError::WrongStatus("canceled", "approved"));
    }

    #[test]
    fn a_pending_order_can_be_canceled_but_not_completed() {
        given::<Order>([created()])
            .when(Order::complete)
            .then_refused(OrderingError::WrongStatus("pending", "completed"))
            .when(Order::cancel)
            .then([OrderEvent::OrderCanceled]);
    }
}
