//! The split topology, for real, on PostgreSQL + RabbitMQ: the system as
//! separate `mallbots` processes.
//! - Two of stores (competing consumers of its commands) and two of search
//!   (one active, one standing by); under load, one of each is killed with
//!   kill -9: every acknowledged change is applied once, the catalog's live
//!   pushes go on in order with no gap, and the survivors carry on.
//! - One process per module; the saga's is killed with 50 sagas in flight
//!   and started again: every order finishes, nothing twice.
//! - Parts started at the same moment on a fresh database, each creating
//!   and migrating the tables itself: none fails.

mod common;

use std::time::{Duration, Instant};

use common::raisers::{Raisers, Unavailable};
use common::shop::{add_item, authorize_payment, basket, checkout, customer, mall};
use common::shop::{order_with_status, saga_with_status};
use common::split::Split;
use common::{Backend, Process, TestApp, shop, wait_until};
use serde_json::json;
use uuid::Uuid;

const CLIENTS: usize = 6;
/// How long a raise may take to be answered: the command's deadline
/// (COMMAND_TIMEOUT_MS) and the HTTP round trip.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_killed_process_of_stores_and_of_search_loses_nothing() {
    let split = Split::new().await;
    let part = |parts: &'static [&'static str]| split.part(parts);
    let rest = part(&[
        "gateway",
        "customers",
        "baskets",
        "payments",
        "ordering",
        "depot",
        "cosec",
        "notifications",
    ])
    .await;
    // The first of each starts first: it is search's active consumer.
    let mut stores: Vec<Process> = vec![part(&["stores"]).await, part(&["stores"]).await];
    let mut search: Vec<Process> = vec![part(&["search"]).await, part(&["search"]).await];

    let app = rest.client().await;
    let (_store, products, mut live) = common::followed_catalog(&app, "Twin Towers", CLIENTS).await;

    let raisers = Raisers::start(&app.base, &products, ANSWER_WITHIN, Unavailable::Failure);
    let told = raisers.told.clone();
    wait_until("load before the kill", || async {
        (told.applied() >= 60).then_some(())
    })
    .await;
    for killed in [&mut stores[0], &mut search[0]] {
        killed.child.start_kill().expect("kill -9");
        killed.child.wait().await.expect("gone");
    }
    let at_kill = told.applied();
    let killed = Instant::now();
    wait_until("the survivors carry the load", || async {
        (told.applied() >= at_kill + 120).then_some(())
    })
    .await;
    // The standby search applied everything after the active one died, in
    // order: every product's pushes step by one cent up to its price.
    raisers.stop_and_check(&app, &mut live).await;
    eprintln!(
        "{} raises acknowledged, {} after the kill, within {:?}",
        told.applied(),
        told.applied() - at_kill,
        killed.elapsed()
    );
}

/// The split topology with one process per module: the saga's process is
/// killed with 50 sagas in flight and started again; every order finishes,
/// nothing twice.
#[tokio::test]
async fn a_module_process_killed_mid_saga_finishes_after_a_restart() {
    let mut split = Split::new().await;
    // 50 checkouts at once on two cores shared with the other tests: what
    // this test holds is that every order finishes once, not how fast a
    // checkout is answered (3 s was missed in CI now and then).
    split.set_env("COMMAND_TIMEOUT_MS", "15000".to_owned());
    let everything_else: Vec<&str> = ["gateway"]
        .into_iter()
        .chain(common::COMMAND_MODULES)
        .chain(["search", "notifications"])
        .collect();
    let rest = split.part(&everything_else).await;
    let mut cosec = split.part(&["cosec"]).await;
    let app = rest.client().await;
    let in_flight = shop::checkouts_in_flight(&app, 50).await;
    cosec.child.start_kill().expect("kill -9");
    cosec.child.wait().await.expect("gone");
    let _cosec = split.part(&["cosec"]).await;
    shop::every_order_finished_once(&app, &in_flight).await;
}

