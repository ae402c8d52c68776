//! What a websocket client may hold open, per the graphql-transport-ws
//! protocol: no `connection_init` in time → 4408; a subscribe before it →
//! 4401; a subscription id already in use → 4409; a message outside the
//! protocol → 4400; one subscription past the
//! limit is refused on its own, and the others go on; a subscription the
//! client completed hears nothing more; a legacy `start` is served too.

mod common;

use common::{Backend, TestApp, WsClient, shop};
use serde_json::json;

const PROTOCOL: &str = "graphql-transport-ws";
const LIMIT: usize = 3;

async fn app() -> TestApp {
    let mut settings = common::settings(Backend::Embedded).await;
    settings.ws_init_timeout_ms = 300;
    settings.ws_max_subscriptions = LIMIT;
    common::start_with(settings).await
}

fn subscribe(id: &str, store: &str) -> serde_json::Value {
    json!({
        "type": "subscribe",
        "id": id,
        "payload": {
            "query": "subscription($s: ID!) { catalogChanged(storeId: $s) { kind product { name } } }",
            "variables": { "s": store },
        },
    })
}

/// The same subscription, replaying from the start of the change log (so
/// not shared with others).
fn replaying(id: &str, store: &str) -> serde_json::Value {
    let mut replaying = subscribe(id, store);
    replaying["payload"]["variables"]["after"] = json!("0");
    replaying
}

/// On one socket, `first` is subscribed and served, then `second` closes
/// the socket with `code`.
async fn second_subscribe_closes(first: &str, second: &str, code: u16) {
    let mut app = app().await;
    let store = shop::store(&app, "Closing", "C").await;
    let mut ws = initialized(&app).await;
    ws.send(subscribe(first, &store)).await;
    app.wait_for_subscriptions(1).await;
    ws.send(subscribe(second, &store)).await;
    assert_eq!(ws.close_code().await, code);
    app.stop().await;
}

async fn initialized(app: &TestApp) -> WsClient {
    let mut ws = WsClient::open(&app.base, PROTOCOL, None).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    ws
}

#[tokio::test]
async fn a_socket_that_never_initializes_is_closed_4408() {
    let mut app = app().await;
    let mut ws = WsClient::open(&app.base, PROTOCOL, None).await;
    assert_eq!(ws.close_code().await, 4408);
    app.stop().await;
}

#[tokio::test]
async fn a_subscribe_before_init_is_closed_4401() {
    let mut app = app().await;
    let mut ws = WsClient::open(&app.base, PROTOCOL, None).await;
    ws.send(subscribe("1", "00000000-0000-7000-8000-000000000000"))
        .await;
    assert_eq!(ws.close_code().await, 4401);
    app.stop().await;
}

#[tokio::test]
async fn a_subscription_id_in_use_is_closed_4409() {
    second_subscribe_closes("same", "same", 4409).await;
}

/// An id completed and subscribed again at once is in use once, whichever
/// execution serves it: a third subscribe under it is still 4409 (found by
/// a probe: the first `complete` freed the second subscription's id).
#[tokio::test]
async fn an_id_reused_at_once_after_complete_is_still_in_use() {
    let mut app = app().await;
    let store = shop::store(&app, "Reused", "R").await;
    for again in [subscribe("x", &store), replaying("x", &store)] {
        let mut ws = initialized(&app).await;
        ws.send(subscribe("x", &store)).await;
        app.wait_for_shared("catalogChanged", 1.0, 1.0).await;
        ws.send(json!({ "type": "complete", "id": "x" })).await;
        ws.send(again).await;
        ws.send(subscribe("x", &store)).await;
        assert_eq!(ws.close_code().await, 4409);
        // Nothing is left running for the closed socket.
        app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    }
    app.stop().await;
}

