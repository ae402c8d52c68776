//! Customers: registration, SMS number, enabling.

use super::errors::ApiError;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, InputObject, Object, Result};
use chrono::{DateTime, Utc};
use mallbots_contracts::Role;
use mallbots_contracts::customers::{self as msg, CustomerView};
use mallbots_notifications::Notification as Notice;
use uuid::Uuid;

use super::authz;
use super::dispatch::{id_for, parse_id, payload, state};
use super::pagination;

pub struct Customer(pub CustomerView);

#[Object]
impl Customer {
    async fn id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn sms_number(&self) -> &str {
        &self.0.sms_number
    }
    /// Whether the customer may order.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
}

/// The customer `id`, for other types' `customer` fields.
pub async fn customer(ctx: &Context<'_>, id: Uuid) -> Result<Option<Customer>> {
    let app = state(ctx)?;
    let found = app
        .queries
        .customers
        .customer(id)
        .await
        .map_err(ApiError::from)?;
    Ok(found.map(Customer))
}

pub struct Notification(Notice);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.notification_id.to_string())
    }
    async fn order_id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    /// `created`, `ready`, `canceled` or `completed`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn sms_number(&self) -> &str {
        &self.0.sms_number
    }
    async fn text(&self) -> &str {
        &self.0.text
    }
    async fn sent_at(&self) -> DateTime<Utc> {
        self.0.sent_at
    }
}

#[derive(Default)]
pub struct CustomersQuery;

#[Object]
impl CustomersQuery {
    /// A customer sees itself; operators anyone.
    async fn customer(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Customer>> {
        let id = parse_id(&id, "id")?;
        authz::owner(ctx, Role::Customer, id)?;
        customer(ctx, id).await
    }

    /// What the customer was told about their orders, oldest first.
    #[graphql(complexity = "pagination::cost(first, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Notification, EmptyFields, EmptyFields>> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::owner(ctx, Role::Customer, customer_id)?;
        let notifications = &state(ctx)?.queries.notifications;
        let fetch = |n, after| notifications.of_customer(customer_id, n, after);
        Ok(pagination::page(ctx, first, after, fetch, Notification).await?)
    }
}

#[derive(InputObject)]
pub struct RegisterCustomerInput {
    pub name: String,
    /// 7 to 15 digits, optionally starting with `+`; spaces and dashes are ignored.
    pub sms_number: String,
}

payload!(
    /// The result of a customer mutation.
    CustomerPayload,
    customer: Customer,
    |app, id| app.queries.customers.customer(id)
);

#[derive(Default)]
pub struct CustomersMutation;

#[Object]
impl CustomersMutation {
    async fn register_customer(
        &self,
        ctx: &Context<'_>,
        input: RegisterCustomerInput,
    ) -> Result<CustomerPayload> {
        // A customer registers itself: its id is its token's subject.
        let actor = authz::require(ctx, &[Role::Customer])?;
        let customer_id = if actor.role == Role::Customer {
            actor.id
        } else {
            id_for(ctx, "customer")
        };
        let command = msg::RegisterCustomer {
            customer_id,
            name: input.name,
            sms_number: input.sms_number,
        };
        CustomerPayload::send(ctx, customer_id, command).await
    }

    async fn change_sms_number(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        sms_number: String,
    ) -> Result<CustomerPayload> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::owner(ctx, Role::Customer, customer_id)?;
        let command = msg::ChangeSmsNumber {
            customer_id,
            sms_number,
        };
        CustomerPayload::send(ctx, customer_id, command).await
    }

    async fn enable_customer(&self, ctx: &Context<'_>, customer_id: ID) -> Result<CustomerPayload> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::operator(ctx)?;
        CustomerPayload::send(ctx, customer_id, msg::EnableCustomer { customer_id }).await
    }

    async fn disable_customer(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
    ) -> Result<CustomerPayload> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::operator(ctx)?;
        CustomerPayload::send(ctx, customer_id, msg::DisableCustomer { customer_id }).await
    }
}
