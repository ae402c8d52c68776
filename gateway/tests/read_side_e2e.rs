//! The read side end to end, through the GraphQL API: the search read model
//! and its filters, notifications, resumable subscriptions (also across
//! gateway replicas), slow subscribers, read-your-writes, and rebuilding.

mod common;

use common::shop::*;
use common::{Backend, TestApp, WsClient, spawn_app, wait_until};
use mallbots_gateway::Part;
use serde_json::{Value, json};
use uuid::Uuid;

const SEARCH: &str = "query($f: OrderSearchFilter, $first: Int, $after: String) {
  searchOrders(filter: $f, first: $first, after: $after) {
    edges { cursor node { id status total customerName customerSmsNumber createdAt updatedAt
      items { storeId storeName productId productName price quantity } } }
    pageInfo { hasNextPage endCursor }
  }
}";

const CUSTOMER_ORDERS: &str = "subscription($c: ID!, $after: String) {
  customerOrders(customerId: $c, after: $after) { cursor order { id status } }
}";

/// Ids of the orders `filter` finds (all pages).
async fn found(app: &TestApp, filter: Value) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .data(SEARCH, json!({ "f": filter, "first": 7, "after": after }))
            .await;
        let conn = &page["searchOrders"];
        for edge in conn["edges"].as_array().unwrap() {
            ids.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = conn["pageInfo"]["endCursor"].clone();
    }
}

/// Basket, items, payment for the exact total, checkout: the order id.
async fn order_of(app: &TestApp, customer: &str, items: &[(&str, i32)], total: &str) -> String {
    let basket = basket(app, customer).await;
    for (product, quantity) in items {
        add_item(app, &basket, product, *quantity).await;
    }
    let payment = authorize_payment(app, customer, total).await;
    checkout(app, &basket, &payment).await
}

/// Waits until search shows `order` with `status`; returns the search node.
async fn searched(app: &TestApp, order: &str, status: &str) -> Value {
    wait_until(&format!("search to show {order} {status}"), || async {
        let page = app.data(SEARCH, json!({ "f": {}, "first": 100 })).await;
        page["searchOrders"]["edges"]
            .as_array()?
            .iter()
            .map(|e| e["node"].clone())
            .find(|n| n["id"] == order && n["status"] == status)
    })
    .await
}

async fn every_filter_finds_exactly_its_orders(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let (ann, ben, cat) = (
        customer(&app, "Ann").await,
        customer(&app, "Ben").await,
        customer(&app, "Cat").await,
    );
    let one = order_of(&app, &ann, &[(&mall.pen, 1)], "12.50").await;
    let first = searched(&app, &one, "APPROVED").await;
    let two = order_of(&app, &ben, &[(&mall.tea, 2)], "14.00").await;
    let second = searched(&app, &two, "APPROVED").await;
    let three = order_of(&app, &ben, &[(&mall.notebook, 1), (&mall.tea, 1)], "11.25").await;
    app.data(
        "mutation($c: ID!) { disableCustomer(customerId: $c) { id } }",
        json!({ "c": cat }),
    )
    .await;
    let four = order_of(&app, &cat, &[(&mall.tea, 1)], "7.00").await;
    searched(&app, &three, "APPROVED").await;
    searched(&app, &four, "REJECTED").await;
    assert_eq!(first["customerName"], "Ann");
    assert_eq!(first["items"][0]["storeName"], "Waldorf Books");
    assert_eq!(first["items"][0]["productName"], "Fountain pen");
    assert_eq!(first["total"], "12.50");

    let cases = [
        (json!({}), vec![&one, &two, &three, &four]),
        (json!({ "customerId": ben }), vec![&two, &three]),
        (
            json!({ "createdAfter": second["createdAt"] }),
            vec![&two, &three, &four],
        ),
        (json!({ "createdBefore": second["createdAt"] }), vec![&one]),
        (json!({ "storeIds": [mall.books] }), vec![&one, &three]),
        (
            json!({ "storeIds": [mall.teahouse] }),
            vec![&two, &three, &four],
        ),
        (json!({ "productIds": [mall.notebook] }), vec![&three]),
        (
            json!({ "productIds": [mall.pen, mall.notebook] }),
            vec![&one, &three],
        ),
        (json!({ "minTotal": "12.00" }), vec![&one, &two]),
        (json!({ "maxTotal": "11.25" }), vec![&three, &four]),
        (
            json!({ "minTotal": "10", "maxTotal": "13" }),
            vec![&one, &three],
        ),
        (json!({ "status": "REJECTED" }), vec![&four]),
        (
            json!({ "status": "APPROVED", "customerId": ben }),
            vec![&two, &three],
        ),
        (json!({ "status": "COMPLETED" }), vec![]),
    ];
    for (filter, expected) in cases {
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(
            found(&app, filter.clone()).await,
            expected,
            "filter {filter}"
        );
    }
    let bad = app
        .graphql(SEARCH, json!({ "f": { "storeIds": ["nope"] } }))
        .await;
    assert_eq!(bad["errors"][0]["message"], "storeIds is not a valid id");
    let by_id = app
        .data(
            "query($id: ID!) { order(id: $id) { id status customerName } }",
            json!({ "id": four }),
        )
        .await;
    assert_eq!(
        by_id["order"],
        json!({ "id": four, "status": "REJECTED", "customerName": "Cat" })
    );
    app.stop().await;
}
on_both_backends!(every_filter_finds_exactly_its_orders);

/// 50 orders, pages of 7: each order exactly once, in creation order.
#[tokio::test]
async fn pagination_over_fifty_orders_returns_each_once() {
    let mut app = spawn_app(Backend::Real).await;
    let mall = mall(&app).await;
    let dee = customer(&app, "Dee").await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        orders.push(order_of(&app, &dee, &[(&mall.tea, 1)], "7.00").await);
    }
    wait_until("search to hold the 50 orders", || async {
        (found(&app, json!({ "customerId": dee })).await.len() == 50).then_some(())
    })
    .await;
    assert_eq!(found(&app, json!({ "customerId": dee })).await, orders);
    app.stop().await;
}

