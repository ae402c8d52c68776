//! Fetches the GraphiQL playground's browser files (pinned versions, checked
//! by SHA-256) from the npm registry into OUT_DIR, so the gateway serves them
//! itself and the playground works with no CDN. They are dependencies, fetched
//! like crates, not committed.
//!
//! Without npm (or offline) the build still succeeds: the gateway then serves
//! a page saying how to get the playground, and the warning says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (npm package, file inside its tarball, name served, sha256 of the file)
const ASSETS: &[(&str, &str, &str, &str)] = &[
    (
        "graphiql@4.1.2",
        "package/graphiql.min.js",
        "graphiql.min.js",
        "867226ba8af5ce7949903fc53932f78dac9f4bfc6cc8da0fd3869b8bc6c5256b",
    ),
    (
        "graphiql@4.1.2",
        "package/graphiql.min.css",
        "graphiql.min.css",
        "30487e07635d312a63f647b140d37740a73c53332b0975bf4b1fe985ca6ec885",
    ),
    (
        "react@18.3.1",
        "package/umd/react.production.min.js",
        "react.production.min.js",
        "d949f1c3687aedadcedac85261865f29b17cd273997e7f6b2bfc53b2f9d4c4dd",
    ),
    (
        "react-dom@18.3.1",
        "package/umd/react-dom.production.min.js",
        "react-dom.production.min.js",
        "35f4f974f4b2bcd44da73963347f8952e341f83909e4498227d4e26b98f66f0d",
    ),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MALLBOTS_GRAPHIQL_DIR");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("graphiql");
    std::fs::create_dir_all(&dir).expect("OUT_DIR is writable");
    let available = match fetch_all(&dir) {
        Ok(()) => true,
        Err(why) => {
            println!(
                "cargo:warning=GraphiQL assets not bundled ({why}); / will explain how to get them"
            );
            for (_, _, name, _) in ASSETS {
                let path = dir.join(name);
                if !path.exists() {
                    std::fs::write(&path, b"").expect("OUT_DIR is writable");
                }
            }
            false
        }
    };
    let flag = out.join("graphiql_available.rs");
    std::fs::write(flag, format!("{available}")).expect("OUT_DIR is writable");
}

fn sha256(path: &Path) -> Option<String> {
    let output = Command::new("sha256sum").arg(path).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

fn fetch_all(dir: &Path) -> Result<(), String> {
    // A directory of already-fetched files (a vendored copy, an offline build).
    let local = std::env::var("MALLBOTS_GRAPHIQL_DIR")
        .ok()
        .map(PathBuf::from);
    let tarballs = dir.join("tarballs");
    std::fs::create_dir_all(&tarballs).map_err(|e| e.to_string())?;
    for (package, inner, name, want) in ASSETS {
        let target = dir.join(name);
        if sha256(&target).as_deref() == Some(want) {
            continue;
        }
        if let Some(local) = &local {
            std::fs::copy(local.join(name), &target).map_err(|e| format!("{name}: {e}"))?;
        } else {
            let tgz = tarballs.join(format!("{}.tgz", package.replace('@', "-")));
            if !tgz.exists() {
                let status = Command::new("npm")
                    .args(["pack", package, "--silent", "--pack-destination"])
                    .arg(&tarballs)
                    .status()
                    .map_err(|e| format!("npm: {e}"))?;
                if !status.success() {
                    return Err(format!("npm pack {package} failed"));
                }
                // npm names the tarball <name>-<version>.tgz.
                if !tgz.exists() {
                    return Err(format!("npm pack {package} wrote no {}", tgz.display()));
                }
            }
            let status = Command::new("tar")
                .arg("-xzf")
                .arg(&tgz)
                .arg("-O")
                .arg(inner)
                .stdout(std::fs::File::create(&target).map_err(|e| e.to_string())?)
                .status()
                .map_err(|e| format!("tar: {e}"))?;
            if !status.success() {
                return Err(format!("cannot extract {inner} from {package}"));
            }
        }
        if sha256(&target).as_deref() != Some(want) {
            let _ = std::fs::remove_file(&target);
            return Err(format!("{name} does not match its pinned checksum"));
        }
    }
    Ok(())
}
