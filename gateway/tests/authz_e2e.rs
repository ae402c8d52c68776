//! Who may do what, through the front door, with verified tokens: every
//! query, mutation and subscription of the schema, tried by each role (and
//! by no token) on its own and on someone else's data, gets exactly what the
//! contract says. The matrix is checked against the schema the gateway
//! serves, so a new field without a rule here fails this test.
//!
//! And ownership holds where the data lives: commands published straight to
//! the broker with a forged actor of the wrong owner are refused by their
//! module, and the event store says who did what.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, TestApp, WsClient, start_with, wait_until};
use mallbots_contracts::{Actor, CommandReply, ErrorCode, Role};
use mallbots_gateway::identity::mint;
use mallbots_platform::Shutdown;
use mallbots_platform::commands::CommandBus;
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "authz-test-secret";

/// Someone calling the API: a token for an actor, or nothing.
#[derive(Clone)]
struct Who {
    name: &'static str,
    actor: Option<Actor>,
    token: Option<String>,
}

impl Who {
    fn new(name: &'static str, role: Role) -> Who {
        let actor = Actor {
            id: Uuid::now_v7(),
            role,
        };
        Who {
            name,
            actor: Some(actor),
            token: Some(mint(SECRET, actor, Duration::from_secs(3600)).unwrap()),
        }
    }

    fn id(&self) -> String {
        self.actor.expect("an actor").id.to_string()
    }

    async fn call(&self, app: &TestApp, query: &str, variables: Value) -> Value {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        app.graphql_with(&headers, query, variables).await.1
    }

    /// `data` of a call that must succeed.
    async fn data(&self, app: &TestApp, query: &str, variables: Value) -> Value {
        let response = self.call(app, query, variables).await;
        assert!(
            response["errors"].is_null(),
            "{} failed: {response}",
            self.name
        );
        response["data"].clone()
    }
}

/// Everyone the matrix tries.
struct Cast {
    anonymous: Who,
    customer: Who,
    other_customer: Who,
    owner: Who,
    other_owner: Who,
    bot: Who,
    other_bot: Who,
    operator: Who,
}

impl Cast {
    fn new() -> Cast {
        Cast {
            anonymous: Who {
                name: "no token",
                actor: None,
                token: None,
            },
            customer: Who::new("the customer", Role::Customer),
            other_customer: Who::new("another customer", Role::Customer),
            owner: Who::new("the store owner", Role::StoreOwner),
            other_owner: Who::new("another store owner", Role::StoreOwner),
            bot: Who::new("the bot", Role::Bot),
            other_bot: Who::new("another bot", Role::Bot),
            operator: Who::new("an operator", Role::Operator),
        }
    }

    fn all(&self) -> [&Who; 8] {
        [
            &self.anonymous,
            &self.customer,
            &self.other_customer,
            &self.owner,
            &self.other_owner,
            &self.bot,
            &self.other_bot,
            &self.operator,
        ]
    }

    /// Whether `who` is the other one of its role (not the data's owner).
    fn is_other(&self, who: &Who) -> bool {
        [&self.other_customer, &self.other_owner, &self.other_bot]
            .iter()
            .any(|o| o.name == who.name)
    }
}

/// The data the matrix acts on, all of it the customer's, the owner's and
/// the bot's.
struct Fixture {
    store: String,
    product: String,
    other_product: String,
    basket: String,
    open_basket: String,
    payment: String,
    order: String,
    list: String,
    invoice: String,
}

