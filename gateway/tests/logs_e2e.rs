//! Logs an operator can follow: with LOG_FORMAT=json every line is one JSON
//! object, and the lines of a message's handling carry the correlation id
//! of the request that caused it (the client's `x-request-id`).

mod common;

use std::sync::{Arc, Mutex};

use common::{DEADLINE, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

/// The binary on a fresh data directory with `envs`; its log lines as they come.
fn start(envs: &[(&str, &str)]) -> (tokio::process::Child, Arc<Mutex<Vec<String>>>) {
    let data = std::env::temp_dir().join(format!("mallbots-test-{}", Uuid::new_v4().simple()));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"));
    command
        .args(["--listen", "127.0.0.1:0"])
        .env("DATA_DIR", &data)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start mallbots");
    let lines = Arc::new(Mutex::new(Vec::new()));
    for output in [
        Box::new(child.stdout.take().expect("stdout"))
            as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(output).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
    }
    (child, lines)
}

fn logged(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines.lock().unwrap().clone()
}

#[tokio::test]
async fn json_lines_carry_the_requests_correlation_id() {
    let (child, lines) = start(&[
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,mallbots_platform::consumer=debug"),
    ]);
    let handled = handled_lines(child, &lines).await;
    assert!(
        handled["span"].get("trace_id").is_none(),
        "untraced: {handled}"
    );
}

/// Traced (an OTLP endpoint set, here one that takes nothing: export
/// fails, tracing goes on), the lines of a request's work in every module
/// carry one trace id as well.
#[tokio::test]
async fn traced_json_lines_carry_one_trace_id_across_modules() {
    let (child, lines) = start(&[
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info,mallbots_platform::consumer=debug"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
    ]);
    let handled = handled_lines(child, &lines).await;
    let trace_id = handled["span"]["trace_id"]
        .as_str()
        .expect("a trace id")
        .to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    let correlation = handled["span"]["correlation_id"].clone();
    // The search projection's lines of the same request, in the same trace.
    let projected = wait_until("search's lines for the request", || async {
        logged(&lines).into_iter().find_map(|line| {
            let line: Value = serde_json::from_str(&line).ok()?;
            let queue = line["span"]["queue"].as_str()?;
            (queue == "search.events" && line["span"]["correlation_id"] == correlation)
                .then_some(line)
        })
    })
    .await;
    assert_eq!(
        projected["span"]["trace_id"],
        trace_id.as_str(),
        "{projected}"
    );
}

/// Runs a mutation with its own `x-request-id` against the started
/// process; the stores module's "handled" line for it (every line is
/// checked to be one JSON object). Kills the process.
async fn handled_lines(mut child: tokio::process::Child, lines: &Arc<Mutex<Vec<String>>>) -> Value {
    let base = wait_until("the gateway to say where it listens", || async {
        logged(lines).iter().find_map(|line| {
            let line: Value = serde_json::from_str(line).ok()?;
            let message = line["fields"]["message"].as_str()?;
            let (_, rest) = message.split_once("GraphQL gateway on http://")?;
            Some(format!("http://{}", rest.split('/').next()?))
        })
    })
    .await;
    // It listens from the start; it serves once ready.
    wait_until("the gateway ready", || async {
        let ready = reqwest::get(format!("{base}/readyz")).await.ok()?;
        ready.status().is_success().then_some(())
    })
    .await;
    let request_id = Uuid::now_v7().to_string();
    let response: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("x-request-id", &request_id)
        .json(&json!({ "query": "mutation { createStore(input: {name: \"Logged\", location: \"L\"}) { id } }" }))
        .send()
        .await
        .expect("the mutation is answered")
        .json()
        .await
        .expect("JSON");
    assert!(response["errors"].is_null(), "{response}");
    let handled = wait_until("the stores module's lines for the request", || async {
        logged(lines).into_iter().find(|line| {
            let line: Value = serde_json::from_str(line).unwrap_or_default();
            line["span"]["correlation_id"] == request_id.as_str()
                && line["span"]["queue"] == "stores.commands"
                && line["fields"]["message"] == "handled"
        })
    })
    .await;
    let handled: Value = serde_json::from_str(&handled).unwrap();
    assert_eq!(handled["span"]["message_type"], "stores.CreateStore");
    // The search projection has logged its lines for it too.
    wait_until("search's lines for the request", || async {
        logged(lines)
            .iter()
            .any(|line| {
                let line: Value = serde_json::from_str(line).unwrap_or_default();
                line["span"]["queue"] == "search.events"
                    && line["span"]["correlation_id"] == request_id.as_str()
            })
            .then_some(())
    })
    .await;
    for line in logged(lines) {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok(),
            "not one JSON object: {line}"
        );
    }
    child.kill().await.ok();
    handled
}

#[tokio::test]
async fn an_unknown_log_format_stops_the_start() {
    stops_the_start(("LOG_FORMAT", "yaml"), "LOG_FORMAT is \"yaml\"").await;
}

#[tokio::test]
async fn an_unreadable_rust_log_stops_the_start() {
    stops_the_start(
        ("RUST_LOG", "info,mallbots=loud"),
        "RUST_LOG is \"info,mallbots=loud\", which cannot be read",
    )
    .await;
}

/// The binary started with `setting` exits before the deadline, unsuccessful,
/// having said `why`.
async fn stops_the_start(setting: (&str, &str), why: &str) {
    let (mut child, lines) = start(&[setting]);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("it exits before the deadline")
        .expect("its status");
    assert!(!status.success());
    wait_until("the reason on its output", || async {
        logged(&lines).iter().any(|l| l.contains(why)).then_some(())
    })
    .await;
}

/// At RUST_LOG=info, a start on a migrated PostgreSQL database logs none of
/// PostgreSQL's notices ("relation ... already exists, skipping"); named
/// in RUST_LOG, they are logged.
#[tokio::test]
async fn postgresql_notices_are_left_out_unless_asked_for() {
    let url = common::fresh_database("TEST_DATABASE_URL").await;
    let migrate = |rust_log: &'static str| {
        let url = url.clone();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
                .args(["--database-url", &url, "migrate"])
                .env("RUST_LOG", rust_log)
                .env("NO_COLOR", "1")
                .output()
                .await
                .expect("run mallbots migrate");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr)
        }
    };
    migrate("info").await;
    let again = migrate("info").await;
    assert!(!again.contains("already exists, skipping"), "{again}");
    assert!(again.contains("INFO"), "it logged at INFO: {again}");
    let asked = migrate("info,sqlx::postgres::notice=info").await;
    assert!(asked.contains("already exists, skipping"), "{asked}");
}
