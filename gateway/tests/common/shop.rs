//! Shopping through the API: the steps of the flow, as a client
//! takes them, shared by the end-to-end tests.

use serde_json::{Value, json};

use super::{TestApp, wait_until};

pub const ORDER: &str = "query($id: ID!) { order(id: $id) {
  id status rejection total customerId paymentId shoppingListId
  items { storeName productName price quantity total }
  invoice { id amount status }
  shoppingList { id status }
  saga { step stepName status failure }
} }";

pub const ADD_ITEM: &str = "mutation($b: ID!, $p: ID!, $q: Int!) {
  addItem(basketId: $b, productId: $p, quantity: $q) {
    id consistencyToken basket { total items { productName quantity price } }
  }
}";

/// The mall every test shops in: two participating stores, three products.
pub struct Mall {
    pub books: String,
    pub teahouse: String,
    pub pen: String,
    pub notebook: String,
    pub tea: String,
}

pub fn id_of(data: &Value, field: &str) -> String {
    data[field]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}.id in {data}"))
        .to_owned()
}

pub async fn store(app: &TestApp, name: &str, location: &str) -> String {
    let created = app
        .data(
            "mutation($n: String!, $l: String!) { createStore(input: {name: $n, location: $l}) { id } }",
            json!({ "n": name, "l": location }),
        )
        .await;
    let id = id_of(&created, "createStore");
    app.data(
        "mutation($id: ID!) { enableParticipation(storeId: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    id
}

pub async fn product(app: &TestApp, store: &str, name: &str, price: &str) -> String {
    let added = app
        .data(
            "mutation($s: ID!, $n: String!, $p: Decimal!) {
               addProduct(input: {storeId: $s, name: $n, price: $p}) { id } }",
            json!({ "s": store, "n": name, "p": price }),
        )
        .await;
    id_of(&added, "addProduct")
}

pub async fn mall(app: &TestApp) -> Mall {
    let books = store(app, "Waldorf Books", "Upper level, east").await;
    let teahouse = store(app, "Leaf & Kettle", "Ground floor, west").await;
    Mall {
        pen: product(app, &books, "Fountain pen", "12.50").await,
        notebook: product(app, &books, "Notebook", "4.25").await,
        tea: product(app, &teahouse, "Sencha", "7.00").await,
        books,
        teahouse,
    }
}

pub async fn customer(app: &TestApp, name: &str) -> String {
    let registered = app
        .data(
            "mutation($n: String!) { registerCustomer(input: {name: $n, smsNumber: \"+1 555 0100 200\"}) {
               id customer { name smsNumber enabled } } }",
            json!({ "n": name }),
        )
        .await;
    let c = &registered["registerCustomer"]["customer"];
    assert_eq!(c["name"], name);
    assert_eq!(c["smsNumber"], "+15550100200");
    assert_eq!(c["enabled"], true);
    id_of(&registered, "registerCustomer")
}

pub async fn basket(app: &TestApp, customer: &str) -> String {
    let started = app
        .data(
            "mutation($c: ID!) { startBasket(customerId: $c) { id basket { status customerId } } }",
            json!({ "c": customer }),
        )
        .await;
    assert_eq!(started["startBasket"]["basket"]["status"], "OPEN");
    id_of(&started, "startBasket")
}

/// Adds an item. The baskets module learns products from the stores' events,
/// asynchronously, so right after `addProduct` the product may not be known
/// to it yet ("product not found"): wait for the add to be accepted. Any other
/// error fails the test.
pub async fn add_item(app: &TestApp, basket: &str, product: &str, quantity: i32) -> Value {
    let vars = json!({ "b": basket, "p": product, "q": quantity });
    wait_until("the basket to accept the product", || async {
        let response = app.graphql(ADD_ITEM, vars.clone()).await;
        match response["errors"][0]["message"].as_str() {
            None => Some(response["data"]["addItem"].clone()),
            Some("product not found") => None,
            Some(other) => panic!("addItem failed: {other}"),
        }
    })
    .await
}

pub async fn authorize_payment(app: &TestApp, customer: &str, amount: &str) -> String {
    let authorized = app
        .data(
            "mutation($c: ID!, $a: Decimal!) { authorizePayment(input: {customerId: $c, amount: $a}) {
               id consistencyToken payment { amount confirmed } } }",
            json!({ "c": customer, "a": amount }),
        )
        .await;
    assert_eq!(authorized["authorizePayment"]["payment"]["amount"], amount);
    id_of(&authorized, "authorizePayment")
}