/// Kills a process group when dropped (a test that fails midway).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0);
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
    }
}

/// Six processes started at the same moment on a fresh database, without
/// `mallbots migrate` first: each creates the schemas and tables it needs
/// (one process at a time, under the start-up lock), every one runs, and
/// the system works across them.
#[tokio::test]
async fn parts_started_at_once_on_a_fresh_database_all_run() {
    let settings = common::settings(Backend::Real).await;
    let envs = [
        ("DATABASE_URL", settings.database_url.expect("a database")),
        ("AMQP_URL", settings.amqp_url.expect("a broker")),
        ("AMQP_PREFIX", settings.amqp_prefix),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let parts: [&[&str]; 6] = [
        &["gateway"],
        &["stores"],
        &["stores"],
        &["search"],
        &["customers", "baskets", "payments", "ordering"],
        &["depot", "cosec", "notifications"],
    ];
    // `launch` fails the test if a process exits before it runs.
    let launched = futures_util::future::join_all(parts.iter().map(|part| {
        let args: Vec<&std::ffi::OsStr> = std::iter::once("run")
            .chain(part.iter().copied())
            .map(std::ffi::OsStr::new)
            .collect();
        let envs = envs.clone();
        async move { common::launch(&args, &envs).await }
    }))
    .await;
    let gateway = launched[0].client().await;
    gateway.wait_ready("the gateway to be ready").await;
    let store = shop::store(&gateway, "Opening Day", "Atrium").await;
    shop::product(&gateway, &store, "Ribbon", "1.00").await;
    let catalog = gateway
        .data(
            "query($s: ID!) { catalog(storeId: $s, first: 10) { edges { node { name } } } }",
            json!({ "s": store }),
        )
        .await;
    assert_eq!(
        catalog["catalog"]["edges"][0]["node"]["name"], "Ribbon",
        "{catalog}"
    );
    // And a module of another process: customers.
    shop::customer(&gateway, "Ada Opening").await;
}

type LogLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// `mallbots <args>` with `envs`, its log read line by line as it comes.
fn start_logged(args: &[&str], envs: &[(&str, &str)]) -> (tokio::process::Child, LogLines) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mallbots");
    let out = child.stdout.take().expect("its output");
    (child, tokio::io::BufReader::new(out).lines())
}

/// The first line of `lines` that holds `what`, within the deadline.
async fn until(lines: &mut LogLines, what: &str) -> String {
    tokio::time::timeout(common::DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("its log") {
            if line.contains(what) {
                return line;
            }
        }
        panic!("mallbots exited before it logged {what:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {what:?} in the log in time"))
}

/// A process that finds another one creating the tables says it waits, and
/// runs once that one is done.
#[tokio::test]
async fn a_start_waits_for_another_process_creating_tables_and_says_so() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let settings = common::settings(Backend::Real).await;
    let database = settings.database_url.expect("a database");
    // Another process's start-up, as it holds the lock.
    let other = Database::connect(database.as_str()).await.unwrap();
    let holding = other.begin().await.unwrap();
    holding
        .execute_unprepared("SELECT pg_advisory_xact_lock(hashtext('mallbots.startup'))")
        .await
        .unwrap();
    let amqp = settings.amqp_url.expect("a broker");
    let (mut starting, mut lines) = start_logged(
        &["run", "stores"],
        &[
            ("DATABASE_URL", &database),
            ("AMQP_URL", &amqp),
            ("AMQP_PREFIX", &settings.amqp_prefix),
            ("RUST_LOG", "info"),
        ],
    );
    until(&mut lines, "another process is creating tables").await;
    holding.commit().await.unwrap();
    until(&mut lines, "running").await;
    let _ = starting.kill().await;
}

