//! The published message contracts: `/asyncapi.json` is the checked-in
//! `schema/asyncapi.json`, it names every message type declared in
//! `schema/src`, and real messages, captured on the broker while flows
//! run, are valid against their schemas (payload and headers), one of
//! every type.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::shop::{
    self, ORDER, add_item, authorize_payment, basket, checkout, customer, list_with_status, mall,
    order_with_status,
};
use common::{Backend, TestApp, spawn_app, wait_until};
use mallbots_contracts::payments::{AdjustInvoice, CancelInvoice, ReleasePayment};
use mallbots_contracts::stores::CreateStore;
use mallbots_contracts::{Actor, CommandReply, Message};
use mallbots_platform::{Envelope, Exchange, QueueSpec, WireMessage};
use serde_json::{Value, json};
use uuid::Uuid;

const CHECKED_IN: &str = include_str!("../../schema/asyncapi.json");

#[tokio::test]
async fn the_document_is_checked_in_served_and_complete() {
    assert!(
        mallbots_gateway::asyncapi::document() == CHECKED_IN,
        "schema/asyncapi.json is stale: regenerate it with `mallbots asyncapi > schema/asyncapi.json`"
    );
    let mut app = spawn_app(Backend::Embedded).await;
    let served = app
        .http
        .get(format!("{}/asyncapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), CHECKED_IN);
    app.stop().await;

    // Every type the contracts' sources declare is a message of the document.
    let document: Value = serde_json::from_str(CHECKED_IN).unwrap();
    let named: BTreeSet<&str> = document["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let declared = declared_types();
    assert!(
        declared.len() > 60,
        "only {} types found in schema/src",
        declared.len()
    );
    let missing: Vec<_> = declared
        .iter()
        .filter(|t| !named.contains(t.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the AsyncAPI document: {missing:?}"
    );
    assert_eq!(named.len(), declared.len(), "{named:?}");
}

/// Every message's body is a JSON object (for a reply, each of its
/// shapes is): receivers refuse any other body before decoding it.
#[test]
fn every_message_body_is_an_object() {
    let document: Value = serde_json::from_str(CHECKED_IN).unwrap();
    let schemas = &document["components"]["schemas"];
    let resolve = |schema: &Value| resolved(schemas, schema);
    let messages = document["components"]["messages"].as_object().unwrap();
    assert!(messages.len() > 50, "{}", messages.len());
    for (id, message) in messages {
        let payload = resolve(&message["payload"]);
        let shapes = match payload["oneOf"].as_array() {
            Some(shapes) => shapes.iter().map(&resolve).collect(),
            None => vec![payload],
        };
        for shape in shapes {
            assert_eq!(shape["type"], "object", "{id}: {shape}");
        }
    }
}

/// `schema`, or what its `$ref` chain names in `schemas`.
fn resolved<'a>(schemas: &'a Value, mut schema: &'a Value) -> Value {
    while let Some(name) = schema["$ref"].as_str() {
        schema = &schemas[name.rsplit('/').next().unwrap()];
    }
    schema.clone()
}

/// Every message type named in `schema/src`: `message!(Type, "name")`,
/// `Name = "name"` in `view_events!` and the reply's `REPLY_TYPE`, read
/// from the source text.
fn declared_types() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/src");
    let mut types = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.file_name().is_some_and(|n| n == "codec.rs") {
            // The macros are defined here; the reply's type is named here.
            let (_, reply) = text.split_once("REPLY_TYPE: &str = \"").unwrap();
            types.insert(reply[..reply.find('"').unwrap()].to_owned());
            continue;
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("message!(") {
            rest = &rest[at..];
            let call = &rest[..rest.find(')').unwrap()];
            types.extend(call.split('"').nth(1).map(str::to_owned));
            rest = &rest[1..];
        }
        for block in text.split("view_events!(").skip(1) {
            let block = &block[..block.find(");").unwrap()];
            types.extend(
                block
                    .lines()
                    .filter_map(|l| l.split_once(" = \""))
                    .map(|(_, name)| {
                        name.trim_end_matches("\",")
                            .trim_end_matches('"')
                            .to_owned()
                    }),
            );
        }
    }
    types
}

/// Captures the first messages of each type that cross the command and
/// event exchanges, until `stop` is set.
async fn tap(app: &TestApp) -> tokio::sync::mpsc::UnboundedReceiver<WireMessage> {
    let spec = QueueSpec::transient(format!("tap.{}", Uuid::new_v4().simple()))
        .bind(Exchange::Events, "#")
        .bind(Exchange::Commands, "#");
    let mut subscription = app.broker().consume(&spec).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(delivery) = subscription.next().await {
            let _ = tx.send(delivery.message.clone());
            let _ = delivery.ack().await;
        }
    });
    rx
}

