//! The whole shopping flow end to end, through the GraphQL API
//! only: stores, customers, baskets, payments, the create-order saga, the
//! bots' shopping lists, invoices; and the saga's compensations.

mod common;

use std::time::Duration;

use common::shop::*;
use common::{Backend, TestApp, spawn_app, wait_until};
use mallbots_gateway::Part;
use serde_json::{Value, json};
use uuid::Uuid;

async fn the_whole_flow(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let ada = customer(&app, "Ada Lovelace").await;
    let basket = basket(&app, &ada).await;
    add_item(&app, &basket, &mall.pen, 2).await;
    add_item(&app, &basket, &mall.tea, 1).await;
    let added = add_item(&app, &basket, &mall.notebook, 3).await;
    // 2 x 12.50 + 7.00 + 3 x 4.25
    assert_eq!(added["basket"]["total"], "44.75");
    let pen = &added["basket"]["items"][0];
    assert_eq!(pen["productName"], "Fountain pen");
    assert_eq!(pen["price"], "12.50");
    assert_eq!(pen["quantity"], 2);

    let payment = authorize_payment(&app, &ada, "44.75").await;
    let order = checkout(&app, &basket, &payment).await;

    let approved = order_with_status(&app, &order, "APPROVED").await;
    assert_eq!(approved["customerId"], ada.as_str());
    assert_eq!(approved["paymentId"], payment.as_str());
    assert_eq!(approved["total"], "44.75");
    assert_eq!(approved["items"].as_array().unwrap().len(), 3);
    assert_eq!(approved["invoice"], Value::Null);
    // The saga completes once ordering's reply to ApproveOrder reaches it.
    let saga = saga_with_status(&app, &order, "COMPLETED").await;
    assert_eq!(
        saga,
        json!({ "step": 5, "stepName": "approve order", "status": "COMPLETED", "failure": null })
    );
    let list_id = approved["shoppingListId"].as_str().unwrap().to_owned();

    // The saga made the list available to the bots, one stop per store.
    let list = shopping_list(&app, &list_id).await;
    assert_eq!(list["status"], "AVAILABLE");
    assert_eq!(list["orderId"], order.as_str());
    let stops = list["stops"].as_array().unwrap();
    assert_eq!(stops.len(), 2);
    assert_eq!(stops[0]["storeName"], "Waldorf Books");
    assert_eq!(stops[0]["location"], "Upper level, east");
    let books: Vec<_> = stops[0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["productName"].as_str().unwrap(),
                i["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(books, [("Fountain pen", 2), ("Notebook", 3)]);
    assert_eq!(stops[1]["storeName"], "Leaf & Kettle");
    let available = app
        .data(
            "{ shoppingLists(status: AVAILABLE) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        available["shoppingLists"]["edges"],
        json!([{ "node": { "id": list_id } }])
    );

    // A bot follows the list, takes it, and walks the mall once its order
    // started (the list is ACTIVE).
    let mut list_feed = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($id: ID!) { shoppingListUpdated(id: $id) { cursor shoppingList { status botId } } }",
            json!({ "id": list_id }),
        )
        .await;
    app.wait_for_subscriptions(1).await;
    let bot = Uuid::now_v7().to_string();
    let assigned = app
        .data(
            "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) {
               id consistencyToken shoppingList { status botId } } }",
            json!({ "id": list_id, "bot": bot }),
        )
        .await;
    let assigned = &assigned["assignShoppingList"];
    assert_eq!(assigned["shoppingList"]["status"], "ASSIGNED");
    assert_eq!(assigned["shoppingList"]["botId"], bot.as_str());
    assert!(
        assigned["consistencyToken"]
            .as_str()
            .unwrap()
            .starts_with("depot:")
    );
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("ACTIVE") {
        let change = list_feed.next_data().await["shoppingListUpdated"].clone();
        assert_eq!(change["shoppingList"]["botId"], bot.as_str(), "{change}");
        seen.push(
            change["shoppingList"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["ASSIGNED", "ACTIVE"]);
    order_with_status(&app, &order, "IN_PROGRESS").await;
    let again = app
        .graphql(
            "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) { id } }",
            json!({ "id": list_id, "bot": Uuid::now_v7().to_string() }),
        )
        .await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT");

    app.data(
        "mutation($id: ID!) { completeShoppingList(id: $id) { id shoppingList { status } } }",
        json!({ "id": list_id }),
    )
    .await;
    assert_eq!(shopping_list(&app, &list_id).await["status"], "COMPLETED");
    let completed = list_feed.next_data().await["shoppingListUpdated"].clone();
    assert_eq!(completed["shoppingList"]["status"], "COMPLETED");
    list_feed.close().await;
    let mut unknown = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($id: ID!) { shoppingListUpdated(id: $id) { cursor } }",
            json!({ "id": Uuid::now_v7().to_string() }),
        )
        .await;
    let refused = unknown.next_message().await;
    assert_eq!(refused["type"], "next", "{refused}");
    let error = &refused["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{refused}");
    assert_eq!(error["message"], "the shopping list was not found");
    unknown.close().await;

    // Ready: payments invoiced the order's total.
    order_with_status(&app, &order, "READY").await;
    let invoice = wait_until("the invoice", || async {
        let order = app.data(ORDER, json!({ "id": order })).await;
        let invoice = order["order"]["invoice"].clone();
        (!invoice.is_null()).then_some(invoice)
    })
    .await;
    assert_eq!(invoice["amount"], "44.75");
    assert_eq!(invoice["status"], "PENDING");
    let cancel = app
        .graphql(
            "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
            json!({ "id": order }),
        )
        .await;
    assert_eq!(
        cancel["errors"][0]["message"],
        "the order is ready and cannot be canceled"
    );

    let paid = app
        .data(
            "mutation($id: ID!) { payInvoice(invoiceId: $id) { id invoice { status } } }",
            json!({ "id": invoice["id"] }),
        )
        .await;
    assert_eq!(paid["payInvoice"]["invoice"]["status"], "PAID");
    let completed = order_with_status(&app, &order, "COMPLETED").await;
    assert_eq!(completed["invoice"]["status"], "PAID");
    assert_eq!(completed["shoppingList"]["status"], "COMPLETED");
    app.stop().await;
}
on_both_backends!(the_whole_flow);

