//! The GraphQL schema: one root per operation type, merged from each
//! module's part. Kept apart from the HTTP transport (crate::http).

mod authz;
mod baskets;
mod customers;
mod dispatch;
mod errors;
mod follow;
mod money;
mod orders;
mod pagination;
mod stores;
mod subscriptions;

use async_graphql::{MergedObject, MergedSubscription, Schema};
use uuid::Uuid;

use crate::identity::Identity;

pub use errors::{ApiError, internal};

#[derive(MergedObject, Default)]
pub struct Query(
    stores::StoresQuery,
    customers::CustomersQuery,
    baskets::BasketsQuery,
    orders::OrdersQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    stores::StoresMutation,
    customers::CustomersMutation,
    baskets::BasketsMutation,
    orders::OrdersMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    stores::StoresSubscription,
    subscriptions::OrdersSubscription,
);

pub type MallSchema = Schema<Query, Mutation, Subscription>;

/// One request's context, from HTTP headers or the websocket's
/// `connection_init`: threaded into every resolver and onto every command.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub correlation_id: Uuid,
    /// Who asks: the verified token's actor (or the open mode's operator).
    pub identity: Identity,
    /// The client's `Idempotency-Key`: a retried request under it gets the
    /// first one's outcome instead of applying again.
    pub idempotency_key: Option<String>,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            correlation_id: Uuid::now_v7(),
            identity: Identity::ANONYMOUS,
            idempotency_key: None,
        }
    }
}

pub fn builder() -> async_graphql::SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_recursive_depth(RECURSION_LIMIT)
}

/// How deep the parser follows a document's nesting at all (before the
/// depth limit is counted).
pub const RECURSION_LIMIT: usize = 32;

/// The schema's SDL, as checked in at schema/schema.graphql.
pub fn sdl() -> String {
    builder().finish().sdl()
}