/// A command sent by hand with a reply queue of ours: the module's real
/// replies, accepted and rejected.
async fn replies(app: &TestApp) -> Vec<WireMessage> {
    let queue = format!("tap.replies.{}", Uuid::new_v4().simple());
    let mut replies = app
        .broker()
        .consume(&QueueSpec::transient(queue.clone()))
        .await
        .unwrap();
    let command = CreateStore {
        store_id: Uuid::now_v7(),
        name: "Replied".into(),
        location: "By hand".into(),
    };
    let mut got = Vec::new();
    // The second is refused: the store exists.
    for _ in 0..2 {
        let mut envelope = Envelope::new(&command).unwrap();
        envelope.set_actor(&Actor::OPEN);
        envelope.reply_to = Some(queue.clone());
        app.broker()
            .publish(Exchange::Commands, CreateStore::TYPE, envelope.to_wire())
            .await
            .unwrap();
        let delivery = tokio::time::timeout(common::DEADLINE, replies.next())
            .await
            .expect("a reply in time")
            .expect("the reply queue");
        got.push(delivery.message.clone());
        delivery.ack().await.unwrap();
    }
    got
}

/// Runs flows that send every command and publish every event: a catalog
/// changed every way, customers changed every way, baskets, an order
/// completed, one canceled, one rejected for its customer and one for its
/// payment (compensated).
async fn every_flow(app: &TestApp) {
    let mall = mall(app).await;
    let mutate = |query: &'static str, variables: Value| async move {
        app.data(query, variables).await;
    };
    mutate(
        "mutation($s: ID!) { rebrandStore(storeId: $s, name: \"Leaf and Kettle\") { id } }",
        json!({ "s": mall.teahouse }),
    )
    .await;
    mutate(
        "mutation($p: ID!) { rebrandProduct(productId: $p, name: \"Sencha\", description: \"Green\") { id } }",
        json!({ "p": mall.tea }),
    )
    .await;
    mutate(
        "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"1.00\") { id } }",
        json!({ "p": mall.tea }),
    )
    .await;
    mutate(
        "mutation($p: ID!) { decreaseProductPrice(productId: $p, delta: \"1.00\") { id } }",
        json!({ "p": mall.tea }),
    )
    .await;
    let gone = shop::product(app, &mall.books, "Gone", "1.00").await;
    mutate(
        "mutation($p: ID!) { removeProduct(productId: $p) { id } }",
        json!({ "p": gone }),
    )
    .await;
    let closed = shop::store(app, "Closed", "Nowhere").await;
    mutate(
        "mutation($s: ID!) { disableParticipation(storeId: $s) { id } }",
        json!({ "s": closed }),
    )
    .await;

    // Customers, and a basket abandoned.
    let ada = customer(app, "Ada").await;
    mutate(
        "mutation($c: ID!) { changeSmsNumber(customerId: $c, smsNumber: \"+1 555 0100 999\") { id } }",
        json!({ "c": ada }),
    )
    .await;
    let abandoned = basket(app, &ada).await;
    add_item(app, &abandoned, &mall.pen, 2).await;
    mutate(
        "mutation($b: ID!, $p: ID!) { removeItem(basketId: $b, productId: $p, quantity: 1) { id } }",
        json!({ "b": abandoned, "p": mall.pen }),
    )
    .await;
    mutate(
        "mutation($b: ID!) { cancelBasket(basketId: $b) { id } }",
        json!({ "b": abandoned }),
    )
    .await;

    // An order taken by a bot, readied, invoiced, paid.
    let order = order_of(app, &ada, &mall.pen, "12.50").await;
    let invoice = invoiced(app, &order).await;
    mutate(
        "mutation($id: ID!) { payInvoice(invoiceId: $id) { id } }",
        json!({ "id": invoice }),
    )
    .await;
    order_with_status(app, &order, "COMPLETED").await;

    // An invoice adjusted, then canceled: commands no mutation sends (an
    // operator's or another system's), sent here on the broker.
    let readied = order_of(app, &ada, &mall.tea, "7.00").await;
    let invoice = invoiced(app, &readied).await;
    let invoice_id = Uuid::parse_str(&invoice).unwrap();
    send(
        app,
        &AdjustInvoice {
            invoice_id,
            amount: "6.50".parse().unwrap(),
        },
    )
    .await;
    send(app, &CancelInvoice { invoice_id }).await;
    wait_until("the invoice canceled", || async {
        let order = app.data(ORDER, json!({ "id": readied })).await;
        (order["order"]["invoice"]["status"] == "CANCELED").then_some(())
    })
    .await;

    // An order canceled once approved.
    let canceled = order_of(app, &ada, &mall.notebook, "4.25").await;
    order_with_status(app, &canceled, "APPROVED").await;
    mutate(
        "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
        json!({ "id": canceled }),
    )
    .await;
    let canceled = order_with_status(app, &canceled, "CANCELED").await;
    // Its payment is released (PaymentReleased); ReleasePayment, the saga's
    // compensation of a confirmed payment, is sent here on the broker.
    let id = |field: &str| canceled[field].as_str().unwrap().parse().unwrap();
    let (payment_id, order_id) = (id("paymentId"), id("id"));
    send(
        app,
        &ReleasePayment {
            payment_id,
            order_id,
        },
    )
    .await;

    // Rejected: a wrong payment amount (a list made, then canceled) ...
    let wrong = order_of(app, &ada, &mall.pen, "1.00").await;
    order_with_status(app, &wrong, "REJECTED").await;
    // ... and a disabled customer (enabled again after).
    let bob = customer(app, "Bob").await;
    let bobs = basket(app, &bob).await;
    add_item(app, &bobs, &mall.tea, 1).await;
    let payment = authorize_payment(app, &bob, "7.00").await;
    mutate(
        "mutation($c: ID!) { disableCustomer(customerId: $c) { id } }",
        json!({ "c": bob }),
    )
    .await;
    let refused = checkout(app, &bobs, &payment).await;
    order_with_status(app, &refused, "REJECTED").await;
    mutate(
        "mutation($c: ID!) { enableCustomer(customerId: $c) { id } }",
        json!({ "c": bob }),
    )
    .await;
}

