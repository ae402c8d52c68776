//! Floor servers: a minimal async-graphql server on axum with nothing behind it.

use std::net::SocketAddr;

use async_graphql::{Object, Schema, SimpleObject};
use axum::serve::ListenerExt;

#[derive(SimpleObject, Clone)]
pub(crate) struct Item {
    id: String,
    name: String,
    description: String,
    sku: String,
    price: String,
}

pub(crate) struct FloorQuery;

#[Object]
impl FloorQuery {
    async fn hello(&self) -> &str {
        "world"
    }
    async fn list(&self) -> Vec<Item> {
        (0..50)
            .map(|n| Item {
                id: format!("01900000-0000-7000-8000-{n:012}"),
                name: format!("Product {n}"),
                description: "a book".into(),
                sku: format!("B-{n}"),
                price: "9.99".into(),
            })
            .collect()
    }
}

/// The fan-out floor's state: one in-memory broadcast of (store, price).
pub(crate) struct FloorFeed {
    changes: tokio::sync::broadcast::Sender<(String, String)>,
    prices: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    active: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[derive(SimpleObject)]
pub(crate) struct FloorProduct {
    id: String,
    price: String,
}

#[derive(SimpleObject)]
pub(crate) struct FloorChange {
    cursor: String,
    product: FloorProduct,
}

pub(crate) struct FloorMutation;

#[Object]
impl FloorMutation {
    /// The fan-out floor's price change: the same call the bench makes on
    /// the system; a product's id is its store's.
    async fn increase_product_price(
        &self,
        ctx: &async_graphql::Context<'_>,
        product_id: async_graphql::ID,
        delta: String,
    ) -> async_graphql::Result<FloorProduct> {
        let product_id = product_id.to_string();
        let feed = ctx.data::<FloorFeed>()?;
        let step = (delta.parse::<f64>()? * 100.0).round() as i64;
        let cents = {
            let mut prices = feed.prices.lock().map_err(|_| "poisoned")?;
            let cents = prices.entry(product_id.clone()).or_insert(100);
            *cents += step;
            *cents
        };
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let _ = feed.changes.send((product_id.clone(), price.clone()));
        Ok(FloorProduct {
            id: product_id,
            price,
        })
    }
}

/// Counts a live floor subscription while it exists.
pub(crate) struct Active(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) struct FloorSubscription;

#[async_graphql::Subscription]
impl FloorSubscription {
    async fn catalog_changed(
        &self,
        ctx: &async_graphql::Context<'_>,
        store_id: async_graphql::ID,
    ) -> async_graphql::Result<impl futures_util::Stream<Item = FloorChange>> {
        let store_id = store_id.to_string();
        let feed = ctx.data::<FloorFeed>()?;
        feed.active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = (
            feed.changes.subscribe(),
            Active(feed.active.clone()),
            store_id,
            0u64,
        );
        Ok(futures_util::stream::unfold(
            state,
            |(mut changes, active, store, mut seq)| async move {
                loop {
                    match changes.recv().await {
                        Ok((changed, price)) if changed == store => {
                            seq += 1;
                            let change = FloorChange {
                                cursor: seq.to_string(),
                                product: FloorProduct { id: changed, price },
                            };
                            return Some((change, (changes, active, store, seq)));
                        }
                        // Another store's, or missed (the bench then counts
                        // fewer deliveries than expected).
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }
}

/// The floors: a minimal async-graphql server on axum with nothing behind
/// it. `{ hello }` and a constant list for queries; for fan-out, the
/// `catalogChanged` subscription fed by one in-memory broadcast, the same
/// price-change mutation, and `/metrics` with the active subscriptions.
pub(crate) async fn floor_server(listen: SocketAddr) -> anyhow::Result<()> {
    let active = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let feed = FloorFeed {
        changes: tokio::sync::broadcast::channel(1024).0,
        prices: Default::default(),
        active: active.clone(),
    };
    let schema = Schema::build(FloorQuery, FloorMutation, FloorSubscription)
        .data(feed)
        .finish();
    let metrics = move || {
        let n = active.load(std::sync::atomic::Ordering::Relaxed);
        async move { format!("mallbots_subscriptions_active{{field=\"catalogChanged\"}} {n}\n") }
    };
    let app = axum::Router::new()
        .route(
            "/graphql",
            axum::routing::post_service(async_graphql_axum::GraphQL::new(schema.clone())),
        )
        .route(
            "/graphql/ws",
            axum::routing::get_service(async_graphql_axum::GraphQLSubscription::new(schema)),
        )
        .route("/metrics", axum::routing::get(metrics));
    // Like the gateway's listener: TCP_NODELAY on every connection.
    let listener = tokio::net::TcpListener::bind(listen)
        .await?
        .tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                eprintln!("floor: cannot set TCP_NODELAY: {err}");
            }
        });
    axum::serve(listener, app).await?;
    Ok(())
}
