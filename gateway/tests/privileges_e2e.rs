//! Least privilege on PostgreSQL: once `mallbots migrate` has made the
//! schemas and tables, the system runs as a role that may create nothing.
//! Its own test binary: a whole system starting beside the scale-out tests
//! would crowd their deadlines on two cores.

mod common;

use common::split::Split;
use common::{shop, wait_until};
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

/// After `mallbots migrate`, the system runs under NO_MIGRATE as a role
/// that may read and write the tables but create nothing, neither schemas
/// nor tables: the running service holds no DDL rights.
#[tokio::test]
async fn a_migrated_database_serves_a_role_that_may_create_nothing() {
    let mut split = Split::new().await;
    let url = split.env("DATABASE_URL");
    let admin = split.admin().await;
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
    let admin = split.admin().await;
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

/// A migration that needs a table a running process holds (a long
/// transaction) waits for it a second at a time, so the table's other
/// readers are never queued behind it for long, and says whom it waits for;
/// once the holder lets go it is applied. Past `MIGRATE_LOCK_WAIT_MS` it
/// gives up naming the holder, and nothing of it is applied.
#[tokio::test]
async fn migrating_waits_for_tables_in_use_without_holding_their_readers_up() {
    let mut split = Split::new().await;
    let url = split.env("DATABASE_URL");
    let admin = split.admin().await;
    // As if payments' last migration (an indexed column on its change log)
    // had come with a newer release.
    admin
        .execute_unprepared(
            "DROP INDEX payments.changes_topic_owner; \
             ALTER TABLE payments.changes DROP COLUMN owner; \
             DELETE FROM payments.seaql_migrations WHERE version = 'change_owners'",
        )
        .await
        .expect("the migration undone");
    let applied = || async {
        let row = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT (SELECT count(*) FROM payments.seaql_migrations \
                         WHERE version = 'change_owners') AS recorded, \
                        (SELECT count(*) FROM information_schema.columns \
                         WHERE table_schema = 'payments' AND table_name = 'changes' \
                         AND column_name = 'owner') AS made",
            ))
            .await
            .expect("the migration's state")
            .expect("a row");
        let count = |name| row.try_get::<i64>("", name).expect("a count");
        (count("recorded"), count("made"))
    };
    assert_eq!(applied().await, (0, 0));
    // A running process's transaction that has read the change log.
    let holder = holding(&admin, "SELECT count(*) AS holding FROM payments.changes").await;

    let said = migrate_giving_up_after(&mut split, "2500").await;
    assert!(
        said.contains("migrating the payments tables gave up waiting")
            && said.contains("SELECT count(*) AS holding FROM payments.changes"),
        "{said}"
    );
    assert_eq!(
        applied().await,
        (0, 0),
        "a migration that gave up left some"
    );

    // Nor does it wait past that for another process that migrates.
    let migrating_elsewhere = holding(
        &admin,
        "SELECT pg_advisory_xact_lock(hashtext('mallbots.startup'))",
    )
    .await;
    let said = migrate_giving_up_after(&mut split, "1000").await;
    assert!(
        said.contains("another process has been creating tables for over 1 s"),
        "{said}"
    );
    migrating_elsewhere
        .rollback()
        .await
        .expect("the lock let go");

    split.set_env("MIGRATE_LOCK_WAIT_MS", "60000".to_owned());
    let reader = sea_orm::Database::connect(url.as_str())
        .await
        .expect("a reader");
    let migrating = split.run_to_end(&["migrate"]);
    let meanwhile = async {
        wait_until("the migration waiting for the change log", || async {
            let waiting = admin
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT count(*) AS waiting FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE \"changes\"%'",
                ))
                .await
                .expect("the sessions")
                .expect("a row")
                .try_get::<i64>("", "waiting")
                .expect("a count");
            (waiting > 0).then_some(())
        })
        .await;
        // A reader that comes now queues behind the waiting migration, for
        // a try at most (without one, until the holder let go).
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reader.execute_unprepared("SELECT count(*) FROM payments.changes"),
        )
        .await
        .expect("a reader held up behind the waiting migration")
        .expect("a read");
        holder.commit().await.expect("the holder lets go");
    };
    let (migrated, ()) = tokio::join!(migrating, meanwhile);
    let logged = String::from_utf8_lossy(&migrated.stdout).into_owned()
        + &String::from_utf8_lossy(&migrated.stderr);
    assert!(migrated.status.success(), "{logged}");
    assert!(
        logged.contains("a migration waits for running processes to let go of its tables"),
        "{logged}"
    );
    assert_eq!(applied().await, (1, 1));
}

/// A transaction that has run `sql`, holding what it locked until it ends.
async fn holding(admin: &sea_orm::DatabaseConnection, sql: &str) -> sea_orm::DatabaseTransaction {
    let txn = admin.begin().await.expect("a transaction");
    txn.execute_unprepared(sql)
        .await
        .expect("the holding statement");
    txn
}

/// `mallbots migrate` with `MIGRATE_LOCK_WAIT_MS` at `wait_ms`, which must
/// fail; what it said.
async fn migrate_giving_up_after(split: &mut Split, wait_ms: &str) -> String {
    split.set_env("MIGRATE_LOCK_WAIT_MS", wait_ms.to_owned());
    let gave_up = split.run_to_end(&["migrate"]).await;
    let said = String::from_utf8_lossy(&gave_up.stderr).into_owned();
    assert!(!gave_up.status.success(), "it migrated: {said}");
    said
}