/// The full flow's customer was told exactly: created, ready, completed.
async fn the_customer_is_notified_of_created_ready_completed(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let eve = customer(&app, "Eve").await;
    let order = order_of(&app, &eve, &[(&mall.pen, 2)], "25.00").await;
    complete(&app, &order).await;
    let notified = wait_until("three notifications", || async {
        let data = app
            .data(
                "query($c: ID!) { notifications(customerId: $c) { edges { node { kind orderId smsNumber text } } } }",
                json!({ "c": eve }),
            )
            .await;
        let edges = data["notifications"]["edges"].as_array()?.clone();
        (edges.len() >= 3).then_some(edges)
    })
    .await;
    let kinds: Vec<_> = notified.iter().map(|e| e["node"]["kind"].clone()).collect();
    assert_eq!(
        kinds,
        [json!("created"), json!("ready"), json!("completed")]
    );
    for edge in &notified {
        assert_eq!(edge["node"]["orderId"], order.as_str());
        assert_eq!(edge["node"]["smsNumber"], "+15550100200");
    }
    assert!(
        notified[1]["node"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Hello Eve, your order")
    );
    app.stop().await;
}
on_both_backends!(the_customer_is_notified_of_created_ready_completed);

/// Takes an approved order through its shopping list and invoice.
async fn complete(app: &TestApp, order: &str) {
    let approved = order_with_status(app, order, "APPROVED").await;
    let list = approved["shoppingListId"].as_str().unwrap().to_owned();
    assign(app, &list).await;
    deliver_and_pay(app, order, &list).await;
}

/// Completes the assigned shopping `list` of `order` once it is active,
/// then pays its invoice: the order ends COMPLETED.
async fn deliver_and_pay(app: &TestApp, order: &str, list: &str) {
    list_with_status(app, list, "ACTIVE").await;
    app.data(
        "mutation($id: ID!) { completeShoppingList(id: $id) { id } }",
        json!({ "id": list }),
    )
    .await;
    let invoice = wait_until("the invoice", || async {
        let found = app.data(ORDER, json!({ "id": order })).await;
        found["order"]["invoice"]["id"].as_str().map(str::to_owned)
    })
    .await;
    app.data(
        "mutation($id: ID!) { payInvoice(invoiceId: $id) { id } }",
        json!({ "id": invoice }),
    )
    .await;
    order_with_status(app, order, "COMPLETED").await;
}

async fn assign(app: &TestApp, list: &str) {
    app.data(
        "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) { id } }",
        json!({ "id": list, "bot": Uuid::now_v7().to_string() }),
    )
    .await;
}

/// The next pushed order change: (cursor, order id, status).
async fn next_change(ws: &mut WsClient) -> (String, String, String) {
    let data = ws.next_data().await;
    let change = &data["customerOrders"];
    (
        change["cursor"].as_str().unwrap().to_owned(),
        change["order"]["id"].as_str().unwrap().to_owned(),
        change["order"]["status"].as_str().unwrap().to_owned(),
    )
}

/// Makes the five changes the resume tests expect after the first three:
/// order A ready and completed, order B created, approved and canceled.
async fn five_more_changes(app: &TestApp, mall: &Mall, customer: &str, a: &str) -> String {
    let list = order_with_status(app, a, "IN_PROGRESS").await["shoppingListId"]
        .as_str()
        .unwrap()
        .to_owned();
    deliver_and_pay(app, a, &list).await;
    let b = order_of(app, customer, &[(&mall.tea, 1)], "7.00").await;
    order_with_status(app, &b, "APPROVED").await;
    saga_with_status(app, &b, "COMPLETED").await;
    app.data(
        "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
        json!({ "id": b }),
    )
    .await;
    // Wait until search has logged the cancel too.
    searched(app, &b, "CANCELED").await;
    b
}

/// Three changes pushed, the client goes away; five changes later it
/// resumes on `app` with its last cursor and gets exactly those five, then
/// the next live one. With `first`, it had subscribed on that other gateway,
/// which is stopped once the client has gone.
async fn resume_after_disconnect(app: &TestApp, first: Option<&mut TestApp>) {
    let mall = mall(app).await;
    let fox = customer(app, "Fox").await;
    let vars = json!({ "c": fox, "after": null });
    let mut ws = match &first {
        Some(other) => {
            let ws = other
                .subscribe("graphql-transport-ws", CUSTOMER_ORDERS, vars)
                .await;
            other.wait_for_subscriptions(1).await;
            ws
        }
        None => {
            let ws = app
                .subscribe("graphql-transport-ws", CUSTOMER_ORDERS, vars)
                .await;
            app.wait_for_subscriptions(1).await;
            ws
        }
    };
    let a = order_of(app, &fox, &[(&mall.pen, 1)], "12.50").await;
    let approved = order_with_status(app, &a, "APPROVED").await;
    assign(app, approved["shoppingListId"].as_str().unwrap()).await;
    let seen = [
        next_change(&mut ws).await,
        next_change(&mut ws).await,
        next_change(&mut ws).await,
    ];
    let statuses: Vec<_> = seen
        .iter()
        .map(|(_, id, s)| (id.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (a.as_str(), "PENDING"),
            (a.as_str(), "APPROVED"),
            (a.as_str(), "IN_PROGRESS")
        ]
    );
    let cursor = seen[2].0.clone();
    ws.close().await;
    if let Some(other) = first {
        other.stop().await;
    }

    let b = five_more_changes(app, &mall, &fox, &a).await;
    let mut resumed = app
        .subscribe(
            "graphql-transport-ws",
            CUSTOMER_ORDERS,
            json!({ "c": fox, "after": cursor }),
        )
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next_change(&mut resumed).await);
    }
    let statuses: Vec<_> = got
        .iter()
        .map(|(_, id, s)| (id.clone(), s.clone()))
        .collect();
    let expect = |id: &str, s: &str| (id.to_owned(), s.to_owned());
    assert_eq!(
        statuses,
        [
            expect(&a, "READY"),
            expect(&a, "COMPLETED"),
            expect(&b, "PENDING"),
            expect(&b, "APPROVED"),
            expect(&b, "CANCELED"),
        ]
    );
    let cursors: Vec<i64> = got.iter().map(|(c, ..)| c.parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    assert!(cursors[0] > cursor.parse::<i64>().unwrap());
    // Nothing else in between, and live again: the next push is the next change.
    let c = order_of(app, &fox, &[(&mall.tea, 1)], "7.00").await;
    let next = next_change(&mut resumed).await;
    assert_eq!((next.1.as_str(), next.2.as_str()), (c.as_str(), "PENDING"));
    resumed.close().await;
}

