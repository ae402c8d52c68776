//! Identity at the doors, through the public API: tokens on HTTP (401 with
//! `WWW-Authenticate: Bearer` for a bad one) and at the websocket's
//! `connection_init` (4403, and 4403 again when the token expires on an
//! open socket, after which a resume with a fresh token loses nothing);
//! requests per identity (429 with `Retry-After`, another identity served);
//! sockets per identity (4429); frames over the size limit (1009); CORS and
//! introspection once tokens are verified; `mallbots token`.

mod common;

use std::time::Duration;

use common::{TestApp, WsClient, start_with};
use mallbots_contracts::{Actor, Role};
use mallbots_gateway::identity::mint;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "identity-test-secret";

fn token(role: Role, ttl: Duration) -> String {
    let actor = Actor {
        id: Uuid::now_v7(),
        role,
    };
    mint(SECRET, actor, ttl).unwrap()
}

async fn secured(tune: impl FnOnce(&mut mallbots_gateway::Settings)) -> TestApp {
    let mut settings = common::settings(common::Backend::Embedded).await;
    settings.auth_jwt_secret = Some(SECRET.into());
    tune(&mut settings);
    start_with(settings).await
}

async fn post(app: &TestApp, bearer: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query }));
    if let Some(bearer) = bearer {
        request = request.header("authorization", bearer);
    }
    request.send().await.expect("POST /graphql")
}

