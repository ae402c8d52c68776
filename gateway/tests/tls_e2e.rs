//! TLS to the services: the system runs with RabbitMQ over amqps:// and
//! PostgreSQL with `sslmode=verify-full`, trusting the test CA, and a TLS
//! failure (a certificate it cannot trust, a port that does not speak TLS, a
//! CA file with no certificate) ends start-up at once, naming TLS, instead
//! of being retried as an outage.

mod common;

use common::shop::{add_item, authorize_payment, basket, checkout, customer, mall};
use common::shop::{order_with_status, saga_with_status};
use common::{fresh_database, required_env};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use uuid::Uuid;

/// The URL of a new database of its own, over TLS checked against the test
/// CA; and the database's name.
async fn tls_database() -> (String, String) {
    let plain = fresh_database("TEST_DATABASE_URL").await;
    let name = plain
        .rsplit_once('/')
        .expect("a database name")
        .1
        .to_owned();
    let ca = required_env("TEST_TLS_CA_FILE");
    (
        format!("{plain}?sslmode=verify-full&sslrootcert={ca}"),
        name,
    )
}

/// An order goes through the saga, every module on RabbitMQ over TLS and on
/// PostgreSQL over TLS; every connection the system holds to its database
/// is encrypted.
#[tokio::test]
async fn the_system_runs_over_tls_to_rabbitmq_and_postgresql() {
    let (database_url, name) = tls_database().await;
    let amqps = required_env("TEST_AMQPS_URL");
    let ca = required_env("TEST_TLS_CA_FILE");
    let prefix = format!("tls-{}.", Uuid::new_v4().simple());
    let process = common::launch(
        &["run".as_ref()],
        &[
            ("DATABASE_URL", &database_url),
            ("AMQP_URL", &amqps),
            ("AMQP_CA_FILE", &ca),
            ("AMQP_PREFIX", &prefix),
        ],
    )
    .await;
    let app = process.client().await;
    let mall = mall(&app).await;
    let ada = customer(&app, "Ada").await;
    let basket = basket(&app, &ada).await;
    add_item(&app, &basket, &mall.pen, 1).await;
    let payment = authorize_payment(&app, &ada, "12.50").await;
    let order = checkout(&app, &basket, &payment).await;
    order_with_status(&app, &order, "APPROVED").await;
    saga_with_status(&app, &order, "COMPLETED").await;

    let admin = Database::connect(required_env("TEST_DATABASE_URL").as_str())
        .await
        .expect("PostgreSQL");
    let row = admin
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = '{name}'"
            ),
        ))
        .await
        .expect("read pg_stat_ssl")
        .expect("a row");
    let total: i64 = row.try_get("", "total").unwrap();
    let encrypted: i64 = row.try_get("", "encrypted").unwrap();
    assert!(total > 0, "no connection of the system to {name}");
    assert_eq!(encrypted, total, "connections to {name} without TLS");
    admin.close().await.ok();
}

/// `--help` shows each setting's value from the environment, but never the
/// URLs' passwords.
#[tokio::test]
async fn help_shows_no_password() {
    let shown = tokio::process::Command::new(env!("CARGO_BIN_EXE_mallbots"))
        .arg("--help")
        .env("DATABASE_URL", "postgres://u:db-secret@127.0.0.1:1/x")
        .env("AMQP_URL", "amqps://u:amqp-secret@127.0.0.1:1/%2f")
        .env(
            "NOTIFICATIONS_WEBHOOK_URL",
            "https://hooks.example/hook-secret",
        )
        .output()
        .await
        .expect("mallbots runs");
    let help = String::from_utf8_lossy(&shown.stdout);
    assert!(help.contains("DATABASE_URL"), "{help}");
    for secret in ["db-secret", "amqp-secret", "hook-secret"] {
        assert!(!help.contains(secret), "{secret} shown: {help}");
    }
}

#[tokio::test]
async fn a_tls_failure_ends_start_up_at_once_naming_it() {
    let amqps = required_env("TEST_AMQPS_URL");
    let ca = required_env("TEST_TLS_CA_FILE");
    // RabbitMQ's certificate, without the CA that signed it.
    common::refused_at_start(
        &[("AMQP_URL", &amqps)],
        "TLS to RabbitMQ failed: invalid peer certificate: UnknownIssuer",
        "guest:guest",
    )
    .await;
    // amqps:// to the port that speaks plain AMQP.
    let plain = required_env("TEST_AMQP_URL");
    let host = plain.split_once('@').expect("a login").1;
    common::refused_at_start(
        &[
            ("AMQP_URL", &format!("amqps://guest:guest@{host}")),
            ("AMQP_CA_FILE", &ca),
        ],
        "TLS to RabbitMQ failed",
        "guest:guest",
    )
    .await;
    // amqp:// to the TLS port.
    let tls_host = amqps.split_once('@').expect("a login").1;
    common::refused_at_start(
        &[("AMQP_URL", &format!("amqp://guest:guest@{tls_host}"))],
        "what answers at the broker URL does not speak AMQP (a TLS port needs amqps://)",
        "guest:guest",
    )
    .await;
    // A CA file with no certificate in it.
    let not_a_certificate = std::path::Path::new(&ca).with_file_name("server.ext");
    common::refused_at_start(
        &[
            ("AMQP_URL", &amqps),
            ("AMQP_CA_FILE", not_a_certificate.to_str().unwrap()),
        ],
        "holds no PEM certificate",
        "guest:guest",
    )
    .await;
    // PostgreSQL's certificate, checked without the test CA, or against a
    // file that is missing or holds none.
    let (database_url, _) = tls_database().await;
    let unchecked = database_url.split_once("&sslrootcert").unwrap().0;
    for (root, said) in [
        (
            "/nonexistent/ca.pem",
            "sslrootcert /nonexistent/ca.pem cannot be read",
        ),
        (
            not_a_certificate.to_str().unwrap(),
            "holds no PEM certificate",
        ),
    ] {
        common::refused_at_start(
            &[("DATABASE_URL", &format!("{unchecked}&sslrootcert={root}"))],
            said,
            "guest:guest",
        )
        .await;
    }
    common::refused_at_start(
        &[("DATABASE_URL", unchecked)],
        "TLS to PostgreSQL at 127.0.0.1",
        "guest:guest",
    )
    .await;
}
