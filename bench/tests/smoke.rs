//! CI's check of the benchmark driver: it builds, and a tiny run against the
//! real services completes with every push delivered. It measures nothing.

#[test]
fn a_tiny_bench_run_completes() {
    let required = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
    };
    // The bench starts the `mallbots` binary next to its own: the
    // workspace's test run (scripts/test) builds both.
    let system = std::path::Path::new(env!("CARGO_BIN_EXE_bench")).with_file_name("mallbots");
    assert!(
        system.exists(),
        "{} is not built: run the workspace's tests (scripts/test)",
        system.display()
    );
    let json = std::env::temp_dir().join(format!("bench-{}.json", std::process::id()));
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--tiny")
        .arg("--json")
        .arg(&json)
        .env("DATABASE_URL", required("TEST_DATABASE_URL"))
        .env("AMQP_URL", required("TEST_AMQP_URL"))
        .spawn()
        .expect("the bench binary runs");
    // Bounded: a bench that hangs fails the test instead of the whole run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = bench.try_wait().expect("the bench's status") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = bench.kill();
            panic!("bench --tiny did not finish within 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success(), "bench --tiny failed: {status}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results written")).unwrap();
    assert_eq!(
        results["command"]["delivered"],
        results["command"]["expected"]
    );
    assert!(
        results["query"]["store"]["requests_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The server's CPU per read, beside its database floor's.
    for read in ["store", "store_db_floor", "catalog", "catalog_db_floor"] {
        let cpu = &results["query"][read]["server_cpu_us_per_request"];
        assert!(cpu.as_f64().is_some_and(|us| us > 0.0), "{read}: {cpu}");
    }
    // Resuming subscriptions end up in one execution per store (2), before
    // any change is sent.
    let resumed = &results["fan_out_resumed"];
    assert_eq!(resumed["delivered"], resumed["expected"], "{resumed}");
    assert_eq!(resumed["executions_shared"], 2, "{resumed}");
    // The cost curves: every point measured, and drawn.
    let fan = results["fan_out_curve"]
        .as_array()
        .expect("a fan-out curve");
    assert_eq!(fan.len(), 2);
    for point in fan {
        for side in ["system", "floor"] {
            assert_eq!(point[side]["delivered"], point[side]["expected"], "{point}");
            assert!(point[side]["cpu_us_per_delivery"].as_f64().unwrap() >= 0.0);
        }
    }
    let batches = results["projection_curve"]["points"]
        .as_array()
        .expect("a projection curve");
    assert_eq!(batches.len(), 2);
    assert!(
        batches
            .iter()
            .all(|p| p["events_per_s"].as_f64().unwrap() > 0.0)
    );
    let plot = json.with_extension("svg");
    let svg = std::fs::read_to_string(&plot).expect("the curves drawn beside the results");
    assert!(svg.starts_with("<svg") && svg.contains("fan-out latency"));
    let _ = std::fs::remove_file(plot);
    let _ = std::fs::remove_file(json);
}