/// Checks the basket out; returns the id of the order it creates.
pub async fn checkout(app: &TestApp, basket: &str, payment: &str) -> String {
    let checked = app
        .data(
            "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) {
               id basket { status orderId paymentId } } }",
            json!({ "b": basket, "p": payment }),
        )
        .await;
    let b = &checked["checkoutBasket"]["basket"];
    assert_eq!(b["status"], "CHECKED_OUT");
    assert_eq!(b["paymentId"], payment);
    b["orderId"].as_str().expect("an order id").to_owned()
}

/// Waits until the order has `status`; fails at once if it settles on
/// another final status.
pub async fn order_with_status(app: &TestApp, order: &str, status: &str) -> Value {
    wait_until(&format!("order {order} to be {status}"), || async {
        let response = app.data(ORDER, json!({ "id": order })).await;
        let current = response["order"].clone();
        let now = current["status"].as_str().unwrap_or("");
        if now != status && ["REJECTED", "CANCELED", "COMPLETED"].contains(&now) {
            panic!("order {order} is {now}, not {status}: {current}");
        }
        (now == status).then_some(current)
    })
    .await
}

/// Waits until the order's saga has `status`.
pub async fn saga_with_status(app: &TestApp, order: &str, status: &str) -> Value {
    wait_until(&format!("the saga to be {status}"), || async {
        let found = app.data(ORDER, json!({ "id": order })).await;
        let saga = found["order"]["saga"].clone();
        (saga["status"] == status).then_some(saga)
    })
    .await
}

pub async fn shopping_list(app: &TestApp, id: &str) -> Value {
    app.data(
        "query($id: ID!) { shoppingList(id: $id) { id orderId status botId
           stops { storeName location items { productName quantity } } } }",
        json!({ "id": id }),
    )
    .await["shoppingList"]
        .clone()
}

/// Waits until the shopping list has `status`: ACTIVE once its order
/// started, when its bot may complete it.
pub async fn list_with_status(app: &TestApp, id: &str, status: &str) {
    wait_until(&format!("shopping list {id} to be {status}"), || async {
        (shopping_list(app, id).await["status"] == status).then_some(())
    })
    .await
}

/// Checkouts whose sagas are still running: `n` customers each check a
/// basket with the pen out, all at once; returned as soon as every checkout
/// is answered.
pub struct InFlight {
    /// Each order's customer.
    pub customers: Vec<String>,
    pub orders: Vec<String>,
}

pub async fn checkouts_in_flight(app: &TestApp, n: usize) -> InFlight {
    let mall = mall(app).await;
    let mut ready = Vec::with_capacity(n);
    for i in 0..n {
        let customer = customer(app, &format!("Customer {i}")).await;
        let basket = basket(app, &customer).await;
        add_item(app, &basket, &mall.pen, 1).await;
        let payment = authorize_payment(app, &customer, "12.50").await;
        ready.push((customer, basket, payment));
    }
    let orders = futures_util::future::join_all(
        ready
            .iter()
            .map(|(_, basket, payment)| checkout(app, basket, payment)),
    )
    .await;
    InFlight {
        customers: ready.into_iter().map(|(c, ..)| c).collect(),
        orders,
    }
}

/// Every order of `in_flight` approved with its saga completed within 30 s,
/// and nothing done twice: one shopping list per order, one notification
/// (order placed) per customer.
pub async fn every_order_finished_once(app: &TestApp, in_flight: &InFlight) {
    let started = std::time::Instant::now();
    for order in &in_flight.orders {
        let approved = order_with_status(app, order, "APPROVED").await;
        assert!(approved["shoppingListId"].is_string(), "{approved}");
        saga_with_status(app, order, "COMPLETED").await;
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "the orders took {took:?} to finish"
    );
    let lists = app
        .data(
            "{ shoppingLists(first: 100) { edges { node { orderId } } } }",
            json!({}),
        )
        .await;
    let mut listed: Vec<String> = lists["shoppingLists"]["edges"]
        .as_array()
        .expect("a list of lists")
        .iter()
        .map(|e| {
            e["node"]["orderId"]
                .as_str()
                .expect("an order id")
                .to_owned()
        })
        .collect();
    listed.sort();
    let mut expected = in_flight.orders.clone();
    expected.sort();
    assert_eq!(listed, expected, "one shopping list per order");
    for customer in &in_flight.customers {
        let notices = wait_until("the customer's notification", || async {
            let found = app
                .data(
                    "query($c: ID!) { notifications(customerId: $c) { edges { node { id } } } }",
                    json!({ "c": customer }),
                )
                .await;
            let n = found["notifications"]["edges"].as_array()?.len();
            (n > 0).then_some(n)
        })
        .await;
        assert_eq!(notices, 1, "customer {customer}: one notification");
    }
}
