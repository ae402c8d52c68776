//! Orders, their invoices, and the bots' shopping lists.

use super::errors::ApiError;
use super::money::Money;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use mallbots_contracts::depot::{self as depot, ShoppingListView};
use mallbots_contracts::ordering as msg;
use mallbots_contracts::payments::{self as pay, InvoiceView};
use mallbots_contracts::search::OrderSummary;
use mallbots_contracts::{ErrorCode, Role};
use mallbots_search::OrderFilter;
use uuid::Uuid;

use super::authz;
use super::customers::{Customer, customer};
use super::dispatch::{parse_id, payload, state};
use super::lines::{LineItem, lines};
use super::pagination;

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

/// An order as the search read model shows it.
pub struct Order(pub OrderSummary);

/// The order `id` (from the search read model), for queries and other
/// types' `order` fields.
pub async fn order(ctx: &Context<'_>, id: Uuid) -> Result<Option<Order>> {
    let app = state(ctx)?;
    let found = app.queries.search.order(id).await.map_err(ApiError::from)?;
    Ok(found.map(Order))
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order.order_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.order.customer_id.to_string())
    }
    /// The customer's name when the order last changed.
    async fn customer_name(&self) -> &str {
        &self.0.customer_name
    }
    /// The customer's SMS number, for the staff handling the order.
    async fn customer_sms_number(&self) -> &str {
        &self.0.customer_sms_number
    }
    /// The customer and operators (a store owner sees name and SMS number).
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        authz::require(ctx, &[Role::Customer])?;
        customer(ctx, self.0.order.customer_id).await
    }
    async fn payment_id(&self) -> ID {
        ID(self.0.order.payment_id.to_string())
    }
    async fn basket_id(&self) -> ID {
        ID(self.0.order.basket_id.to_string())
    }
    /// A store owner sees the items of its own stores only.
    async fn items(&self, ctx: &Context<'_>) -> Result<Vec<LineItem>> {
        let actor = authz::actor(ctx)?;
        if actor.role != Role::StoreOwner {
            return Ok(lines(&self.0.order.items));
        }
        let owned = owned_stores(ctx, actor.id).await?;
        let mine: Vec<_> = self
            .0
            .order
            .items
            .iter()
            .filter(|item| owned.contains(&item.store_id))
            .cloned()
            .collect();
        Ok(lines(&mine))
    }
    async fn total(&self) -> Money {
        Money(self.0.order.total)
    }
    async fn status(&self) -> OrderStatus {
        self.0.order.status.into()
    }
    /// Why the order was rejected, when it was.
    async fn rejection(&self) -> Option<&str> {
        self.0.order.rejection.as_deref()
    }
    async fn shopping_list_id(&self) -> Option<ID> {
        self.0.order.shopping_list_id.map(|id| ID(id.to_string()))
    }
    /// The customer and operators.
    async fn shopping_list(&self, ctx: &Context<'_>) -> Result<Option<ShoppingList>> {
        authz::require(ctx, &[Role::Customer])?;
        let Some(id) = self.0.order.shopping_list_id else {
            return Ok(None);
        };
        Ok(find_shopping_list(ctx, id).await?)
    }
    /// The invoice, once the order is ready (the customer and operators).
    async fn invoice(&self, ctx: &Context<'_>) -> Result<Option<Invoice>> {
        authz::require(ctx, &[Role::Customer])?;
        let app = state(ctx)?;
        let found = app
            .queries
            .payments
            .invoice_of_order(self.0.order.order_id)
            .await
            .map_err(ApiError::from)?;
        Ok(found.map(Invoice))
    }
    /// Where the create-order saga is with this order (the customer and
    /// operators).
    async fn saga(&self, ctx: &Context<'_>) -> Result<Option<CreateOrderSaga>> {
        authz::require(ctx, &[Role::Customer])?;
        let app = state(ctx)?;
        let found = app
            .queries
            .cosec
            .saga(self.0.order.order_id)
            .await
            .map_err(ApiError::from)?;
        Ok(found.map(|saga| CreateOrderSaga {
            step: saga.step as i32,
            step_name: saga.step_name,
            status: saga.status.into(),
            failure: saga.last_error,
        }))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.order.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.order.occurred_at
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
    async fn amount(&self) -> Money {
        Money(self.0.amount)
    }
    async fn status(&self) -> InvoiceStatus {
        self.0.status.into()
    }
}

