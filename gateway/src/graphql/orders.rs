//! Orders, their invoices, and the bots' shopping lists.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, Object, Result};
use chrono::{DateTime, Utc};
use mallbots_contracts::depot::{self as depot, ShoppingListView};
use mallbots_contracts::ordering::{self as msg, OrderView};
use mallbots_contracts::payments::{self as pay, InvoiceView};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::baskets::{LineItem, lines};
use super::customers::{Customer, customer};
use super::dispatch::{parse_id, payload, state};
use super::{internal, pagination};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_contracts::ordering::OrderStatus")]
pub enum OrderStatus {
    Pending,
    Rejected,
    Approved,
    InProgress,
    Ready,
    Completed,
    Canceled,
}

pub struct Order(pub OrderView);

/// The order `id`, for other types' `order` fields.
pub async fn order(ctx: &Context<'_>, id: Uuid) -> Result<Option<Order>> {
    let app = state(ctx)?;
    let found = app.queries.ordering.order(id).await.map_err(internal)?;
    Ok(found.map(Order))
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        customer(ctx, self.0.customer_id).await
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.payment_id.to_string())
    }
    async fn basket_id(&self) -> ID {
        ID(self.0.basket_id.to_string())
    }
    async fn items(&self) -> Vec<LineItem> {
        lines(&self.0.items)
    }
    async fn total(&self) -> Decimal {
        self.0.total
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    /// Why the order was rejected, when it was.
    async fn rejection(&self) -> Option<&str> {
        self.0.rejection.as_deref()
    }
    async fn shopping_list_id(&self) -> Option<ID> {
        self.0.shopping_list_id.map(|id| ID(id.to_string()))
    }
    async fn shopping_list(&self, ctx: &Context<'_>) -> Result<Option<ShoppingList>> {
        let Some(id) = self.0.shopping_list_id else {
            return Ok(None);
        };
        let app = state(ctx)?;
        let found = app
            .queries
            .depot
            .shopping_list(id)
            .await
            .map_err(internal)?;
        Ok(found.map(ShoppingList))
    }
    /// The invoice, once the order is ready.
    async fn invoice(&self, ctx: &Context<'_>) -> Result<Option<Invoice>> {
        let app = state(ctx)?;
        let found = app
            .queries
            .payments
            .invoice_of_order(self.0.order_id)
            .await
            .map_err(internal)?;
        Ok(found.map(Invoice))
    }
    /// Where the create-order saga is with this order (operators, support).
    async fn saga(&self, ctx: &Context<'_>) -> Result<Option<CreateOrderSaga>> {
        let app = state(ctx)?;
        let found = app
            .queries
            .cosec
            .saga(self.0.order_id)
            .await
            .map_err(internal)?;
        Ok(found.map(|saga| CreateOrderSaga {
            step: saga.step as i32,
            step_name: saga.step_name,
            status: saga.status.into(),
            failure: saga.last_error,
        }))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_platform::saga::SagaStatus")]
pub enum SagaStatus {
    /// Going forward, waiting for a step's reply.
    Running,
    /// A step was refused; undoing the steps before it.
    Compensating,
    /// Every step succeeded: the order is approved.
    Completed,
    /// A step was refused and every compensation ran: the order is rejected.
    Compensated,
}

/// The create-order saga of one order.
#[derive(async_graphql::SimpleObject)]
pub struct CreateOrderSaga {
    /// The step being run (or undone), 0 to 5.
    step: i32,
    step_name: &'static str,
    status: SagaStatus,
    /// The refusal that made it compensate.
    failure: Option<String>,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_contracts::payments::InvoiceStatus")]
pub enum InvoiceStatus {
    Pending,
    Paid,
    Canceled,
}

pub struct Invoice(pub InvoiceView);

#[Object]
impl Invoice {
    async fn id(&self) -> ID {
        ID(self.0.invoice_id.to_string())
    }
    async fn order_id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    async fn amount(&self) -> Decimal {
        self.0.amount
    }
    async fn status(&self) -> InvoiceStatus {
        self.0.status.into()
    }
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_contracts::depot::ShoppingListStatus")]
pub enum ShoppingListStatus {
    /// Created by the order's saga, not yet offered to the bots.
    Pending,
    /// Waiting for a bot.
    Available,
    Assigned,
    Active,
    Completed,
    Canceled,
}

pub struct ShoppingList(pub ShoppingListView);

#[Object]
impl ShoppingList {
    async fn id(&self) -> ID {
        ID(self.0.shopping_list_id.to_string())
    }
    async fn order_id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    async fn status(&self) -> ShoppingListStatus {
        self.0.status.into()
    }
    async fn bot_id(&self) -> Option<ID> {
        self.0.bot_id.map(|id| ID(id.to_string()))
    }
    /// Where to go, one stop per store.
    async fn stops(&self) -> Vec<Stop> {
        self.0.stops.iter().cloned().map(Stop).collect()
    }
}

pub struct Stop(depot::Stop);

#[Object]
impl Stop {
    async fn store_id(&self) -> ID {
        ID(self.0.store_id.to_string())
    }
    async fn store_name(&self) -> &str {
        &self.0.store_name
    }
    async fn location(&self) -> &str {
        &self.0.location
    }
    async fn items(&self) -> Vec<StopItem> {
        self.0.items.iter().cloned().map(StopItem).collect()
    }
}

pub struct StopItem(depot::StopItem);

#[Object]
impl StopItem {
    async fn product_id(&self) -> ID {
        ID(self.0.product_id.to_string())
    }
    async fn product_name(&self) -> &str {
        &self.0.product_name
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
}

#[derive(Default)]
pub struct OrdersQuery;

#[Object]
impl OrdersQuery {
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>> {
        order(ctx, parse_id(&id, "id")?).await
    }

    async fn invoice(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Invoice>> {
        let id = parse_id(&id, "id")?;
        let app = state(ctx)?;
        let found = app.queries.payments.invoice(id).await.map_err(internal)?;
        Ok(found.map(Invoice))
    }

    async fn shopping_list(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ShoppingList>> {
        let id = parse_id(&id, "id")?;
        let app = state(ctx)?;
        let found = app
            .queries
            .depot
            .shopping_list(id)
            .await
            .map_err(internal)?;
        Ok(found.map(ShoppingList))
    }

    /// Shopping lists, optionally only those with `status`, oldest first.
    async fn shopping_lists(
        &self,
        ctx: &Context<'_>,
        status: Option<ShoppingListStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ShoppingList, EmptyFields, EmptyFields>> {
        let app = state(ctx)?;
        let (n, after) = (pagination::first(first)?, pagination::after(after)?);
        let page = app
            .queries
            .depot
            .shopping_lists(status.map(Into::into), n, after)
            .await
            .map_err(internal)?;
        let items = page
            .items
            .into_iter()
            .map(|(id, list)| (id, ShoppingList(list)))
            .collect();
        Ok(pagination::connection(
            items,
            after.is_some(),
            page.has_next,
        ))
    }
}

payload!(
    /// The result of an order mutation.
    OrderPayload,
    order: Order,
    |app, id| app.queries.ordering.order(id)
);

payload!(
    /// The result of a shopping-list mutation.
    ShoppingListPayload,
    shopping_list: ShoppingList,
    |app, id| app.queries.depot.shopping_list(id)
);

payload!(
    /// The result of an invoice mutation.
    InvoicePayload,
    invoice: Invoice,
    |app, id| app.queries.payments.invoice(id)
);

#[derive(Default)]
pub struct OrdersMutation;

#[Object]
impl OrdersMutation {
    /// Cancels an order that is not ready yet.
    async fn cancel_order(&self, ctx: &Context<'_>, order_id: ID) -> Result<OrderPayload> {
        let order_id = parse_id(&order_id, "orderId")?;
        OrderPayload::send(ctx, order_id, msg::CancelOrder { order_id }).await
    }

    /// A bot takes an available shopping list.
    async fn assign_shopping_list(
        &self,
        ctx: &Context<'_>,
        id: ID,
        bot_id: ID,
    ) -> Result<ShoppingListPayload> {
        let shopping_list_id = parse_id(&id, "id")?;
        let command = depot::AssignShoppingList {
            shopping_list_id,
            bot_id: parse_id(&bot_id, "botId")?,
        };
        ShoppingListPayload::send(ctx, shopping_list_id, command).await
    }

    /// The bot has picked everything up: the order becomes ready.
    async fn complete_shopping_list(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<ShoppingListPayload> {
        let shopping_list_id = parse_id(&id, "id")?;
        let command = depot::CompleteShoppingList { shopping_list_id };
        ShoppingListPayload::send(ctx, shopping_list_id, command).await
    }

    /// Pays a ready order's invoice: the order completes.
    async fn pay_invoice(&self, ctx: &Context<'_>, invoice_id: ID) -> Result<InvoicePayload> {
        let invoice_id = parse_id(&invoice_id, "invoiceId")?;
        InvoicePayload::send(ctx, invoice_id, pay::PayInvoice { invoice_id }).await
    }
}
