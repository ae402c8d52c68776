use thiserror::Error;

/// Errors of the broker implementations.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("the broker refused the message: {0}")]
    Nacked(String),
    /// Sent, but the broker's confirm never came (the connection dropped, or
    /// the deadline passed): the message may or may not have been taken.
    #[error("the broker did not confirm the message: {0}")]
    Unconfirmed(String),
    /// The broker answered and refused (a login, a vhost), or its URL cannot
    /// be read: waiting changes nothing; a person must fix a setting.
    #[error("{0}")]
    Refused(String),
    #[error("unexpected broker error: {0}")]
    Unexpected(String),
}

impl From<lapin::Error> for BrokerError {
    fn from(err: lapin::Error) -> Self {
        BrokerError::Unavailable(err.to_string())
    }
}

#[derive(Debug, Error)]
pub enum PlatformError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// Someone else appended to the stream first; reload and retry.
    #[error("concurrent change to {stream_id}: expected version {expected}")]
    Concurrency { stream_id: String, expected: i64 },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
    /// What keeps a process from starting, for a person to fix: a setting,
    /// a login the database refuses, a schema not migrated yet.
    #[error("{0}")]
    Setup(String),
    /// A module's schema (or file) is missing where the process may not
    /// make it: it waits for a migration.
    #[error("the {0} tables are not in the database yet, and this process may not create them")]
    NotMigrated(String),
    #[error("unexpected: {0}")]
    Unexpected(String),
}

/// Whether a database error says the database cannot be reached (down,
/// restarting, the pool out of connections), rather than that a statement
/// was wrong.
pub fn database_unreachable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let lost = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.as_ref(),
            sea_orm::SqlxError::Io(_)
                | sea_orm::SqlxError::PoolTimedOut
                | sea_orm::SqlxError::PoolClosed
                | sea_orm::SqlxError::WorkerCrashed
        ),
        _ => false,
    };
    // Or PostgreSQL ending the connection itself: a connection exception
    // (class 08), or the server shutting down or restarting (57P01-57P03,
    // "terminating connection due to administrator command"). Or SQLite
    // busy past its timeout, or locked (result codes 5 and 6 with their
    // extended forms): another process (a rebuild, a second module process)
    // holds the file, which says nothing against the message.
    lost || sqlstate(err).is_some_and(|code| {
        code.starts_with("08")
            || code.starts_with("57P")
            || code
                .parse::<i32>()
                .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
    })
}

/// The SQLSTATE of a database's refusal of a statement.
pub(crate) fn sqlstate(err: &sea_orm::DbErr) -> Option<String> {
    use sea_orm::{DbErr, RuntimeErr};
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sea_orm::SqlxError::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            }
        }
        _ => None,
    }
}

impl PlatformError {
    /// A dependency (the broker, the database) cannot be reached right now.
    pub fn is_unavailable(&self) -> bool {
        match self {
            PlatformError::Broker(BrokerError::Unavailable(_)) => true,
            PlatformError::Database(err) => database_unreachable(err),
            _ => false,
        }
    }

    /// A message of a type the consumer does not handle.
    pub fn unknown_message(message_type: &str) -> Self {
        PlatformError::Decode {
            what: "message".into(),
            reason: format!("unknown message type {message_type}"),
        }
    }
}
