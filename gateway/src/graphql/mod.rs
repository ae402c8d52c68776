//! The GraphQL schema: one root per operation type, merged from each
//! module's part. Kept apart from the HTTP transport (crate::http).

mod authz;
mod baskets;
mod customers;
mod dispatch;
pub(crate) mod errors;
pub(crate) mod follow;
mod lines;
mod money;
mod orders;
mod pagination;
mod stores;
mod subscriptions;

use async_graphql::{MergedObject, MergedSubscription, Schema};

pub use authz::RequestContext;
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