async fn fixture(app: &TestApp, cast: &Cast) -> Fixture {
    let (owner, customer, bot) = (&cast.owner, &cast.customer, &cast.bot);
    let created = owner
        .data(
            app,
            "mutation { createStore(input: {name: \"Owned\", location: \"Here\"}) { id } }",
            json!({}),
        )
        .await;
    let store = created["createStore"]["id"].as_str().unwrap().to_owned();
    owner
        .data(
            app,
            "mutation($s: ID!) { enableParticipation(storeId: $s) { id } }",
            json!({ "s": store }),
        )
        .await;
    // Another owner's store and product, so its searchOrders has something
    // to look at.
    let elsewhere = cast
        .other_owner
        .data(
            app,
            "mutation { createStore(input: {name: \"Elsewhere\", location: \"There\"}) { id } }",
            json!({}),
        )
        .await;
    let elsewhere = elsewhere["createStore"]["id"].as_str().unwrap().to_owned();
    let other_product = cast
        .other_owner
        .data(
            app,
            "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Ink\", price: \"1.00\"}) { id } }",
            json!({ "s": elsewhere }),
        )
        .await["addProduct"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let added = owner
        .data(
            app,
            "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Pen\", price: \"5.00\"}) { id } }",
            json!({ "s": store }),
        )
        .await;
    let product = added["addProduct"]["id"].as_str().unwrap().to_owned();

    for who in [customer, &cast.other_customer] {
        let registered = who
            .data(
                app,
                "mutation { registerCustomer(input: {name: \"Me\", smsNumber: \"+15550100200\"}) { id } }",
                json!({}),
            )
            .await;
        assert_eq!(
            registered["registerCustomer"]["id"].as_str(),
            Some(who.id().as_str()),
            "a customer registers as itself"
        );
    }
    let me = json!({ "c": customer.id() });
    let start = "mutation($c: ID!) { startBasket(customerId: $c) { id } }";
    let basket = customer.data(app, start, me.clone()).await["startBasket"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let open_basket = customer.data(app, start, me.clone()).await["startBasket"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add =
        "mutation($b: ID!, $p: ID!) { addItem(basketId: $b, productId: $p, quantity: 1) { id } }";
    for b in [&basket, &open_basket] {
        wait_until("the basket to know the product", || async {
            let response = customer
                .call(app, add, json!({ "b": b, "p": product }))
                .await;
            match response["errors"][0]["message"].as_str() {
                None => Some(()),
                Some("product not found") => None,
                Some(other) => panic!("addItem failed: {other}"),
            }
        })
        .await;
    }
    let paid = customer
        .data(
            app,
            "mutation($c: ID!) { authorizePayment(input: {customerId: $c, amount: \"5.00\"}) { id } }",
            me,
        )
        .await;
    let payment = paid["authorizePayment"]["id"].as_str().unwrap().to_owned();
    let checked = customer
        .data(
            app,
            "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) { basket { orderId } } }",
            json!({ "b": basket, "p": payment }),
        )
        .await;
    let order = checked["checkoutBasket"]["basket"]["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    let order_query = "query($o: ID!) { order(id: $o) { status shoppingListId invoice { id } } }";
    let list = wait_until("the order's shopping list", || async {
        let found = customer.data(app, order_query, json!({ "o": order })).await;
        found["order"]["shoppingListId"].as_str().map(str::to_owned)
    })
    .await;
    let list_query = "query($l: ID!) { shoppingList(id: $l) { status } }";
    wait_until("the list to be available", || async {
        let found = bot.data(app, list_query, json!({ "l": list })).await;
        (found["shoppingList"]["status"] == "AVAILABLE").then_some(())
    })
    .await;
    bot.data(
        app,
        "mutation($l: ID!, $b: ID!) { assignShoppingList(id: $l, botId: $b) { id } }",
        json!({ "l": list, "b": bot.id() }),
    )
    .await;
    wait_until("the list to be active", || async {
        let found = bot.data(app, list_query, json!({ "l": list })).await;
        (found["shoppingList"]["status"] == "ACTIVE").then_some(())
    })
    .await;
    bot.data(
        app,
        "mutation($l: ID!) { completeShoppingList(id: $l) { id } }",
        json!({ "l": list }),
    )
    .await;
    let invoice = wait_until("the order's invoice", || async {
        let found = customer.data(app, order_query, json!({ "o": order })).await;
        found["order"]["invoice"]["id"].as_str().map(str::to_owned)
    })
    .await;
    // The order reached search: the owner's and customer's searches see it.
    wait_until("the order in search", || async {
        let found = cast
            .operator
            .data(app, "{ searchOrders { edges { node { id } } } }", json!({}))
            .await;
        found.to_string().contains(&order).then_some(())
    })
    .await;
    Fixture {
        store,
        product,
        other_product,
        basket,
        open_basket,
        payment,
        order,
        list,
        invoice,
    }
}

/// Who a field is for, as the contract says.
#[derive(Clone, Copy)]
enum Rule {
    /// Anyone, even without a token.
    Public,
    /// Operators and these roles; with `owned`, only the data's own
    /// customer, store owner or bot of that role.
    For { roles: &'static [Role], owned: bool },
}

const OPERATORS: Rule = Rule::For {
    roles: &[],
    owned: false,
};
const CUSTOMER_OWN: Rule = Rule::For {
    roles: &[Role::Customer],
    owned: true,
};
const OWNER_OWN: Rule = Rule::For {
    roles: &[Role::StoreOwner],
    owned: true,
};

enum Kind {
    Query,
    Mutation,
    Subscription,
}

struct Case {
    field: &'static str,
    kind: Kind,
    rule: Rule,
    document: String,
    variables: Value,
}

fn cases(f: &Fixture, cast: &Cast) -> Vec<Case> {
    use Kind::*;
    let case = |field, kind, rule, document: &str, variables| Case {
        field,
        kind,
        rule,
        document: document.to_owned(),
        variables,
    };
    let customer = cast.customer.id();
    let bot = cast.bot.id();
    vec![
        case(
            "store",
            Query,
            Rule::Public,
            "query($s: ID!) { store(id: $s) { id } }",
            json!({ "s": f.store }),
        ),
        case(
            "stores",
            Query,
            Rule::Public,
            "{ stores { edges { node { id } } } }",
            json!({}),
        ),
        case(
            "product",
            Query,
            Rule::Public,
            "query($p: ID!) { product(id: $p) { id } }",
            json!({ "p": f.product }),
        ),
        case(
            "catalog",
            Query,
            Rule::Public,
            "query($s: ID!) { catalog(storeId: $s) { edges { node { id } } } }",
            json!({ "s": f.store }),
        ),
        case(
            "customer",
            Query,
            CUSTOMER_OWN,
            "query($c: ID!) { customer(id: $c) { id } }",
            json!({ "c": customer }),
        ),
        case(
            "notifications",
            Query,
            CUSTOMER_OWN,
            "query($c: ID!) { notifications(customerId: $c) { edges { node { id } } } }",
            json!({ "c": customer }),
        ),
        case(
            "basket",
            Query,
            CUSTOMER_OWN,
            "query($b: ID!) { basket(id: $b) { id } }",
            json!({ "b": f.basket }),
        ),
        case(
            "order",
            Query,
            CUSTOMER_OWN,
            "query($o: ID!) { order(id: $o) { id } }",
            json!({ "o": f.order }),
        ),
        // Each customer and store owner searches its own orders only (checked
        // on the results below); naming someone else's customer is refused.
        case(
            "searchOrders",
            Query,
            Rule::For {
                roles: &[Role::Customer, Role::StoreOwner],
                owned: false,
            },
            "{ searchOrders { edges { node { id customerId } } } }",
            json!({}),
        ),
        case(
            "invoice",
            Query,
            CUSTOMER_OWN,
            "query($i: ID!) { invoice(id: $i) { id } }",
            json!({ "i": f.invoice }),
        ),
        case(
            "shoppingList",
            Query,
            Rule::For {
                roles: &[Role::Bot],
                owned: false,
            },
            "query($l: ID!) { shoppingList(id: $l) { id } }",
            json!({ "l": f.list }),
        ),
        case(
            "shoppingLists",
            Query,
            Rule::For {
                roles: &[Role::Bot],
                owned: false,
            },
            "{ shoppingLists { edges { node { id } } } }",
            json!({}),
        ),
        case(
            "createStore",
            Mutation,
            Rule::For {
                roles: &[Role::StoreOwner],
                owned: false,
            },
            "mutation { createStore(input: {name: \"New\", location: \"Here\"}) { id } }",
            json!({}),
        ),
        case(
            "enableParticipation",
            Mutation,
            OWNER_OWN,
            "mutation($s: ID!) { enableParticipation(storeId: $s) { id } }",
            json!({ "s": f.store }),
        ),
        case(
            "rebrandStore",
            Mutation,
            OWNER_OWN,
            "mutation($s: ID!) { rebrandStore(storeId: $s, name: \"Renamed\") { id } }",
            json!({ "s": f.store }),
        ),
        case(
            "addProduct",
            Mutation,
            OWNER_OWN,
            "mutation($s: ID!) { addProduct(input: {storeId: $s, name: \"Ink\", price: \"1.00\"}) { id } }",
            json!({ "s": f.store }),
        ),
        case(
            "rebrandProduct",
            Mutation,
            OWNER_OWN,
            "mutation($p: ID!) { rebrandProduct(productId: $p, name: \"Pen\", description: \"blue\") { id } }",
            json!({ "p": f.product }),
        ),
        case(
            "increaseProductPrice",
            Mutation,
            OWNER_OWN,
            "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"1.00\") { id } }",
            json!({ "p": f.product }),
        ),
        case(
            "decreaseProductPrice",
            Mutation,
            OWNER_OWN,
            "mutation($p: ID!) { decreaseProductPrice(productId: $p, delta: \"1.00\") { id } }",
            json!({ "p": f.product }),
        ),
        case(
            "registerCustomer",
            Mutation,
            Rule::For {
                roles: &[Role::Customer],
                owned: false,
            },
            "mutation { registerCustomer(input: {name: \"Me\", smsNumber: \"+15550100200\"}) { id } }",
            json!({}),
        ),
        case(
            "changeSmsNumber",
            Mutation,
            CUSTOMER_OWN,
            "mutation($c: ID!) { changeSmsNumber(customerId: $c, smsNumber: \"+15550100201\") { id } }",
            json!({ "c": customer }),
        ),
        case(
            "authorizePayment",
            Mutation,
            CUSTOMER_OWN,
            "mutation($c: ID!) { authorizePayment(input: {customerId: $c, amount: \"1.00\"}) { id } }",
            json!({ "c": customer }),
        ),
        case(
            "startBasket",
            Mutation,
            CUSTOMER_OWN,
            "mutation($c: ID!) { startBasket(customerId: $c) { id } }",
            json!({ "c": customer }),
        ),
        case(
            "addItem",
            Mutation,
            CUSTOMER_OWN,
            "mutation($b: ID!, $p: ID!) { addItem(basketId: $b, productId: $p, quantity: 1) { id } }",
            json!({ "b": f.open_basket, "p": f.product }),
        ),
        case(
            "removeItem",
            Mutation,
            CUSTOMER_OWN,
            "mutation($b: ID!, $p: ID!) { removeItem(basketId: $b, productId: $p, quantity: 1) { id } }",
            json!({ "b": f.open_basket, "p": f.product }),
        ),
        case(
            "checkoutBasket",
            Mutation,
            CUSTOMER_OWN,
            "mutation($b: ID!, $p: ID!) { checkoutBasket(basketId: $b, paymentId: $p) { id } }",
            json!({ "b": f.open_basket, "p": f.payment }),
        ),
        case(
            "assignShoppingList",
            Mutation,
            Rule::For {
                roles: &[Role::Bot],
                owned: true,
            },
            "mutation($l: ID!, $b: ID!) { assignShoppingList(id: $l, botId: $b) { id } }",
            json!({ "l": f.list, "b": bot }),
        ),
        case(
            "completeShoppingList",
            Mutation,
            Rule::For {
                roles: &[Role::Bot],
                owned: true,
            },
            "mutation($l: ID!) { completeShoppingList(id: $l) { id } }",
            json!({ "l": f.list }),
        ),
        case(
            "payInvoice",
            Mutation,
            CUSTOMER_OWN,
            "mutation($i: ID!) { payInvoice(invoiceId: $i) { id } }",
            json!({ "i": f.invoice }),
        ),
        // Those that end something come last: the cases before act on it.
        case(
            "cancelOrder",
            Mutation,
            CUSTOMER_OWN,
            "mutation($o: ID!) { cancelOrder(orderId: $o) { id } }",
            json!({ "o": f.order }),
        ),
        case(
            "cancelBasket",
            Mutation,
            CUSTOMER_OWN,
            "mutation($b: ID!) { cancelBasket(basketId: $b) { id } }",
            json!({ "b": f.open_basket }),
        ),
        case(
            "disableParticipation",
            Mutation,
            OWNER_OWN,
            "mutation($s: ID!) { disableParticipation(storeId: $s) { id } }",
            json!({ "s": f.store }),
        ),
        case(
            "removeProduct",
            Mutation,
            OWNER_OWN,
            "mutation($p: ID!) { removeProduct(productId: $p) { id } }",
            json!({ "p": f.product }),
        ),
        case(
            "enableCustomer",
            Mutation,
            OPERATORS,
            "mutation($c: ID!) { enableCustomer(customerId: $c) { id } }",
            json!({ "c": customer }),
        ),
        case(
            "disableCustomer",
            Mutation,
            OPERATORS,
            "mutation($c: ID!) { disableCustomer(customerId: $c) { id } }",
            json!({ "c": customer }),
        ),
        case(
            "catalogChanged",
            Subscription,
            Rule::Public,
            "subscription($s: ID!) { catalogChanged(storeId: $s, after: \"0\") { cursor } }",
            json!({ "s": f.store }),
        ),
        case(
            "orderUpdated",
            Subscription,
            CUSTOMER_OWN,
            "subscription($o: ID!) { orderUpdated(orderId: $o, after: \"0\") { cursor } }",
            json!({ "o": f.order }),
        ),
        case(
            "customerOrders",
            Subscription,
            CUSTOMER_OWN,
            "subscription($c: ID!) { customerOrders(customerId: $c, after: \"0\") { cursor } }",
            json!({ "c": customer }),
        ),
        case(
            "shoppingListsAvailable",
            Subscription,
            Rule::For {
                roles: &[Role::Bot],
                owned: false,
            },
            "subscription { shoppingListsAvailable(after: \"0\") { cursor } }",
            json!({}),
        ),
        case(
            "shoppingListUpdated",
            Subscription,
            Rule::For {
                roles: &[Role::Bot],
                owned: false,
            },
            "subscription($l: ID!) { shoppingListUpdated(id: $l, after: \"0\") { cursor } }",
            json!({ "l": f.list }),
        ),
        case(
            "events",
            Subscription,
            OPERATORS,
            "subscription { events(after: \"0\") { cursor } }",
            json!({}),
        ),
    ]
}

/// What `who` must get for a field under `rule`.
fn expected(rule: Rule, who: &Who, cast: &Cast) -> Option<ErrorCode> {
    let Rule::For { roles, owned } = rule else {
        return None;
    };
    let Some(actor) = who.actor else {
        return Some(ErrorCode::Unauthenticated);
    };
    if actor.role == Role::Operator {
        None
    } else if !roles.contains(&actor.role) || (owned && cast.is_other(who)) {
        Some(ErrorCode::Forbidden)
    } else {
        None
    }
}

/// The code of the first error of a response or pushed message, if any.
fn code_of(errors: &Value) -> Option<String> {
    errors[0]["extensions"]["code"].as_str().map(str::to_owned)
}

/// What a subscription answers `who` first: its error code, or `None` for
/// a pushed item.
async fn subscribe(app: &TestApp, who: &Who, case: &Case) -> Option<String> {
    let mut ws = WsClient::open(&app.base, "graphql-transport-ws", None).await;
    let payload = match &who.token {
        Some(token) => json!({ "authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    ws.send(json!({ "type": "connection_init", "payload": payload }))
        .await;
    let ack = ws.next_message().await;
    assert_eq!(ack["type"], "connection_ack", "{}: {ack}", who.name);
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": {
        "query": case.document, "variables": case.variables } }))
        .await;
    let first = ws.next_message().await;
    ws.close().await;
    match first["type"].as_str() {
        Some("error") => code_of(&first["payload"]),
        Some("next") => code_of(&first["payload"]["errors"]),
        _ => panic!("{} on {}: {first}", who.name, case.field),
    }
}

/// The operation fields of the served schema.
async fn schema_fields(app: &TestApp) -> BTreeSet<String> {
    let sdl = app
        .http
        .get(format!("{}/schema.graphql", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut fields = BTreeSet::new();
    let mut inside = false;
    let mut in_description = false;
    for line in sdl.lines() {
        let line = line.trim();
        if ["type Query {", "type Mutation {", "type Subscription {"].contains(&line) {
            inside = true;
        } else if line == "}" {
            inside = false;
        } else if line.starts_with("\"\"\"") {
            // A one-line description opens and closes on the same line.
            let one_line = line.len() > 3 && line.ends_with("\"\"\"");
            if !one_line {
                in_description = !in_description;
            }
        } else if inside && !in_description && !line.is_empty() {
            let name = line.split(['(', ':']).next().unwrap_or_default();
            fields.insert(name.to_owned());
        }
    }
    fields
}

async fn authorization_matrix(backend: Backend) {
    let mut settings = common::settings(backend).await;
    settings.auth_jwt_secret = Some(SECRET.into());
    let mut app = start_with(settings).await;
    let cast = Cast::new();
    let f = fixture(&app, &cast).await;
    let cases = cases(&f, &cast);

    let served = schema_fields(&app).await;
    let ruled: BTreeSet<String> = cases.iter().map(|c| c.field.to_owned()).collect();
    assert_eq!(
        served, ruled,
        "every query, mutation and subscription has exactly one rule here"
    );

    // Refusals first (they change nothing), then what is allowed.
    for refusals in [true, false] {
        for case in &cases {
            for who in cast.all() {
                let want = expected(case.rule, who, &cast);
                if want.is_some() != refusals {
                    continue;
                }
                let got = match case.kind {
                    Kind::Subscription => subscribe(&app, who, case).await,
                    _ => {
                        let response = who.call(&app, &case.document, case.variables.clone()).await;
                        let code = code_of(&response["errors"]);
                        if code.is_some() {
                            assert!(
                                response["data"].is_null()
                                    || response["data"][case.field].is_null(),
                                "{response}"
                            );
                        }
                        code
                    }
                };
                match want {
                    Some(code) => assert_eq!(
                        got.as_deref(),
                        Some(code.as_str()),
                        "{} on {}",
                        who.name,
                        case.field
                    ),
                    // Allowed: the domain may still say no (a basket already
                    // checked out), but never for who is asking.
                    None => assert!(
                        !matches!(got.as_deref(), Some("FORBIDDEN" | "UNAUTHENTICATED")),
                        "{} on {} was refused: {got:?}",
                        who.name,
                        case.field
                    ),
                }
            }
        }
    }

    // Searches see only their own: a customer its orders, an owner the
    // orders holding its stores' items.
    let search = "{ searchOrders { edges { node { id } } } }";
    for (who, sees) in [
        (&cast.customer, true),
        (&cast.owner, true),
        (&cast.operator, true),
        (&cast.other_customer, false),
        (&cast.other_owner, false),
    ] {
        let found = who.data(&app, search, json!({})).await.to_string();
        assert_eq!(found.contains(&f.order), sees, "{}: {found}", who.name);
    }
    // A store owner sees the order's items of its stores and who to contact
    // (name, SMS number), not the customer record, invoice, saga or list.
    let seen = cast
        .owner
        .call(
            &app,
            "{ searchOrders { edges { node { id customerName items { productName }
               customer { id } invoice { id } saga { status } shoppingList { id } } } } }",
            json!({}),
        )
        .await;
    let node = &seen["data"]["searchOrders"]["edges"][0]["node"];
    assert_eq!(node["customerName"], "Me", "{seen}");
    assert_eq!(node["items"][0]["productName"], "Pen", "{seen}");
    for field in ["customer", "invoice", "saga", "shoppingList"] {
        assert!(node[field].is_null(), "{field}: {seen}");
    }
    let orders = seen["data"]["searchOrders"]["edges"]
        .as_array()
        .unwrap()
        .len();
    let refused = seen["errors"].as_array().expect("errors");
    assert_eq!(refused.len(), 4 * orders, "{seen}");
    assert!(
        refused
            .iter()
            .all(|e| e["extensions"]["code"] == "FORBIDDEN"),
        "{seen}"
    );
    // Naming another owner's product would tell which orders hold it.
    let elsewhere = cast
        .other_owner
        .data(
            &app,
            "{ searchOrders { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(!elsewhere.to_string().contains(&f.order), "{elsewhere}");
    let named = cast
        .owner
        .call(
            &app,
            "query($p: ID!) { searchOrders(filter: {productIds: [$p]}) { edges { node { id } } } }",
            json!({ "p": f.other_product }),
        )
        .await;
    assert_eq!(
        code_of(&named["errors"]).as_deref(),
        Some("FORBIDDEN"),
        "{named}"
    );
    let named = cast
        .other_customer
        .call(
            &app,
            "query($c: ID!) { searchOrders(filter: {customerId: $c}) { edges { node { id } } } }",
            json!({ "c": cast.customer.id() }),
        )
        .await;
    assert_eq!(
        code_of(&named["errors"]).as_deref(),
        Some("FORBIDDEN"),
        "{named}"
    );
    app.stop().await;
}

on_both_backends!(authorization_matrix);

/// Sends `command` straight over the broker as `actor` (forged, as anyone
/// with access to the broker could); the code it is refused with.
async fn forged<M: mallbots_contracts::Message>(
    bus: &CommandBus,
    command: M,
    actor: &Who,
) -> Option<ErrorCode> {
    match bus
        .send(&command, None, &actor.actor.unwrap())
        .await
        .expect("a reply")
    {
        CommandReply::Rejected(err) => Some(err.code),
        CommandReply::Accepted { .. } => None,
    }
}

/// Each module refuses a command on what the actor does not own, however it
/// arrives; and the event store keeps who did what.
async fn ownership_holds_where_the_data_lives(backend: Backend) {
    use mallbots_contracts::{baskets, customers, depot, ordering, payments, stores};
    let mut settings = common::settings(backend).await;
    settings.auth_jwt_secret = Some(SECRET.into());
    let mut app = start_with(settings).await;
    let cast = Cast::new();
    let f = fixture(&app, &cast).await;
    let (_stop, shutdown) = Shutdown::new();
    let bus = CommandBus::start(app.broker(), Duration::from_secs(10), shutdown)
        .await
        .unwrap();
    let id = |s: &str| Uuid::parse_str(s).unwrap();
    let forbidden = Some(ErrorCode::Forbidden);
    let store = stores::EnableParticipation {
        store_id: id(&f.store),
    };
    assert_eq!(forged(&bus, store, &cast.other_owner).await, forbidden);
    let reprice = stores::IncreaseProductPrice {
        product_id: id(&f.product),
        delta: "1.00".parse().unwrap(),
    };
    assert_eq!(forged(&bus, reprice, &cast.other_owner).await, forbidden);
    let reprice = stores::IncreaseProductPrice {
        product_id: id(&f.product),
        delta: "1.00".parse().unwrap(),
    };
    assert_eq!(forged(&bus, reprice, &cast.customer).await, forbidden);
    let customer = id(&cast.customer.id());
    let sms = customers::ChangeSmsNumber {
        customer_id: customer,
        sms_number: "+15550100999".into(),
    };
    assert_eq!(forged(&bus, sms, &cast.other_customer).await, forbidden);
    let disable = customers::DisableCustomer {
        customer_id: customer,
    };
    assert_eq!(forged(&bus, disable, &cast.customer).await, forbidden);
    let add = baskets::AddItem {
        basket_id: id(&f.open_basket),
        product_id: id(&f.product),
        quantity: 1,
    };
    assert_eq!(forged(&bus, add, &cast.other_customer).await, forbidden);
    let pay = payments::PayInvoice {
        invoice_id: id(&f.invoice),
    };
    assert_eq!(forged(&bus, pay, &cast.other_customer).await, forbidden);
    let cancel = ordering::CancelOrder {
        order_id: id(&f.order),
    };
    assert_eq!(forged(&bus, cancel, &cast.other_customer).await, forbidden);
    let complete = depot::CompleteShoppingList {
        shopping_list_id: id(&f.list),
    };
    assert_eq!(forged(&bus, complete, &cast.other_bot).await, forbidden);
    let assign = depot::AssignShoppingList {
        shopping_list_id: id(&f.list),
        bot_id: id(&cast.bot.id()),
    };
    assert_eq!(forged(&bus, assign, &cast.other_bot).await, forbidden);

    // Nothing changed: the price, the SMS number, the basket, the order.
    let seen = cast
        .operator
        .data(
            &app,
            "query($p: ID!, $c: ID!, $b: ID!, $o: ID!) { product(id: $p) { price }
               customer(id: $c) { smsNumber enabled } basket(id: $b) { items { quantity } }
               order(id: $o) { status } }",
            json!({ "p": f.product, "c": cast.customer.id(), "b": f.open_basket, "o": f.order }),
        )
        .await;
    assert_eq!(seen["product"]["price"], "5.00", "{seen}");
    assert_eq!(seen["customer"]["smsNumber"], "+15550100200", "{seen}");
    assert_eq!(seen["customer"]["enabled"], true, "{seen}");
    assert_eq!(seen["basket"]["items"][0]["quantity"], 1, "{seen}");
    assert_eq!(seen["order"]["status"], "READY", "{seen}");

    // Who did what: the store was created by its owner; the order, caused by
    // the customer's checkout, is recorded as the customer's.
    use mallbots_platform::event_store::recorded_by;
    let created = recorded_by(&app.db("stores").await, &f.store)
        .await
        .unwrap();
    assert_eq!(created[0].0, "StoreCreated");
    assert_eq!(created[0].1, cast.owner.actor);
    let order = recorded_by(&app.db("ordering").await, &f.order)
        .await
        .unwrap();
    assert_eq!(order[0].1, cast.customer.actor, "{order:?}");
    app.stop().await;
}

on_both_backends!(ownership_holds_where_the_data_lives);