async fn a_subscription_resumes_with_exactly_what_it_missed(backend: Backend) {
    let mut app = spawn_app(backend).await;
    resume_after_disconnect(&app, None).await;
    app.stop().await;
}
on_both_backends!(a_subscription_resumes_with_exactly_what_it_missed);

/// Two gateway processes on one broker and database: a subscription
/// started on one resumes on the other after the first is stopped.
#[tokio::test]
async fn a_subscription_resumes_on_another_gateway() {
    let settings = common::settings(Backend::Real).await;
    let mut app = common::start_with(settings.clone()).await;
    let mut other = common::start_parts(settings, &[Part::Gateway]).await;
    resume_after_disconnect(&app, Some(&mut other)).await;
    app.stop().await;
}

/// A subscriber that does not read falls behind its buffer: it is told so
/// with `RATE_LIMITED` and a cursor, and closed; resuming from that cursor
/// yields every remaining change, in order, none twice.
async fn a_slow_subscriber_is_closed_with_a_cursor(backend: Backend) {
    let mut settings = common::settings(backend).await;
    settings.subscription_buffer = 4;
    // Kernel buffers small enough that a few pushes fill them.
    settings.socket_send_buffer = Some(4096);
    let mut app = common::start_with(settings).await;
    let store = store(&app, "Slow Goods", "Basement").await;
    let long = "x".repeat(1800);
    let added = app
        .data(
            "mutation($s: ID!, $d: String!) { addProduct(input: {storeId: $s, name: \"Slow\", description: $d, price: \"1.00\"}) { id } }",
            json!({ "s": store, "d": long }),
        )
        .await;
    let product = added["addProduct"]["id"].as_str().unwrap().to_owned();
    let query = "subscription($s: ID!, $after: String) {
      catalogChanged(storeId: $s, after: $after) { cursor kind product { price description } } }";
    let mut slow = app
        .subscribe_slow(query, json!({ "s": store, "after": null }), 2048)
        .await;
    app.wait_for_subscriptions(1).await;
    const CHANGES: usize = 300;
    for _ in 0..CHANGES {
        app.data(
            "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }",
            json!({ "p": product }),
        )
        .await;
    }
    let last_price = format!("{:.2}", 1.0 + CHANGES as f64 * 0.01);
    // Read what was delivered until the server says the client is too slow.
    let mut prices = Vec::new();
    let cursor = loop {
        let message = slow.next_message().await;
        match message["type"].as_str() {
            Some("next") if message["payload"].get("errors").is_some() => {
                let error = &message["payload"]["errors"][0];
                assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{message}");
                break error["extensions"]["cursor"].as_str().unwrap().to_owned();
            }
            Some("next") => {
                let change = &message["payload"]["data"]["catalogChanged"];
                // The product's addition may be pushed too (search can log
                // it after the subscription started): count the repricings.
                if change["kind"] == "PRICE_INCREASED" {
                    prices.push(change["product"]["price"].as_str().unwrap().to_owned());
                }
            }
            _ => panic!("expected the too-slow error, got {message}"),
        }
    };
    assert!(prices.len() < CHANGES, "the subscriber was never too slow");
    let slow_closed = ["field=\"catalogChanged\""];
    let closed = common::metric(
        &app.metrics().await,
        "mallbots_subscriptions_closed_slow_total",
        &slow_closed,
    );
    assert_eq!(closed, Some(1.0), "counted in /metrics");
    let ended = slow.next_message().await;
    assert_eq!(ended["type"], "complete", "{ended}");
    // Its execution served only it: it stops (a probe found it running on).
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    let mut resumed = app
        .subscribe(
            "graphql-transport-ws",
            query,
            json!({ "s": store, "after": cursor }),
        )
        .await;
    while prices.last() != Some(&last_price) {
        let data = resumed.next_data().await;
        let change = &data["catalogChanged"];
        if change["kind"] == "PRICE_INCREASED" {
            prices.push(change["product"]["price"].as_str().unwrap().to_owned());
        }
    }
    let expected: Vec<String> = (1..=CHANGES)
        .map(|n| format!("{:.2}", 1.0 + n as f64 * 0.01))
        .collect();
    assert_eq!(prices, expected, "every change once, in order");
    resumed.close().await;
    app.stop().await;
}
on_both_backends!(a_slow_subscriber_is_closed_with_a_cursor);