async fn a_disabled_customer_is_rejected(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let bob = customer(&app, "Bob").await;
    let basket = basket(&app, &bob).await;
    add_item(&app, &basket, &mall.tea, 2).await;
    let payment = authorize_payment(&app, &bob, "14.00").await;
    let disabled = app
        .data(
            "mutation($c: ID!) { disableCustomer(customerId: $c) { customer { enabled } } }",
            json!({ "c": bob }),
        )
        .await;
    assert_eq!(disabled["disableCustomer"]["customer"]["enabled"], false);
    let order = checkout(&app, &basket, &payment).await;
    let rejected = order_with_status(&app, &order, "REJECTED").await;
    assert_eq!(
        rejected["rejection"],
        "authorize customer: the customer is disabled"
    );
    // Nothing went as far as a shopping list.
    assert_eq!(rejected["shoppingListId"], Value::Null);
    let lists = app
        .data("{ shoppingLists { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(lists["shoppingLists"]["edges"], json!([]));
    app.stop().await;
}
on_both_backends!(a_disabled_customer_is_rejected);

async fn a_wrong_payment_amount_rejects_and_cancels_the_list(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let cy = customer(&app, "Cy").await;
    let basket = basket(&app, &cy).await;
    add_item(&app, &basket, &mall.pen, 1).await;
    let payment = authorize_payment(&app, &cy, "10.00").await;
    let order = checkout(&app, &basket, &payment).await;
    let rejected = order_with_status(&app, &order, "REJECTED").await;
    assert_eq!(
        rejected["rejection"],
        "confirm payment: the payment amount 10.00 does not match the order total 12.50"
    );
    // Step 2 had created a list; its compensation canceled it.
    let canceled = wait_until("the list to be canceled", || async {
        let lists = app
            .data(
                "{ shoppingLists { edges { node { orderId status } } } }",
                json!({}),
            )
            .await;
        let edges = lists["shoppingLists"]["edges"].as_array()?.clone();
        (edges.len() == 1 && edges[0]["node"]["status"] == "CANCELED").then_some(edges)
    })
    .await;
    assert_eq!(canceled[0]["node"]["orderId"], order.as_str());
    let saga = saga_with_status(&app, &order, "COMPENSATED").await;
    assert_eq!(saga["stepName"], "reject order");
    app.stop().await;
}
on_both_backends!(a_wrong_payment_amount_rejects_and_cancels_the_list);

/// The process stops while the saga waits for step 3's reply (the payments
/// module is not running), and starts again whole: the saga resumes from its
/// saved state and the order is approved.
#[tokio::test]
async fn the_saga_resumes_after_a_restart() {
    let settings = common::settings(Backend::Real).await;
    // Declare every module's queue once, so commands to a stopped module wait in it.
    let mut app = common::start_with(settings.clone()).await;
    app.stop().await;
    let without_payments = [
        Part::Gateway,
        Part::Stores,
        Part::Customers,
        Part::Baskets,
        Part::Ordering,
        Part::Depot,
        Part::Cosec,
        Part::Search,
        Part::Notifications,
    ];
    let mut app = common::start_parts(settings.clone(), &without_payments).await;
    let mall = mall(&app).await;
    let di = customer(&app, "Di").await;
    let basket = basket(&app, &di).await;
    add_item(&app, &basket, &mall.notebook, 4).await;
    // A payment is authorized by the payments module: start it just for that.
    let mut payments =
        common::start_parts(settings.clone(), &[Part::Gateway, Part::Payments]).await;
    let payment = authorize_payment(&payments, &di, "17.00").await;
    payments.stop().await;
    let order = checkout(&app, &basket, &payment).await;
    // Step 2 done: depot created the list, still pending (not yet initiated).
    let list = wait_until("the saga's shopping list", || async {
        let lists = app
            .data(
                "{ shoppingLists(status: PENDING) { edges { node { id orderId } } } }",
                json!({}),
            )
            .await;
        let node = lists["shoppingLists"]["edges"][0]["node"].clone();
        (node["orderId"] == order.as_str()).then_some(node["id"].as_str()?.to_owned())
    })
    .await;
    assert_eq!(
        order_with_status(&app, &order, "PENDING").await["status"],
        "PENDING"
    );
    app.stop().await;

    let mut app = common::start_with(settings).await;
    let approved = order_with_status(&app, &order, "APPROVED").await;
    assert_eq!(approved["shoppingListId"], list.as_str());
    assert_eq!(shopping_list(&app, &list).await["status"], "AVAILABLE");
    app.stop().await;
}

/// Two addItem calls racing on one basket: both land (the loser of the
/// optimistic-concurrency race is retried, never lost or overwritten). On
/// the real services a second replica of the baskets module consumes the
/// same queue, so the two commands are handled at the same time.
async fn racing_adds_both_land(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let replica = match backend {
        Backend::Real => Some(
            mallbots_gateway::start(app.settings.clone(), &[Part::Baskets])
                .await
                .expect("a second baskets replica starts"),
        ),
        Backend::Embedded => None,
    };
    let mall = mall(&app).await;
    let ed = customer(&app, "Ed").await;
    let basket = basket(&app, &ed).await;
    // Once both products are known to baskets, race the two adds.
    add_item(&app, &basket, &mall.pen, 1).await;
    add_item(&app, &basket, &mall.tea, 1).await;
    for round in 0..5 {
        let (a, b) = tokio::join!(
            app.graphql(ADD_ITEM, json!({ "b": basket, "p": mall.pen, "q": 1 })),
            app.graphql(ADD_ITEM, json!({ "b": basket, "p": mall.tea, "q": 2 })),
        );
        assert!(a.get("errors").is_none(), "round {round}: {a}");
        assert!(b.get("errors").is_none(), "round {round}: {b}");
    }
    let found = app
        .data(
            "query($id: ID!) { basket(id: $id) { total items { productName quantity } } }",
            json!({ "id": basket }),
        )
        .await;
    assert_eq!(
        found["basket"]["items"],
        json!([
            { "productName": "Fountain pen", "quantity": 6 },
            { "productName": "Sencha", "quantity": 11 },
        ])
    );
    assert_eq!(found["basket"]["total"], "152.00");
    if let Some(replica) = replica {
        replica.stop().await;
    }
    app.stop().await;
}
on_both_backends!(racing_adds_both_land);

async fn bad_basket_operations_are_refused_and_change_nothing(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let fay = customer(&app, "Fay").await;
    let basket = basket(&app, &fay).await;
    let payment = authorize_payment(&app, &fay, "5.00").await;
    let refused = |response: Value, code: &str, message: &str| {
        assert_eq!(
            response["errors"][0]["extensions"]["code"], code,
            "{response}"
        );
        assert_eq!(response["errors"][0]["message"], message, "{response}");
    };
    let checkout_empty = app
        .graphql(
            "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) { id } }",
            json!({ "b": basket, "p": payment }),
        )
        .await;
    refused(
        checkout_empty,
        "BAD_USER_INPUT",
        "an empty basket cannot be checked out",
    );
    for quantity in [0, -2] {
        let response = app
            .graphql(
                ADD_ITEM,
                json!({ "b": basket, "p": mall.tea, "q": quantity }),
            )
            .await;
        refused(
            response,
            "BAD_USER_INPUT",
            "the quantity must be greater than zero",
        );
    }
    let unknown = app
        .graphql(
            ADD_ITEM,
            json!({ "b": basket, "p": Uuid::now_v7().to_string(), "q": 1 }),
        )
        .await;
    refused(unknown, "NOT_FOUND", "product not found");
    let malformed = app
        .graphql(ADD_ITEM, json!({ "b": "not-an-id", "p": mall.tea, "q": 1 }))
        .await;
    refused(malformed, "BAD_USER_INPUT", "basketId is not a valid id");

    let canceled = app
        .data(
            "mutation($b: ID!) { cancelBasket(basketId: $b) { basket { status } } }",
            json!({ "b": basket }),
        )
        .await;
    assert_eq!(canceled["cancelBasket"]["basket"]["status"], "CANCELED");
    // Wait for the product to be known, so the refusal below is the basket's.
    let other = basket_with_tea(&app, &fay, &mall).await;
    let on_canceled = app
        .graphql(ADD_ITEM, json!({ "b": basket, "p": mall.tea, "q": 1 }))
        .await;
    refused(
        on_canceled,
        "CONFLICT",
        "the basket is canceled; only open baskets change",
    );
    let cancel_again = app
        .graphql(
            "mutation($b: ID!) { cancelBasket(basketId: $b) { id } }",
            json!({ "b": basket }),
        )
        .await;
    refused(
        cancel_again,
        "CONFLICT",
        "the basket is canceled; only open baskets change",
    );
    // Nothing of the above changed the basket.
    let found = app
        .data(
            "query($id: ID!) { basket(id: $id) { status total items { quantity } } }",
            json!({ "id": basket }),
        )
        .await;
    assert_eq!(
        found["basket"],
        json!({ "status": "CANCELED", "total": "0", "items": [] })
    );
    assert_ne!(other, basket);
    app.stop().await;
}
on_both_backends!(bad_basket_operations_are_refused_and_change_nothing);

/// A second basket holding tea (waits until baskets knows the product).
async fn basket_with_tea(app: &TestApp, customer_id: &str, mall: &Mall) -> String {
    let id = basket(app, customer_id).await;
    add_item(app, &id, &mall.tea, 1).await;
    id
}

/// An approved order canceled before it is ready: its shopping list is
/// canceled with it (depot reacts to OrderCanceled); canceling twice is a
/// conflict.
async fn an_order_can_be_canceled_until_ready(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let gus = customer(&app, "Gus").await;
    let basket = basket(&app, &gus).await;
    add_item(&app, &basket, &mall.notebook, 2).await;
    let payment = authorize_payment(&app, &gus, "8.50").await;
    let order = checkout(&app, &basket, &payment).await;
    let approved = order_with_status(&app, &order, "APPROVED").await;
    let list = approved["shoppingListId"].as_str().unwrap().to_owned();
    let cancel =
        "mutation($id: ID!) { cancelOrder(orderId: $id) { id consistencyToken order { status } } }";
    let canceled = app.data(cancel, json!({ "id": order })).await;
    assert_eq!(canceled["cancelOrder"]["order"]["status"], "CANCELED");
    assert!(
        canceled["cancelOrder"]["consistencyToken"]
            .as_str()
            .unwrap()
            .starts_with("ordering:")
    );
    wait_until("the shopping list to be canceled", || async {
        (shopping_list(&app, &list).await["status"] == "CANCELED").then_some(())
    })
    .await;
    let again = app.graphql(cancel, json!({ "id": order })).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(
        again["errors"][0]["message"],
        "the order is canceled and cannot be canceled"
    );
    let unknown = app
        .graphql(cancel, json!({ "id": Uuid::now_v7().to_string() }))
        .await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND");
    app.stop().await;
}
on_both_backends!(an_order_can_be_canceled_until_ready);

/// Once a bot took its shopping list, an order can no longer be canceled
/// (CONFLICT): the bot may complete the list at any moment, and a cancel
/// racing that would leave a canceled order with its shopping done. The bot
/// completes it and the order is readied.
async fn an_order_a_bot_shops_for_can_no_longer_be_canceled(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let ida = customer(&app, "Ida").await;
    let basket = basket(&app, &ida).await;
    add_item(&app, &basket, &mall.notebook, 1).await;
    let payment = authorize_payment(&app, &ida, "4.25").await;
    let order = checkout(&app, &basket, &payment).await;
    let approved = order_with_status(&app, &order, "APPROVED").await;
    let list = approved["shoppingListId"].as_str().unwrap().to_owned();
    let bot = Uuid::now_v7().to_string();
    let assigned = app
        .data(
            "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) {
               shoppingList { status } } }",
            json!({ "id": list, "bot": bot }),
        )
        .await;
    assert_eq!(
        assigned["assignShoppingList"]["shoppingList"]["status"],
        "ASSIGNED"
    );
    order_with_status(&app, &order, "IN_PROGRESS").await;
    list_with_status(&app, &list, "ACTIVE").await;

    let cancel = app
        .graphql(
            "mutation($id: ID!) { cancelOrder(orderId: $id) { order { status } } }",
            json!({ "id": order }),
        )
        .await;
    common::assert_refused(
        &cancel,
        "CONFLICT",
        "a bot is shopping for the order: it can no longer be canceled",
    );
    let completed = app
        .data(
            "mutation($id: ID!) { completeShoppingList(id: $id) { shoppingList { status } } }",
            json!({ "id": list }),
        )
        .await;
    assert_eq!(
        completed["completeShoppingList"]["shoppingList"]["status"],
        "COMPLETED"
    );
    order_with_status(&app, &order, "READY").await;
    app.stop().await;
}
on_both_backends!(an_order_a_bot_shops_for_can_no_longer_be_canceled);