#[tokio::test]
async fn http_requests_prove_who_they_are_or_get_401() {
    let mut app = secured(|_| {}).await;
    let me = "{ customer(id: \"00000000-0000-7000-8000-000000000000\") { id } }";

    for bad in [
        "Bearer not-a-jwt".to_owned(),
        format!(
            "Bearer {}",
            mint("another secret", Actor::OPEN, Duration::from_secs(60)).unwrap()
        ),
        format!("Basic {}", token(Role::Customer, Duration::from_secs(60))),
    ] {
        let response = post(&app, Some(&bad), me).await;
        assert_eq!(response.status(), 401, "{bad}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{body}"
        );
        assert!(body["data"].is_null());
    }

    // No token: the public catalog is served; anything else is refused.
    let response = post(&app, None, "{ stores { edges { node { id } } } }").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    let body: Value = post(&app, None, me).await.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // A customer token: its own query runs (nothing there yet).
    let customer = Uuid::now_v7();
    let own = mint(
        SECRET,
        Actor {
            id: customer,
            role: Role::Customer,
        },
        Duration::from_secs(60),
    )
    .unwrap();
    let query = format!("{{ customer(id: \"{customer}\") {{ id }} }}");
    let body: Value = post(&app, Some(&format!("Bearer {own}")), &query)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["errors"].is_null(), "{body}");
    assert!(body["data"]["customer"].is_null(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn one_identity_over_its_rate_waits_and_another_is_served() {
    let mut app = secured(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 5;
    })
    .await;
    let greedy = format!("Bearer {}", token(Role::Customer, Duration::from_secs(60)));
    let other = format!("Bearer {}", token(Role::Customer, Duration::from_secs(60)));
    let query = "{ stores { edges { node { id } } } }";
    let mut limited = None;
    for _ in 0..10 {
        let response = post(&app, Some(&greedy), query).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let limited = limited.expect("the burst of 5 runs out within 10 requests");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    // Meanwhile another identity, from the same address, is served.
    assert_eq!(post(&app, Some(&other), query).await.status(), 200);
    app.stop().await;
}

/// A socket whose `connection_init` carries `payload`.
async fn init(app: &TestApp, payload: Value) -> WsClient {
    let mut ws = WsClient::open(&app.base, "graphql-transport-ws", None).await;
    ws.send(json!({ "type": "connection_init", "payload": payload }))
        .await;
    ws
}

fn bearer(token: &str) -> Value {
    json!({ "authorization": format!("Bearer {token}") })
}

#[tokio::test]
async fn websockets_close_4403_on_a_bad_token_and_4429_past_the_sockets_per_identity() {
    let mut app = secured(|s| s.ws_max_connections = 2).await;
    let mut forged = init(
        &app,
        bearer(&mint("not the secret", Actor::OPEN, Duration::from_secs(60)).unwrap()),
    )
    .await;
    assert_eq!(forged.close_code().await, 4403);
    let mut garbage = init(&app, json!({ "authorization": "Bearer x.y.z" })).await;
    assert_eq!(garbage.close_code().await, 4403);

    let bot = token(Role::Bot, Duration::from_secs(60));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut ws = init(&app, bearer(&bot)).await;
        assert_eq!(ws.next_message().await["type"], "connection_ack");
        open.push(ws);
    }
    let mut third = init(&app, bearer(&bot)).await;
    assert_eq!(third.close_code().await, 4429);
    // Another identity still gets in; and a socket closed frees a place.
    let mut other = init(&app, bearer(&token(Role::Bot, Duration::from_secs(60)))).await;
    assert_eq!(other.next_message().await["type"], "connection_ack");
    open.pop().unwrap().close().await;
    common::wait_until("the closed socket's place to be free", || async {
        let mut ws = init(&app, bearer(&bot)).await;
        let first = ws.next_message_or_close().await;
        (first == "connection_ack").then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_the_socket_with_1009() {
    let mut app = secured(|s| s.max_body_bytes = 16 * 1024).await;
    let mut ws = init(&app, json!({})).await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    let huge = "x".repeat(64 * 1024);
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": { "query": huge } }))
        .await;
    assert_eq!(ws.close_code().await, 1009);
    // The gateway goes on.
    assert_eq!(
        post(&app, None, "{ stores { edges { node { id } } } }")
            .await
            .status(),
        200
    );
    app.stop().await;
}

const CREATE_STORE: &str =
    "mutation($n: String!) { createStore(input: {name: $n, location: \"Here\"}) { id } }";

/// An operator's request that must succeed: its data.
async fn as_operator(app: &TestApp, operator: &str, query: &str, vars: Value) -> Value {
    let (status, body) = app
        .graphql_with(&[("authorization", operator)], query, vars)
        .await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

const CATALOG: &str = "subscription($s: ID!, $a: String) {
  catalogChanged(storeId: $s, after: $a) { cursor product { name } } }";

#[tokio::test]
async fn an_expiring_token_closes_the_socket_and_a_fresh_one_resumes_without_a_gap() {
    let mut app = secured(|_| {}).await;
    let operator = format!("Bearer {}", token(Role::Operator, Duration::from_secs(600)));
    let call = |query: &'static str, vars: Value| as_operator(&app, &operator, query, vars);
    let store = call(CREATE_STORE, json!({ "n": "Expiry" })).await["createStore"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = "mutation($s: ID!, $n: String!) { addProduct(input: {storeId: $s, name: $n, price: \"1.00\"}) { id } }";

    // A customer follows the catalog with a token that expires in seconds.
    let mut ws = init(&app, bearer(&token(Role::Customer, Duration::from_secs(3)))).await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": {
        "query": CATALOG, "variables": { "s": store } } }))
        .await;
    app.wait_for_subscriptions(1).await;
    call(add, json!({ "s": store, "n": "Before" })).await;
    let first = ws.next_data().await;
    assert_eq!(first["catalogChanged"]["product"]["name"], "Before");
    let cursor = first["catalogChanged"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ws.close_code().await, 4403, "closed when the token expires");

    // What happens while it is away is not lost: resumed with a fresh
    // token from its last cursor, it gets exactly that, then what follows.
    for name in ["Away 1", "Away 2"] {
        call(add, json!({ "s": store, "n": name })).await;
    }
    let mut ws = init(
        &app,
        bearer(&token(Role::Customer, Duration::from_secs(600))),
    )
    .await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": {
        "query": CATALOG, "variables": { "s": store, "a": cursor } } }))
        .await;
    for name in ["Away 1", "Away 2"] {
        assert_eq!(
            ws.next_data().await["catalogChanged"]["product"]["name"],
            name
        );
    }
    call(add, json!({ "s": store, "n": "After" })).await;
    assert_eq!(
        ws.next_data().await["catalogChanged"]["product"]["name"],
        "After"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_tokens_on_only_listed_origins_and_operators_introspect() {
    let mut app = secured(|s| {
        s.cors_origins = vec!["https://shop.example".into()];
        s.introspection = false;
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let elsewhere = preflight("https://evil.example").await.unwrap();
    assert!(
        elsewhere
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let schema = "{ __schema { queryType { name } } }";
    let customer = format!("Bearer {}", token(Role::Customer, Duration::from_secs(60)));
    let body: Value = post(&app, Some(&customer), schema)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    let operator = format!("Bearer {}", token(Role::Operator, Duration::from_secs(60)));
    let body: Value = post(&app, Some(&operator), schema)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_gateway_accepts() {
    let mut app = secured(|_| {}).await;
    let sub = Uuid::now_v7();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
        .args([
            "token",
            "--role",
            "customer",
            "--sub",
            &sub.to_string(),
            "--ttl",
            "5m",
        ])
        .env("AUTH_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap();
    let query = format!("{{ customer(id: \"{sub}\") {{ id }} }}");
    let body: Value = post(&app, Some(&format!("Bearer {}", minted.trim())), &query)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["errors"].is_null(), "{body}");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
        .args(["token", "--role", "system", "--sub", &sub.to_string()])
        .env("AUTH_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_is_its_callers_own_and_names_one_request() {
    let mut app = secured(|_| {}).await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let as_customer = |id: Uuid| {
        let token = mint(
            SECRET,
            Actor {
                id,
                role: Role::Customer,
            },
            Duration::from_secs(600),
        )
        .unwrap();
        format!("Bearer {token}")
    };
    let (a, b) = (as_customer(alice), as_customer(bob));
    let register =
        "mutation { registerCustomer(input: {name: \"Me\", smsNumber: \"+15550100200\"}) { id } }";
    for who in [&a, &b] {
        let (status, body) = app
            .graphql_with(&[("authorization", who)], register, json!({}))
            .await;
        assert_eq!(status, 200);
        assert!(body["errors"].is_null(), "{body}");
    }
    let start = "mutation($c: ID!) { startBasket(customerId: $c) { id basket { customerId } } }";
    let key = ("idempotency-key", "shared-key-1");
    let (_, first) = app
        .graphql_with(&[("authorization", &a), key], start, json!({ "c": alice }))
        .await;
    let (_, again) = app
        .graphql_with(&[("authorization", &a), key], start, json!({ "c": alice }))
        .await;
    assert_eq!(
        first["data"], again["data"],
        "a retry gets the first answer"
    );
    // Another caller with the same key: its own basket, not the first one.
    let (_, other) = app
        .graphql_with(&[("authorization", &b), key], start, json!({ "c": bob }))
        .await;
    assert!(other["errors"].is_null(), "{other}");
    assert_ne!(
        other["data"]["startBasket"]["id"],
        first["data"]["startBasket"]["id"]
    );
    assert_eq!(
        other["data"]["startBasket"]["basket"]["customerId"],
        bob.to_string()
    );
    // The same key with another request is refused, not answered with the
    // first one's reply, and not applied.
    let pay = "mutation($c: ID!, $a: Decimal!) { authorizePayment(input: {customerId: $c, amount: $a}) { id payment { amount } } }";
    let key = ("idempotency-key", "shared-key-2");
    let (_, paid) = app
        .graphql_with(
            &[("authorization", &a), key],
            pay,
            json!({ "c": alice, "a": "1.00" }),
        )
        .await;
    assert_eq!(
        paid["data"]["authorizePayment"]["payment"]["amount"], "1.00",
        "{paid}"
    );
    let (_, changed) = app
        .graphql_with(
            &[("authorization", &a), key],
            pay,
            json!({ "c": alice, "a": "2.00" }),
        )
        .await;
    common::assert_refused(&changed, "BAD_USER_INPUT", common::KEY_REUSED);
    app.stop().await;
}

#[tokio::test]
async fn operations_on_a_websocket_count_against_the_rate_and_bad_tokens_too() {
    let mut app = secured(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 3;
    })
    .await;
    let mut ws = init(
        &app,
        bearer(&token(Role::Customer, Duration::from_secs(60))),
    )
    .await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    for id in 0..6 {
        ws.send(
            json!({ "type": "subscribe", "id": id.to_string(), "payload": {
            "query": "{ stores { pageInfo { hasNextPage } } }" } }),
        )
        .await;
    }
    let mut limited = 0;
    let mut answered = 0;
    while answered < 6 {
        let message = ws.next_message().await;
        match message["type"].as_str() {
            Some("error") => {
                assert_eq!(
                    message["payload"][0]["extensions"]["code"], "RATE_LIMITED",
                    "{message}"
                );
                limited += 1;
                answered += 1;
            }
            Some("complete") => answered += 1,
            _ => {}
        }
    }
    assert!(
        limited >= 2,
        "{limited} of 6 over a burst of 3 were limited"
    );

    // Guessing tokens is held to the address's rate as well.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            post(&app, Some("Bearer forged.token.here"), "{ __typename }")
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&401) && statuses.contains(&429),
        "{statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused_not_picked_from() {
    let mut app = secured(|_| {}).await;
    let one = format!("Bearer {}", token(Role::Operator, Duration::from_secs(60)));
    let two = format!("Bearer {}", token(Role::Customer, Duration::from_secs(60)));
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("authorization", &one)
        .header("authorization", &two)
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn one_address_holds_only_so_many_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = secured(|s| s.max_connections_per_address = 3).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Three half-sent requests hold three connections open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // A fourth is closed as soon as it is accepted.
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), fourth.read(&mut buf))
        .await
        .expect("the fourth connection is answered or closed at once");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not served: {read:?}"
    );
    // One let go: the address may connect again.
    drop(held.pop());
    common::wait_until("a place to be free again", || async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    drop(held);
    app.stop().await;
}

#[tokio::test]
async fn several_mutations_in_one_request_count_as_several() {
    let mut app = secured(|s| {
        s.rate_limit_per_second = 1;
        s.rate_limit_burst = 3;
    })
    .await;
    let owner = format!(
        "Bearer {}",
        token(Role::StoreOwner, Duration::from_secs(60))
    );
    let four: String = (0..4)
        .map(|n| format!("s{n}: createStore(input: {{name: \"S{n}\", location: \"L\"}}) {{ id }} "))
        .collect();
    let response = post(&app, Some(&owner), &format!("mutation {{ {four} }}")).await;
    assert_eq!(response.status(), 429);
    // Nothing ran.
    let operator = format!("Bearer {}", token(Role::Operator, Duration::from_secs(60)));
    let body: Value = post(
        &app,
        Some(&operator),
        "{ stores { edges { node { id } } } }",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn refusals_before_graphql_have_codes_and_short_messages() {
    let mut app = secured(|_| {}).await;
    let put = app
        .http
        .put(format!("{}/graphql", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    let body: Value = put.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    let huge = "v".repeat(60_000);
    for request in [
        json!({ "query": "{ __typename }", "variables": huge }),
        json!({ "query": "{ __typename }", "operationName": huge }),
        json!({ "query": format!("{{ {huge} }}") }),
    ] {
        let response = app.post(&request).await;
        let text = response.text().await.unwrap();
        assert!(text.len() < 2000, "{} bytes back", text.len());
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["errors"][0]["extensions"]["code"].is_string(),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_key_reused_on_another_checkout_is_refused_and_the_first_order_stands() {
    let mut app = secured(|_| {}).await;
    let customer = Uuid::now_v7();
    let me = format!(
        "Bearer {}",
        mint(
            SECRET,
            Actor {
                id: customer,
                role: Role::Customer,
            },
            Duration::from_secs(600),
        )
        .unwrap()
    );
    let operator = format!("Bearer {}", token(Role::Operator, Duration::from_secs(600)));
    let call = |who: &str, query: &str, vars: Value| {
        let (app, who, query) = (&app, who.to_owned(), query.to_owned());
        async move {
            let (_, body) = app
                .graphql_with(&[("authorization", &who)], &query, vars)
                .await;
            body
        }
    };
    let store = call(
        &operator,
        "mutation { createStore(input: {name: \"K\", location: \"L\"}) { id } }",
        json!({}),
    )
    .await["data"]["createStore"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        &operator,
        "mutation($s: ID!) { enableParticipation(storeId: $s) { id } }",
        json!({ "s": store }),
    )
    .await;
    let product = call(&operator, "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"P\", price: \"5.00\"}) { id } }", json!({ "s": store })).await["data"]["addProduct"]["id"].as_str().unwrap().to_owned();
    call(
        &me,
        "mutation { registerCustomer(input: {name: \"Me\", smsNumber: \"+15550100200\"}) { id } }",
        json!({}),
    )
    .await;
    let mut answers = Vec::new();
    let mut baskets = Vec::new();
    for _ in 0..2 {
        let basket = call(
            &me,
            "mutation($c: ID!) { startBasket(customerId: $c) { id } }",
            json!({ "c": customer }),
        )
        .await["data"]["startBasket"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        common::wait_until("the basket to know the product", || async {
            let added = call(&me, "mutation($b: ID!, $p: ID!) { addItem(basketId: $b, productId: $p, quantity: 1) { id } }", json!({ "b": basket, "p": product })).await;
            added["errors"].is_null().then_some(())
        })
        .await;
        let payment = call(&me, "mutation($c: ID!) { authorizePayment(input: {customerId: $c, amount: \"5.00\"}) { id } }", json!({ "c": customer })).await["data"]["authorizePayment"]["id"].as_str().unwrap().to_owned();
        let (_, checked) = app
            .graphql_with(
                &[("authorization", &me), ("idempotency-key", "one-key-two-checkouts")],
                "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) { basket { orderId } } }",
                json!({ "b": basket, "p": payment }),
            )
            .await;
        answers.push(checked);
        baskets.push(basket);
    }
    let (first, second) = (&answers[0], &answers[1]);
    assert!(first["errors"].is_null(), "{first}");
    common::assert_refused(second, "BAD_USER_INPUT", common::KEY_REUSED);
    let order = first["data"]["checkoutBasket"]["basket"]["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    common::wait_until("the first order to be created", || async {
        let found = call(
            &me,
            "query($o: ID!) { order(id: $o) { status } }",
            json!({ "o": order }),
        )
        .await;
        found["data"]["order"]["status"].as_str().map(drop)
    })
    .await;
    let untouched = call(
        &me,
        "query($b: ID!) { basket(id: $b) { status } }",
        json!({ "b": baskets[1] }),
    )
    .await;
    assert_eq!(untouched["data"]["basket"]["status"], "OPEN", "{untouched}");
    app.stop().await;
}

/// A socket of `token`'s (none: anonymous), subscribed as `1` to `query`.
async fn subscribed(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> WsClient {
    let payload = token.map(bearer).unwrap_or_else(|| json!({}));
    let mut ws = init(app, payload).await;
    assert_eq!(ws.next_message().await["type"], "connection_ack");
    let payload = json!({ "query": query, "variables": variables });
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": payload }))
        .await;
    ws
}

/// A store's catalog is the same whoever watches it: one execution serves
/// every identity (and the anonymous). A customer's orders are theirs: their
/// subscriptions share an execution only with their own, and another
/// customer asking for them is refused, not let into theirs.
#[tokio::test]
async fn a_public_subscription_is_shared_across_identities_a_private_one_is_not() {
    let mut app = secured(|_| {}).await;
    let operator = format!("Bearer {}", token(Role::Operator, Duration::from_secs(600)));
    let call = |query: &'static str, vars: Value| as_operator(&app, &operator, query, vars);
    let store = call(CREATE_STORE, json!({ "n": "Shared" })).await["createStore"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = call(
        "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Lamp\", price: \"1.00\"}) { id } }",
        json!({ "s": store }),
    )
    .await;
    let product = added["addProduct"]["id"].as_str().unwrap().to_owned();
    let reprice =
        "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }";
    let catalog =
        "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor kind product { price } } }";
    let price_of = |message: &Value| {
        let change = &message["payload"]["data"]["catalogChanged"];
        (change["kind"] == "PRICE_INCREASED").then(|| change["product"]["price"].clone())
    };
    let customer = |id: Uuid| {
        let actor = Actor {
            id,
            role: Role::Customer,
        };
        mint(SECRET, actor, Duration::from_secs(600)).unwrap()
    };
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());

    // Ada's subscription runs first, until its resolver has said who its
    // items are for (its first change is proof).
    let mut first = subscribed(&app, Some(&customer(ada)), catalog, json!({ "s": store })).await;
    call(reprice, json!({ "p": product })).await;
    let mut price = None;
    while price.is_none() {
        price = price_of(&first.next_message().await);
    }
    assert_eq!(price, Some(json!("1.01")));
    let mut others = [
        subscribed(&app, Some(&customer(bob)), catalog, json!({ "s": store })).await,
        subscribed(&app, None, catalog, json!({ "s": store })).await,
    ];
    app.wait_for_shared("catalogChanged", 3.0, 1.0).await;
    call(reprice, json!({ "p": product })).await;
    for ws in std::iter::once(&mut first).chain(others.iter_mut()) {
        let mut price = None;
        while price.is_none() {
            price = price_of(&ws.next_message().await);
        }
        assert_eq!(price, Some(json!("1.02")));
    }

    // Two sockets of Ada's share; Bob's own runs apart; Bob asking for
    // Ada's is refused on its own.
    let orders = "subscription($c: ID!) { customerOrders(customerId: $c) { cursor } }";
    let ada_token = customer(ada);
    let _ada_orders = [
        subscribed(&app, Some(&ada_token), orders, json!({ "c": ada })).await,
        subscribed(&app, Some(&ada_token), orders, json!({ "c": ada })).await,
    ];
    let _bob_orders = subscribed(&app, Some(&customer(bob)), orders, json!({ "c": bob })).await;
    app.wait_for_shared("customerOrders", 3.0, 2.0).await;
    let mut intruder = subscribed(&app, Some(&customer(bob)), orders, json!({ "c": ada })).await;
    let refused = intruder.next_message().await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(intruder.next_message().await["type"], "complete");
    app.wait_for_shared("customerOrders", 3.0, 2.0).await;
    app.stop().await;
}
