//! Errors as clients see them: the domain's words and an `extensions.code`;
//! internal details are logged, never sent.

use async_graphql::ErrorExtensions;
use mallbots_contracts::{Affected, CommandReply, ErrorCode, ReplyError};
use mallbots_platform::commands::SendError;
use mallbots_platform::{BrokerError, PlatformError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadUserInput, message)
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        async_graphql::Error::new(err.message).extend_with(|_, e| e.set("code", err.code.as_str()))
    }
}

impl From<ReplyError> for ApiError {
    fn from(err: ReplyError) -> Self {
        ApiError::new(err.code, err.message)
    }
}

/// A mutation's payload could not read back what the mutation changed.
/// The mutation itself was applied (its id and consistency token are in
/// the answer): the client must not send it again, only read again.
pub fn read_back(err: impl Into<ApiError>) -> ApiError {
    let err = err.into();
    ApiError::new(
        err.code,
        format!(
            "the mutation was applied, but reading its result back failed: {}. \
             Do not send the mutation again: read the entity later (with the consistency token)",
            err.message
        ),
    )
}

/// Logs what went wrong under a new error id, and gives the client only
/// "internal error" and that id (to quote to an operator, who finds the
/// details in the log): never SQL, paths or type names.
pub fn internal(err: impl std::fmt::Display) -> ApiError {
    let id = uuid::Uuid::now_v7();
    tracing::error!(error_id = %id, error = %err, "internal error");
    ApiError::new(
        ErrorCode::Internal,
        format!("internal error (error id {id})"),
    )
}

/// A dependency that is down (the broker, a database) is UNAVAILABLE: the
/// client may retry. Anything else is internal.
impl From<PlatformError> for ApiError {
    fn from(err: PlatformError) -> Self {
        if err.is_unavailable() {
            tracing::debug!(error = %err, "request refused: a dependency is unavailable");
            ApiError::new(
                ErrorCode::Unavailable,
                "a database or the broker cannot be reached right now; retry shortly",
            )
        } else {
            internal(err)
        }
    }
}

impl From<SendError> for ApiError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Timeout(after) => ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the command was not answered within {} ms: it may still be applied; \
                     send it again with the same Idempotency-Key header to get its outcome \
                     (or read the entity back)",
                    after.as_millis()
                ),
            ),
            SendError::Broker(BrokerError::Unavailable(why)) => {
                // Per request: the outage itself is logged once, by the broker.
                tracing::debug!(reason = %why, "command refused: broker unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the message broker cannot be reached right now: nothing was sent; retry shortly",
                )
            }
            SendError::Broker(BrokerError::Unconfirmed(why)) => {
                tracing::warn!(reason = %why, "command sent but not confirmed");
                ApiError::new(
                    ErrorCode::Timeout,
                    "the broker did not confirm the command: it may still be applied; \
                     send it again with the same Idempotency-Key header to get its outcome \
                     (or read the entity back)",
                )
            }
            other => internal(other),
        }
    }
}

/// The accepted reply's result, or the rejection as an API error.
pub fn accepted(reply: CommandReply) -> Result<(Affected, Option<i64>), ApiError> {
    match reply {
        CommandReply::Accepted { result, position } => Ok((result, position)),
        CommandReply::Rejected(err) => Err(err.into()),
    }
}