const COMPLETE: &str =
    "mutation($id: ID!) { completeShoppingList(id: $id) { shoppingList { status } } }";

/// A bot takes `list` and completes it as soon as depot lets it: true when
/// it completed it, false when the list was canceled first.
async fn bot_shops(app: &TestApp, list: &str) -> bool {
    let assigned = app
        .graphql(
            "mutation($id: ID!, $bot: ID!) { assignShoppingList(id: $id, botId: $bot) { id } }",
            json!({ "id": list, "bot": Uuid::now_v7().to_string() }),
        )
        .await;
    if assigned["errors"].is_array() {
        common::assert_refused(
            &assigned,
            "CONFLICT",
            "the shopping list is canceled and cannot be assigned",
        );
        return false;
    }
    wait_until("the bot's completion to be decided", || async {
        let done = app.graphql(COMPLETE, json!({ "id": list })).await;
        match done["errors"][0]["message"].as_str() {
            None => Some(true),
            Some("the order has not started yet: complete the list once it is ACTIVE") => None,
            Some(_) => {
                common::assert_refused(
                    &done,
                    "CONFLICT",
                    "the shopping list is canceled and cannot be completed",
                );
                Some(false)
            }
        }
    })
    .await
}

/// A customer's cancel racing a bot that takes the list the moment it is
/// offered (`shoppingListsAvailable`, often before the order is approved)
/// and completes it as soon as it may, over many orders: each ends one way
/// or the other, never both. Either the cancel won (the order and its list
/// are CANCELED, the bot's completion refused) or the bot did (the cancel is
/// refused, the list COMPLETED, the order READY).
async fn a_cancel_racing_the_bot_ends_one_way_or_the_other(backend: Backend) {
    use futures_util::StreamExt;
    const ORDERS: usize = 16;
    let mut app = spawn_app(backend).await;
    let offered = app
        .subscribe(
            "graphql-transport-ws",
            "subscription { shoppingListsAvailable { shoppingList { id orderId } } }",
            json!({}),
        )
        .await;
    app.wait_for_subscriptions(1).await;
    let app_ref = &app;
    checkouts_in_flight(app_ref, ORDERS).await;
    let lists = futures_util::stream::unfold((offered, 0), |(mut feed, n)| async move {
        if n == ORDERS {
            return None;
        }
        let list = feed.next_data().await["shoppingListsAvailable"]["shoppingList"].clone();
        let ids = [&list["id"], &list["orderId"]].map(|id| id.as_str().unwrap().to_owned());
        Some(((n, ids), (feed, n + 1)))
    });
    let outcomes: Vec<_> = lists
        .map(|(n, [list, order])| async move {
            // Each cancel leaves a little later than the last (0 to 600 ms
            // after the bot), so that the races end both ways.
            let cancel = async {
                tokio::time::sleep(Duration::from_millis(40 * n as u64)).await;
                app_ref
                    .graphql(
                        "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
                        json!({ "id": order }),
                    )
                    .await
            };
            let (canceled, completed) = tokio::join!(cancel, bot_shops(app_ref, &list));
            (order, list, canceled, completed)
        })
        .buffer_unordered(ORDERS)
        .collect()
        .await;
    let mut bot_won = 0;
    for (order, list, canceled, completed) in outcomes {
        if canceled["errors"].is_array() {
            // Refused while the bot shops, or once it is done.
            let why = canceled["errors"][0]["message"]
                .as_str()
                .unwrap_or_default();
            let said = [
                "a bot is shopping for the order: it can no longer be canceled",
                "the order is ready and cannot be canceled",
            ];
            assert!(said.contains(&why), "{canceled}");
            common::assert_refused(&canceled, "CONFLICT", why);
            assert!(
                completed,
                "order {order}: the cancel was refused, yet the bot could not complete"
            );
            order_with_status(&app, &order, "READY").await;
            assert_eq!(shopping_list(&app, &list).await["status"], "COMPLETED");
            bot_won += 1;
        } else {
            assert!(
                !completed,
                "order {order}: canceled, yet its list was completed"
            );
            list_with_status(&app, &list, "CANCELED").await;
            let found = app.data(ORDER, json!({ "id": order })).await;
            assert_eq!(found["order"]["status"], "CANCELED", "{found}");
        }
    }
    eprintln!("the bot won {bot_won} of {ORDERS} races");
    app.stop().await;
}
on_both_backends!(a_cancel_racing_the_bot_ends_one_way_or_the_other);