/// 100 times: a mutation, then at once a query with its consistency token,
/// on a read model kept asynchronously (search's copy of the customer's
/// contact on their orders): the query sees the change every time.
async fn a_query_with_a_token_reads_its_write(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let gil = customer(&app, "Gil").await;
    let order = order_of(&app, &gil, &[(&mall.tea, 1)], "7.00").await;
    searched(&app, &order, "APPROVED").await;
    let query = "query($c: ID!) { searchOrders(filter: {customerId: $c}) { edges { node { customerSmsNumber } } } }";
    for n in 0..100 {
        let number = format!("+1555{n:07}");
        let changed = app
            .data(
                "mutation($c: ID!, $n: String!) { changeSmsNumber(customerId: $c, smsNumber: $n) { consistencyToken } }",
                json!({ "c": gil, "n": number }),
            )
            .await;
        let token = changed["changeSmsNumber"]["consistencyToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, response) = app
            .graphql_with(&[("consistency-token", &token)], query, json!({ "c": gil }))
            .await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(
            response["data"]["searchOrders"]["edges"][0]["node"]["customerSmsNumber"],
            number.as_str(),
            "round {n}, token {token}"
        );
    }
    let (status, bad) = app
        .graphql_with(
            &[("consistency-token", "nowhere:1")],
            query,
            json!({ "c": gil }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    app.stop().await;
}
on_both_backends!(a_query_with_a_token_reads_its_write);

/// A token no read model will reach in time is a TIMEOUT.
#[tokio::test]
async fn a_token_from_the_future_times_out() {
    let mut settings = common::settings(Backend::Embedded).await;
    settings.consistency_timeout_ms = 200;
    let mut app = common::start_with(settings).await;
    let (status, response) = app
        .graphql_with(
            &[("consistency-token", "ordering:999999")],
            "{ stores { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 504);
    assert_eq!(response["errors"][0]["extensions"]["code"], "TIMEOUT");
    assert_eq!(
        response["errors"][0]["message"],
        "the read models did not reach ordering:999999 within 200 ms"
    );
    app.stop().await;
}

/// The search rows are lost; `mallbots rebuild search`, run as its own
/// process while the system runs, brings back exactly the live rows.
async fn rebuilding_search_yields_the_live_rows(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let (hal, ida) = (customer(&app, "Hal").await, customer(&app, "Ida").await);
    let done = order_of(&app, &hal, &[(&mall.pen, 1), (&mall.tea, 2)], "26.50").await;
    complete(&app, &done).await;
    let pending = order_of(&app, &ida, &[(&mall.notebook, 3)], "12.75").await;
    searched(&app, &pending, "APPROVED").await;
    searched(&app, &done, "COMPLETED").await;
    // A contact change after the orders rewrites them; the rebuild must too.
    let changed = app
        .data(
            "mutation($c: ID!) { changeSmsNumber(customerId: $c, smsNumber: \"+1 555 0100 999\") { consistencyToken } }",
            json!({ "c": hal }),
        )
        .await;
    let token = changed["changeSmsNumber"]["consistencyToken"]
        .as_str()
        .unwrap();
    let (status, live) = app
        .graphql_with(
            &[("consistency-token", token)],
            SEARCH,
            json!({ "f": {}, "first": 100 }),
        )
        .await;
    assert_eq!(status, 200, "{live}");
    let live = live["data"].clone();
    let edges = live["searchOrders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    let hal_order = edges
        .iter()
        .find(|e| e["node"]["id"] == done.as_str())
        .unwrap();
    assert_eq!(hal_order["node"]["customerSmsNumber"], "+15550100999");

    let db = app.db("search").await;
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("DELETE FROM search_order_items; DELETE FROM search_orders;")
        .await
        .unwrap();
    let gone = app.data(SEARCH, json!({ "f": {}, "first": 100 })).await;
    assert_eq!(gone["searchOrders"]["edges"], json!([]));

    let mut rebuild = std::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
    rebuild
        .arg("rebuild")
        .arg("search")
        .env("DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn");
    match &app.settings.database_url {
        Some(url) => rebuild.env("DATABASE_URL", url),
        None => rebuild.env_remove("DATABASE_URL"),
    };
    let status = rebuild.status().expect("mallbots rebuild runs");
    assert!(status.success(), "mallbots rebuild search failed: {status}");
    let rebuilt = app.data(SEARCH, json!({ "f": {}, "first": 100 })).await;
    assert_eq!(rebuilt, live);
    // And it keeps following the live events afterwards.
    app.data(
        "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
        json!({ "id": pending }),
    )
    .await;
    searched(&app, &pending, "CANCELED").await;
    app.stop().await;
}
on_both_backends!(rebuilding_search_yields_the_live_rows);

/// The tables of the embedded search database under `dir`.
async fn search_tables(dir: &std::path::Path) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let url = format!("sqlite://{}?mode=rwc", dir.join("search.db").display());
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT name FROM sqlite_master WHERE type = 'table'",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<String>("", "name").unwrap())
        .collect()
}

/// `NO_MIGRATE` holds for `mallbots rebuild` too: on a database without
/// the search tables the rebuild fails and creates none; without it, the
/// rebuild makes them.
#[tokio::test]
async fn a_rebuild_under_no_migrate_leaves_the_schema_alone() {
    let dir = std::env::temp_dir().join(format!("mallbots-no-migrate-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let rebuild = |no_migrate: bool| {
        let mut rebuild = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
        rebuild
            .args(["rebuild", "search"])
            .env("DATA_DIR", &dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "error");
        if no_migrate {
            rebuild.env("NO_MIGRATE", "true");
        } else {
            rebuild.env_remove("NO_MIGRATE");
        }
        rebuild.output()
    };
    let refused = rebuild(true).await.expect("mallbots rebuild runs");
    assert!(
        !refused.status.success(),
        "a rebuild without its tables succeeded under NO_MIGRATE"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("run `mallbots migrate` first"), "{said}");
    let tables = search_tables(&dir).await;
    assert!(
        tables.is_empty(),
        "tables made under NO_MIGRATE: {tables:?}"
    );
    let done = rebuild(false).await.expect("mallbots rebuild runs");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!search_tables(&dir).await.is_empty(), "no tables made");
    std::fs::remove_dir_all(&dir).ok();
}

/// `orderUpdated`, `shoppingListsAvailable` and `events` along one order:
/// each push shows a state a query made right after it already returns.
async fn order_list_and_event_feeds_push_committed_state(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let jo = customer(&app, "Jo").await;
    let basket = basket(&app, &jo).await;
    add_item(&app, &basket, &mall.tea, 3).await;
    let payment = authorize_payment(&app, &jo, "21.00").await;
    let mut lists = app
        .subscribe(
            "graphql-transport-ws",
            "subscription { shoppingListsAvailable { cursor shoppingList { id orderId status stops { storeName } } } }",
            json!({}),
        )
        .await;
    let mut events = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($t: [String!]) { events(types: $t) { cursor type schemaVersion payload } }",
            json!({ "t": ["ordering.Order.OrderApproved", "ordering.Order.OrderCompleted"] }),
        )
        .await;
    app.wait_for_subscriptions(2).await;
    let order = checkout(&app, &basket, &payment).await;
    let mut updates = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($o: ID!) { orderUpdated(orderId: $o, after: \"0\") { cursor order { id status total } } }",
            json!({ "o": order }),
        )
        .await;
    // From cursor 0 the order's whole history replays, then it goes live.
    let mut statuses = Vec::new();
    let mut cursor = 0;
    while statuses.last().map(String::as_str) != Some("IN_PROGRESS") {
        let pushed = updates.next_data().await["orderUpdated"].clone();
        let status = pushed["order"]["status"].as_str().unwrap().to_owned();
        let at: i64 = pushed["cursor"].as_str().unwrap().parse().unwrap();
        assert!(at > cursor, "cursors grow");
        cursor = at;
        assert_eq!(pushed["order"]["total"], "21.00");
        // The push is sent after the read model committed: a query sees it.
        let now = app.data(ORDER, json!({ "id": order })).await;
        let rank = |s: &str| {
            ["PENDING", "APPROVED", "IN_PROGRESS"]
                .iter()
                .position(|x| *x == s)
        };
        assert!(
            rank(now["order"]["status"].as_str().unwrap()) >= rank(&status),
            "a query after the {status} push saw {}",
            now["order"]["status"]
        );
        if status == "APPROVED" {
            let list = app.data(ORDER, json!({ "id": order })).await["order"]["shoppingListId"]
                .as_str()
                .unwrap()
                .to_owned();
            let available = lists.next_data().await["shoppingListsAvailable"].clone();
            assert_eq!(available["shoppingList"]["id"], list.as_str());
            assert_eq!(available["shoppingList"]["orderId"], order.as_str());
            assert_eq!(available["shoppingList"]["status"], "AVAILABLE");
            assert_eq!(
                available["shoppingList"]["stops"][0]["storeName"],
                "Leaf & Kettle"
            );
            assign(&app, &list).await;
        }
        statuses.push(status);
    }
    assert_eq!(statuses, ["PENDING", "APPROVED", "IN_PROGRESS"]);
    let approved = events.next_data().await["events"].clone();
    assert_eq!(approved["type"], "ordering.Order.OrderApproved");
    assert_eq!(approved["schemaVersion"], 1);
    assert_eq!(approved["payload"]["order_id"], order.as_str());
    assert_eq!(approved["payload"]["status"], "approved");
    let bad = app
        .graphql(
            "subscription { orderUpdated(orderId: \"x\") { cursor } }",
            json!({}),
        )
        .await;
    assert!(bad.get("errors").is_some(), "{bad}");
    app.stop().await;
}
on_both_backends!(order_list_and_event_feeds_push_committed_state);

/// With `NOTIFICATIONS_WEBHOOK_URL`, each notification is also POSTed there.
#[tokio::test]
async fn notifications_are_posted_to_the_webhook() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let mut settings = common::settings(Backend::Embedded).await;
    settings.notifications_webhook_url = Some(format!("http://{hook_addr}/hook"));
    let mut app = common::start_with(settings).await;
    let mall = mall(&app).await;
    let kim = customer(&app, "Kim").await;
    let order = order_of(&app, &kim, &[(&mall.pen, 1)], "12.50").await;
    let posted = wait_until("the created notification to be posted", || async {
        let all = received.lock().unwrap().clone();
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(posted[0]["kind"], "created");
    assert_eq!(posted[0]["order_id"], order.as_str());
    assert_eq!(posted[0]["sms_number"], "+15550100200");
    app.stop().await;
}

/// `addProduct`'s token sent with the next `addItem`: the baskets module
/// knows the product by then (its catalog cache is a read model too), every
/// time, with no retry.
async fn a_token_makes_a_new_product_buyable_at_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let shop = store(&app, "Fresh Stock", "Arcade").await;
    let lee = customer(&app, "Lee").await;
    let basket = basket(&app, &lee).await;
    for n in 0..20 {
        let added = app
            .data(
                "mutation($s: ID!, $n: String!) { addProduct(input: {storeId: $s, name: $n, price: \"2.00\"}) { id consistencyToken } }",
                json!({ "s": shop, "n": format!("Item {n}") }),
            )
            .await;
        let token = added["addProduct"]["consistencyToken"].as_str().unwrap();
        let product = added["addProduct"]["id"].as_str().unwrap();
        let (status, response) = app
            .graphql_with(
                &[("consistency-token", token)],
                ADD_ITEM,
                json!({ "b": basket, "p": product, "q": 1 }),
            )
            .await;
        assert_eq!(status, 200);
        assert!(response.get("errors").is_none(), "round {n}: {response}");
    }
    app.stop().await;
}
on_both_backends!(a_token_makes_a_new_product_buyable_at_once);

const CATALOG_CHANGED: &str = "subscription($s: ID!, $after: String) {
  catalogChanged(storeId: $s, after: $after) { cursor kind product { name } }
}";

/// The error a subscriber gets for a change that cannot be read: INTERNAL,
/// with the change's position as the cursor to resume from.
fn assert_unreadable_at(message: &Value, position: i64) {
    assert_eq!(message["type"], "next", "{message}");
    let error = &message["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{message}");
    assert_eq!(
        error["extensions"]["cursor"],
        position.to_string(),
        "{message}"
    );
}

/// A change its readers cannot decode (written by another version, or
/// damaged) is logged with its position and reaches the subscribers of its
/// store as an error at that position, live and in a replay; each
/// subscription goes on after it.
async fn an_undecodable_change_reaches_the_subscriber_as_an_error(backend: Backend) {
    use mallbots_contracts::Message;
    use mallbots_contracts::search::{Committed, TOPIC_CATALOG};
    use mallbots_platform::{Envelope, Exchange, Outgoing, Payload, changes};

    let mut app = spawn_app(backend).await;
    let store = store(&app, "Odd Books", "Attic").await;
    let mut live = app
        .subscribe(
            "graphql-transport-ws",
            CATALOG_CHANGED,
            json!({ "s": store }),
        )
        .await;
    app.wait_for_subscriptions(1).await;
    // Logged as the search module would, then announced.
    let body = json!({ "change": "ProductMelted", "product": { "name": "?" } });
    let search = app.db("search").await;
    let body_text = body.to_string();
    let logged = [changes::NewChange::new(TOPIC_CATALOG, &store, &body_text)];
    let position = changes::record_all(&search, &logged).await.unwrap()[0];
    let notice = Envelope::first(Outgoing {
        message_type: Committed::TYPE,
        version: Committed::VERSION,
        payload: Payload::of(&json!({ "changes": [
            { "position": position, "topic": TOPIC_CATALOG, "key": store, "body": body }
        ] }))
        .unwrap(),
    });
    app.broker()
        .publish(Exchange::Events, Committed::TYPE, notice.to_wire())
        .await
        .unwrap();
    assert_unreadable_at(&live.next_message().await, position);
    // And logged, with where it is, before it went out.
    let logged = common::logs::logged(&[
        "a read-side change cannot be decoded",
        &format!("position={position}"),
        &format!("key={store}"),
    ]);
    assert!(
        !logged.is_empty(),
        "no warning for the change at {position}"
    );

    product(&app, &store, "Sound Pen", "1.00").await;
    let added = live.next_data().await;
    assert_eq!(added["catalogChanged"]["kind"], "ADDED");
    assert_eq!(added["catalogChanged"]["product"]["name"], "Sound Pen");

    let mut replay = app
        .subscribe(
            "graphql-transport-ws",
            CATALOG_CHANGED,
            json!({ "s": store, "after": (position - 1).to_string() }),
        )
        .await;
    assert_unreadable_at(&replay.next_message().await, position);
    assert_eq!(
        replay.next_data().await["catalogChanged"],
        added["catalogChanged"]
    );
    live.close().await;
    replay.close().await;
    app.stop().await;
}

on_both_backends!(an_undecodable_change_reaches_the_subscriber_as_an_error);

/// A cursor is a position the change log handed out: one with a sign is
/// not a cursor, and one beyond the log's end (from another system, or a
/// log since reset) is refused instead of waiting forever for its changes.
async fn a_cursor_the_log_never_gave_is_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let store = store(&app, "Cursor Books", "Attic").await;
    for after in ["+1", " 1", "01", "99999999", "9223372036854775807"] {
        let mut ws = app
            .subscribe(
                "graphql-transport-ws",
                CATALOG_CHANGED,
                json!({ "s": store, "after": after }),
            )
            .await;
        let message = ws.next_message().await;
        assert_eq!(message["type"], "next", "{after}: {message}");
        let error = &message["payload"]["errors"][0];
        assert_eq!(
            error["extensions"]["code"], "BAD_USER_INPUT",
            "{after}: {message}"
        );
        ws.close().await;
    }
    app.stop().await;
}

on_both_backends!(a_cursor_the_log_never_gave_is_refused);

/// A store that does not exist has no catalog to follow: its subscription
/// is refused at once, from now on or from a cursor, over either protocol,
/// instead of staying open and delivering nothing.
async fn a_catalog_of_a_store_that_does_not_exist_is_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let missing = "00000000-0000-7000-8000-000000000000";
    for (protocol, after) in [
        ("graphql-transport-ws", json!(null)),
        ("graphql-transport-ws", json!("0")),
        ("graphql-ws", json!(null)),
    ] {
        let variables = json!({ "s": missing, "after": after });
        let mut ws = app.subscribe(protocol, CATALOG_CHANGED, variables).await;
        let refused = ws.next_message().await;
        let error = &refused["payload"]["errors"][0];
        assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{refused}");
        assert_eq!(ws.next_message().await["type"], "complete");
        ws.close().await;
    }
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    // The same subscription to a store that exists is served.
    let store = store(&app, "Found Goods", "Lobby").await;
    let ws = app
        .subscribe(
            "graphql-transport-ws",
            CATALOG_CHANGED,
            json!({ "s": store }),
        )
        .await;
    app.wait_for_shared("catalogChanged", 1.0, 1.0).await;
    ws.close().await;
    app.stop().await;
}

on_both_backends!(a_catalog_of_a_store_that_does_not_exist_is_refused);

const REPRICED: &str = "subscription($s: ID!, $after: String) {
  catalogChanged(storeId: $s, after: $after) { cursor kind product { price } }
}";

