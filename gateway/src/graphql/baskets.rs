//! Baskets and the payments authorized to check them out.

use super::errors::ApiError;
use super::money::Money;
use async_graphql::{Context, Enum, ID, InputObject, Object, Result};
use mallbots_contracts::baskets::{self as msg, BasketView};
use mallbots_contracts::payments::{self as pay, PaymentView};
use mallbots_contracts::{ErrorCode, Message, Role};
use uuid::Uuid;

use super::authz;
use super::customers::{Customer, customer};
use super::dispatch::{id_for, parse_id, payload, state};
use super::lines::{LineItem, lines};
use super::orders::{Order, order};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "mallbots_contracts::baskets::BasketStatus")]
pub enum BasketStatus {
    Open,
    Canceled,
    CheckedOut,
}

pub struct Basket(pub BasketView);

#[Object]
impl Basket {
    async fn id(&self) -> ID {
        ID(self.0.basket_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>> {
        customer(ctx, self.0.customer_id).await
    }
    async fn items(&self) -> Vec<LineItem> {
        lines(&self.0.items)
    }
    async fn total(&self) -> Money {
        Money(self.0.total)
    }
    async fn status(&self) -> BasketStatus {
        self.0.status.into()
    }
    /// The payment it was checked out with.
    async fn payment_id(&self) -> Option<ID> {
        self.0.payment_id.map(|id| ID(id.to_string()))
    }
    /// The order its checkout creates.
    async fn order_id(&self) -> Option<ID> {
        self.0.order_id.map(|id| ID(id.to_string()))
    }
    /// The order, once ordering has created it.
    async fn order(&self, ctx: &Context<'_>) -> Result<Option<Order>> {
        match self.0.order_id {
            Some(id) => order(ctx, id).await,
            None => Ok(None),
        }
    }
}

pub struct Payment(pub PaymentView);

#[Object]
impl Payment {
    async fn id(&self) -> ID {
        ID(self.0.payment_id.to_string())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn amount(&self) -> Money {
        Money(self.0.amount)
    }
    /// Whether an order has used it.
    async fn confirmed(&self) -> bool {
        self.0.confirmed
    }
}

#[derive(Default)]
pub struct BasketsQuery;

#[Object]
impl BasketsQuery {
    /// A customer sees its own baskets; operators any.
    async fn basket(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Basket>> {
        let id = parse_id(&id, "id")?;
        authz::require(ctx, &[Role::Customer])?;
        let found = state(ctx)?
            .queries
            .baskets
            .basket(id)
            .await
            .map_err(ApiError::from)?;
        if let Some(basket) = &found {
            authz::owner(ctx, Role::Customer, basket.customer_id)?;
        }
        Ok(found.map(Basket))
    }
}

#[derive(InputObject)]
pub struct AuthorizePaymentInput {
    pub customer_id: ID,
    pub amount: Money,
}

payload!(
    /// The result of a basket mutation.
    BasketPayload,
    basket: Basket,
    |app, id| app.queries.baskets.basket(id)
);

payload!(
    /// The authorized payment: pass its id to `checkoutBasket`.
    PaymentPayload,
    payment: Payment,
    |app, id| app.queries.payments.payment(id)
);

/// Sends the command `make` builds for basket `basket_id` (its id checked
/// first, then the actor's role: the baskets module checks that the basket
/// is the actor's).
async fn basket_command<M: Message>(
    ctx: &Context<'_>,
    basket_id: &ID,
    make: impl FnOnce(Uuid) -> Result<M>,
) -> Result<BasketPayload> {
    let basket_id = parse_id(basket_id, "basketId")?;
    authz::require(ctx, &[Role::Customer])?;
    BasketPayload::send(ctx, basket_id, make(basket_id)?).await
}

/// Refuses (NOT_FOUND) a command naming a customer who never registered.
/// The customers module writes its view in the registering transaction, so
/// a customer registered a moment ago is found.
async fn registered(ctx: &Context<'_>, customer_id: Uuid) -> Result<()> {
    match customer(ctx, customer_id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(ErrorCode::NotFound, "the customer was not found").into()),
    }
}

#[derive(Default)]
pub struct BasketsMutation;

#[Object]
impl BasketsMutation {
    async fn authorize_payment(
        &self,
        ctx: &Context<'_>,
        input: AuthorizePaymentInput,
    ) -> Result<PaymentPayload> {
        let customer_id = parse_id(&input.customer_id, "customerId")?;
        authz::owner(ctx, Role::Customer, customer_id)?;
        registered(ctx, customer_id).await?;
        let payment_id = id_for(ctx, "payment");
        let command = pay::AuthorizePayment {
            payment_id,
            customer_id,
            amount: input.amount.0,
        };
        PaymentPayload::send(ctx, payment_id, command).await
    }

    async fn start_basket(&self, ctx: &Context<'_>, customer_id: ID) -> Result<BasketPayload> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::owner(ctx, Role::Customer, customer_id)?;
        registered(ctx, customer_id).await?;
        let basket_id = id_for(ctx, "basket");
        let command = msg::StartBasket {
            basket_id,
            customer_id,
        };
        BasketPayload::send(ctx, basket_id, command).await
    }

    /// Adds `quantity` (more than 0) of a product, at its current price.
    async fn add_item(
        &self,
        ctx: &Context<'_>,
        basket_id: ID,
        product_id: ID,
        quantity: i32,
    ) -> Result<BasketPayload> {
        basket_command(ctx, &basket_id, |basket_id| {
            Ok(msg::AddItem {
                basket_id,
                product_id: parse_id(&product_id, "productId")?,
                quantity,
            })
        })
        .await
    }

    async fn remove_item(
        &self,
        ctx: &Context<'_>,
        basket_id: ID,
        product_id: ID,
        quantity: i32,
    ) -> Result<BasketPayload> {
        basket_command(ctx, &basket_id, |basket_id| {
            Ok(msg::RemoveItem {
                basket_id,
                product_id: parse_id(&product_id, "productId")?,
                quantity,
            })
        })
        .await
    }

    async fn cancel_basket(&self, ctx: &Context<'_>, basket_id: ID) -> Result<BasketPayload> {
        basket_command(ctx, &basket_id, |basket_id| {
            Ok(msg::CancelBasket { basket_id })
        })
        .await
    }

    /// Checks out with an authorized payment; the basket's `orderId` is the
    /// order this creates (created and approved asynchronously: watch it).
    async fn checkout_basket(
        &self,
        ctx: &Context<'_>,
        basket_id: ID,
        payment_id: ID,
    ) -> Result<BasketPayload> {
        let basket_id = parse_id(&basket_id, "basketId")?;
        // The baskets module checks that the basket is the actor's.
        authz::require(ctx, &[Role::Customer])?;
        let payment_id = parse_id(&payment_id, "paymentId")?;
        // The payment must exist and be the customer's own (its module
        // writes it in the authorizing transaction: no lag to wait out).
        let payment = state(ctx)?
            .queries
            .payments
            .payment(payment_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the payment was not found"))?;
        authz::owner(ctx, Role::Customer, payment.customer_id)?;
        let command = msg::CheckoutBasket {
            basket_id,
            payment_id,
            // Under an idempotency key the order's id names the basket
            // and payment too: the same key on another checkout is another
            // order, never the first one's.
            order_id: id_for(ctx, &format!("order\n{basket_id}\n{payment_id}")),
        };
        BasketPayload::send(ctx, basket_id, command).await
    }
}
