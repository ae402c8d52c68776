//! Live subscriptions on orders, shopping lists and the raw event feed, each
//! pushed after the read model it shows committed, each item with a cursor.

use async_graphql::{Context, ID, Json, Object, Result, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use mallbots_contracts::depot::{ShoppingListStatus, ShoppingListView};
use mallbots_contracts::search::{
    ArchivedEvent, ChangeBody, OrderSummary, TOPIC_EVENT, TOPIC_ORDER, TOPIC_SHOPPING_LIST,
};

use super::authz;
use super::dispatch::{parse_id, state};
use super::errors::ApiError;
use super::follow::{Audience, follow};
use super::orders::{Order, ShoppingList, find_shopping_list};
use crate::live::{About, LiveChange, Route};
use mallbots_contracts::{ErrorCode, Role};

/// An order as it is after a change.
pub struct OrderChange {
    cursor: String,
    order: OrderSummary,
}

#[Object]
impl OrderChange {
    /// Pass back as `after` to resume right after this change.
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    async fn order(&self) -> Order {
        Order(self.order.clone())
    }
}

fn order_change(change: &LiveChange, body: &ChangeBody) -> Option<OrderChange> {
    match body {
        ChangeBody::Order(order) => Some(OrderChange {
            cursor: change.position.to_string(),
            order: order.clone(),
        }),
        _ => None,
    }
}

/// A shopping list as it is after a change.
pub struct ShoppingListChange {
    cursor: String,
    list: ShoppingListView,
}

#[Object]
impl ShoppingListChange {
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    async fn shopping_list(&self) -> ShoppingList {
        ShoppingList(self.list.clone())
    }
}

fn list_change(change: &LiveChange, body: &ChangeBody) -> Option<ShoppingListChange> {
    match body {
        ChangeBody::ShoppingList(list) => Some(ShoppingListChange {
            cursor: change.position.to_string(),
            list: list.clone(),
        }),
        _ => None,
    }
}

/// An integration event as it crossed the broker.
pub struct IntegrationEvent {
    cursor: String,
    event: ArchivedEvent,
}

#[Object]
impl IntegrationEvent {
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    /// `<module>.<Aggregate>.<Event>`.
    async fn r#type(&self) -> &str {
        &self.event.message_type
    }
    async fn schema_version(&self) -> i32 {
        i32::from(self.event.schema_version)
    }
    /// Its position in its own module's event log.
    async fn source_position(&self) -> Option<String> {
        self.event.source_position.map(|p| p.to_string())
    }
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.event.occurred_at
    }
    async fn payload(&self) -> Result<Json<serde_json::Value>> {
        let payload = self.event.payload.decode::<serde_json::Value>();
        Ok(Json(payload.map_err(super::errors::internal)?))
    }
}

#[derive(Default)]
pub struct OrdersSubscription;

#[Subscription]
impl OrdersSubscription {
    /// The order each time it changes (status, items, totals).
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<OrderChange>> + use<>> {
        let id = parse_id(&order_id, "orderId")?;
        // A customer follows its own orders: checked now when the order is
        // known, and on every change (an order not seen yet is filtered).
        let actor = authz::require(ctx, &[Role::Customer])?;
        let app = state(ctx)?;
        let known = app
            .queries
            .ordering
            .order(id)
            .await
            .map_err(ApiError::from)?;
        if let Some(known) = known {
            authz::owner(ctx, Role::Customer, known.customer_id)?;
        }
        let order_id = id.to_string();
        let route = Route {
            topic: TOPIC_ORDER,
            about: About::Key(order_id.clone()),
        };
        Ok(follow(
            ctx,
            "orderUpdated",
            route,
            after,
            Audience::PerActor,
            move |change, body| {
                (change.key == order_id)
                    .then(|| order_change(change, body))
                    .flatten()
                    .filter(|c| actor.may_act_for(Role::Customer, Some(c.order.order.customer_id)))
            },
        )?)
    }

    /// Every change to any order of the customer.
    async fn customer_orders(
        &self,
        ctx: &Context<'_>,
        customer_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<OrderChange>> + use<>> {
        let customer_id = parse_id(&customer_id, "customerId")?;
        authz::owner(ctx, Role::Customer, customer_id)?;
        let route = Route {
            topic: TOPIC_ORDER,
            about: About::Owner(customer_id.to_string()),
        };
        Ok(follow(
            ctx,
            "customerOrders",
            route,
            after,
            Audience::PerActor,
            move |change, body| {
                order_change(change, body).filter(|c| c.order.order.customer_id == customer_id)
            },
        )?)
    }

    /// For bots: each shopping list as it becomes available to take.
    async fn shopping_lists_available(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<ShoppingListChange>> + use<>> {
        authz::require(ctx, &[Role::Bot])?;
        let route = Route {
            topic: TOPIC_SHOPPING_LIST,
            about: About::All,
        };
        Ok(follow(
            ctx,
            "shoppingListsAvailable",
            route,
            after,
            Audience::PerActor,
            |change, body| {
                list_change(change, body).filter(|c| c.list.status == ShoppingListStatus::Available)
            },
        )?)
    }

    /// For bots: one shopping list each time it changes. A bot that took it
    /// completes it once it is ACTIVE (its order started); CANCELED means
    /// the order was canceled first. Subscribe, then read `shoppingList` to
    /// learn a change made before the subscription.
    async fn shopping_list_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<ShoppingListChange>> + use<>> {
        let list = parse_id(&id, "id")?;
        authz::require(ctx, &[Role::Bot])?;
        if find_shopping_list(ctx, list).await?.is_none() {
            return Err(
                ApiError::new(ErrorCode::NotFound, "the shopping list was not found").into(),
            );
        }
        let key = list.to_string();
        let route = Route {
            topic: TOPIC_SHOPPING_LIST,
            about: About::Key(key.clone()),
        };
        Ok(follow(
            ctx,
            "shoppingListUpdated",
            route,
            after,
            Audience::PerActor,
            move |change, body| {
                (change.key == key)
                    .then(|| list_change(change, body))
                    .flatten()
            },
        )?)
    }

    /// The raw integration-event feed (operators), optionally only `types`.
    async fn events(
        &self,
        ctx: &Context<'_>,
        types: Option<Vec<String>>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<IntegrationEvent>> + use<>> {
        authz::operator(ctx)?;
        let route = Route {
            topic: TOPIC_EVENT,
            about: About::All,
        };
        Ok(follow(
            ctx,
            "events",
            route,
            after,
            Audience::PerActor,
            move |change, body| {
                if types.as_ref().is_some_and(|t| !t.contains(&change.key)) {
                    return None;
                }
                match body {
                    ChangeBody::Event(event) => Some(IntegrationEvent {
                        cursor: change.position.to_string(),
                        event: event.clone(),
                    }),
                    _ => None,
                }
            },
        )?)
    }
}