/// A change as `ws` got it for its subscription `id`: (cursor, price).
/// The product's addition may come first (search can log it after the
/// subscription started): it is passed over.
async fn repriced(ws: &mut WsClient, id: &str, data: &str) -> (String, String) {
    let message = loop {
        let message = ws.next_message().await;
        if message["payload"]["data"]["catalogChanged"]["kind"] != "ADDED" {
            break message;
        }
    };
    assert_eq!(message["type"], data, "{message}");
    assert_eq!(message["id"], id, "{message}");
    let change = &message["payload"]["data"]["catalogChanged"];
    assert_eq!(change["kind"], "PRICE_INCREASED", "{message}");
    let cursor = change["cursor"].as_str().expect("a cursor").to_owned();
    (
        cursor,
        change["product"]["price"]
            .as_str()
            .expect("a price")
            .to_owned(),
    )
}

/// Sockets that ask for the same subscription share one execution: each
/// subscription still gets every change under its own id, on either
/// protocol; one that completes leaves the others served; one with a cursor
/// replays on its own, then joins; the execution ends with its last
/// subscriber.
async fn the_same_subscription_is_executed_once(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let store = store(&app, "Shared Goods", "Atrium").await;
    let product = product(&app, &store, "Lamp", "1.00").await;
    let from_now = json!({ "query": REPRICED, "variables": { "s": store } });
    // Two subscriptions on one socket, one on another, one legacy.
    let mut two = WsClient::open(&app.base, "graphql-transport-ws", None).await;
    two.send(json!({ "type": "connection_init" })).await;
    assert_eq!(two.next_message().await["type"], "connection_ack");
    for id in ["first", "second"] {
        two.send(json!({ "type": "subscribe", "id": id, "payload": from_now }))
            .await;
    }
    let mut one = app
        .subscribe("graphql-transport-ws", REPRICED, json!({ "s": store }))
        .await;
    let mut legacy = app
        .subscribe("graphql-ws", REPRICED, json!({ "s": store }))
        .await;
    let mut replaying = replaying_from_the_start(&app, &store).await;
    app.wait_for_shared("catalogChanged", 5.0, 1.0).await;

    let reprice =
        "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }";
    app.data(reprice, json!({ "p": product })).await;
    let first = repriced(&mut two, "first", "next").await;
    assert_eq!(first.1, "1.01");
    // The same change, at the same cursor, for every one of them.
    assert_eq!(repriced(&mut two, "second", "next").await, first);
    assert_eq!(repriced(&mut one, "1", "next").await, first);
    assert_eq!(repriced(&mut legacy, "1", "data").await, first);
    assert_eq!(repriced(&mut replaying, "1", "next").await, first);

    // One completes: nothing more comes for it (the next message on its
    // socket is the other's), and the others go on.
    two.send(json!({ "type": "complete", "id": "first" })).await;
    app.wait_for_shared("catalogChanged", 4.0, 1.0).await;
    app.data(reprice, json!({ "p": product })).await;
    let second = repriced(&mut two, "second", "next").await;
    assert_eq!(second.1, "1.02");
    assert_eq!(repriced(&mut one, "1", "next").await, second);
    assert_eq!(repriced(&mut legacy, "1", "data").await, second);
    assert_eq!(repriced(&mut replaying, "1", "next").await, second);

    // Its id is free again: subscribing under it joins the execution.
    two.send(json!({ "type": "subscribe", "id": "first", "payload": from_now }))
        .await;
    app.wait_for_shared("catalogChanged", 5.0, 1.0).await;
    two.close().await;
    one.close().await;
    legacy.close().await;
    app.wait_for_shared("catalogChanged", 1.0, 1.0).await;
    replaying.close().await;
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    app.stop().await;
}