/// The payment an order used is free again once that order is canceled:
/// payments releases it (on the raw event feed), and the customer's next
/// basket of the same total checks out with it and is approved.
async fn a_canceled_orders_payment_pays_for_the_next_one(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let eve = customer(&app, "Eve").await;
    let first = basket(&app, &eve).await;
    add_item(&app, &first, &mall.notebook, 2).await;
    let payment = authorize_payment(&app, &eve, "8.50").await;
    let order = checkout(&app, &first, &payment).await;
    order_with_status(&app, &order, "APPROVED").await;
    app.data(
        "mutation($id: ID!) { cancelOrder(orderId: $id) { id } }",
        json!({ "id": order }),
    )
    .await;
    let mut feed = app
        .subscribe(
            "graphql-transport-ws",
            "subscription($t: [String!]) { events(types: $t, after: \"0\") { type payload } }",
            json!({ "t": ["payments.Payment.PaymentReleased"] }),
        )
        .await;
    let released = feed.next_data().await["events"].clone();
    assert_eq!(
        released["payload"]["payment_id"],
        payment.as_str(),
        "{released}"
    );
    assert_eq!(released["payload"]["confirmed"], false, "{released}");

    let second = basket(&app, &eve).await;
    add_item(&app, &second, &mall.notebook, 2).await;
    let next = checkout(&app, &second, &payment).await;
    let approved = order_with_status(&app, &next, "APPROVED").await;
    assert_eq!(approved["paymentId"], payment.as_str());
    app.stop().await;
}
on_both_backends!(a_canceled_orders_payment_pays_for_the_next_one);

