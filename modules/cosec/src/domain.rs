//! The create-order saga's definition: pure data and functions, no I/O.

use mallbots_contracts::common::LineItem;
use mallbots_contracts::{Affected, customers, depot, ordering, payments};
use mallbots_platform::saga::{Saga, Step};
use mallbots_platform::{Outgoing, PlatformError};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the saga carries from step to step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateOrderData {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub payment_id: Uuid,
    pub items: Vec<LineItem>,
    pub total: Decimal,
    /// Known once depot created the list (step 2).
    pub shopping_list_id: Option<Uuid>,
}

impl CreateOrderData {
    fn list(&self) -> Result<Uuid, PlatformError> {
        self.shopping_list_id
            .ok_or_else(|| PlatformError::Unexpected("the saga has no shopping list yet".into()))
    }
}

type S = Step<CreateOrderData>;

pub struct CreateOrderSaga;

impl Saga for CreateOrderSaga {
    const NAME: &'static str = "create-order";
    type Data = CreateOrderData;

    fn steps() -> Vec<Step<CreateOrderData>> {
        vec![
            S::new("reject order").compensation(|d, why| {
                Outgoing::of(&ordering::RejectOrder {
                    order_id: d.order_id,
                    reason: why.to_owned(),
                })
            }),
            S::new("authorize customer").action(|d| {
                Outgoing::of(&customers::AuthorizeCustomer {
                    customer_id: d.customer_id,
                })
            }),
            S::new("create shopping list")
                .action(|d| {
                    Outgoing::of(&depot::CreateShoppingList {
                        order_id: d.order_id,
                        items: d.items.clone(),
                    })
                })
                .on_success(|d, result| match result {
                    &Affected::ShoppingList {
                        shopping_list_id, ..
                    } => {
                        d.shopping_list_id = Some(shopping_list_id);
                        Ok(())
                    }
                    other => Err(format!("depot answered {other:?}, not a shopping list")),
                })
                .compensation(|d, _| {
                    Outgoing::of(&depot::CancelShoppingList {
                        shopping_list_id: d.list()?,
                    })
                }),
            S::new("confirm payment")
                .action(|d| {
                    Outgoing::of(&payments::ConfirmPayment {
                        payment_id: d.payment_id,
                        customer_id: d.customer_id,
                        amount: d.total,
                        order_id: Some(d.order_id),
                    })
                })
                .compensation(|d, _| {
                    Outgoing::of(&payments::ReleasePayment {
                        payment_id: d.payment_id,
                        order_id: d.order_id,
                    })
                }),
            S::new("initiate shopping").action(|d| {
                Outgoing::of(&depot::InitiateShopping {
                    shopping_list_id: d.list()?,
                })
            }),
            S::new("approve order").action(|d| {
                Outgoing::of(&ordering::ApproveOrder {
                    order_id: d.order_id,
                    shopping_list_id: d.list()?,
                })
            }),
        ]
    }
}
