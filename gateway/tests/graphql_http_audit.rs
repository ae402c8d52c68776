//! GraphQL over HTTP, as the reference audit sees it: every server audit of
//! graphql-http (the spec's own test suite, pinned in tests/graphql-http),
//! run against the gateway; no MUST and no SHOULD may fail.

mod common;

use std::path::Path;

use common::{Backend, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn the_graphql_over_http_audit_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/graphql-http");
    if !dir.join("node_modules/graphql-http").is_dir() {
        common::run_tool(&dir, "npm", &["ci", "--no-audit", "--no-fund"]).await;
    }
    let mut app = spawn_app(Backend::Embedded).await;
    let url = format!("{}/graphql", app.base);
    let report = common::run_tool(&dir, "node", &["audit.mjs", &url]).await;
    let counts: Value = report
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no counts in: {report}"));
    assert_eq!(counts["error"], 0, "MUST audits failed:\n{report}");
    assert_eq!(counts["warn"], 0, "SHOULD audits failed:\n{report}");
    assert!(counts["ok"].as_u64().unwrap_or(0) > 50, "{report}");
    app.stop().await;
}