/// Walks an approved `order` through a bot's shopping to its invoice; the
/// invoice's id.
async fn invoiced(app: &TestApp, order: &str) -> String {
    let approved = order_with_status(app, order, "APPROVED").await;
    let list = approved["shoppingListId"].as_str().unwrap();
    let bot = Uuid::now_v7().to_string();
    app.data(
        "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) { id } }",
        json!({ "id": list, "bot": bot }),
    )
    .await;
    list_with_status(app, list, "ACTIVE").await;
    app.data(
        "mutation($id: ID!) { completeShoppingList(id: $id) { id } }",
        json!({ "id": list }),
    )
    .await;
    wait_until("the invoice", || async {
        let found = app.data(ORDER, json!({ "id": order })).await;
        found["order"]["invoice"]["id"].as_str().map(str::to_owned)
    })
    .await
}

/// Sends `command` on the broker as an operator (nobody waits for a reply).
async fn send<M: Message>(app: &TestApp, command: &M) {
    let mut envelope = Envelope::new(command).unwrap();
    envelope.set_actor(&Actor::OPEN);
    app.broker()
        .publish(Exchange::Commands, M::TYPE, envelope.to_wire())
        .await
        .unwrap();
}

/// Checks out a basket of one `product` for `customer`, paying `amount`.
async fn order_of(app: &TestApp, customer: &str, product: &str, amount: &str) -> String {
    let basket = basket(app, customer).await;
    add_item(app, &basket, product, 1).await;
    let payment = authorize_payment(app, customer, amount).await;
    checkout(app, &basket, &payment).await
}

