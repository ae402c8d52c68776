//! Floor servers: a minimal async-graphql server on axum with nothing behind it.

use std::net::SocketAddr;

use async_graphql::{Object, Schema, SimpleObject};
use axum::serve::ListenerExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

#[derive(SimpleObject, Clone)]
pub(crate) struct Item {
    id: String,
    name: String,
    description: String,
    sku: String,
    price: String,
}

#[derive(SimpleObject)]
pub(crate) struct FloorStore {
    id: String,
    name: String,
    location: String,
    participating: bool,
}

/// The database floors' one store (its 50 products share its id's prefix).
pub(crate) const FLOOR_STORE: &str = "01900000-0000-7000-8000-000000000000";

/// Tables shaped like the system's store and product read models, in the
/// floor's own database: one store, 50 products.
async fn fill(db: &DatabaseConnection) -> anyhow::Result<()> {
    db.execute_unprepared(
        "CREATE TABLE floor_stores (id uuid PRIMARY KEY, name text NOT NULL, location text NOT NULL, participating boolean NOT NULL);
         CREATE TABLE floor_products (id uuid PRIMARY KEY, store_id uuid NOT NULL, name text NOT NULL, description text NOT NULL, sku text NOT NULL, price numeric(12, 2) NOT NULL);
         CREATE INDEX floor_products_store ON floor_products (store_id, id);
         CREATE TABLE floor_commands (id uuid PRIMARY KEY, body text NOT NULL);",
    )
    .await?;
    db.execute_unprepared(&format!(
        "INSERT INTO floor_stores VALUES ('{FLOOR_STORE}', 'Floor Books', 'Upper level', true);
         INSERT INTO floor_products
           SELECT ('01900000-0000-7000-8000-' || lpad(n::text, 12, '0'))::uuid, '{FLOOR_STORE}',
                  'Product ' || n, 'a book', 'B-' || n, 9.99
           FROM generate_series(1, 50) AS n;"
    ))
    .await?;
    Ok(())
}

fn parse_uuid(id: &async_graphql::ID) -> async_graphql::Result<uuid::Uuid> {
    Ok(uuid::Uuid::parse_str(id)?)
}

pub(crate) struct FloorQuery;

#[Object]
impl FloorQuery {
    async fn hello(&self) -> &str {
        "world"
    }

    /// One primary-key select (the `store(id)` database floor).
    async fn store(
        &self,
        ctx: &async_graphql::Context<'_>,
        id: async_graphql::ID,
    ) -> async_graphql::Result<Option<FloorStore>> {
        let db = ctx.data::<DatabaseConnection>()?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, name, location, participating FROM floor_stores WHERE id = $1",
            [parse_uuid(&id)?.into()],
        );
        let Some(row) = db.query_one_raw(statement).await? else {
            return Ok(None);
        };
        Ok(Some(FloorStore {
            id: row.try_get::<uuid::Uuid>("", "id")?.to_string(),
            name: row.try_get("", "name")?,
            location: row.try_get("", "location")?,
            participating: row.try_get("", "participating")?,
        }))
    }

    /// One 50-row select (the `catalog` database floor).
    async fn catalog(
        &self,
        ctx: &async_graphql::Context<'_>,
        store_id: async_graphql::ID,
    ) -> async_graphql::Result<Vec<Item>> {
        let db = ctx.data::<DatabaseConnection>()?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id, name, description, sku, price FROM floor_products WHERE store_id = $1 ORDER BY id LIMIT 50",
            [parse_uuid(&store_id)?.into()],
        );
        let rows = db.query_all_raw(statement).await?;
        rows.into_iter()
            .map(|row| {
                Ok(Item {
                    id: row.try_get::<uuid::Uuid>("", "id")?.to_string(),
                    name: row.try_get("", "name")?,
                    description: row.try_get("", "description")?,
                    sku: row.try_get("", "sku")?,
                    price: row
                        .try_get::<rust_decimal::Decimal>("", "price")?
                        .to_string(),
                })
            })
            .collect()
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
/// A floor's pool: no ping on checkout, the least a round trip to
/// PostgreSQL can cost.
fn unpinged(url: &str) -> sea_orm::ConnectOptions {
    let mut options = sea_orm::ConnectOptions::new(url);
    options.test_before_acquire(false).sqlx_logging(false);
    options
}

pub(crate) async fn floor_server(
    listen: SocketAddr,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let active = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let feed = FloorFeed {
        changes: tokio::sync::broadcast::channel(1024).0,
        prices: Default::default(),
        active: active.clone(),
    };
    let mut schema = Schema::build(FloorQuery, FloorMutation, FloorSubscription).data(feed);
    if let Some(url) = database_url {
        let db = sea_orm::Database::connect(unpinged(&url)).await?;
        fill(&db).await?;
        schema = schema.data(db);
    }
    let schema = schema.finish();
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

/// The physical minimum of a mutation's reply in this architecture: a
/// request published (persistent, confirmed) to a durable queue; its
/// consumer runs one PostgreSQL transaction (one insert) and publishes the
/// reply (persistent, confirmed) to the requester's queue, where the
/// requester receives it. One at a time, `samples` times: the latencies.
pub(crate) async fn request_reply_floor(
    amqp_url: &str,
    database_url: &str,
    samples: usize,
) -> anyhow::Result<serde_json::Value> {
    use futures_util::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    use sea_orm::TransactionTrait;

    let db = sea_orm::Database::connect(unpinged(database_url)).await?;
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let id = uuid::Uuid::new_v4().simple();
    let (requests, replies) = (
        format!("bench-rr-requests-{id}"),
        format!("bench-rr-replies-{id}"),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    let channel = |confirm: bool| {
        let connection = &connection;
        async move {
            let channel = connection.create_channel().await?;
            if confirm {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
            }
            anyhow::Ok(channel)
        }
    };
    let client = channel(true).await?;
    for queue in [&requests, &replies] {
        client
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await?;
    }
    let server = channel(true).await?;
    let mut incoming = server
        .basic_consume(
            requests.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let handler = {
        let (replies, persistent) = (replies.clone(), persistent.clone());
        tokio::spawn(async move {
            while let Some(delivery) = incoming.next().await {
                let delivery = delivery?;
                let txn = db.begin().await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO floor_commands (id, body) VALUES ($1, $2)",
                    [
                        uuid::Uuid::now_v7().into(),
                        String::from_utf8_lossy(&delivery.data).into_owned().into(),
                    ],
                ))
                .await?;
                txn.commit().await?;
                server
                    .basic_publish(
                        "".into(),
                        replies.as_str().into(),
                        BasicPublishOptions::default(),
                        b"accepted",
                        persistent.clone(),
                    )
                    .await?
                    .await?;
                delivery.acker.ack(BasicAckOptions::default()).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut answers = client
        .basic_consume(
            replies.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut latencies = crate::client::Latencies::default();
    let body = br#"{"product_id":"01900000-0000-7000-8000-000000000001","delta":"0.01"}"#;
    for _ in 0..samples {
        let sent = std::time::Instant::now();
        client
            .basic_publish(
                "".into(),
                requests.as_str().into(),
                BasicPublishOptions::default(),
                body,
                persistent.clone(),
            )
            .await?
            .await?;
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), answers.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the reply queue closed"))??;
        latencies.0.push(sent.elapsed());
        reply.acker.ack(BasicAckOptions::default()).await?;
    }
    handler.abort();
    for queue in [&requests, &replies] {
        client
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(latencies.summary())
}