on_both_backends!(the_same_subscription_is_executed_once);

/// A subscription to `store`'s catalog from cursor 0, once it has replayed
/// the product's addition.
async fn replaying_from_the_start(app: &TestApp, store: &str) -> WsClient {
    let variables = json!({ "s": store, "after": "0" });
    let mut replaying = app
        .subscribe("graphql-transport-ws", REPRICED, variables)
        .await;
    let added = replaying.next_data().await;
    assert_eq!(added["catalogChanged"]["kind"], "ADDED", "{added}");
    replaying
}

const REPRICE: &str =
    "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }";

/// The cursors of the next `n` price changes `ws` gets for subscription "1".
async fn cursors(ws: &mut WsClient, n: usize) -> Vec<i64> {
    let mut cursors = Vec::with_capacity(n);
    while cursors.len() < n {
        let message = ws.next_data().await;
        let change = &message["catalogChanged"];
        if change["kind"] == "PRICE_INCREASED" {
            let cursor = change["cursor"].as_str().expect("a cursor");
            cursors.push(cursor.parse().expect("a number"));
        }
    }
    cursors
}

/// Subscriptions that replay from a cursor while the changes go on coming
/// join the execution from now on once they have caught up (while the
/// changes still come), and get every change after their cursor exactly
/// once, in order: the one from now on, next to them, is the measure.
async fn a_replaying_subscription_joins_without_a_gap_or_a_repeat(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let store = store(&app, "Handover Goods", "Atrium").await;
    let mut products = Vec::new();
    for name in ["Clock", "Watch", "Timer", "Dial"] {
        products.push(product(&app, &store, name, "1.00").await);
    }
    let mut from_now = app
        .subscribe("graphql-transport-ws", REPRICED, json!({ "s": store }))
        .await;
    app.wait_for_shared("catalogChanged", 1.0, 1.0).await;
    for _ in 0..3 {
        app.data(REPRICE, json!({ "p": products[0] })).await;
    }
    let before = cursors(&mut from_now, 3).await;

    // Changes go on, from one writer a product, while they subscribe one
    // after the other from the second change's cursor: they catch up while
    // the execution from now on has had changes they have not.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for product in &products {
        let app = common::client_of(app.base.clone()).await;
        let product = product.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.data(REPRICE, json!({ "p": product })).await;
                written += 1;
            }
            written
        }));
    }
    let after = before[1].to_string();
    let mut replaying = Vec::new();
    // Enough of them that, on two cores, they run behind the execution
    // from now on for as long as the changes come.
    const REPLAYING: usize = 12;
    for _ in 0..REPLAYING {
        let variables = json!({ "s": store, "after": after });
        let mut ws = app
            .subscribe("graphql-transport-ws", REPRICED, variables)
            .await;
        // Subscribed (the first change replayed) before the next one comes.
        replaying.push((cursors(&mut ws, 1).await, ws));
    }
    let subscriptions = (REPLAYING + 1) as f64;
    app.wait_for_shared("catalogChanged", subscriptions, 1.0)
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut more = 0;
    for writer in writers {
        more += writer.await.expect("a writer");
    }
    let all = [before.clone(), cursors(&mut from_now, more).await].concat();
    for (first, ws) in &mut replaying {
        let rest = cursors(ws, all.len() - 3).await;
        let got = [first.clone(), rest].concat();
        assert_eq!(
            got,
            all[2..],
            "every change after the cursor, once, in order"
        );
    }

    // Served by the one execution now: the next change reaches them all.
    app.data(REPRICE, json!({ "p": products[0] })).await;
    let next = cursors(&mut from_now, 1).await;
    assert!(next[0] > all[all.len() - 1]);
    for (_, ws) in &mut replaying {
        assert_eq!(cursors(ws, 1).await, next);
    }
    from_now.close().await;
    for (_, ws) in replaying {
        ws.close().await;
    }
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    app.stop().await;
}