/// A subscribe the guard refuses (too complex) frees nothing: the same id
/// subscribed again at once, and accepted, is in use (found by a probe: the
/// refusal, written after the second subscribe was taken, freed its id).
#[tokio::test]
async fn an_id_refused_then_taken_at_once_is_in_use() {
    let mut app = app().await;
    let store = shop::store(&app, "Refused", "R").await;
    let mut ws = initialized(&app).await;
    let aliases: Vec<String> = (0..31).map(|n| format!("a{n}: cursor")).collect();
    let mut refused = subscribe("z", &store);
    refused["payload"]["query"] = json!(format!(
        "subscription($s: ID!) {{ catalogChanged(storeId: $s) {{ {} }} }}",
        aliases.join(" ")
    ));
    ws.send(refused).await;
    ws.send(replaying("z", &store)).await;
    let error = ws.next_message().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "QUERY_TOO_COMPLEX"
    );
    ws.send(subscribe("z", &store)).await;
    assert_eq!(ws.close_code().await, 4409);
    app.stop().await;
}

/// Every message of a subscription carries its id: one over 128 bytes
/// closes the socket with 4400; one of 128 is served.
#[tokio::test]
async fn a_subscription_id_over_128_bytes_is_closed_4400() {
    second_subscribe_closes(&"i".repeat(128), &"i".repeat(129), 4400).await;
}

/// A message that is not one of graphql-transport-ws's (not JSON, or of
/// no type it has) closes the socket with 4400, as the protocol says.
#[tokio::test]
async fn a_message_outside_the_protocol_is_closed_4400() {
    let mut app = app().await;
    for message in [json!({ "type": "bogus" }), json!("not a message")] {
        let mut ws = initialized(&app).await;
        ws.send(message).await;
        assert_eq!(ws.close_code().await, 4400);
    }
    app.stop().await;
}

#[tokio::test]
async fn one_subscription_past_the_limit_is_refused_and_the_others_go_on() {
    let mut app = app().await;
    let store = shop::store(&app, "Crowded", "C").await;
    let mut ws = initialized(&app).await;
    for n in 0..LIMIT {
        ws.send(subscribe(&n.to_string(), &store)).await;
    }
    app.wait_for_subscriptions(LIMIT as i64).await;
    ws.send(subscribe("one-too-many", &store)).await;
    let refused = ws.next_message().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "one-too-many");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(refused["payload"][0]["extensions"]["limit"], LIMIT);

    // The others still push; and once one completes, a new one fits.
    shop::product(&app, &store, "Still here", "1.00").await;
    let mut pushed = std::collections::BTreeSet::new();
    while pushed.len() < LIMIT {
        let message = ws.next_message().await;
        assert_eq!(message["type"], "next", "{message}");
        pushed.insert(message["id"].as_str().expect("an id").to_owned());
    }
    ws.send(json!({ "type": "complete", "id": "0" })).await;
    ws.send(subscribe("fits-now", &store)).await;
    // Nothing answers the complete, so the client's small frames can sit
    // in its TCP stack for a delayed ACK: the change waits until it joined.
    app.wait_for_shared("catalogChanged", 3.0, 1.0).await;
    shop::product(&app, &store, "Again", "2.00").await;
    let mut again = std::collections::BTreeSet::new();
    while again.len() < LIMIT {
        let message = ws.next_message().await;
        assert_eq!(message["type"], "next", "{message}");
        again.insert(message["id"].as_str().expect("an id").to_owned());
    }
    assert!(again.contains("fits-now"), "{again:?}");
    assert!(!again.contains("0"), "{again:?}");
    app.stop().await;
}

