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
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl PlatformError {
    /// A message of a type the consumer does not handle.
    pub fn unknown_message(message_type: &str) -> Self {
        PlatformError::Decode {
            what: "message".into(),
            reason: format!("unknown message type {message_type}"),
        }
    }
}