on_both_backends!(a_replaying_subscription_joins_without_a_gap_or_a_repeat);

/// With no execution from now on to join, a subscription that caught up
/// becomes that execution: one from now on that comes later joins it and
/// gets only what happens after it came.
async fn a_caught_up_subscription_serves_the_ones_from_now_on(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let store = store(&app, "First Comer Goods", "Atrium").await;
    let product = product(&app, &store, "Bell", "1.00").await;
    let mut replaying = replaying_from_the_start(&app, &store).await;
    app.data(REPRICE, json!({ "p": product })).await;
    let first = cursors(&mut replaying, 1).await;
    app.wait_for_shared("catalogChanged", 1.0, 1.0).await;

    let mut from_now = app
        .subscribe("graphql-transport-ws", REPRICED, json!({ "s": store }))
        .await;
    app.wait_for_shared("catalogChanged", 2.0, 1.0).await;
    app.data(REPRICE, json!({ "p": product })).await;
    let second = cursors(&mut replaying, 1).await;
    assert!(second[0] > first[0]);
    let message = from_now.next_data().await;
    let change = &message["catalogChanged"];
    assert_eq!(
        change["kind"], "PRICE_INCREASED",
        "nothing from before: {message}"
    );
    assert_eq!(change["cursor"], second[0].to_string(), "{message}");
    assert_eq!(change["product"]["price"], "1.02", "{message}");
    from_now.close().await;
    replaying.close().await;
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    app.stop().await;
}

