//! kill -9, for real, on both backends (the embedded default: SQLite files
//! and the in-process broker; and PostgreSQL + RabbitMQ): the `mallbots`
//! binary is killed with 50 create-order sagas in flight, started again on
//! the same data, and every order must finish, none twice.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::shop::{self, ORDER};
use common::{Backend, TestApp, wait_until};
use futures_util::future::join_all;
use serde_json::json;

const ORDERS: usize = 50;

/// The same system each time it is started: its data directory (embedded),
/// or its database and broker prefix (real).
struct Data {
    data_dir: PathBuf,
    envs: Vec<(&'static str, String)>,
}

impl Data {
    async fn new(backend: Backend) -> Data {
        let settings = common::settings(backend).await;
        let mut envs = Vec::new();
        if let (Some(db), Some(amqp)) = (&settings.database_url, &settings.amqp_url) {
            envs.push(("DATABASE_URL", db.clone()));
            envs.push(("AMQP_URL", amqp.clone()));
            envs.push(("AMQP_PREFIX", settings.amqp_prefix.clone()));
        }
        Data {
            data_dir: settings.data_dir,
            envs,
        }
    }

    async fn launch(&self) -> common::Process {
        let envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args = [
            "--data-dir".as_ref(),
            self.data_dir.as_os_str(),
            "run".as_ref(),
        ];
        common::launch(&args, &envs).await
    }
}

/// A customer with a basket holding the pen, and a payment for it.
async fn ready_to_check_out(app: &TestApp, pen: &str, n: usize) -> (String, String, String) {
    let customer = shop::customer(app, &format!("Customer {n}")).await;
    let basket = shop::basket(app, &customer).await;
    shop::add_item(app, &basket, pen, 1).await;
    let payment = shop::authorize_payment(app, &customer, "12.50").await;
    (customer, basket, payment)
}

async fn kill_9_with_sagas_in_flight_loses_and_doubles_nothing(backend: Backend) {
    let data = Data::new(backend).await;
    let mut first = data.launch().await;
    let app = first.client().await;
    let mall = shop::mall(&app).await;
    let mut shoppers = Vec::new();
    for n in 0..ORDERS {
        shoppers.push(ready_to_check_out(&app, &mall.pen, n).await);
    }
    // Every checkout at once; the process dies the moment the last one is
    // answered, with the sagas they started still running.
    let orders = join_all(
        shoppers
            .iter()
            .map(|(_, basket, payment)| shop::checkout(&app, basket, payment)),
    )
    .await;
    first.child.start_kill().expect("kill -9");
    first.child.wait().await.expect("the process is gone");

    let second = data.launch().await;
    let app = second.client().await;
    let restarted = Instant::now();
    for order in &orders {
        shop::order_with_status(&app, order, "APPROVED").await;
        shop::saga_with_status(&app, order, "COMPLETED").await;
    }
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the orders took {took:?} to finish after the restart"
    );

    // Nothing twice: one shopping list per order, one notification (order
    // placed) per customer.
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
    let mut expected = orders.clone();
    expected.sort();
    assert_eq!(listed, expected, "one shopping list per order");
    for (customer, ..) in &shoppers {
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
    for order in &orders {
        let found = app.data(ORDER, json!({ "id": order })).await;
        assert!(found["order"]["shoppingListId"].is_string(), "{found}");
    }
}

on_both_backends!(kill_9_with_sagas_in_flight_loses_and_doubles_nothing);
