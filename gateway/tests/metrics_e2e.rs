//! `/metrics` as an operator alerts on it, on both backends: a whole order,
//! a live subscription, a refused request, a poison message and a broken
//! table move each metric of docs/operations.md as they should; once the
//! system is idle again the outboxes are empty and every projection has
//! caught up (lag 0); and the Grafana dashboard in docs/grafana/ queries
//! only metrics that `/metrics` declares.

mod common;

use common::shop::{self, add_item, authorize_payment, basket, checkout, customer, mall};
use common::{Backend, TestApp, metric, spawn_app, wait_until};
use mallbots_contracts::Message;
use mallbots_contracts::stores::CreateStore;
use mallbots_gateway::Part;
use mallbots_platform::{Envelope, Exchange, Outgoing, Payload};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The value of one series now (none: no such sample).
async fn now(app: &TestApp, name: &str, labels: &[&str]) -> Option<f64> {
    metric(&app.metrics().await, name, labels)
}

/// Waits until the series `name{labels}` satisfies `holds`.
async fn until(app: &TestApp, name: &str, labels: &[&str], holds: impl Fn(f64) -> bool) -> f64 {
    wait_until(&format!("{name}{labels:?}"), || async {
        now(app, name, labels).await.filter(|v| holds(*v))
    })
    .await
}

async fn every_metric_moves_with_a_flow(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let stores = ["module=\"stores\""];
    let create_store = [&*format!("command=\"{}\"", CreateStore::TYPE)];

    // A live subscription: a socket and a subscription by field.
    let mall = mall(&app).await;
    let query = "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor kind } }";
    let mut live = app
        .subscribe("graphql-transport-ws", query, json!({ "s": mall.books }))
        .await;
    app.wait_for_subscriptions(1).await;
    let text = app.metrics().await;
    assert_eq!(
        metric(&text, "mallbots_websocket_connections", &[]),
        Some(1.0)
    );
    let field = ["field=\"catalogChanged\""];
    assert_eq!(
        metric(&text, "mallbots_subscriptions_active", &field),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "mallbots_subscription_executions_active", &field),
        Some(1.0),
        "a subscription from now on is served by a shared execution"
    );
    let pushed_before = metric(&text, "mallbots_live_changes_total", &[]).unwrap_or(0.0);

    // A whole order, and a change pushed to the subscriber.
    let ada = customer(&app, "Ada Metrics").await;
    let basket = basket(&app, &ada).await;
    add_item(&app, &basket, &mall.pen, 1).await;
    let payment = authorize_payment(&app, &ada, "12.50").await;
    let order = checkout(&app, &basket, &payment).await;
    shop::order_with_status(&app, &order, "APPROVED").await;
    app.data(
        "mutation Raise($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.10\") { id } }",
        json!({ "p": mall.pen }),
    )
    .await;
    // next_data waits with a deadline.
    while live.next_data().await["catalogChanged"]["kind"] != "PRICE_INCREASED" {}
    until(&app, "mallbots_live_changes_total", &[], |n| {
        n > pushed_before
    })
    .await;

    // A request that never runs.
    let refused = app.graphql("query Broken { nothingHere }", json!({})).await;
    assert!(refused["errors"].is_array(), "{refused}");

    // A poison command: dead-lettered at once, without a retry.
    let dead_before = now(&app, "mallbots_messages_dead_lettered_total", &stores)
        .await
        .unwrap_or(0.0);
    let mut poison = Envelope::first(Outgoing {
        message_type: "poison",
        version: 1,
        payload: Payload::of(&json!({ "nothing": "known" })).unwrap(),
    });
    poison.message_type = "stores.Poison".to_owned();
    app.broker()
        .publish(Exchange::Commands, "stores.Poison", poison.to_wire())
        .await
        .unwrap();
    until(
        &app,
        "mallbots_messages_dead_lettered_total",
        &stores,
        |n| n == dead_before + 1.0,
    )
    .await;
    let dead_letter = ["queue=\"stores.commands\"", "state=\"dead\""];
    until(&app, "mallbots_dead_letters", &dead_letter, |n| n == 1.0).await;

    // A table gone from under the customers module: each attempt fails,
    // is retried, and after the last one the command is dead-lettered and
    // its sender told.
    let customers = ["module=\"customers\""];
    let db = app.db("customers").await;
    sea_orm::ConnectionTrait::execute_unprepared(&db, "ALTER TABLE inbox RENAME TO inbox_away")
        .await
        .unwrap();
    let failed = app
        .graphql(
            "mutation { registerCustomer(input: {name: \"Bea\", smsNumber: \"+1 555 0100 300\"}) { id } }",
            json!({}),
        )
        .await;
    assert!(failed["errors"].is_array(), "{failed}");
    let retried = until(&app, "mallbots_messages_retried_total", &customers, |n| {
        n >= 1.0
    })
    .await;
    assert_eq!(retried, 4.0, "every attempt but the last is retried");
    let failed_attempts = now(&app, "mallbots_messages_failed_total", &customers).await;
    assert_eq!(failed_attempts, Some(5.0));
    sea_orm::ConnectionTrait::execute_unprepared(&db, "ALTER TABLE inbox_away RENAME TO inbox")
        .await
        .unwrap();

    // Idle again: nothing waits in an outbox, every read model caught up.
    for module in [
        "stores",
        "customers",
        "baskets",
        "ordering",
        "payments",
        "depot",
    ] {
        let labels = [&*format!("module=\"{module}\"")];
        until(&app, "mallbots_outbox_backlog", &labels, |n| n == 0.0).await;
        until(
            &app,
            "mallbots_outbox_oldest_unsent_seconds",
            &labels,
            |n| n == 0.0,
        )
        .await;
    }
    for (reader, source) in [
        ("search", "stores"),
        ("search", "ordering"),
        ("baskets", "stores"),
    ] {
        let labels = [
            &*format!("reader=\"{reader}\""),
            &*format!("source=\"{source}\""),
        ];
        until(&app, "mallbots_projection_lag_positions", &labels, |n| {
            n == 0.0
        })
        .await;
        until(&app, "mallbots_projection_lag_seconds", &labels, |n| {
            n == 0.0
        })
        .await;
    }

    let text = app.metrics().await;
    let at_least_one = |name: &str, labels: &[&str]| {
        let value = metric(&text, name, labels);
        assert!(
            value.is_some_and(|n| n >= 1.0),
            "{name}{labels:?} = {value:?}"
        );
    };
    let handled_create = [
        "module=\"stores\"",
        &*format!("message_type=\"{}\"", CreateStore::TYPE),
    ];
    at_least_one("mallbots_messages_handled_total", &handled_create);
    at_least_one("mallbots_message_handling_seconds_count", &handled_create);
    at_least_one("mallbots_messages_handled_total", &["module=\"cosec\""]);
    at_least_one("mallbots_messages_handled_total", &["module=\"search\""]);
    at_least_one("mallbots_messages_failed_total", &stores);
    at_least_one("mallbots_consumers_running", &["queue=\"stores.commands\""]);
    at_least_one("mallbots_broker_connected", &[]);
    at_least_one("mallbots_commands_sent_total", &create_store);
    at_least_one("mallbots_command_round_trip_seconds_count", &create_store);
    at_least_one(
        "mallbots_graphql_request_seconds_count",
        &["operation=\"Raise\"", "outcome=\"ok\""],
    );
    at_least_one(
        "mallbots_graphql_request_seconds_count",
        // A request that never ran gives its name no place of its own.
        &["operation=\"other\"", "outcome=\"refused\""],
    );
    at_least_one(
        "mallbots_graphql_request_seconds_count",
        &["operation=\"anonymous\"", "outcome=\"error\""],
    );
    at_least_one("mallbots_graphql_documents_total", &["from=\"parsed\""]);
    at_least_one("mallbots_graphql_documents_total", &["from=\"kept\""]);
    dashboard_queries_only_declared_metrics(&text);

    live.close().await;
    until(&app, "mallbots_websocket_connections", &[], |n| n == 0.0).await;
    until(&app, "mallbots_subscriptions_active", &field, |n| n == 0.0).await;
    let executions = "mallbots_subscription_executions_active";
    until(&app, executions, &field, |n| n == 0.0).await;
    app.stop().await;
}

