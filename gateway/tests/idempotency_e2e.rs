//! `Idempotency-Key`: a mutation retried under one key is applied once, and
//! every retry gets the first attempt's answer; another request under the
//! same key is refused; on both backends.

mod common;

use common::{Backend, KEY_REUSED, TestApp, assert_refused, shop};
use serde_json::{Value, json};

const CREATE: &str = "mutation($n: String!) {
  createStore(input: {name: $n, location: \"Retry Row\"}) { id store { name } } }";
const RAISE: &str = "mutation($p: ID!) {
  increaseProductPrice(productId: $p, delta: \"0.50\") { id consistencyToken product { price } } }";

async fn keyed(app: &TestApp, key: &str, query: &str, variables: Value) -> (u16, Value) {
    app.graphql_with(&[("idempotency-key", key)], query, variables)
        .await
}

async fn stores_named(app: &TestApp, name: &str) -> usize {
    let all = app
        .data(
            "{ stores(first: 100) { edges { node { name } } } }",
            json!({}),
        )
        .await;
    all["stores"]["edges"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["node"]["name"] == name)
        .count()
}

async fn a_retried_mutation_is_applied_once(backend: Backend) {
    let mut app = common::spawn_app(backend).await;

    // A creation: the same store, not ten.
    let (status, first) = keyed(&app, "create-1", CREATE, json!({ "n": "Once Only" })).await;
    assert_eq!(status, 200, "{first}");
    let id = first["data"]["createStore"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    for _ in 0..9 {
        let (_, again) = keyed(&app, "create-1", CREATE, json!({ "n": "Once Only" })).await;
        assert_eq!(again["data"]["createStore"]["id"], id.as_str(), "{again}");
    }
    assert_eq!(stores_named(&app, "Once Only").await, 1);
    // Another key is another request.
    let (_, other) = keyed(&app, "create-2", CREATE, json!({ "n": "Once Only" })).await;
    assert_ne!(other["data"]["createStore"]["id"], id.as_str());
    assert_eq!(stores_named(&app, "Once Only").await, 2);

    // A change: raised once, and every retry answered like the first.
    let product = shop::product(&app, &id, "Boomerang", "1.00").await;
    let (_, first) = keyed(&app, "raise-1", RAISE, json!({ "p": product })).await;
    let raised = &first["data"]["increaseProductPrice"];
    assert!(raised["consistencyToken"].is_string(), "{first}");
    for _ in 0..9 {
        let (_, again) = keyed(&app, "raise-1", RAISE, json!({ "p": product })).await;
        let again = &again["data"]["increaseProductPrice"];
        assert_eq!(again["id"], raised["id"]);
        assert_eq!(
            again["consistencyToken"], raised["consistencyToken"],
            "the first reply"
        );
        assert_eq!(again["product"]["price"], "1.50", "applied once");
    }
    // The same key, field and another request: refused, and not applied.
    let yoyo = shop::product(&app, &id, "Yoyo", "1.00").await;
    let (_, other) = keyed(&app, "raise-1", RAISE, json!({ "p": yoyo })).await;
    assert_refused(&other, "BAD_USER_INPUT", KEY_REUSED);
    let (_, renamed) = keyed(&app, "create-1", CREATE, json!({ "n": "Renamed" })).await;
    assert_refused(&renamed, "BAD_USER_INPUT", KEY_REUSED);
    assert_eq!(stores_named(&app, "Renamed").await, 0);
    let prices = app
        .data(
            "query($a: ID!, $b: ID!) { a: product(id: $a) { price } b: product(id: $b) { price } }",
            json!({ "a": product, "b": yoyo }),
        )
        .await;
    assert_eq!(
        prices,
        json!({ "a": { "price": "1.50" }, "b": { "price": "1.00" } })
    );

    // A refusal is kept too: the retry is refused the same way, not applied.
    let missing = "00000000-0000-7000-8000-000000000000";
    let (_, refused) = keyed(&app, "raise-2", RAISE, json!({ "p": missing })).await;
    let (_, again) = keyed(&app, "raise-2", RAISE, json!({ "p": missing })).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
    assert_eq!(again["errors"], refused["errors"]);

    // A key that cannot be one is refused before anything runs.
    for bad in ["", "has space", &"k".repeat(256)] {
        let (status, body) = keyed(&app, bad, CREATE, json!({ "n": "Never" })).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }
    assert_eq!(stores_named(&app, "Never").await, 0);
    app.stop().await;
}

on_both_backends!(a_retried_mutation_is_applied_once);

/// Two requests raced under one key (while the first is in flight, both wait
/// on one command id): one is applied, every send of it is answered with its
/// reply, and every send of the other is refused, never answered with the
/// winner's reply as if it had been applied.
async fn requests_raced_under_one_key_get_their_own_answers(backend: Backend) {
    let mut app = common::spawn_app(backend).await;
    for round in 0..3 {
        let key = format!("race-{round}");
        let names = [format!("Racer A{round}"), format!("Racer B{round}")];
        let sends = (0..16).map(|n| {
            let (app, key, name) = (&app, key.clone(), names[n % 2].clone());
            async move {
                let (_, body) = keyed(app, &key, CREATE, json!({ "n": name })).await;
                (name, body)
            }
        });
        let answers = futures_util::future::join_all(sends).await;
        let applied: Vec<&String> = names
            .iter()
            .filter(|n| answers_named(&answers, n))
            .collect();
        assert_eq!(applied.len(), 1, "one request applied: {answers:?}");
        let winner = applied[0];
        assert_eq!(stores_named(&app, winner).await, 1);
        for (name, body) in &answers {
            if name == winner {
                assert_eq!(
                    body["data"]["createStore"]["store"]["name"],
                    name.as_str(),
                    "{body}"
                );
            } else {
                assert_refused(body, "BAD_USER_INPUT", KEY_REUSED);
                assert_eq!(stores_named(&app, name).await, 0);
            }
        }
    }
    app.stop().await;
}

/// Whether any answer says `name`'s store was created.
fn answers_named(answers: &[(String, Value)], name: &str) -> bool {
    answers
        .iter()
        .any(|(_, body)| body["data"]["createStore"]["store"]["name"] == name)
}

on_both_backends!(requests_raced_under_one_key_get_their_own_answers);