/// The catalog changes between adding to a basket and checking out: a
/// product removed since, then a store that stopped taking orders, stops the
/// checkout (CONFLICT, naming what), no order is made, and the basket stays
/// open; once the customer takes the product out, the rest checks out.
async fn a_checkout_refuses_what_is_no_longer_sold(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mall = mall(&app).await;
    let jo = customer(&app, "Jo").await;
    let basket = basket(&app, &jo).await;
    add_item(&app, &basket, &mall.notebook, 1).await;
    add_item(&app, &basket, &mall.tea, 1).await;
    let payment = authorize_payment(&app, &jo, "7.00").await;
    let checkout = "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) {
        basket { status } } }";
    // Each change's token: the checkout runs once baskets has applied it.
    let token = |data: &Value, field: &str| {
        data[field]["consistencyToken"]
            .as_str()
            .expect("a token")
            .to_owned()
    };
    let refused = |token: String| {
        let app = &app;
        let vars = json!({ "b": basket, "p": payment });
        async move {
            let (status, body) = app
                .graphql_with(&[("consistency-token", &token)], checkout, vars)
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "CONFLICT",
                "{body}"
            );
            body["errors"][0]["message"]
                .as_str()
                .expect("a message")
                .to_owned()
        }
    };

    let removed = app
        .data(
            "mutation($id: ID!) { removeProduct(productId: $id) { consistencyToken } }",
            json!({ "id": mall.notebook }),
        )
        .await;
    assert_eq!(
        refused(token(&removed, "removeProduct")).await,
        "Notebook is no longer sold; remove it from the basket"
    );
    app.data(
        "mutation($b: ID!, $p: ID!) { removeItem(basketId: $b, productId: $p, quantity: 1) { id } }",
        json!({ "b": basket, "p": mall.notebook }),
    )
    .await;
    let closed = app
        .data(
            "mutation($id: ID!) { disableParticipation(storeId: $id) { consistencyToken } }",
            json!({ "id": mall.teahouse }),
        )
        .await;
    assert_eq!(
        refused(token(&closed, "disableParticipation")).await,
        "the store Leaf & Kettle is not taking orders"
    );
    let query = "query($id: ID!) { basket(id: $id) { status items { productName } } }";
    let open = app.data(query, json!({ "id": basket })).await;
    assert_eq!(open["basket"]["status"], "OPEN");
    assert_eq!(
        open["basket"]["items"],
        json!([{ "productName": "Sencha" }])
    );

    let reopened = app
        .data(
            "mutation($id: ID!) { enableParticipation(storeId: $id) { consistencyToken } }",
            json!({ "id": mall.teahouse }),
        )
        .await;
    let (_, body) = app
        .graphql_with(
            &[(
                "consistency-token",
                &token(&reopened, "enableParticipation"),
            )],
            checkout,
            json!({ "b": basket, "p": payment }),
        )
        .await;
    assert_eq!(
        body["data"]["checkoutBasket"]["basket"]["status"], "CHECKED_OUT",
        "{body}"
    );
    app.stop().await;
}
on_both_backends!(a_checkout_refuses_what_is_no_longer_sold);