/// Shopping list `id` as depot has it now.
pub(super) async fn find_shopping_list(
    ctx: &Context<'_>,
    id: Uuid,
) -> Result<Option<ShoppingList>, ApiError> {
    let found = state(ctx)?.queries.depot.shopping_list(id).await?;
    Ok(found.map(ShoppingList))
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_contracts::depot::ShoppingListStatus")]
pub enum ShoppingListStatus {
    /// Created by the order's saga, not yet offered to the bots.
    Pending,
    /// Waiting for a bot.
    Available,
    /// Taken by a bot; its order has not started yet and may still be
    /// canceled.
    Assigned,
    /// Its order started and can no longer be canceled: the bot shops.
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

/// Every filter given must hold.
#[derive(InputObject, Default)]
pub struct OrderSearchFilter {
    pub customer_id: Option<ID>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Orders holding an item of any of these stores.
    pub store_ids: Option<Vec<ID>>,
    /// Orders holding any of these products.
    pub product_ids: Option<Vec<ID>>,
    pub min_total: Option<Money>,
    pub max_total: Option<Money>,
    pub status: Option<OrderStatus>,
}

fn ids(ids: Option<Vec<ID>>, field: &str) -> Result<Vec<Uuid>, super::errors::ApiError> {
    ids.unwrap_or_default()
        .iter()
        .map(|id| parse_id(id, field))
        .collect()
}

impl OrderSearchFilter {
    fn parse(self) -> Result<OrderFilter, super::errors::ApiError> {
        Ok(OrderFilter {
            customer_id: self
                .customer_id
                .map(|c| parse_id(&c, "customerId"))
                .transpose()?,
            created_after: self.created_after,
            created_before: self.created_before,
            store_ids: ids(self.store_ids, "storeIds")?,
            product_ids: ids(self.product_ids, "productIds")?,
            min_total: self.min_total.map(|m| m.0),
            max_total: self.max_total.map(|m| m.0),
            status: self
                .status
                .map(|s| msg::OrderStatus::from(s).as_str().to_owned()),
        })
    }
}

/// The stores `owner` owns.
async fn owned_stores(ctx: &Context<'_>, owner: Uuid) -> Result<Vec<Uuid>, ApiError> {
    state(ctx)?
        .queries
        .stores
        .owned_by(owner)
        .await
        .map_err(ApiError::from)
}

/// The filter narrowed to what the actor may see, in the search query
/// itself: a customer its own orders, a store owner the orders holding
/// items of its stores. `None`: nothing to see. Naming someone else's
/// customer or store is FORBIDDEN.
async fn visible(ctx: &Context<'_>, mut filter: OrderFilter) -> Result<Option<OrderFilter>> {
    let actor = authz::require(ctx, &[Role::Customer, Role::StoreOwner])?;
    if actor.is_trusted() {
        return Ok(Some(filter));
    }
    let someone_else = || ApiError::new(ErrorCode::Forbidden, "this belongs to someone else");
    match actor.role {
        Role::Customer => {
            if filter.customer_id.is_some_and(|c| c != actor.id) {
                return Err(someone_else().into());
            }
            filter.customer_id = Some(actor.id);
        }
        _ => {
            let owned = owned_stores(ctx, actor.id).await?;
            if filter.store_ids.iter().any(|s| !owned.contains(s)) {
                return Err(someone_else().into());
            }
            // Naming another store's product would tell which orders hold it.
            for product in &filter.product_ids {
                let store = state(ctx)?
                    .queries
                    .stores
                    .product(*product)
                    .await
                    .map_err(ApiError::from)?
                    .map(|p| p.store_id);
                if store.is_some_and(|s| !owned.contains(&s)) {
                    return Err(someone_else().into());
                }
            }
            if owned.is_empty() {
                return Ok(None);
            }
            if filter.store_ids.is_empty() {
                filter.store_ids = owned;
            }
        }
    }
    Ok(Some(filter))
}

#[derive(Default)]
pub struct OrdersQuery;

#[Object]
impl OrdersQuery {
    /// A customer sees its own orders; operators any.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>> {
        let id = parse_id(&id, "id")?;
        authz::require(ctx, &[Role::Customer])?;
        let found = order(ctx, id).await?;
        if let Some(found) = &found {
            authz::owner(ctx, Role::Customer, found.0.order.customer_id)?;
        }
        Ok(found)
    }

    /// Orders matching every filter given, oldest first.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn search_orders(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrderSearchFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Order, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default().parse()?;
        // None: the caller may see no order at all.
        let visible = visible(ctx, filter).await?;
        let search = &state(ctx)?.queries.search;
        let fetch = |n, after| async move {
            match &visible {
                Some(filter) => search.search(filter, n, after).await,
                None => Ok(mallbots_platform::views::Page::default()),
            }
        };
        Ok(pagination::page(ctx, first, after, fetch, Order).await?)
    }

    /// A customer sees the invoices of its own orders; operators any.
    async fn invoice(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Invoice>> {
        let id = parse_id(&id, "id")?;
        let actor = authz::require(ctx, &[Role::Customer])?;
        let app = state(ctx)?;
        let found = app
            .queries
            .payments
            .invoice(id)
            .await
            .map_err(ApiError::from)?;
        if let Some(invoice) = &found
            && !actor.is_trusted()
        {
            let of = app
                .queries
                .ordering
                .order(invoice.order_id)
                .await
                .map_err(ApiError::from)?;
            let customer = of.map(|o| o.customer_id).unwrap_or_default();
            authz::owner(ctx, Role::Customer, customer)?;
        }
        Ok(found.map(Invoice))
    }

    /// For bots (and operators).
    async fn shopping_list(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ShoppingList>> {
        let id = parse_id(&id, "id")?;
        authz::require(ctx, &[Role::Bot])?;
        Ok(find_shopping_list(ctx, id).await?)
    }

    /// Shopping lists, optionally only those with `status`, oldest first.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn shopping_lists(
        &self,
        ctx: &Context<'_>,
        status: Option<ShoppingListStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ShoppingList, EmptyFields, EmptyFields>> {
        authz::require(ctx, &[Role::Bot])?;
        let depot = &state(ctx)?.queries.depot;
        let fetch = |n, after| depot.shopping_lists(status.map(Into::into), n, after);
        Ok(pagination::page(ctx, first, after, fetch, ShoppingList).await?)
    }
}

payload!(
    /// The result of an order mutation.
    OrderPayload,
    order: Order,
    |app, id| order_as_ordering_sees_it(app, id)
);

/// An order from ordering's own view (what a mutation on it just changed),
/// with its customer's contact from the customers module.
async fn order_as_ordering_sees_it(
    app: &crate::state::AppState,
    id: Uuid,
) -> Result<Option<OrderSummary>, mallbots_platform::PlatformError> {
    let Some(order) = app.queries.ordering.order(id).await? else {
        return Ok(None);
    };
    let customer = app.queries.customers.customer(order.customer_id).await?;
    Ok(Some(mallbots_search::domain::summary(
        order,
        customer.as_ref(),
    )))
}

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
    /// Cancels an order until a bot takes its shopping list (while it is
    /// PENDING or APPROVED); the list is canceled with it.
    async fn cancel_order(&self, ctx: &Context<'_>, order_id: ID) -> Result<OrderPayload> {
        let order_id = parse_id(&order_id, "orderId")?;
        // The ordering module checks that the order is the actor's.
        authz::require(ctx, &[Role::Customer])?;
        OrderPayload::send(ctx, order_id, msg::CancelOrder { order_id }).await
    }

    /// A bot takes an available shopping list. It becomes ACTIVE once its
    /// order started (follow `shoppingListUpdated`).
    async fn assign_shopping_list(
        &self,
        ctx: &Context<'_>,
        id: ID,
        bot_id: ID,
    ) -> Result<ShoppingListPayload> {
        let shopping_list_id = parse_id(&id, "id")?;
        let bot_id = parse_id(&bot_id, "botId")?;
        // A bot takes lists for itself.
        authz::owner(ctx, Role::Bot, bot_id)?;
        let command = depot::AssignShoppingList {
            shopping_list_id,
            bot_id,
        };
        ShoppingListPayload::send(ctx, shopping_list_id, command).await
    }

    /// The bot has picked everything up: the order becomes ready. Only an
    /// ACTIVE list: an ASSIGNED one is CONFLICT until its order started.
    async fn complete_shopping_list(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<ShoppingListPayload> {
        let shopping_list_id = parse_id(&id, "id")?;
        // The depot checks that the list is assigned to the actor.
        authz::require(ctx, &[Role::Bot])?;
        let command = depot::CompleteShoppingList { shopping_list_id };
        ShoppingListPayload::send(ctx, shopping_list_id, command).await
    }

    /// Pays a ready order's invoice: the order completes.
    async fn pay_invoice(&self, ctx: &Context<'_>, invoice_id: ID) -> Result<InvoicePayload> {
        let invoice_id = parse_id(&invoice_id, "invoiceId")?;
        // The payments module checks that the invoice is the actor's.
        authz::require(ctx, &[Role::Customer])?;
        InvoicePayload::send(ctx, invoice_id, pay::PayInvoice { invoice_id }).await
    }
}
