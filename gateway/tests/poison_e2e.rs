//! A poison message for every module, on both backends: a command of a type
//! its module does not know, on each module's command queue, and an event
//! whose payload is not what its type says, which the saga, search and
//! notifications all follow. Each is
//! dead-lettered with its reason (the operator sees it), readiness stays
//! green, and every module handles what comes next: a whole order goes
//! through.

mod common;

use common::shop::{self, add_item, authorize_payment, basket, checkout, customer, mall};
use common::{Backend, COMMAND_MODULES, spawn_app, wait_until};
use mallbots_contracts::Message;
use mallbots_contracts::ordering::OrderCreated;
use mallbots_platform::dead_letters;
use mallbots_platform::{Envelope, Exchange, Outgoing, Payload};

async fn every_module_survives_a_poison_message(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let broker = app.broker();
    for module in COMMAND_MODULES {
        let kind = format!("{module}.Poison");
        let mut poison = Envelope::first(Outgoing {
            message_type: "poison",
            version: 1,
            payload: Payload::of(&serde_json::json!({ "nothing": "known" })).unwrap(),
        });
        poison.message_type = kind.clone();
        broker
            .publish(Exchange::Commands, &kind, poison.to_wire())
            .await
            .unwrap();
    }
    // An event the saga follows, whose payload is not an order.
    let bad_order = Envelope::first(Outgoing {
        message_type: OrderCreated::TYPE,
        version: 1,
        payload: Payload::of(&serde_json::json!({ "order": "not one" })).unwrap(),
    });
    broker
        .publish(Exchange::Events, OrderCreated::TYPE, bad_order.to_wire())
        .await
        .unwrap();

    let store = app.db("deadletters").await;
    let expected: Vec<String> = COMMAND_MODULES
        .iter()
        .map(|m| format!("{m}.commands"))
        .chain(["cosec.saga", "search.events", "notifications.events"].map(str::to_owned))
        .collect();
    let letters = wait_until("a dead letter from every module", || async {
        let letters = dead_letters::list(&store, None).await.ok()?;
        expected
            .iter()
            .all(|q| letters.iter().any(|l| &l.queue == q))
            .then_some(letters)
    })
    .await;
    for queue in &expected {
        let letter = letters
            .iter()
            .find(|l| &l.queue == queue)
            .expect("its letter");
        assert!(
            letter.reason.contains("unknown message type")
                || letter.reason.contains("cannot decode")
                || letter.reason.starts_with("malformed"),
            "{queue}: {}",
            letter.reason
        );
    }
    assert_eq!(app.readyz().await, 200, "ready throughout");

    // Every module goes on: a whole order, from store to approval.
    let mall = mall(&app).await;
    let ada = customer(&app, "Ada After").await;
    let basket = basket(&app, &ada).await;
    add_item(&app, &basket, &mall.pen, 1).await;
    let payment = authorize_payment(&app, &ada, "12.50").await;
    let order = checkout(&app, &basket, &payment).await;
    shop::order_with_status(&app, &order, "APPROVED").await;
    shop::saga_with_status(&app, &order, "COMPLETED").await;
    assert_eq!(app.readyz().await, 200);
    app.stop().await;
}

on_both_backends!(every_module_survives_a_poison_message);
