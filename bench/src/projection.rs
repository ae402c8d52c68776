//! Projection catch-up and rebuild, beside the raw broker and PostgreSQL floors.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli::Cli;
use crate::system::{fresh_database, fresh_prefix, mallbots, services};

/// How far the search projection has applied the ordering module's events.
pub(crate) async fn search_checkpoint(db: &sea_orm::DatabaseConnection) -> anyhow::Result<i64> {
    let statement = sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT position FROM search.checkpoints WHERE source = 'ordering'",
    );
    Ok(match db.query_one_raw(statement).await? {
        Some(row) => row.try_get::<i64>("", "position")?,
        None => 0,
    })
}

/// A backlog for the search projection: `events` new orders queued while
/// the search module is not running, in a fresh database under a fresh
/// queue prefix.
pub(crate) struct Backlog {
    events: usize,
    database: String,
    prefix: String,
    db: sea_orm::DatabaseConnection,
}

pub(crate) async fn backlog(cli: &Cli, events: usize) -> anyhow::Result<Backlog> {
    use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
    use mallbots_platform::{Broker, Envelope, Exchange, QueueSpec};
    let (database_url, amqp_url) = services(cli)?;
    let database = fresh_database(database_url).await?;
    let prefix = fresh_prefix();
    let db = Database::connect(database.as_str()).await?;
    let broker = RabbitBroker::connect(RabbitConfig {
        url: amqp_url.to_owned(),
        prefix: prefix.clone(),
        quorum_queues: false,
        ca_pem: None,
    })
    .await?;
    // The search module's durable queue as it declares it (for ordering's
    // events): what is published now waits there until search starts.
    broker
        .declare(
            &QueueSpec::durable("search.events")
                .bind(Exchange::Events, "ordering.#")
                .single_active(),
        )
        .await?;
    let (customer_id, store_id, product_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut batch = Vec::new();
    for n in 1..=events {
        // Orders: each one a search row with its items (what a rebuild rewrites).
        let now = chrono::Utc::now();
        let event =
            mallbots_contracts::ordering::OrderCreated(mallbots_contracts::ordering::OrderView {
                order_id: Uuid::now_v7(),
                customer_id,
                payment_id: Uuid::now_v7(),
                basket_id: Uuid::now_v7(),
                shopping_list_id: None,
                items: vec![mallbots_contracts::common::LineItem {
                    store_id,
                    store_name: "Bench Books".into(),
                    product_id,
                    product_name: "Ticker".into(),
                    price: rust_decimal::Decimal::new(999, 2),
                    quantity: 1,
                }],
                total: rust_decimal::Decimal::new(999, 2),
                status: mallbots_contracts::ordering::OrderStatus::Pending,
                rejection: None,
                created_at: now,
                occurred_at: now,
            });
        let mut envelope = Envelope::new(&event)?;
        envelope.headers.insert(
            mallbots_platform::envelope::HEADER_POSITION.to_owned(),
            n.to_string(),
        );
        let key = "ordering.Order.OrderCreated".to_owned();
        batch.push((Exchange::Events, key, envelope.to_wire()));
        if batch.len() == 1000 || n == events {
            broker.publish_all(std::mem::take(&mut batch)).await?;
        }
    }
    Ok(Backlog {
        events,
        database,
        prefix,
        db,
    })
}

/// Starts search on `backlog` (applying up to `batch` events a
/// transaction; none: its default) and times it until it has applied them
/// all, start-up and migration included. Search goes on running in the
/// returned child.
pub(crate) async fn catch_up(
    cli: &Cli,
    backlog: &Backlog,
    batch: Option<u16>,
) -> anyhow::Result<(f64, tokio::process::Child)> {
    let (_, amqp_url) = services(cli)?;
    let started = Instant::now();
    let mut search = mallbots(
        &["run", "search"],
        &backlog.database,
        amqp_url,
        &backlog.prefix,
    )?;
    if let Some(batch) = batch {
        search.env("SEARCH_BATCH", batch.to_string());
    }
    let search = search.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while search_checkpoint(&backlog.db).await.unwrap_or(0) < backlog.events as i64 {
        if Instant::now() > deadline {
            bail!("the projection did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((started.elapsed().as_secs_f64(), search))
}

/// Projection: `events` new orders queued while the search module is not
/// running, then it starts: events/s to catch up. Then the rebuild of the
/// same model from its archive, timed.
pub(crate) async fn projection(cli: &Cli) -> anyhow::Result<Value> {
    let (_, amqp_url) = services(cli)?;
    let backlog = backlog(cli, cli.events).await?;
    let (catch_up, mut search) = catch_up(cli, &backlog, None).await?;
    let rebuilding = Instant::now();
    let status = mallbots(
        &["rebuild", "search"],
        &backlog.database,
        amqp_url,
        &backlog.prefix,
    )?
    .status()
    .await?;
    let rebuild = rebuilding.elapsed().as_secs_f64();
    let _ = search.kill().await;
    if !status.success() {
        bail!("mallbots rebuild search failed: {status}");
    }
    Ok(json!({
        "events": cli.events,
        "catch_up_s": catch_up,
        "catch_up_events_per_s": cli.events as f64 / catch_up,
        "rebuild_s": rebuild,
        "rebuild_events_per_s": cli.events as f64 / rebuild,
    }))
}

/// Broker floor: raw lapin, one connection, one durable queue, `messages`
/// persistent 300-byte messages with publisher confirms (up to 1,000 in
/// flight), consumed with prefetch 500 and acked one by one: messages/s from
/// the first publish to the last ack.
pub(crate) async fn broker_floor(cli: &Cli, messages: usize) -> anyhow::Result<Value> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::FieldTable;
    let (_, amqp_url) = services(cli)?;
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let queue = format!("bench-floor-{}", Uuid::new_v4().simple());
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    publisher
        .queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await?;
    let consuming = connection.create_channel().await?;
    consuming.basic_qos(500, BasicQosOptions::default()).await?;
    let mut consumer = consuming
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let consumer_task = tokio::spawn(async move {
        let mut received = 0;
        while received < messages {
            let Some(delivery) = consumer.next().await else {
                break;
            };
            delivery?.acker.ack(BasicAckOptions::default()).await?;
            received += 1;
        }
        anyhow::Ok(received)
    });
    let body = vec![b'x'; 300];
    let properties = lapin::BasicProperties::default().with_delivery_mode(2);
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..messages {
        let confirm = publisher
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        in_flight.push_back(confirm);
        if in_flight.len() >= 1000
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.await?;
        }
    }
    for confirm in in_flight {
        confirm.await?;
    }
    let received = consumer_task.await??;
    let seconds = started.elapsed().as_secs_f64();
    publisher
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    if received != messages {
        bail!("broker floor: {received} of {messages} consumed");
    }
    Ok(json!({
        "messages": messages,
        "seconds": seconds,
        "messages_per_s": messages as f64 / seconds,
    }))
}

/// PostgreSQL floor: `rows` rows shaped like the search model's (an id, a
/// body of about 700 bytes, a position) written as multi-row upserts, 1,000
/// rows a statement, in one transaction: rows/s.
pub(crate) async fn postgres_floor(cli: &Cli, rows: usize) -> anyhow::Result<Value> {
    use sea_orm::{Statement, TransactionTrait};
    let (database_url, _) = services(cli)?;
    let database = fresh_database(database_url).await?;
    let db = Database::connect(database.as_str()).await?;
    db.execute_unprepared(
        "CREATE TABLE floor_rows (id text PRIMARY KEY, body text NOT NULL, position bigint NOT NULL)",
    )
    .await?;
    let body = "x".repeat(700);
    let started = Instant::now();
    let txn = db.begin().await?;
    let mut written = 0;
    while written < rows {
        let n = (rows - written).min(1000);
        let mut sql = String::from("INSERT INTO floor_rows (id, body, position) VALUES ");
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(n * 3);
        for i in 0..n {
            let p = i * 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
            values.push(Uuid::now_v7().to_string().into());
            values.push(body.clone().into());
            values.push(((written + i) as i64).into());
        }
        sql.push_str(
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body, position = excluded.position",
        );
        txn.execute_raw(Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await?;
        written += n;
    }
    txn.commit().await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({ "rows": rows, "seconds": seconds, "rows_per_s": rows as f64 / seconds }))
}
