//! The system as separate `mallbots` processes on the real services.

use super::{Backend, Process};

/// A system as separate processes on the real services: its own database
/// (migrated once) and broker prefix.
pub struct Split {
    envs: Vec<(&'static str, String)>,
}

impl Split {
    pub async fn new() -> Split {
        let settings = super::settings(Backend::Real).await;
        let envs = vec![
            ("DATABASE_URL", settings.database_url.expect("a database")),
            ("AMQP_URL", settings.amqp_url.expect("a broker")),
            ("AMQP_PREFIX", settings.amqp_prefix),
            ("COMMAND_TIMEOUT_MS", "3000".to_owned()),
            // Any yes/no word reads: 1, true, yes, on.
            ("NO_MIGRATE", "1".to_owned()),
        ];
        let split = Split { envs };
        let migrated = split.run_to_end(&["migrate"]).await;
        assert!(
            migrated.status.success(),
            "{}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        split
    }

    /// `mallbots <args>`, a command that ends by itself (within a minute).
    pub async fn run_to_end(&self, args: &[&str]) -> std::process::Output {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(std::time::Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("mallbots {args:?} did not end within a minute"))
            .unwrap_or_else(|e| panic!("run mallbots {args:?}: {e}"))
    }

    /// The value of the variable `name` its processes get.
    pub fn env(&self, name: &str) -> String {
        self.envs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    /// A connection to its database, as the role that made it.
    pub async fn admin(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(self.env("DATABASE_URL").as_str())
            .await
            .expect("the test database")
    }

    pub fn set_env(&mut self, name: &'static str, value: String) {
        self.envs.retain(|(k, _)| *k != name);
        self.envs.push((name, value));
    }

    /// `mallbots run <parts>` as a process of its own.
    pub async fn part(&self, parts: &[&str]) -> Process {
        let args: Vec<&std::ffi::OsStr> = std::iter::once("run")
            .chain(parts.iter().copied())
            .map(std::ffi::OsStr::new)
            .collect();
        let envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::launch(&args, &envs).await
    }
}