on_both_backends!(a_caught_up_subscription_serves_the_ones_from_now_on);

/// A replay that catches up on a quiet store joins the execution from now
/// on that started after it, without waiting for the store's next change:
/// changes to other stores moved the live feed on in between, and nothing
/// on its own store will move the replay on.
async fn a_replay_on_a_quiet_store_joins_a_later_execution(backend: Backend) {
    let mut settings = common::settings(backend).await;
    // A replay goes at its socket's pace: with small buffers and a client
    // that does not read, it stays behind until the client reads.
    settings.subscription_buffer = 4;
    settings.socket_send_buffer = Some(4096);
    let mut app = common::start_with(settings).await;
    let quiet = store(&app, "Quiet Goods", "Attic").await;
    let added = app
        .data(
            "mutation($s: ID!, $d: String!) { addProduct(input: {storeId: $s, name: \"Still\", description: $d, price: \"1.00\"}) { id } }",
            json!({ "s": quiet, "d": "x".repeat(1800) }),
        )
        .await;
    let still = added["addProduct"]["id"].as_str().unwrap().to_owned();
    const LOGGED: usize = 30;
    for _ in 0..LOGGED {
        app.data(REPRICE, json!({ "p": still })).await;
    }
    let busy = store(&app, "Busy Goods", "Hall").await;
    let moving = product(&app, &busy, "Spinner", "1.00").await;
    let mut elsewhere = app
        .subscribe("graphql-transport-ws", REPRICED, json!({ "s": busy }))
        .await;
    let described = "subscription($s: ID!, $after: String) {
      catalogChanged(storeId: $s, after: $after) { cursor kind product { price description } } }";
    let mut replaying = app
        .subscribe_slow(described, json!({ "s": quiet, "after": "0" }), 2048)
        .await;
    app.wait_for_shared("catalogChanged", 2.0, 2.0).await;
    // The live feed moves on past where the replay subscribed, on another
    // store; the other subscriber has them once the feed handed them out.
    for _ in 0..3 {
        app.data(REPRICE, json!({ "p": moving })).await;
    }
    let _ = cursors(&mut elsewhere, 3).await;
    let mut from_now = app
        .subscribe("graphql-transport-ws", described, json!({ "s": quiet }))
        .await;
    app.wait_for_shared("catalogChanged", 3.0, 3.0).await;
    // The client reads its replay; once caught up, it joins from now on.
    let replayed = cursors(&mut replaying, LOGGED).await;
    assert!(replayed.windows(2).all(|w| w[0] < w[1]), "{replayed:?}");
    app.wait_for_shared("catalogChanged", 3.0, 2.0).await;
    // Both get the store's next change once, at the same cursor.
    app.data(REPRICE, json!({ "p": still })).await;
    let next = cursors(&mut replaying, 1).await;
    assert_eq!(cursors(&mut from_now, 1).await, next);
    assert!(next[0] > replayed[LOGGED - 1]);
    for ws in [elsewhere, replaying, from_now] {
        ws.close().await;
    }
    app.wait_for_shared("catalogChanged", 0.0, 0.0).await;
    app.stop().await;
}

on_both_backends!(a_replay_on_a_quiet_store_joins_a_later_execution);
