//! What the platform's test suites share: a counter aggregate, and a fresh
//! database of its own on SQLite or on the real PostgreSQL
//! (TEST_DATABASE_URL), with the platform's tables.
#![allow(dead_code)]

use mallbots_contracts::Message;
use mallbots_migrations::PlatformMigrator;
use mallbots_migrations::sea_orm_migration::MigratorTrait;
use mallbots_platform::aggregate::{Aggregate, DomainEvent};
use mallbots_platform::db::DatabaseConfig;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub total: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Added(pub i64);

impl DomainEvent for Added {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl Aggregate for Counter {
    const STREAM_TYPE: &'static str = "Counter";
    type Event = Added;
    fn apply(&mut self, event: &Added) {
        self.total += event.0;
    }
}

/// A message numbered `n` (a message's body is a JSON object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub n: u32,
}
impl Message for Note {
    const TYPE: &'static str = "test.Note.Noted";
}

pub fn note(n: u32) -> Note {
    Note { n }
}

#[derive(Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub async fn database(db: Db) -> DatabaseConnection {
    let id = Uuid::new_v4().simple().to_string();
    let config = match db {
        Db::Sqlite => DatabaseConfig::Sqlite {
            dir: std::env::temp_dir().join(format!("mallbots-platform-{id}")),
        },
        Db::Postgres => {
            let admin_url = std::env::var("TEST_DATABASE_URL")
                .expect("TEST_DATABASE_URL is not set: run the tests with scripts/test");
            let admin = Database::connect(admin_url.as_str()).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE platform_{id}"))
                .await
                .unwrap();
            let base = admin_url.rsplit_once('/').unwrap().0;
            DatabaseConfig::Postgres {
                url: format!("{base}/platform_{id}"),
            }
        }
    };
    let conn = config.connect("platform").await.unwrap();
    PlatformMigrator::up(&conn, None).await.unwrap();
    conn
}
