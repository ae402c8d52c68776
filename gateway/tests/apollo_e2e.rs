//! Automatic persisted queries as Apollo Client does them: its
//! persisted-queries link (pinned in tests/apollo) sends a query's hash
//! alone, is told PERSISTED_QUERY_NOT_FOUND, sends hash and query, and the
//! next time the hash alone is enough.

mod common;

use std::path::Path;

use common::{Backend, shop, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn apollo_clients_persisted_query_link_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apollo");
    if !dir.join("node_modules/@apollo/client").is_dir() {
        common::run_tool(&dir, "npm", &["ci", "--no-audit", "--no-fund"]).await;
    }
    let mut app = spawn_app(Backend::Embedded).await;
    let store = shop::store(&app, "Persisted Goods", "Hall").await;
    let url = format!("{}/graphql", app.base);
    let report = common::run_tool(&dir, "node", &["apq.mjs", &url]).await;
    let report: Value = serde_json::from_str(report.trim())
        .unwrap_or_else(|e| panic!("not the script's JSON ({e}): {report}"));
    let requests = report["requests"].as_array().expect("the requests");
    let shape: Vec<(bool, bool)> = requests
        .iter()
        .map(|r| (r["query"].as_bool().unwrap(), r["hash"].is_string()))
        .collect();
    // (query sent, hash sent): hash alone, then both, then hash alone.
    assert_eq!(
        shape,
        [(false, true), (true, true), (false, true)],
        "{report}"
    );
    let hashes: Vec<_> = requests.iter().map(|r| &r["hash"]).collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "one query, one hash"
    );
    for result in report["results"].as_array().unwrap() {
        let names: Vec<_> = result["stores"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(names, [store.as_str()], "{report}");
    }
    app.stop().await;
}
