//! One trace from a mutation to its pushes: the `mallbots` binary, run with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP receiver in this test,
//! exports spans whose trace contexts crossed the broker in the messages'
//! headers. A checkout's trace holds the mutation, baskets' and ordering's
//! handling, the saga's steps, the search projection and the push to the
//! customer's subscription, each span the child of the one before; an
//! `addProduct`'s holds stores' handling and the catalog push.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use common::shop::{add_item, authorize_payment, basket, customer, mall};
use common::{TestApp, wait_until};
use serde_json::{Value, json};
use uuid::Uuid;

/// A span as exported (OTLP JSON), reduced to what the test reads.
#[derive(Clone, Debug)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    start: u128,
    attributes: Value,
}

impl Span {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)?["value"]["stringValue"]
            .as_str()
    }
}

type Received = Arc<Mutex<Vec<Span>>>;

fn nanos(value: &Value) -> u128 {
    match value {
        Value::String(text) => text.parse().unwrap_or(0),
        other => other.as_u64().map_or(0, u128::from),
    }
}

async fn receive(State(received): State<Received>, body: axum::body::Bytes) -> &'static str {
    let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
    let mut spans = received.lock().unwrap();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                spans.push(Span {
                    trace: span["traceId"].as_str().unwrap_or_default().to_owned(),
                    id: span["spanId"].as_str().unwrap_or_default().to_owned(),
                    parent: span["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    start: nanos(&span["startTimeUnixNano"]),
                    attributes: span["attributes"].clone(),
                });
            }
        }
    }
    "{}"
}

/// An OTLP/HTTP receiver on a free port: its base URL and what it received.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

/// The trace of the request sent with `x-request-id: request`.
fn trace_of(received: &Received, request: &str) -> Option<Vec<Span>> {
    let spans = received.lock().unwrap();
    let root = spans.iter().find(|s| {
        s.name.starts_with("graphql") && s.attribute("correlation_id") == Some(request)
    })?;
    Some(
        spans
            .iter()
            .filter(|s| s.trace == root.trace)
            .cloned()
            .collect(),
    )
}

/// `span` and its ancestors in `trace`, the root first.
fn lineage(trace: &[Span], span: &Span) -> Vec<Span> {
    let mut chain = vec![span.clone()];
    while let Some(parent) = trace.iter().find(|s| s.id == chain[chain.len() - 1].parent) {
        chain.push(parent.clone());
    }
    chain.reverse();
    chain
}

/// Waits until the trace of `request` holds a push to `field` descended,
/// in this order, from spans named with each of `steps`; that lineage.
async fn pushed_through(
    received: &Received,
    request: &str,
    field: &str,
    steps: &[&str],
) -> Vec<Span> {
    wait_until(
        &format!("a traced push to {field} through {steps:?}"),
        || async {
            let trace = trace_of(received, request)?;
            trace
                .iter()
                .filter(|s| s.name == format!("push {field}"))
                .map(|push| lineage(&trace, push))
                .find(|chain| {
                    let mut names = chain.iter().map(|s| s.name.as_str());
                    steps
                        .iter()
                        .all(|step| names.any(|name| name.contains(step)))
                })
        },
    )
    .await
}

fn assert_causal(chain: &[Span]) {
    let names: Vec<_> = chain.iter().map(|s| s.name.as_str()).collect();
    assert!(
        chain[0].parent.is_empty(),
        "the mutation is the root: {names:?}"
    );
    for pair in chain.windows(2) {
        assert!(
            pair[0].start <= pair[1].start,
            "{} started after its child {}: {names:?}",
            pair[0].name,
            pair[1].name
        );
    }
}

#[tokio::test]
async fn a_mutation_is_one_trace_to_its_pushes() {
    let (endpoint, received) = collector().await;
    let data_dir = std::env::temp_dir().join(format!("mallbots-test-{}", Uuid::new_v4().simple()));
    let process = common::launch(
        &["--data-dir".as_ref(), data_dir.as_os_str()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let app: TestApp = process.client().await;

    let mall = mall(&app).await;
    let ada = customer(&app, "Ada Traced").await;
    let basket = basket(&app, &ada).await;
    add_item(&app, &basket, &mall.pen, 1).await;
    let payment = authorize_payment(&app, &ada, "12.50").await;
    let mut orders = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($c: ID!) { customerOrders(customerId: $c) { order { id status } } }",
            json!({ "c": ada }),
        )
        .await;
    let mut catalog = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { kind } }",
            json!({ "s": mall.books }),
        )
        .await;
    app.wait_for_subscriptions(2).await;

    // The checkout: its trace goes through baskets, ordering, the saga's
    // steps and the search projection to the push.
    let checkout = Uuid::new_v4().to_string();
    let (_, answer) = app
        .graphql_with(
            &[("x-request-id", &checkout)],
            "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) { id } }",
            json!({ "b": basket, "p": payment }),
        )
        .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    while orders.next_data().await["customerOrders"]["order"]["status"] != "APPROVED" {}
    let chain = pushed_through(
        &received,
        &checkout,
        "customerOrders",
        &[
            "graphql",
            "baskets.commands process baskets.CheckoutBasket",
            "ordering",
            "cosec.saga process",
            "customers.commands process customers.AuthorizeCustomer",
            "search.events process",
            "gateway receive change notice",
        ],
    )
    .await;
    assert_causal(&chain);
    let trace = trace_of(&received, &checkout).unwrap();
    for step in [
        "depot.commands process depot.CreateShoppingList",
        "payments.commands process payments.ConfirmPayment",
        "ordering.commands process ordering.ApproveOrder",
        "publish",
    ] {
        assert!(
            trace.iter().any(|s| s.name.contains(step)),
            "no {step} in the checkout's trace"
        );
    }
    let handling = trace
        .iter()
        .find(|s| s.name.starts_with("baskets.commands"))
        .unwrap();
    assert_eq!(
        handling.attribute("correlation_id"),
        Some(checkout.as_str())
    );

    // A product added: stores' handling, then the catalog push.
    let added = Uuid::new_v4().to_string();
    let (_, answer) = app
        .graphql_with(
            &[("x-request-id", &added)],
            "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Ink\", price: \"3.00\"}) { id } }",
            json!({ "s": mall.books }),
        )
        .await;
    assert!(answer.get("errors").is_none(), "{answer}");
    while catalog.next_data().await["catalogChanged"]["kind"] != "ADDED" {}
    let chain = pushed_through(
        &received,
        &added,
        "catalogChanged",
        &[
            "graphql",
            "stores.commands process stores.AddProduct",
            "search.events process",
            "gateway receive change notice",
        ],
    )
    .await;
    assert_causal(&chain);

    // A client's own trace goes on through the system; a trace state too
    // long to pass on (20 KB) is dropped, not copied into every message.
    let (status, answer) = app
        .graphql_with(
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", &"vendor=value,".repeat(1600)),
            ],
            "mutation { createStore(input: {name: \"Continued\", location: \"L\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    wait_until(
        "the client's trace continued into the stores module",
        || async {
            let spans = received.lock().unwrap();
            spans
                .iter()
                .any(|s| {
                    s.trace == "4bf92f3577b34da6a3ce929d0e0e4736"
                        && s.name == "stores.commands process stores.CreateStore"
                })
                .then_some(())
        },
    )
    .await;

    common::sigterm(&process.child).await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
