//! Clients that keep raising prices while a test breaks something (a broker
//! restart, a killed process), and the check that follows: every raise
//! acknowledged applied exactly once, and a catalog follower saw every raise,
//! in order, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::{TestApp, WsClient, cents, wait_until};

pub const RAISE: &str =
    "mutation($p: ID!) { increaseProductPrice(productId: $p, delta: \"0.01\") { id } }";

/// What the clients were told, counted.
#[derive(Default)]
pub struct Told {
    applied: AtomicUsize,
    unavailable: AtomicUsize,
    unknown: AtomicUsize,
}

impl Told {
    /// Raises acknowledged.
    pub fn applied(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
    }

    /// Raises refused UNAVAILABLE (never applied).
    pub fn unavailable(&self) -> usize {
        self.unavailable.load(Ordering::SeqCst)
    }

    /// Raises answered TIMEOUT (maybe applied).
    pub fn unknown(&self) -> usize {
        self.unknown.load(Ordering::SeqCst)
    }
}

/// What a client may be told besides an acknowledgement and TIMEOUT.
#[derive(Clone, Copy, PartialEq)]
pub enum Unavailable {
    /// UNAVAILABLE (a 503) is an answer: the client backs off a little.
    Expected,
    /// UNAVAILABLE fails the test.
    Failure,
}

/// One client per product, each raising its product by 0.01 (from 1.00)
/// until stopped.
pub struct Raisers {
    pub told: Arc<Told>,
    stop: Arc<AtomicBool>,
    clients: Vec<(String, JoinHandle<(i64, i64)>)>,
}

impl Raisers {
    /// Starts the clients against `base`; each answer must come within
    /// `answer_within`.
    pub fn start(
        base: &str,
        products: &[String],
        answer_within: Duration,
        unavailable: Unavailable,
    ) -> Raisers {
        let told = Arc::new(Told::default());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = products
            .iter()
            .map(|p| {
                let client = raise(
                    base.to_owned(),
                    p.clone(),
                    answer_within,
                    unavailable,
                    stop.clone(),
                    told.clone(),
                );
                (p.clone(), tokio::spawn(client))
            })
            .collect();
        Raisers {
            told,
            stop,
            clients,
        }
    }

    /// Stops the clients; waits until every product shows each acknowledged
    /// raise and checks it shows no more than those plus the TIMEOUT ones;
    /// then reads `live` (a `catalogChanged { kind product { id price } }`
    /// subscription that has seen nothing of these products yet) until it
    /// has pushed every raise: each the next cent of its product, no gap, no
    /// duplicate.
    pub async fn stop_and_check(self, app: &TestApp, live: &mut WsClient) {
        self.stop.store(true, Ordering::SeqCst);
        let mut finals = HashMap::new();
        for (product, client) in self.clients {
            let (acked, unknown) = client.await.expect("a client finished without failing");
            let price = settled_price(app, &product, acked, unknown).await;
            finals.insert(product, price);
        }
        let mut seen: HashMap<String, i64> = finals.keys().map(|p| (p.clone(), 100)).collect();
        follow_raises(live, &mut seen, &finals).await;
        eprintln!(
            "applied {}, unavailable {}, unknown {}",
            self.told.applied(),
            self.told.unavailable(),
            self.told.unknown()
        );
    }
}

/// Raises `product` by 0.01 until `stop`, counting each answer; returns how
/// many raises were acknowledged and how many may or may not have applied.
async fn raise(
    base: String,
    product: String,
    answer_within: Duration,
    unavailable: Unavailable,
    stop: Arc<AtomicBool>,
    told: Arc<Told>,
) -> (i64, i64) {
    let http = reqwest::Client::builder()
        .timeout(answer_within)
        .build()
        .expect("an HTTP client");
    let (mut acked, mut unknown) = (0, 0);
    while !stop.load(Ordering::SeqCst) {
        let sent = Instant::now();
        let response = http
            .post(format!("{base}/graphql"))
            .json(&json!({ "query": RAISE, "variables": { "p": product } }))
            .send()
            .await
            .expect("the gateway answers HTTP in time");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON answer");
        let took = sent.elapsed();
        assert!(took < answer_within, "an answer took {took:?}: {body}");
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => {
                acked += 1;
                told.applied.fetch_add(1, Ordering::SeqCst);
            }
            Some("UNAVAILABLE") if unavailable == Unavailable::Expected => {
                assert_eq!(status, 503, "UNAVAILABLE is a 503");
                told.unavailable.fetch_add(1, Ordering::SeqCst);
                // A client backs off a little before retrying.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A command in a lost broker's or a killed process's hands: its
            // outcome comes later.
            Some("TIMEOUT") => {
                unknown += 1;
                told.unknown.fetch_add(1, Ordering::SeqCst);
            }
            Some(other) => panic!("unexpected {other}: {body}"),
        }
    }
    (acked, unknown)
}

/// Waits until `product` (priced 1.00 at first, raised a cent at a time)
/// shows every one of `acked` acknowledged raises; checks that it shows no
/// more than those plus the `unknown` ones (answered TIMEOUT: maybe
/// applied); its price in cents.
async fn settled_price(app: &TestApp, product: &str, acked: i64, unknown: i64) -> i64 {
    let raised = wait_until("the product's price to settle", || async {
        let read = app
            .data(
                "query($p: ID!) { product(id: $p) { price } }",
                json!({ "p": product }),
            )
            .await;
        let raised = cents(&read["product"]["price"]) - 100;
        (raised >= acked).then_some(raised)
    })
    .await;
    assert!(
        raised <= acked + unknown,
        "{product}: raised {raised} times, {acked} acknowledged, {unknown} unknown"
    );
    raised + 100
}

/// Reads a `catalogChanged { kind product { id price } }` subscription until
/// every product in `seen` (its price in cents so far) is at its price in
/// `finals`; each raise pushed must be the next cent of its product.
/// Products not in `seen` are passed over.
async fn follow_raises(
    live: &mut WsClient,
    seen: &mut HashMap<String, i64>,
    finals: &HashMap<String, i64>,
) {
    while seen != finals {
        let data = live.next_data().await;
        let change = &data["catalogChanged"];
        if change["kind"] != "PRICE_INCREASED" {
            continue;
        }
        let product = change["product"]["id"].as_str().expect("an id");
        let Some(last) = seen.get_mut(product) else {
            continue;
        };
        let price = cents(&change["product"]["price"]);
        assert_eq!(
            price,
            *last + 1,
            "{product}: a gap or a duplicate in the pushes"
        );
        *last = price;
    }
}