/// A process whose PostgreSQL cannot be reached says at once where and why
/// (the pool alone would only time out, 30 s later, without a cause), and
/// never shows the URL, which may hold a password.
#[tokio::test]
async fn an_unreachable_database_is_named_with_its_cause_at_start() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let database = format!("postgres://mallbots:s3cret@127.0.0.1:{port}/mallbots");
    let (mut starting, mut lines) = start_logged(
        &["run"],
        &[("DATABASE_URL", &database), ("RUST_LOG", "warn")],
    );
    let said = until(&mut lines, "cannot be reached").await;
    assert!(
        said.contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");
    let _ = starting.kill().await;
}

/// A process that starts before its broker is up listens at once: its
/// probes say it lives and what it waits for, requests are told it is
/// starting (`UNAVAILABLE`, `Retry-After`), and once the broker comes it
/// serves, without a restart. Likewise a module process's `/metrics` door.
#[tokio::test]
async fn a_process_waiting_for_its_broker_answers_probes_and_serves_once_it_comes() {
    let mut split = Split::new().await;
    let broker = reqwest::Url::parse(&split.env("AMQP_URL")).expect("the broker's URL");
    let upstream = format!(
        "{}:{}",
        broker.host_str().expect("a host"),
        broker.port().unwrap_or(5672)
    );
    // The broker, later, on a port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut later = broker.clone();
    later.set_port(Some(port)).expect("a port");
    split.set_env("AMQP_URL", later.to_string());
    split.set_env("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned());
    let envs: Vec<(&str, String)> = ["DATABASE_URL", "AMQP_URL", "AMQP_PREFIX", "NO_MIGRATE"]
        .into_iter()
        .map(|name| (name, split.env(name)))
        .collect();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let launch = |part: &'static str| {
        let args = [std::ffi::OsStr::new("run"), std::ffi::OsStr::new(part)];
        let mut envs = envs.clone();
        envs.push(("METRICS_LISTEN_ADDR", "127.0.0.1:0"));
        async move { common::launch_listening(&args, &envs).await }
    };
    let gateway = launch("gateway").await;
    let module = launch("customers").await;
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let answer = http.get(url).send().await.expect("an answer");
            (
                answer.status().as_u16(),
                answer.text().await.expect("a body"),
            )
        }
    };

    let (status, said) = get(format!("{}/healthz", gateway.base)).await;
    assert_eq!(status, 200, "{said}");
    let (status, said) = get(format!("{}/readyz", gateway.base)).await;
    assert_eq!(
        (status, said.as_str()),
        (503, "starting: connecting to the broker")
    );
    let asked = http
        .post(format!("{}/graphql", gateway.base))
        .json(&json!({ "query": "{ stores { edges { cursor } } }" }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(asked.status(), 503);
    assert_eq!(asked.headers()["retry-after"], "1");
    let body: serde_json::Value = asked.json().await.expect("JSON");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{body}"
    );
    let (status, said) = get(format!("{}/healthz", module.base)).await;
    assert_eq!(
        (status, said.as_str()),
        (200, "ok, starting: connecting to the broker")
    );
    let (status, said) = get(format!("{}/readyz", module.base)).await;
    assert_eq!(
        (status, said.as_str()),
        (503, "starting: connecting to the broker")
    );

    // The broker comes: a relay to the real one on that port (its
    // connections end with it).
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the broker's port");
    let relay = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (mut client, _) = listener.accept().await.expect("a connection");
            let upstream = upstream.clone();
            connections.spawn(async move {
                let mut server = tokio::net::TcpStream::connect(upstream)
                    .await
                    .expect("the broker");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    wait_until("the gateway ready", || async {
        (get(format!("{}/readyz", gateway.base)).await.0 == 200).then_some(())
    })
    .await;
    let app = gateway.client().await;
    // A command through the broker to the module process, and its reply.
    let customer = shop::customer(&app, "Came Later").await;
    assert!(!customer.is_empty());
    wait_until("the module's /metrics served", || async {
        let (status, said) = get(format!("{}/metrics", module.base)).await;
        (status == 200 && said.contains("mallbots_")).then_some(())
    })
    .await;
    assert_eq!(
        get(format!("{}/healthz", module.base)).await,
        (200, "ok".to_owned())
    );
    assert_eq!(
        get(format!("{}/readyz", module.base)).await,
        (200, "ready".to_owned())
    );

    // The broker goes away: the module process says it is not ready, and
    // why, while it stays alive.
    relay.abort();
    wait_until("the module not ready without its broker", || async {
        let (status, said) = get(format!("{}/readyz", module.base)).await;
        (status == 503 && said.starts_with("broker: ")).then_some(())
    })
    .await;
    assert_eq!(get(format!("{}/healthz", module.base)).await.0, 200);
}

/// A server that answers but refuses the login (here: no such database)
/// is named at once, its reason said once: waiting for it, as for a server
/// not up yet, would change nothing.
#[tokio::test]
async fn a_refused_login_is_named_at_once_without_waiting() {
    let admin = common::required_env("TEST_DATABASE_URL");
    let base = admin.rsplit_once('/').expect("a URL with a path").0;
    let missing = format!("mallbots_missing_{}", Uuid::new_v4().simple());
    let asked = Instant::now();
    let refused = tokio::time::timeout(
        common::DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
            .arg("run")
            .env("DATABASE_URL", format!("{base}/{missing}"))
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE")
            .output(),
    )
    .await
    .expect("it stops within the deadline")
    .expect("mallbots runs");
    assert!(!refused.status.success(), "it ran without its database");
    // A server not up yet is waited for about 30 s.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "it waited {:?} for a refusal",
        asked.elapsed()
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("refused the connection"), "{said}");
    assert_eq!(
        said.matches(&format!("\"{missing}\" does not exist"))
            .count(),
        1,
        "{said}"
    );
}

/// RabbitMQ that answers but refuses the login or the vhost, and a broker
/// URL that cannot be read, are named at once: retrying them for the 30 s
/// given to a broker not up yet would change nothing (TLS failures:
/// `tls_e2e`).
#[tokio::test]
async fn a_broker_refusal_is_named_at_once_without_waiting() {
    let url = common::required_env("TEST_AMQP_URL");
    let (_, at) = url.split_once('@').expect("a URL with a login");
    let host = at.split_once('/').expect("a URL with a vhost").0;
    for (amqp_url, said) in [
        (
            format!("amqp://guest:wrong@{host}/%2f"),
            "RabbitMQ refused the connection: ACCESS_REFUSED",
        ),
        (
            format!("amqp://guest:guest@{host}/mallbots-missing"),
            "RabbitMQ refused the connection: NOT_ALLOWED",
        ),
        (format!("http://{host}/"), "the broker URL cannot be read"),
    ] {
        common::refused_at_start(&[("AMQP_URL", &amqp_url)], said, "wrong").await;
    }
}

/// A setting that would break every request is refused at start, naming
/// itself and its range, before anything is opened.
#[tokio::test]
async fn settings_out_of_range_are_refused_at_start() {
    for (name, value, flag) in [
        ("COMMAND_TIMEOUT_MS", "0", "--command-timeout-ms"),
        ("WS_INIT_TIMEOUT_MS", "5", "--ws-init-timeout-ms"),
        ("SEARCH_BATCH", "0", "--search-batch"),
        ("SEARCH_BATCH", "1001", "--search-batch"),
        ("SEARCH_BATCH", "ten", "--search-batch"),
    ] {
        let refused = tokio::time::timeout(
            common::DEADLINE,
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
                .arg("run")
                .env(name, value)
                .output(),
        )
        .await
        .expect("refused at once")
        .expect("run mallbots");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{name}={value}: {said}");
        assert!(
            said.contains(&format!("invalid value '{value}' for '{flag}")),
            "{name}={value}: {said}"
        );
    }
}

/// The topology of one process per module, started by `scripts/split`:
/// `mallbots migrate`, each module in a process of its own and two
/// gateways. A whole order goes through gateway 1 while a client follows
/// the customer's orders on gateway 2; then a SIGTERM to the script stops
/// every part cleanly.
#[tokio::test]
async fn the_split_script_serves_an_order_across_two_gateways() {
    let settings = common::settings(Backend::Real).await;
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        })
        .collect();
    // Nine ports in a row, free when probed, for the modules' /metrics.
    let metrics_base = (20_000u16..60_000)
        .step_by(97)
        .find(|base| (0..9).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("nine free ports");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let mut script = tokio::process::Command::new("bash")
        // Its own process group: a failing test kills every part with it.
        .process_group(0)
        .arg(root.join("scripts/split"))
        .env("MALLBOTS", env!("CARGO_BIN_EXE_mallbots"))
        .env("DATABASE_URL", settings.database_url.expect("a database"))
        .env("AMQP_URL", settings.amqp_url.expect("a broker"))
        .env("AMQP_PREFIX", &settings.amqp_prefix)
        .env("GATEWAY_PORTS", format!("{} {}", ports[0], ports[1]))
        .env("METRICS_BASE_PORT", metrics_base.to_string())
        .env("SHUTDOWN_DRAIN_MS", "0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("run scripts/split");
    let _group = Group(script.id().expect("the script runs"));
    let gateways: Vec<TestApp> = {
        let mut gateways = Vec::new();
        for port in &ports {
            let app = common::client_of(format!("http://127.0.0.1:{port}")).await;
            app.wait_ready("the gateway to be ready").await;
            gateways.push(app);
        }
        gateways
    };
    let (one, two) = (&gateways[0], &gateways[1]);

    let mall = mall(one).await;
    let ada = customer(one, "Ada Split").await;
    let mut follower = two
        .subscribe(
            "graphql-transport-ws",
            "subscription($c: ID!) { customerOrders(customerId: $c) { order { id status } } }",
            json!({ "c": ada }),
        )
        .await;
    two.wait_for_subscriptions(1).await;
    let basket = basket(one, &ada).await;
    add_item(one, &basket, &mall.pen, 2).await;
    let payment = authorize_payment(one, &ada, "25.00").await;
    let order = checkout(one, &basket, &payment).await;
    loop {
        let pushed = follower.next_data().await;
        let change = &pushed["customerOrders"]["order"];
        assert_eq!(change["id"], order.as_str(), "only Ada's order: {pushed}");
        if change["status"] == "APPROVED" {
            break;
        }
    }
    order_with_status(one, &order, "APPROVED").await;
    saga_with_status(two, &order, "COMPLETED").await;
    follower.close().await;
    // The stores process (the first module) shows what its consumer did.
    let stores = common::client_of(format!("http://127.0.0.1:{metrics_base}")).await;
    let text = stores.metrics().await;
    let handled = common::metric(
        &text,
        "mallbots_messages_handled_total",
        &["module=\"stores\""],
    );
    assert!(handled.is_some_and(|n| n >= 5.0), "{text}");
    let running = ["queue=\"stores.commands\""];
    assert_eq!(
        common::metric(&text, "mallbots_consumers_running", &running),
        Some(1.0)
    );
    // The search process (the eighth module) shows how far behind the
    // modules it follows it is, though it runs none of them.
    let search = common::client_of(format!("http://127.0.0.1:{}", metrics_base + 7)).await;
    let lag = ["reader=\"search\"", "source=\"ordering\""];
    common::wait_until(
        "search's lag behind ordering on its own /metrics",
        || async {
            let text = search.metrics().await;
            let behind = common::metric(&text, "mallbots_projection_lag_positions", &lag);
            (behind == Some(0.0)).then_some(())
        },
    )
    .await;

    common::sigterm(&script).await;
    let status = tokio::time::timeout(common::DEADLINE, script.wait())
        .await
        .expect("every part stops before the deadline")
        .expect("the script's status");
    assert!(status.success(), "a part did not stop cleanly: {status}");
}