/// A subscription selects exactly one top-level field, directly: one with
/// several (each a live stream the per-socket limit would not count, even
/// the same field twice under one name) is refused on its own, whatever its
/// fields' names or fragments, as is one field through a fragment, and the
/// socket goes on serving.
#[tokio::test]
async fn a_subscription_of_several_top_level_fields_is_refused() {
    let mut app = app().await;
    let store = shop::store(&app, "Many Heads", "C").await;
    let mut ws = initialized(&app).await;
    let mut refused = async |id: &str, query: &str, says: &str| {
        ws.send(json!({
            "type": "subscribe",
            "id": id,
            "payload": { "query": query, "variables": { "s": store } },
        }))
        .await;
        let refused = ws.next_message().await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["id"], id);
        let error = &refused["payload"][0];
        let code = &error["extensions"]["code"];
        assert_eq!(code, "GRAPHQL_VALIDATION_FAILED", "{error}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{error}");
    };
    for (id, query) in [
        (
            "aliased",
            "subscription($s: ID!) { a: catalogChanged(storeId: $s) { kind } b: catalogChanged(storeId: $s) { kind } }",
        ),
        (
            "unaliased",
            "subscription($s: ID!) { catalogChanged(storeId: $s) { kind } catalogChanged(storeId: $s) { product { name } } }",
        ),
        (
            "spread",
            "subscription($s: ID!) { ...Twice } fragment Twice on Subscription { catalogChanged(storeId: $s) { kind } again: catalogChanged(storeId: $s) { kind } }",
        ),
    ] {
        refused(id, query, "selects 2").await;
    }
    // One field, through a fragment: async-graphql would run nothing and
    // complete at once; it is refused, saying why.
    for (id, query) in [
        (
            "named",
            "subscription($s: ID!) { ...One } fragment One on Subscription { catalogChanged(storeId: $s) { kind } }",
        ),
        (
            "inline",
            "subscription($s: ID!) { ... on Subscription { catalogChanged(storeId: $s) { kind } } }",
        ),
    ] {
        refused(id, query, "not through a fragment").await;
    }
    // Nothing of them runs; a subscription of one field does.
    ws.send(subscribe("one", &store)).await;
    app.wait_for_subscriptions(1).await;
    shop::product(&app, &store, "Single", "1.00").await;
    let pushed = ws.next_message().await;
    assert_eq!(pushed["type"], "next", "{pushed}");
    assert_eq!(pushed["id"], "one");
    app.stop().await;
}

/// Python gql's default client misreads the lower-case subprotocol header,
/// falls back, and sends the legacy `start` on a graphql-transport-ws
/// socket: it is served there.
#[tokio::test]
async fn a_legacy_start_on_a_graphql_transport_ws_socket_is_served() {
    let mut app = app().await;
    let store = shop::store(&app, "Old habits", "O").await;
    let mut ws = initialized(&app).await;
    let mut start = subscribe("legacy", &store);
    start["type"] = json!("start");
    ws.send(start).await;
    app.wait_for_subscriptions(1).await;
    shop::product(&app, &store, "Served", "1.00").await;
    let pushed = ws.next_message().await;
    assert_eq!(pushed["id"], "legacy", "{pushed}");
    assert_eq!(
        pushed["payload"]["data"]["catalogChanged"]["product"]["name"], "Served",
        "{pushed}"
    );
    app.stop().await;
}

/// graphql-transport-ws sends nothing more for a subscription the client
/// completed, not even `complete`, whether a shared execution or one of its
/// own served it; the legacy protocol answers a `stop` with `complete`, as
/// its servers did.
#[tokio::test]
async fn a_completed_subscription_hears_nothing_more() {
    let mut app = app().await;
    let store = shop::store(&app, "Hushed", "H").await;
    let mut ws = initialized(&app).await;
    // A cursor written into the document: executed on its own.
    let own = json!({ "type": "subscribe", "id": "own", "payload": {
        "query": "subscription($s: ID!) { catalogChanged(storeId: $s, after: \"0\") { kind } }",
        "variables": { "s": store } } });
    ws.send(subscribe("shared", &store)).await;
    ws.send(own).await;
    ws.send(subscribe("witness", &store)).await;
    app.wait_for_shared("catalogChanged", 3.0, 1.0).await;
    for id in ["shared", "own"] {
        ws.send(json!({ "type": "complete", "id": id })).await;
    }
    app.wait_for_shared("catalogChanged", 1.0, 1.0).await;
    shop::product(&app, &store, "Bell", "1.00").await;
    // An answer to either complete would have come before this.
    let message = ws.next_message().await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], "witness", "{message}");

    let query = "subscription($s: ID!) { catalogChanged(storeId: $s) { kind } }";
    let mut legacy = app
        .subscribe("graphql-ws", query, json!({ "s": store }))
        .await;
    app.wait_for_shared("catalogChanged", 2.0, 2.0).await;
    legacy.send(json!({ "type": "stop", "id": "1" })).await;
    assert_eq!(
        legacy.next_message().await,
        json!({ "type": "complete", "id": "1" })
    );
    app.stop().await;
}
