//! docker-compose.yml is valid for both its profiles, and the split one has
//! a service for every part a process can run. (Validated, not run: the
//! test machines have no Docker engine. scripts/test installs the checker.)

use std::path::Path;
use std::process::Command;

use clap::ValueEnum;
use mallbots_gateway::Part;

fn compose(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let output = Command::new("docker-compose")
        .args(args)
        .current_dir(root)
        .output()
        .expect("docker-compose runs (scripts/test installs it)");
    assert!(
        output.status.success(),
        "docker-compose {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn both_profiles_validate_and_split_runs_every_part() {
    for profile in ["all", "split"] {
        compose(&["--profile", profile, "config", "-q"]);
    }
    let services = compose(&["--profile", "split", "config", "--services"]);
    let services: Vec<&str> = services.lines().collect();
    // Every part a process can run, from the binary's own list.
    let parts = Part::value_variants()
        .iter()
        .filter(|p| **p != Part::All)
        .filter_map(|p| p.to_possible_value())
        .map(|v| v.get_name().to_owned());
    for part in parts.chain(["migrate".to_owned()]) {
        assert!(
            services.contains(&part.as_str()),
            "no {part} service: {services:?}"
        );
    }
}
