//! Query limits, refused before anything runs with QUERY_TOO_COMPLEX and the
//! limit: depth, complexity (a list weighted by its `first`), aliases and
//! directives; an ordinary query still runs. And every request error has a
//! code: a document that does not parse, one that does not validate, a value
//! of the wrong shape; an internal failure says only INTERNAL and an error
//! id, never what failed inside.

mod common;

use common::{Backend, TestApp, spawn_app};
use serde_json::{Value, json};

/// Refused over one of `limits` (the first check that trips says which).
async fn refused(app: &TestApp, query: &str, limits: &[usize]) -> Value {
    let response = app.graphql(query, json!({})).await;
    let error = &response["errors"][0];
    assert_eq!(
        error["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{response}"
    );
    let limit = error["extensions"]["limit"].as_u64().expect("a limit");
    assert!(limits.contains(&(limit as usize)), "{response}");
    assert!(response["data"].is_null(), "nothing ran: {response}");
    response
}

#[tokio::test]
async fn queries_over_a_limit_are_refused_before_they_run() {
    let mut app = spawn_app(Backend::Embedded).await;

    // 50 deep: past the nesting limit (32).
    let deep = format!(
        "{{ stores {{ edges {{ node {{ {} id {} }} }} }} }}",
        "catalog { edges { node { store { ".repeat(12),
        "} } } } ".repeat(12)
    );
    refused(&app, &deep, &[32]).await;
    // 100 deep: past the parser's own limit (64), the same refusal.
    let deeper = format!(
        "{{ stores {{ edges {{ node {{ {} id {} }} }} }} }}",
        "catalog { edges { node { store { ".repeat(25),
        "} } } } ".repeat(25)
    );
    refused(&app, &deeper, &[32]).await;
    // 11 deep, cheap: the depth limit (10).
    let eleven = "{ stores { edges { node { catalog(first: 1) { edges { node { store {
        catalog(first: 1) { edges { node { name } } } } } } } } } } }";
    refused(&app, eleven, &[10]).await;
    // The depth-11 nesting of catalogs, each a page of 100: too deep and
    // too costly, whichever is checked first.
    let nested =
        "{ product(id: \"00000000-0000-7000-8000-000000000000\") { store { catalog(first: 100) {
        edges { node { store { catalog(first: 100) { edges { node { name } } } } } } } } } }";
    refused(&app, nested, &[10, 5000]).await;
    // One huge page: its `first` weighs it (limit 5000).
    refused(
        &app,
        "{ stores(first: 1000000) { edges { node { id } } } }",
        &[5000],
    )
    .await;
    // 1,000 aliases (limit 30).
    let aliases: String = (0..1000).map(|n| format!("a{n}: __typename ")).collect();
    refused(&app, &format!("{{ {aliases} }}"), &[30]).await;
    // A kilobyte of fragments, each spreading the next twice, ending in
    // `__typename`: 2^30 fields once expanded (limit 5000), refused as it
    // is parsed, over HTTP and on a websocket alike.
    let mut doubling = "query { ...F0 } ".to_owned();
    for i in 0..30 {
        doubling.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }} ",
            n = i + 1
        ));
    }
    doubling.push_str("fragment F30 on Query { __typename }");
    assert!(doubling.len() < 1300);
    refused(&app, &doubling, &[5000]).await;
    let mut ws = app
        .subscribe(
            "graphql-transport-ws",
            &doubling
                .replacen("query", "subscription", 1)
                .replace("on Query", "on Subscription"),
            json!({}),
        )
        .await;
    let answer = ws.next_message().await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(
        answer["payload"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{answer}"
    );
    // Too many directives on one field (limit 5).
    let directives = "@include(if: true) ".repeat(6);
    refused(&app, &format!("{{ __typename {directives} }}"), &[5]).await;

    // An ordinary query runs.
    let ordinary = app
        .data(
            "{ stores(first: 100) { edges { node { id name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(ordinary["stores"]["edges"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn every_request_error_has_a_code() {
    let mut app = spawn_app(Backend::Embedded).await;
    let code = |response: &Value| response["errors"][0]["extensions"]["code"].clone();
    let cases = [
        ("{ stores { ", json!({}), "GRAPHQL_PARSE_FAILED"),
        (
            "query { nothingHere }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "query($x: Int) { stores { edges { cursor } } }",
            json!({}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ stores(first: \"many\") { edges { cursor } } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        // Ids only in their canonical form.
        (
            "{ store(id: \"{0194b2a4-0000-7000-8000-000000000000}\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ store(id: \"urn:uuid:0194b2a4-0000-7000-8000-000000000000\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "{ store(id: \"0194B2A4-0000-7000-8000-00000000000A\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($p: Decimal!) { addProduct(input: {storeId: \"00000000-0000-7000-8000-000000000000\", name: \"N\", price: $p}) { id } }",
            json!({ "p": "not money" }),
            "BAD_USER_INPUT",
        ),
    ];
    for (query, variables, expected) in cases {
        let response = app.graphql(query, variables).await;
        assert_eq!(code(&response), expected, "{query}: {response}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_internal_failure_leaks_nothing_but_an_error_id() {
    use sea_orm::ConnectionTrait;

    let mut app = spawn_app(Backend::Embedded).await;
    // Damage no API allows: the stores read model's table is gone.
    app.stores_db()
        .await
        .execute_unprepared("DROP TABLE stores")
        .await
        .unwrap();
    let response = app
        .graphql("{ stores { edges { cursor } } }", json!({}))
        .await;
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{response}");
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.starts_with("internal error (error id "),
        "{message}"
    );
    let text = response.to_string().to_lowercase();
    for leak in ["sql", "table", "no such", "sqlx", "sea_orm", "/", "dberr"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {response}");
    }
    app.stop().await;
}
