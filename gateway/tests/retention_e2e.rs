//! Retention through the front door, on both backends: with the change log
//! kept one second, a cursor whose following changes were pruned is refused
//! with CURSOR_EXPIRED (never a silent gap), a new subscription still works,
//! and the archive of integration events is kept whole.

mod common;

use common::raisers::RAISE;
use common::{Backend, TestApp, wait_until};
use serde_json::{Value, json};

const FOLLOW: &str = "subscription($s: ID!, $after: String) {
  catalogChanged(storeId: $s, after: $after) { cursor kind product { price } } }";

/// The cursor of the next price change pushed to `ws`.
async fn next_raise(ws: &mut common::WsClient) -> String {
    loop {
        let data = ws.next_data().await;
        let change = &data["catalogChanged"];
        if change["kind"] == "PRICE_INCREASED" {
            return change["cursor"].as_str().expect("a cursor").to_owned();
        }
    }
}

/// The first thing a subscription from `after` is sent.
async fn first_message(app: &TestApp, store: &str, after: &str) -> Value {
    let mut ws = app
        .subscribe(
            "graphql-transport-ws",
            FOLLOW,
            json!({ "s": store, "after": after }),
        )
        .await;
    let message = ws.next_message().await;
    ws.close().await;
    message
}

async fn a_pruned_cursor_is_refused_with_cursor_expired(backend: Backend) {
    let mut settings = common::settings(backend).await;
    settings.change_log_retention_secs = 1;
    let mut app = common::start_with(settings).await;
    let (store, products, mut ws) = common::followed_catalog(&app, "Fleeting Goods", 1).await;
    let product = &products[0];
    app.data(RAISE, json!({ "p": product })).await;
    let cursor = next_raise(&mut ws).await;
    // A change after the cursor, which the retention will prune.
    app.data(RAISE, json!({ "p": product })).await;
    next_raise(&mut ws).await;

    let refused = wait_until("the change after the cursor to be pruned", || async {
        let message = first_message(&app, &store, &cursor).await;
        let error = message["payload"]["errors"].get(0)?.clone();
        Some(error)
    })
    .await;
    assert_eq!(refused["extensions"]["code"], "CURSOR_EXPIRED", "{refused}");
    assert_eq!(refused["extensions"]["cursor"], cursor.as_str());

    // Starting over works: the live subscription still gets new changes.
    app.data(RAISE, json!({ "p": product })).await;
    let latest = next_raise(&mut ws).await;
    assert!(latest.parse::<i64>().unwrap() > cursor.parse::<i64>().unwrap());

    // The archive (the raw event feed a rebuild replays) is kept whole.
    let mut events = app
        .subscribe(
            "graphql-transport-ws",
            "subscription { events(after: \"0\") { cursor type } }",
            json!({}),
        )
        .await;
    let first = events.next_data().await;
    assert_eq!(
        first["events"]["type"], "stores.Store.StoreCreated",
        "{first}"
    );
    app.stop().await;
}

on_both_backends!(a_pruned_cursor_is_refused_with_cursor_expired);