on_both_backends!(every_metric_moves_with_a_flow);

/// Every metric a panel of the dashboard queries is one `/metrics` declares
/// (`# TYPE`), and every metric `/metrics` declares is on some panel.
fn dashboard_queries_only_declared_metrics(text: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/mallbots.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expr");
            queried.extend(metric_names(expr));
        }
    }
    let declared: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let family = |name: &str| {
        // A counter's samples end in _total, a histogram's in
        // _bucket/_sum/_count; `# TYPE` names the family.
        ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| declared.contains(*base))
            .unwrap_or(name)
            .to_owned()
    };
    let queried: BTreeSet<String> = queried.iter().map(|n| family(n)).collect();
    let undeclared: Vec<_> = queried.difference(&declared).collect();
    assert!(
        undeclared.is_empty(),
        "the dashboard queries {undeclared:?}, not in /metrics"
    );
    let unshown: Vec<_> = declared.difference(&queried).collect();
    assert!(unshown.is_empty(), "no panel shows {unshown:?}");
}

/// The `mallbots_*` names in a PromQL expression.
fn metric_names(expr: &str) -> impl Iterator<Item = String> + '_ {
    expr.match_indices("mallbots_").map(move |(at, _)| {
        expr[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    })
}

/// A command nobody handles (no module runs here) times out, and is
/// counted as such, with its round trip.
#[tokio::test]
async fn a_command_timeout_is_counted() {
    let mut settings = common::settings(Backend::Real).await;
    settings.command_timeout_ms = 300;
    let mut app = common::start_parts(settings, &[Part::Gateway]).await;
    let answer = app
        .graphql(
            "mutation { createStore(input: {name: \"Nobody\", location: \"Home\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "TIMEOUT",
        "{answer}"
    );
    let text = app.metrics().await;
    let create_store = [&*format!("command=\"{}\"", CreateStore::TYPE)];
    assert_eq!(
        metric(&text, "mallbots_commands_timed_out_total", &create_store),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "mallbots_command_round_trip_seconds_count",
            &create_store
        ),
        Some(1.0)
    );
    app.stop().await;
}
