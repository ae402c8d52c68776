//! The transport: GraphQL over HTTP per the spec, both websocket
//! subprotocols, the playground and the operational endpoints.

mod common;

use common::{Backend, spawn_app};
use serde_json::{Value, json};

#[test]
fn the_checked_in_schema_matches_the_code() {
    let checked_in = include_str!("../../schema/schema.graphql");
    assert_eq!(
        checked_in,
        mallbots_gateway::graphql::sdl(),
        "schema/schema.graphql is stale: regenerate it with `mallbots schema > schema/schema.graphql`"
    );
}

/// The body of an answer that must have `status`.
async fn answered(answer: reqwest::Response, status: u16) -> Value {
    assert_eq!(answer.status(), status);
    answer.json().await.unwrap()
}

/// The first error's message in `body`.
fn first_error(body: &Value) -> &str {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"))
}

/// The first error's message of an answer that must have `status`.
async fn refused(answer: reqwest::Response, status: u16) -> String {
    first_error(&answered(answer, status).await).to_owned()
}

#[tokio::test]
async fn graphql_over_http_follows_the_spec() {
    let mut app = spawn_app(Backend::Embedded).await;
    let url = format!("{}/graphql", app.base);
    let post = |body: String, content_type: &'static str, accept: &'static str| {
        app.http
            .post(&url)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body)
            .send()
    };
    // The spec's own media type: status codes tell errors apart.
    let post_spec = |body: String| {
        post(
            body,
            "application/json",
            "application/graphql-response+json",
        )
    };

    // Not JSON at all.
    let r = post("{nope".into(), "application/json", "application/json")
        .await
        .unwrap();
    let message = refused(r, 400).await;
    assert!(message.contains("not a GraphQL request"), "{message}");

    // A request without a query (here: misspelled) is a bad request.
    let r = post(
        json!({ "qeury": "{ __typename }" }).to_string(),
        "application/json",
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(refused(r, 400).await, "the request has no query");

    // An empty body and a batch are told apart.
    for (body, says) in [
        ("", "the body is empty"),
        (
            " [{\"query\": \"{ __typename }\"}]",
            "batches are not accepted",
        ),
    ] {
        let r = post(body.into(), "application/json", "application/json")
            .await
            .unwrap();
        let message = refused(r, 400).await;
        assert!(message.starts_with(says), "{message}");
    }

    // Not JSON content.
    let r = post("query=x".into(), "text/plain", "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let query = json!({ "query": "{ stores { edges { cursor } } }" }).to_string();
    for not_json in ["application/jsonx", "application/json-patch+json"] {
        let r = post(query.clone(), not_json, "application/json")
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{not_json}");
    }
    let r = post(query, "Application/JSON; charset=utf-8", "application/json")
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the media type, whatever its case and parameters"
    );

    // A parse error: 200 under application/json, 400 under graphql-response+json.
    // Under plain JSON it has `data: null`, and so have the gateway's own
    // refusals before a document runs (a limit of its own, an unknown
    // persisted query).
    let bad = json!({ "query": "{ stores { " }).to_string();
    let aliases: String = (0..31).map(|n| format!("a{n}: __typename ")).collect();
    let persisted = json!({ "extensions": { "persistedQuery": {
        "version": 1, "sha256Hash": "0".repeat(64) } } });
    for refused in [
        json!({ "query": "{ stores { " }),
        json!({ "query": format!("{{ {aliases} }}") }),
        persisted,
    ] {
        let r = post(refused.to_string(), "application/json", "application/json")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body.get("data"), Some(&Value::Null), "{body}");
        assert!(
            body["errors"][0]["extensions"]["code"].is_string(),
            "{body}"
        );
    }
    let r = post_spec(bad).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"],
        "application/graphql-response+json"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body.get("data").is_none(), "no data entry: {body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );

    // A validation error (unknown field), same rule.
    let invalid = json!({ "query": "{ nothing }" }).to_string();
    let r = post_spec(invalid).await.unwrap();
    let body = answered(r, 400).await;
    assert!(first_error(&body).contains("nothing"), "{body}");
    assert!(body.get("data").is_none(), "no data entry: {body}");

    // A domain error is an execution error: 200 with data null and a code.
    let blank =
        json!({ "query": "mutation { createStore(input: {name: \"\", location: \"x\"}) { id } }" })
            .to_string();
    let r = post_spec(blank).await.unwrap();
    let body = answered(r, 200).await;
    assert!(
        body.get("data").is_some(),
        "an execution error keeps data: {body}"
    );

    // Too large a body.
    let huge = json!({ "query": format!("{{ stores {{ edges {{ cursor }} }} }} #{}", "x".repeat(100_000)) }).to_string();
    let r = post(huge, "application/json", "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // GET runs queries, refuses mutations.
    let r = app
        .http
        .get(&url)
        .query(&[("query", "{ stores { edges { cursor } } }")])
        .send()
        .await
        .unwrap();
    let body = answered(r, 200).await;
    assert_eq!(body["data"]["stores"]["edges"], json!([]));
    let r = app
        .http
        .get(&url)
        .query(&[(
            "query",
            "mutation { createStore(input: {name: \"x\", location: \"y\"}) { id } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    // A document's one operation runs without being named: named or not,
    // a mutation is refused, and nothing is created.
    for named in [
        "mutation Make { createStore(input: {name: \"made by GET\", location: \"y\"}) { id } }",
        "# a comment\nmutation Make { createStore(input: {name: \"made by GET\", location: \"y\"}) { id } }",
    ] {
        let r = app
            .http
            .get(&url)
            .query(&[("query", named)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{named}");
    }
    let stores = app
        .data(
            "{ stores(first: 50) { edges { node { name } } } }",
            json!({}),
        )
        .await;
    assert!(!stores.to_string().contains("made by GET"), "{stores}");

    // Bad ids and page sizes are user errors, not crashes.
    let body = app.graphql("{ store(id: \"42\") { id } }", json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let body = app
        .graphql("{ stores(first: -1) { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["message"],
        "first must be between 0 and 100"
    );
    app.stop().await;
}

#[tokio::test]
async fn pagination_returns_every_store_once() {
    let mut app = spawn_app(Backend::Embedded).await;
    let mut created = Vec::new();
    for n in 0..7 {
        let data = app
            .data(
                "mutation($n: String!) { createStore(input: {name: $n, location: \"L\"}) { id } }",
                json!({ "n": format!("Store {n}") }),
            )
            .await;
        created.push(data["createStore"]["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app
            .data(
                "query($after: String) { stores(first: 3, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage } } }",
                json!({ "after": after }),
            )
            .await;
        let edges = data["stores"]["edges"].as_array().unwrap().clone();
        for e in &edges {
            seen.push(e["node"]["id"].as_str().unwrap().to_owned());
        }
        if data["stores"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = edges.last().unwrap()["cursor"].clone();
    }
    assert_eq!(seen, created);
    app.stop().await;
}

/// Subscribes to a new store's `catalogChanged` over `protocol` (the query
/// after `prefix`), adds a product named `name`, and checks its push.
async fn a_catalog_push_arrives(protocol: &str, prefix: &str, name: &str) {
    let mut app = spawn_app(Backend::Embedded).await;
    let store = app
        .data(
            "mutation { createStore(input: {name: \"Pushy\", location: \"P\"}) { id } }",
            json!({}),
        )
        .await["createStore"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let query = format!(
        "{prefix}subscription($s: ID!) {{ catalogChanged(storeId: $s) {{ kind product {{ name }} }} }}"
    );
    let mut ws = app.subscribe(protocol, &query, json!({ "s": store })).await;
    app.wait_for_subscriptions(1).await;
    app.data(
        "mutation($s: ID!, $n: String!) { addProduct(input: {storeId: $s, name: $n, price: \"1\"}) { id } }",
        json!({ "s": store, "n": name }),
    )
    .await;
    let pushed = ws.next_data().await;
    assert_eq!(
        pushed["catalogChanged"],
        json!({ "kind": "ADDED", "product": { "name": name } })
    );
    app.stop().await;
}

#[tokio::test]
async fn the_legacy_websocket_protocol_works_too() {
    a_catalog_push_arrives("graphql-ws", "", "Old news").await;
}

/// The websocket read buffer is small (1 KiB); a client message many times
/// its size still arrives whole.
#[tokio::test]
async fn a_subscribe_message_larger_than_the_read_buffer_works() {
    let padding = format!("# {}\n", "x".repeat(16 * 1024));
    a_catalog_push_arrives("graphql-transport-ws", &padding, "Roomy").await;
}

#[tokio::test]
async fn playground_sdl_health_readiness_and_metrics_are_served() {
    let mut app = spawn_app(Backend::Embedded).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.base)).send();
    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("/graphiql/graphiql.min.js"), "{page}");
    assert!(page.contains("/graphql/ws"));
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
    ] {
        let r = get(&format!("/graphiql/{asset}")).await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 1000, "{asset} is empty");
    }
    let sdl = get("/schema.graphql").await.unwrap().text().await.unwrap();
    assert_eq!(sdl, mallbots_gateway::graphql::sdl());
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("mallbots_websocket_connections 0"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    app.stop().await;
}

/// Headers that name one thing are sent once, and a consistency token is
/// exactly as handed out: a second copy, a sign or a space is refused with
/// 400, never silently read some other way.
#[tokio::test]
async fn ambiguous_request_headers_are_refused() {
    let mut app = spawn_app(Backend::Embedded).await;
    let store = app
        .data(
            "mutation { createStore(input: {name: \"Once\", location: \"L\"}) { consistencyToken } }",
            json!({}),
        )
        .await;
    let token = store["createStore"]["consistencyToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let query = "{ stores { edges { cursor } } }";
    let (status, _) = app
        .graphql_with(&[("consistency-token", &token)], query, json!({}))
        .await;
    assert_eq!(status, 200, "the token as handed out");
    let (module, position) = token.split_once(':').unwrap();
    let refused: [Vec<(&str, String)>; 5] = [
        vec![
            ("consistency-token", token.clone()),
            ("consistency-token", format!("{module}:999999")),
        ],
        vec![("consistency-token", format!("{module}:+{position}"))],
        vec![("consistency-token", format!("{module}:0{position}"))],
        vec![("consistency-token", format!("{module}:"))],
        vec![
            ("idempotency-key", "a".into()),
            ("idempotency-key", "b".into()),
        ],
    ];
    for headers in refused {
        let sent: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, body) = app.graphql_with(&sent, query, json!({})).await;
        assert_eq!(status, 400, "{sent:?}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{sent:?}"
        );
    }
    app.stop().await;
}

/// Apollo's automatic persisted queries, as its link speaks them over POST:
/// the hash alone (not known yet), then hash and query, then the hash alone
/// again; a wrong hash is refused, and a remembered document is still held
/// to every check (here: introspection is for operators only).
#[tokio::test]
async fn persisted_queries_round_trip() {
    use sha2::{Digest, Sha256};

    let mut settings = common::settings(Backend::Embedded).await;
    settings.introspection = false;
    settings.auth_jwt_secret = Some(common::JWT_SECRET.into());
    let mut app = common::start_with(settings).await;
    let customer = common::token(mallbots_contracts::Role::Customer, uuid::Uuid::now_v7());
    let post = |body: Value| {
        app.http
            .post(format!("{}/graphql", app.base))
            .header("authorization", format!("Bearer {customer}"))
            .json(&body)
            .send()
    };
    let query = "{ stores(first: 1) { edges { cursor } } }";
    let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
    let persisted = |hash: &str| json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    // The hash alone, of a document not kept: refused, the document asked for.
    let not_kept = |hash: String| async move {
        let again = post(json!({ "extensions": persisted(&hash) }))
            .await
            .unwrap();
        let body: Value = again.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["message"], "PersistedQueryNotFound",
            "{body}"
        );
    };

    let unknown = post(json!({ "extensions": persisted(&hash) }))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );

    let sent = post(json!({ "query": query, "extensions": persisted(&hash) }))
        .await
        .unwrap();
    let body: Value = sent.json().await.unwrap();
    assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");

    let known = post(json!({ "extensions": persisted(&hash) }))
        .await
        .unwrap();
    let body: Value = known.json().await.unwrap();
    assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");

    let wrong = post(json!({ "query": query, "extensions": persisted(&"0".repeat(64)) }))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    for not_a_hash in ["abc", "", &"z".repeat(64), &"0".repeat(65)] {
        let bad = post(json!({ "extensions": persisted(not_a_hash) }))
            .await
            .unwrap();
        assert_eq!(bad.status(), 400, "{not_a_hash:?}");
    }
    let upper = post(json!({ "extensions": persisted(&hash.to_uppercase()) }))
        .await
        .unwrap();
    let body: Value = upper.json().await.unwrap();
    assert_eq!(
        body["data"]["stores"]["edges"],
        json!([]),
        "hex in any case: {body}"
    );

    // Kept only once run without a request error, and only if small: a
    // document that does not validate, or a large one, is asked for again.
    let invalid = "{ nosuchfield }";
    let large = format!(
        "{{ stores(first: 1) {{ edges {{ cursor }} }} }} #{}",
        "x".repeat(9000)
    );
    for document in [invalid, large.as_str()] {
        let hash = format!("{:x}", Sha256::digest(document.as_bytes()));
        post(json!({ "query": document, "extensions": persisted(&hash) }))
            .await
            .unwrap();
        not_kept(hash).await;
    }

    // Introspection sent with its hash by a customer is refused, and not
    // kept; kept once an operator ran it, its hash alone is still refused
    // to a customer: every use is checked.
    let introspection = "{ __schema { queryType { name } } }";
    let hash = format!("{:x}", Sha256::digest(introspection.as_bytes()));
    let first = post(json!({ "query": introspection, "extensions": persisted(&hash) }))
        .await
        .unwrap();
    assert_eq!(first.status(), 403);
    not_kept(hash.clone()).await;
    let operator = common::token(mallbots_contracts::Role::Operator, uuid::Uuid::now_v7());
    let registered = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("authorization", format!("Bearer {operator}"))
        .json(&json!({ "query": introspection, "extensions": persisted(&hash) }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let replayed = post(json!({ "extensions": persisted(&hash) }))
        .await
        .unwrap();
    assert_eq!(replayed.status(), 403);
    app.stop().await;
}

/// A document sent again is not parsed again: the gateway keeps the ones
/// that ran, by their SHA-256, so a document sent as text can afterwards
/// be named by its hash alone. One that does not validate is parsed every
/// time, and a kept one is still validated against each request's
/// variables.
#[tokio::test]
async fn documents_that_ran_are_kept_parsed() {
    use sha2::{Digest, Sha256};

    let mut app = spawn_app(Backend::Embedded).await;
    let documents = |from: &'static str| {
        let app = &app;
        async move {
            let text = app.metrics().await;
            common::metric(&text, "mallbots_graphql_documents_total", &[from]).unwrap_or(0.0)
        }
    };
    let post = |body: Value| {
        let app = &app;
        async move { app.post(&body).await.json::<Value>().await.unwrap() }
    };
    let query = "query Few($n: Int) { stores(first: $n) { edges { cursor } } }";
    let (parsed, kept) = (
        documents("from=\"parsed\"").await,
        documents("from=\"kept\"").await,
    );
    for _ in 0..3 {
        let body = post(json!({ "query": query, "variables": { "n": 1 } })).await;
        assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");
    }
    assert_eq!(documents("from=\"parsed\"").await - parsed, 1.0);
    assert_eq!(documents("from=\"kept\"").await - kept, 2.0);
    // Over GET too, found once for the whole request.
    let got = app
        .http
        .get(format!("{}/graphql", app.base))
        .query(&[("query", query), ("variables", "{\"n\": 1}")])
        .send()
        .await
        .unwrap();
    let body: Value = got.json().await.unwrap();
    assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");
    assert_eq!(documents("from=\"parsed\"").await - parsed, 1.0);
    assert_eq!(documents("from=\"kept\"").await - kept, 3.0);

    // Its hash alone names it now, as Apollo's persisted queries do.
    let hash = format!("{:x}", Sha256::digest(query.as_bytes()));
    let persisted = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });
    let body = post(json!({ "extensions": persisted, "variables": { "n": 1 } })).await;
    assert_eq!(body["data"]["stores"]["edges"], json!([]), "{body}");

    // Kept, and still validated: a variable of the wrong type is refused.
    let body = post(json!({ "query": query, "variables": { "n": "one" } })).await;
    assert!(body["data"].is_null(), "{body}");
    assert!(body["errors"][0]["message"].is_string(), "{body}");

    // An empty text is not a hash alone: its error says what is wrong.
    let empty = app
        .http
        .get(format!("{}/graphql", app.base))
        .query(&[("query", "")])
        .send()
        .await
        .unwrap();
    let body: Value = empty.json().await.unwrap();
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    assert_ne!(
        body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND",
        "{body}"
    );

    // Not valid, so not kept: parsed again each time.
    let parsed = documents("from=\"parsed\"").await;
    for _ in 0..2 {
        let body = post(json!({ "query": "{ nosuchfield }" })).await;
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
    assert_eq!(documents("from=\"parsed\"").await - parsed, 2.0);
    app.stop().await;
}

/// Large answers are gzipped for clients that accept it, small ones are
/// not; a catalog read over GET may be cached a few seconds by anyone,
/// anything else only by its client and not kept.
#[tokio::test]
async fn large_answers_are_compressed_and_catalog_reads_cacheable() {
    let mut app = spawn_app(Backend::Embedded).await;
    for n in 0..30 {
        app.data(
            "mutation($n: String!) { createStore(input: {name: $n, location: \"Upper level, east wing\"}) { id } }",
            json!({ "n": format!("Compressed Store {n}") }),
        )
        .await;
    }
    let post = |query: &str| {
        app.http
            .post(format!("{}/graphql", app.base))
            .header("accept-encoding", "gzip")
            .json(&json!({ "query": query }))
            .send()
    };
    let large = post("{ stores(first: 30) { edges { cursor node { id name location } } } }")
        .await
        .unwrap();
    assert_eq!(large.headers()["content-encoding"], "gzip");
    let gzipped = large.bytes().await.unwrap();
    assert_eq!(&gzipped[..2], [0x1f, 0x8b], "a gzip stream");
    let small = post("{ stores(first: 1) { edges { cursor } } }")
        .await
        .unwrap();
    assert!(small.headers().get("content-encoding").is_none());
    let plain: Value = small.json().await.unwrap();
    assert!(plain["data"]["stores"]["edges"].is_array());

    let get = |query: &str| {
        app.http
            .get(format!("{}/graphql", app.base))
            .query(&[("query", query)])
            .send()
    };
    let catalog = get("{ stores(first: 1) { edges { node { name } } } }")
        .await
        .unwrap();
    assert_eq!(catalog.headers()["cache-control"], "public, max-age=5");
    let vary = catalog.headers()["vary"].to_str().unwrap().to_owned();
    assert!(
        vary.contains("consistency-token") && vary.contains("authorization"),
        "{vary}"
    );
    let private = get("{ notifications(customerId: \"0193b1d2-0000-7000-8000-000000000001\") { edges { cursor } } }")
        .await
        .unwrap();
    assert_eq!(private.headers()["cache-control"], "no-store");
    // A catalog read that answers an error is not kept, nor is a refusal.
    let failed = get("{ store(id: \"nope\") { name } }").await.unwrap();
    assert_eq!(failed.status(), 200);
    assert_eq!(failed.headers()["cache-control"], "no-store");
    let refused = get("mutation { createStore(input: {name: \"G\", location: \"L\"}) { id } }")
        .await
        .unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    app.stop().await;
}

/// A client that holds a connection without finishing a request is cut
/// off after `HTTP_READ_TIMEOUT_MS`: one that never sends a byte, one that
/// sends its headers in part, one that sends less body than it announced.
/// A websocket, once upgraded, is not held to it.
#[tokio::test]
async fn connections_that_do_not_finish_a_request_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut settings = common::settings(Backend::Embedded).await;
    settings.http_read_timeout_ms = 500;
    let mut app = common::start_with(settings).await;
    let store = common::shop::store(&app, "Patient", "P").await;
    let mut live = common::WsClient::open(&app.base, "graphql-transport-ws", None).await;
    live.send(json!({ "type": "connection_init" })).await;
    assert_eq!(live.next_message().await["type"], "connection_ack");
    live.send(json!({
        "type": "subscribe",
        "id": "1",
        "payload": {
            "query": "subscription($s: ID!) { catalogChanged(storeId: $s) { product { name } } }",
            "variables": { "s": store },
        },
    }))
    .await;
    app.wait_for_subscriptions(1).await;

    let address = app.base.trim_start_matches("http://").to_owned();
    let incomplete = [
        String::new(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned(),
        "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"query\":".to_owned(),
    ];
    for sent in &incomplete {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(sent.as_bytes()).await.unwrap();
        // The server answers (a body cut off) or just closes: either way
        // the connection ends, well within the test's deadline.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(common::DEADLINE, stream.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "still open after {:?}: {sent:?}",
            common::DEADLINE
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{sent:?} got {answer}"
        );
    }

    // The websocket outlived those deadlines and still pushes.
    common::shop::product(&app, &store, "Still listening", "1.00").await;
    let pushed = live.next_message().await;
    assert_eq!(pushed["type"], "next", "{pushed}");
    app.stop().await;
}