/// A validator of `pointer` (a JSON pointer into the document), resolving
/// the document's own references.
fn validator(document: &Value, pointer: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$ref": format!("#{pointer}"),
        "components": document["components"],
    });
    jsonschema::draft7::new(&schema).unwrap_or_else(|e| panic!("{pointer}: {e}"))
}

async fn real_messages_match_their_schemas(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut tapped = tap(&app).await;
    every_flow(&app).await;
    let mut captured: BTreeMap<String, Vec<WireMessage>> = BTreeMap::new();
    for reply in replies(&app).await {
        captured
            .entry(CommandReply::TYPE.to_owned())
            .or_default()
            .push(reply);
    }
    let document: Value = serde_json::from_str(CHECKED_IN).unwrap();
    let expected: BTreeSet<String> = document["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    // Every type has crossed the broker once the last flow's messages are in.
    wait_until("a message of every type", || {
        while let Ok(message) = tapped.try_recv() {
            let kind = message.message_type.clone().unwrap_or_default();
            captured.entry(kind).or_default().push(message);
        }
        let missing: Vec<_> = expected
            .iter()
            .filter(|t| !captured.contains_key(*t))
            .collect();
        if !missing.is_empty() {
            eprintln!("not captured yet: {missing:?}");
        }
        std::future::ready(missing.is_empty().then_some(()))
    })
    .await;

    let headers = validator(&document, "/components/schemas/AmqpHeaders");
    let mut checked = 0;
    for (kind, messages) in &captured {
        let id = mallbots_gateway::asyncapi::id_of(kind);
        let payload = validator(&document, &format!("/components/messages/{id}/payload"));
        for message in messages {
            let body: Value = serde_json::from_slice(&message.body).unwrap();
            if let Err(error) = payload.validate(&body) {
                panic!("a {kind} payload does not match its schema: {error}\n{body}");
            }
            let sent = serde_json::to_value(&message.headers).unwrap();
            if let Err(error) = headers.validate(&sent) {
                panic!("a {kind}'s headers do not match: {error}\n{sent}");
            }
            checked += 1;
        }
    }
    eprintln!("{checked} messages of {} types validated", captured.len());
    // The validators can say no: a store without its name, headers
    // without a schema version.
    let store = &captured[CreateStore::TYPE][0];
    let mut nameless: Value = serde_json::from_slice(&store.body).unwrap();
    nameless.as_object_mut().unwrap().remove("name");
    let id = mallbots_gateway::asyncapi::id_of(CreateStore::TYPE);
    let payload = validator(&document, &format!("/components/messages/{id}/payload"));
    assert!(payload.validate(&nameless).is_err(), "{nameless}");
    let mut unversioned = store.headers.clone();
    unversioned.remove("x-schema-version");
    assert!(
        headers
            .validate(&serde_json::to_value(&unversioned).unwrap())
            .is_err()
    );
    app.stop().await;
}

on_both_backends!(real_messages_match_their_schemas);
