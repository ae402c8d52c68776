//! A poison message for every module, on both backends: a command of a type
//! its module does not know, on each module's command queue, and an event
//! whose payload is not what its type says, which the saga, search and
//! notifications all follow. Each is
//! dead-lettered with its reason (the operator sees it), readiness stays
//! green, and every module handles what comes next: a whole order goes
//! through. A command that cannot be read at all (its body not JSON) is
//! dead-lettered too, and its sender is answered rather than left to time
//! out.

mod common;

use common::shop::{self, add_item, authorize_payment, basket, checkout, customer, mall};
use common::{Backend, COMMAND_MODULES, DEADLINE, all_letters, spawn_app, wait_until};
use mallbots_contracts::ordering::OrderCreated;
use mallbots_contracts::stores::CreateStore;
use mallbots_contracts::{CommandReply, ErrorCode, Message};
use mallbots_platform::envelope::HEADER_POSITION;
use mallbots_platform::{Envelope, Exchange, Outgoing, Payload, QueueSpec, Shutdown, WireMessage};
use mallbots_platform::{consumer, dead_letters};
use uuid::Uuid;

async fn every_module_survives_a_poison_message(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let broker = app.broker();
    // A stores event of a type nobody knows (as a newer stores might send):
    // the catalog caches of baskets and depot pass over it, as search does.
    let mut unknown = Envelope::first(Outgoing {
        message_type: "poison",
        version: 1,
        payload: Payload::of(&serde_json::json!({ "product": "exploded" })).unwrap(),
    });
    unknown.message_type = "stores.Product.ProductExploded".to_owned();
    unknown
        .headers
        .insert(HEADER_POSITION.to_owned(), "1".to_owned());
    broker
        .publish(Exchange::Events, &unknown.message_type, unknown.to_wire())
        .await
        .unwrap();
    // Then a poison command for every module: each queue goes in order, so
    // once its poison is dead-lettered, the event before it was settled.
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
        let letters = dead_letters::list(&store, &all_letters(None)).await.ok()?;
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
    let passed_over: Vec<&str> = letters
        .iter()
        .filter(|l| l.message_type.as_deref() == Some("stores.Product.ProductExploded"))
        .map(|l| l.queue.as_str())
        .collect();
    assert!(
        passed_over.is_empty(),
        "an unknown stores event dead-lettered on {passed_over:?}"
    );
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

async fn an_unreadable_command_is_answered_not_left_to_time_out(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let broker = app.broker();
    let replies = format!("test-replies-{}", Uuid::new_v4().simple());
    let (heard, mut replied) = tokio::sync::mpsc::unbounded_channel();
    let (_stop, shutdown) = Shutdown::new();
    consumer::listen(
        broker.as_ref(),
        QueueSpec::transient(&replies),
        shutdown,
        move |reply| {
            let _ = heard.send(reply);
        },
        || {},
    )
    .await
    .unwrap();
    // Everything a sender sets, but a body that is not JSON.
    let mut command = Envelope::first(Outgoing {
        message_type: CreateStore::TYPE,
        version: 1,
        payload: Payload::of(&serde_json::json!({})).unwrap(),
    });
    command.reply_to = Some(replies.clone());
    let command_id = command.id;
    let unreadable = WireMessage {
        body: b"{ not json".to_vec(),
        ..command.to_wire()
    };
    broker
        .publish(Exchange::Commands, CreateStore::TYPE, unreadable)
        .await
        .unwrap();
    let reply = tokio::time::timeout(DEADLINE, replied.recv())
        .await
        .expect("an answer before the deadline")
        .expect("a reply");
    assert_eq!(reply.causation_id, command_id, "the answer to that command");
    let CommandReply::Rejected(refusal) = reply.decode::<CommandReply>().unwrap() else {
        panic!("refused: {reply:?}");
    };
    assert_eq!(refusal.code, ErrorCode::BadUserInput);
    assert!(
        refusal.message.contains("not valid JSON"),
        "{}",
        refusal.message
    );
    let store = app.db("deadletters").await;
    wait_until("the command dead-lettered with its reason", || async {
        let letters = dead_letters::list(&store, &all_letters(Some("stores.commands")))
            .await
            .ok()?;
        letters
            .iter()
            .any(|l| l.reason.contains("not valid JSON"))
            .then_some(())
    })
    .await;
    app.stop().await;
}

on_both_backends!(an_unreadable_command_is_answered_not_left_to_time_out);
