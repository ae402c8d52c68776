//! The bad-input corpus: well over a thousand malformed requests and
//! websocket frames, generated from a fixed seed (so a failure replays),
//! sent to a running gateway in open mode (every mutation allowed: the most
//! a client can reach). Every one gets a clear refusal (a 4xx, or GraphQL
//! errors that all carry a code; on a websocket, a coded error or a close
//! code that says why); nothing panics anywhere in the process; afterwards
//! no module's event store holds one event more, and the gateway still
//! serves.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Backend, TestApp, WsClient, shop, spawn_app};
use futures_util::SinkExt;
use serde_json::{Value, json};

/// A small deterministic generator (64-bit LCG): the corpus is the same on
/// every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

/// Names no store or customer may have.
const BAD_NAMES: &[&str] = &[
    "",
    "   ",
    "a\u{0}b",
    "\u{1b}[31mred",
    "line\r\nbreak",
    "\u{202e}txet",
    "zero\u{200b}width",
    "tab\there",
];

/// Money no price, delta or amount may be (as GraphQL literals).
const BAD_MONEY: &[&str] = &[
    "\"0\"",
    "\"-1\"",
    "\"0.00\"",
    "\"1e10\"",
    "\"+5\"",
    "\".5\"",
    "\"1_000\"",
    "\"0.001\"",
    "\"1000000.01\"",
    "\"79228162514264337593543950335\"",
    "\"-79228162514264337593543950335\"",
    "\"abc\"",
    "\"\"",
    "\"NaN\"",
    "1.5",
    "true",
    "null",
];

/// Quantities a basket refuses (as GraphQL literals).
const BAD_QUANTITIES: &[&str] = &[
    "0",
    "-1",
    "1001",
    "2147483647",
    "-2147483648",
    "99999999999",
    "\"1\"",
    "1.5",
    "null",
];