/// A customer's SMS number changes, they are disabled and enabled again;
/// bad numbers and unknown customers are refused.
async fn customers_change(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let hal = customer(&app, "Hal").await;
    let query = "query($id: ID!) { customer(id: $id) { name smsNumber enabled } }";
    let changed = app
        .data(
            "mutation($c: ID!) { changeSmsNumber(customerId: $c, smsNumber: \"555-0199-77\") {
               id customer { smsNumber } } }",
            json!({ "c": hal }),
        )
        .await;
    assert_eq!(
        changed["changeSmsNumber"]["customer"]["smsNumber"],
        "555019977"
    );
    for (mutation, enabled) in [("disableCustomer", false), ("enableCustomer", true)] {
        let m = format!("mutation($c: ID!) {{ {mutation}(customerId: $c) {{ id }} }}");
        app.data(&m, json!({ "c": hal })).await;
        let found = app.data(query, json!({ "id": hal })).await;
        assert_eq!(found["customer"]["enabled"], enabled);
    }
    let bad = app
        .graphql(
            "mutation($c: ID!) { changeSmsNumber(customerId: $c, smsNumber: \"call me\") { id } }",
            json!({ "c": hal }),
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(
        bad["errors"][0]["message"],
        "the sms number must be 7 to 15 digits, optionally starting with +"
    );
    let blank = app
        .graphql(
            "mutation { registerCustomer(input: {name: \" \", smsNumber: \"5550100\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        blank["errors"][0]["message"],
        "the customer name cannot be blank"
    );
    let unknown = app
        .graphql(
            "mutation($c: ID!) { enableCustomer(customerId: $c) { id } }",
            json!({ "c": Uuid::now_v7().to_string() }),
        )
        .await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(
        unknown["errors"][0]["message"],
        "the customer was not found"
    );
    let found = app.data(query, json!({ "id": hal })).await;
    assert_eq!(
        found["customer"],
        json!({ "name": "Hal", "smsNumber": "555019977", "enabled": true })
    );
    app.stop().await;
}
on_both_backends!(customers_change);
