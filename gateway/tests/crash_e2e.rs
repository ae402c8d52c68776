//! kill -9, for real, on both backends (the embedded default: SQLite files
//! and the in-process broker; and PostgreSQL + RabbitMQ): the `mallbots`
//! binary is killed with 50 create-order sagas in flight, started again on
//! the same data, and every order must finish, none twice.

mod common;

use std::path::PathBuf;

use common::Backend;
use common::shop;

const ORDERS: usize = 50;

/// The same system each time it is started: its data directory (embedded),
/// or its database and broker prefix (real).
struct Data {
    data_dir: PathBuf,
    envs: Vec<(&'static str, String)>,
}

impl Data {
    async fn new(backend: Backend) -> Data {
        let settings = common::settings(backend).await;
        let mut envs = Vec::new();
        if let (Some(db), Some(amqp)) = (&settings.database_url, &settings.amqp_url) {
            envs.push(("DATABASE_URL", db.clone()));
            envs.push(("AMQP_URL", amqp.clone()));
            envs.push(("AMQP_PREFIX", settings.amqp_prefix.clone()));
        }
        Data {
            data_dir: settings.data_dir,
            envs,
        }
    }

    async fn launch(&self) -> common::Process {
        let envs: Vec<(&str, &str)> = self.envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args = [
            "--data-dir".as_ref(),
            self.data_dir.as_os_str(),
            "run".as_ref(),
        ];
        common::launch(&args, &envs).await
    }
}

async fn kill_9_with_sagas_in_flight_loses_and_doubles_nothing(backend: Backend) {
    let data = Data::new(backend).await;
    let mut first = data.launch().await;
    let app = first.client().await;
    let in_flight = shop::checkouts_in_flight(&app, ORDERS).await;
    // The process dies the moment the last checkout is answered, with the
    // sagas they started still running.
    first.child.start_kill().expect("kill -9");
    first.child.wait().await.expect("the process is gone");

    let second = data.launch().await;
    let app = second.client().await;
    shop::every_order_finished_once(&app, &in_flight).await;
}

on_both_backends!(kill_9_with_sagas_in_flight_loses_and_doubles_nothing);