/// Ids that are not ids, or name nothing.
fn bad_ids(real: &str) -> Vec<String> {
    vec![
        String::new(),
        "abc".into(),
        "123".into(),
        format!("{{{real}}}"),
        format!("urn:uuid:{real}"),
        real.to_uppercase(),
        real.replace('-', ""),
        format!("{real}0"),
        "00000000-0000-0000-0000-000000000000".into(),
        "0193b1d2-0000-7000-8000-00000000abcd".into(),
        "' OR 1=1 --".into(),
        "../../etc/passwd".into(),
    ]
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The GraphQL documents of the corpus: each names at least one thing that
/// must be refused, so none may change anything.
fn documents(
    rng: &mut Seeded,
    store: &str,
    product: &str,
    basket: &str,
    customer: &str,
) -> Vec<String> {
    let long = "x".repeat(2000);
    let mut docs = Vec::new();
    let ids: Vec<String> = bad_ids(store);
    for _ in 0..60 {
        let name: &&str = rng.pick(BAD_NAMES);
        let name = quoted(name);
        docs.push(format!(
            "mutation {{ createStore(input: {{name: {name}, location: \"Here\"}}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ registerCustomer(input: {{name: {name}, smsNumber: \"+15550100200\"}}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ addProduct(input: {{storeId: \"{store}\", name: {name}, price: \"1.00\"}}) {{ id }} }}"
        ));
        let money = rng.pick(BAD_MONEY);
        docs.push(format!(
            "mutation {{ addProduct(input: {{storeId: \"{store}\", name: \"Pen\", price: {money}}}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ increaseProductPrice(productId: \"{product}\", delta: {money}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ authorizePayment(input: {{customerId: \"{customer}\", amount: {money}}}) {{ id }} }}"
        ));
        let q = rng.pick(BAD_QUANTITIES);
        docs.push(format!(
            "mutation {{ addItem(basketId: \"{basket}\", productId: \"{product}\", quantity: {q}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ removeItem(basketId: \"{basket}\", productId: \"{product}\", quantity: {q}) {{ id }} }}"
        ));
        let id = quoted(rng.pick(&ids).as_str());
        docs.push(format!(
            "mutation {{ startBasket(customerId: {id}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ enableParticipation(storeId: {id}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ removeProduct(productId: {id}) {{ id }} }}"
        ));
        docs.push(format!(
            "mutation {{ checkoutBasket(basketId: \"{basket}\", paymentId: {id}) {{ id }} }}"
        ));
        docs.push(format!("{{ store(id: {id}) {{ id }} }}"));
        docs.push(format!(
            "{{ searchOrders(filter: {{customerId: {id}}}) {{ edges {{ node {{ id }} }} }} }}"
        ));
        let first = rng.pick(&["-1", "101", "1000000", "2147483648", "\"10\""]);
        docs.push(format!(
            "{{ stores(first: {first}) {{ edges {{ node {{ id }} }} }} }}"
        ));
        let status = rng.pick(&["BOGUS", "\"OPEN\"", "open", "1"]);
        docs.push(format!(
            "{{ searchOrders(filter: {{status: {status}}}) {{ edges {{ node {{ id }} }} }} }}"
        ));
    }
    // Documents that do not parse or do not fit the schema.
    for doc in [
        "{",
        "}",
        "query {",
        "{ stores { edges { node { id } } }",
        "mutation { createStore }",
        "{ nope }",
        "{ store }",
        "{ store(id: 1) { id } }",
        "{ stores { nope } }",
        "subscription { events { cursor } } { stores { edges { node { id } } } }",
        "query A { stores { pageInfo { hasNextPage } } } query A { stores { pageInfo { hasNextPage } } }",
        "fragment F on Store { ...F } { stores { edges { node { ...F } } } }",
        "{ __typename @skip }",
        "\u{0}",
        "{ stores(participating: \"yes\") { edges { node { id } } } }",
    ] {
        docs.push(doc.to_owned());
    }
    docs.push(format!("{{ store(id: \"{long}\") {{ id }} }}"));
    docs
}

/// Raw bodies: not JSON, not a GraphQL request, too large.
fn bodies(rng: &mut Seeded) -> Vec<(Vec<u8>, &'static str)> {
    let json = "application/json";
    let mut bodies: Vec<(Vec<u8>, &'static str)> = vec![
        (b"".to_vec(), json),
        (b"{".to_vec(), json),
        (b"[]".to_vec(), json),
        (b"[{\"query\": \"{ stores { pageInfo { hasNextPage } } }\"}]".to_vec(), json),
        (b"1".to_vec(), json),
        (b"\"x\"".to_vec(), json),
        (b"null".to_vec(), json),
        (b"{\"query\": 1}".to_vec(), json),
        (b"{\"query\": null}".to_vec(), json),
        (b"{\"variables\": {}}".to_vec(), json),
        (b"{\"query\": \"{ stores { pageInfo { hasNextPage } } }\", \"variables\": 5}".to_vec(), json),
        (b"{\"query\": \"query($f: Int) { stores(first: $f) { pageInfo { hasNextPage } } }\", \"variables\": {\"f\": \"x\"}}".to_vec(), json),
        (b"{\"query\": \"query($f: Int!) { stores(first: $f) { pageInfo { hasNextPage } } }\"}".to_vec(), json),
        (b"\xff\xfe{\"query\": \"{}\"}".to_vec(), json),
        (b"{\"query\": \"\xc3\x28\"}".to_vec(), json),
        (b"query=%7Bstores%7D".to_vec(), "application/x-www-form-urlencoded"),
        (b"{ stores { pageInfo { hasNextPage } } }".to_vec(), "text/plain"),
        (vec![b'x'; 1 << 20], json),
        (format!("{{\"query\": \"{}\"}}", "a".repeat(1 << 20)).into_bytes(), json),
    ];
    // Random bytes, and valid requests cut short.
    for n in 0..120 {
        let len = 1 + rng.next() as usize % 300;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        bodies.push((bytes, json));
        let request = json!({ "query": "mutation { createStore(input: {name: \"Cut\", location: \"Short\"}) { id } }" }).to_string();
        let cut = n % request.len().max(1);
        bodies.push((request.as_bytes()[..cut].to_vec(), json));
    }
    bodies
}

/// Whether a GraphQL response is a clear refusal: errors, each with a code.
fn coded(body: &Value) -> bool {
    body["errors"].as_array().is_some_and(|errors| {
        !errors.is_empty()
            && errors.iter().all(|e| {
                e["extensions"]["code"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
    })
}

/// Every module's stored events: what the corpus must leave as it was.
async fn events(app: &TestApp) -> Vec<u64> {
    let mut counts = Vec::new();
    for module in common::COMMAND_MODULES.into_iter().chain(["cosec"]) {
        let db = app.db(module).await;
        counts.push(mallbots_platform::event_store::count(&db).await.unwrap());
    }
    counts
}

async fn a_thousand_malformed_inputs_are_refused_clearly_and_change_nothing(backend: Backend) {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let mut app = spawn_app(backend).await;
    let store = shop::store(&app, "Corpus", "Here").await;
    let product = shop::product(&app, &store, "Pen", "2.00").await;
    let customer = shop::customer(&app, "Corpus Customer").await;
    let basket = shop::basket(&app, &customer).await;
    shop::add_item(&app, &basket, &product, 1).await;
    let before = events(&app).await;

    let mut rng = Seeded(0x6d61_6c6c_626f_7473);
    let (mut tried, mut client_errors, mut coded_errors, mut nothing) = (0, 0, 0, 0);
    let (mut ws_closed, mut ws_errors, mut ws_ignored) = (0, 0, 0);
    for doc in documents(&mut rng, &store, &product, &basket, &customer) {
        let response = app
            .http
            .post(format!("{}/graphql", app.base))
            .json(&json!({ "query": doc }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        tried += 1;
        assert!(status < 500, "{status} for {doc}: {body}");
        if (400..500).contains(&status) {
            client_errors += 1;
        }
        // A query of an id that is well formed but names nothing finds
        // nothing; anything else is refused with codes.
        let found_nothing =
            doc.starts_with('{') && body["errors"].is_null() && !body["data"].is_null();
        if found_nothing {
            nothing += 1;
            assert!(!body.to_string().contains("\"id\":\""), "{doc}: {body}");
        } else {
            assert!(coded(&body), "{doc}: {body}");
            coded_errors += 1;
        }
    }
    for (body, content_type) in bodies(&mut rng) {
        let response = app
            .http
            .post(format!("{}/graphql", app.base))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        tried += 1;
        // A 4xx, or (a body that is a request, with a bad document) coded
        // GraphQL errors.
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        if (400..500).contains(&status) {
            client_errors += 1;
        } else {
            assert_eq!(status, 200, "{shown:?}");
            assert!(coded(&answer), "{shown:?}: {answer}");
            coded_errors += 1;
        }
    }

    // Websocket frames: garbage, binary, protocol misuse.
    let frames: Vec<WsFrame> = {
        let mut frames = vec![
            WsFrame::Text("{".into()),
            WsFrame::Text("[]".into()),
            WsFrame::Text("null".into()),
            WsFrame::Text("{\"type\": 5}".into()),
            WsFrame::Text("{\"type\": \"nope\"}".into()),
            WsFrame::Text("{\"type\": \"subscribe\"}".into()),
            WsFrame::Text("{\"type\": \"subscribe\", \"id\": \"1\", \"payload\": {\"query\": \"subscription {\"}}".into()),
            WsFrame::Text("{\"type\": \"subscribe\", \"id\": \"1\", \"payload\": {\"query\": \"subscription { events(after: \\\"x\\\") { cursor } }\"}}".into()),
            WsFrame::Text("{\"type\": \"subscribe\", \"id\": \"1\", \"payload\": {\"query\": \"subscription { orderUpdated(orderId: \\\"nope\\\") { cursor } }\"}}".into()),
            WsFrame::Text("{\"type\": \"connection_init\"}".into()),
            WsFrame::Binary(vec![0xff, 0x00, 0x13].into()),
        ];
        for _ in 0..100 {
            let len = 1 + rng.next() as usize % 200;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            frames.push(WsFrame::Binary(bytes.clone().into()));
            frames.push(WsFrame::Text(
                String::from_utf8_lossy(&bytes).into_owned().into(),
            ));
        }
        frames
    };
    for frame in frames {
        let mut ws = WsClient::open(&app.base, "graphql-transport-ws", None).await;
        ws.send(json!({ "type": "connection_init", "payload": {} }))
            .await;
        assert_eq!(ws.next_message().await["type"], "connection_ack");
        ws.raw().send(frame.clone()).await.unwrap();
        tried += 1;
        // A clear answer: a coded error, or a close that says why; or the
        // frame ignored and the socket still answering a ping.
        ws.send(json!({ "type": "ping" })).await;
        let answer = ws.next_message_or_close().await;
        assert!(
            answer == "pong"
                || answer == "error"
                || answer == "next"
                || answer.starts_with("close 44")
                || ["close 1002", "close 1003", "close 1007", "close 1009"]
                    .contains(&answer.as_str()),
            "{answer} for {frame:?}"
        );
        match answer.as_str() {
            "pong" => ws_ignored += 1,
            "error" | "next" => ws_errors += 1,
            _ => ws_closed += 1,
        }
    }
    // A subscription id used twice closes with 4409.
    let mut ws = WsClient::open(&app.base, "graphql-transport-ws", None).await;
    ws.send(json!({ "type": "connection_init", "payload": {} }))
        .await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    let subscribe = json!({ "type": "subscribe", "id": "same", "payload": {
        "query": "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor } }",
        "variables": { "s": store } } });
    ws.send(subscribe.clone()).await;
    ws.send(subscribe).await;
    assert_eq!(ws.close_code().await, 4409);
    tried += 1;
    ws_closed += 1;

    assert!(tried >= 1000, "only {tried} inputs");
    assert_eq!(events(&app).await, before, "no module stored anything");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "nothing panicked");
    let alive = app
        .data(
            "query($s: ID!) { store(id: $s) { name } }",
            json!({ "s": store }),
        )
        .await;
    assert_eq!(alive["store"]["name"], "Corpus", "the gateway still serves");
    println!(
        "corpus: {tried} inputs; HTTP: {client_errors} 4xx, {coded_errors} coded GraphQL errors, {nothing} well-formed ids that found nothing; websocket: {ws_closed} closed with a code, {ws_errors} coded errors, {ws_ignored} ignored (socket still answering); 0 panics, 0 events stored"
    );
    app.stop().await;
}

on_both_backends!(a_thousand_malformed_inputs_are_refused_clearly_and_change_nothing);

use tokio_tungstenite::tungstenite::Message as WsFrame;
