//! Least privilege on PostgreSQL: once `mallbots migrate` has made the
//! schemas and tables, the system runs as a role that may create nothing.
//! Its own test binary: a whole system starting beside the scale-out tests
//! would crowd their deadlines on two cores.

mod common;

use common::split::Split;
use common::{shop, wait_until};
use sea_orm::ConnectionTrait;
use serde_json::json;
use uuid::Uuid;

/// After `mallbots migrate`, the system runs under NO_MIGRATE as a role
/// that may read and write the tables but create nothing, neither schemas
/// nor tables: the running service holds no DDL rights.
#[tokio::test]
async fn a_migrated_database_serves_a_role_that_may_create_nothing() {
    let mut split = Split::new().await;
    let url = split.env("DATABASE_URL");
    let admin = sea_orm::Database::connect(url.as_str())
        .await
        .expect("the test database");
    let role = format!("mallbots_app_{}", Uuid::new_v4().simple());
    let mut url = reqwest::Url::parse(&url).expect("a URL");
    let database = url.path().trim_start_matches('/').to_owned();
    let mut grants = vec![
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
    ];
    let schemas: Vec<String> = sea_orm::ConnectionTrait::query_all_raw(
        &admin,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT nspname FROM pg_namespace \
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')",
        ),
    )
    .await
    .expect("the schemas")
    .iter()
    .map(|row| row.try_get::<String>("", "nspname").expect("a name"))
    .collect();
    assert!(schemas.len() > 5, "migrated schemas: {schemas:?}");
    for schema in &schemas {
        grants.push(format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {role}"));
        grants.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO {role}"
        ));
        grants.push(format!(
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO {role}"
        ));
    }
    for grant in &grants {
        admin
            .execute_unprepared(grant)
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e}"));
    }
    url.set_username(&role).expect("a user");
    url.set_password(None).expect("no password");
    split.set_env("DATABASE_URL", url.to_string());

    let system = split.part(&["all"]).await;
    let app = system.client().await;
    // Every module's tables, the saga's, the outboxes and inboxes.
    let in_flight = shop::checkouts_in_flight(&app, 3).await;
    shop::every_order_finished_once(&app, &in_flight).await;
    // And search's, written by its consumer from the events.
    let (customer, order) = (&in_flight.customers[0], &in_flight.orders[0]);
    wait_until("the order in search", || async {
        let found = app
            .data(
                "query($c: ID!) { searchOrders(filter: {customerId: $c}) { edges { node { id } } } }",
                json!({ "c": customer }),
            )
            .await;
        (found["searchOrders"]["edges"][0]["node"]["id"] == order.as_str()).then_some(())
    })
    .await;
    drop(system);
    for undo in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        // The process may still be closing its connections.
        wait_until("the role dropped", || async {
            admin.execute_unprepared(&undo).await.ok().map(drop)
        })
        .await;
    }
}

/// Under NO_MIGRATE a process refuses tables that lack one of its release's
/// migrations (an older release made them, `mallbots migrate` has not run
/// since), saying what to do, where its queries would otherwise fail later.
/// Once `mallbots migrate` has run, the same process starts.
#[tokio::test]
async fn no_migrate_refuses_tables_an_older_release_made() {
    let split = Split::new().await;
    let admin = sea_orm::Database::connect(split.env("DATABASE_URL").as_str())
        .await
        .expect("the test database");
    // As if the last migration had come with a newer release.
    admin
        .execute_unprepared(
            "DELETE FROM payments.seaql_migrations \
             WHERE version = (SELECT max(version) FROM payments.seaql_migrations)",
        )
        .await
        .expect("a migration forgotten");
    let refused = split.run_to_end(&["run", "stores"]).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "it ran: {said}");
    assert!(
        said.contains("the payments tables are not up to date")
            && said.contains("run `mallbots migrate` first"),
        "{said}"
    );

    let migrated = split.run_to_end(&["migrate"]).await;
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    // It runs (this waits until its log says so, or panics).
    let _stores = split.part(&["stores"]).await;
}
