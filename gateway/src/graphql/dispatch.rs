//! What every resolver shares: the app state, id parsing, and sending a
//! command over the broker for its reply.

use std::sync::atomic::Ordering;

use async_graphql::{Context, ID};
use mallbots_contracts::{Message, module_of};
use mallbots_platform::commands::SendError;
use uuid::Uuid;

use super::errors::accepted;
use super::{ApiError, RequestContext, internal};
use crate::app::AppState;

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState, ApiError> {
    ctx.data::<AppState>().map_err(|e| internal(e.message))
}

pub fn parse_id(id: &ID, field: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_input(format!("{field} is not a valid id")))
}

/// An accepted command: its result and the token that reads its write.
pub struct Sent {
    pub result: serde_json::Value,
    /// `<module>:<position>`: send as header `consistency-token`.
    pub token: String,
}

impl Sent {
    /// An id the command's result names.
    pub fn id(&self, field: &str) -> Option<Uuid> {
        self.result
            .get(field)
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
    }
}

/// Sends `command` and waits for its reply: the domain's refusal, a timeout,
/// or what it did.
pub async fn send<M: Message>(ctx: &Context<'_>, command: M) -> Result<Sent, ApiError> {
    let app = state(ctx)?;
    let correlation = ctx.data_opt::<RequestContext>().map(|r| r.correlation_id);
    app.metrics.commands_sent.fetch_add(1, Ordering::Relaxed);
    let reply = app
        .bus
        .send(&command, correlation)
        .await
        .inspect_err(|err| {
            if matches!(err, SendError::Timeout(_)) {
                app.metrics
                    .commands_timed_out
                    .fetch_add(1, Ordering::Relaxed);
            }
        })?;
    let (result, position) = accepted(reply)?;
    Ok(Sent {
        result,
        token: format!("{}:{}", module_of(M::TYPE), position.unwrap_or(0)),
    })
}

/// A mutation payload: the affected id, the entity as it is now (read back
/// from its module's read model), and the consistency token.
macro_rules! payload {
    ($(#[$doc:meta])* $name:ident, $field:ident: $object:ident, |$app:ident, $id:ident| $load:expr) => {
        $(#[$doc])*
        pub struct $name {
            pub id: uuid::Uuid,
            pub token: String,
        }

        impl $name {
            /// Sends `command` about entity `id`; its payload once accepted.
            pub async fn send<M: mallbots_contracts::Message>(
                ctx: &async_graphql::Context<'_>,
                id: uuid::Uuid,
                command: M,
            ) -> async_graphql::Result<Self> {
                let sent = $crate::graphql::dispatch::send(ctx, command).await?;
                Ok($name {
                    id,
                    token: sent.token,
                })
            }
        }

        #[async_graphql::Object]
        impl $name {
            async fn id(&self) -> async_graphql::ID {
                async_graphql::ID(self.id.to_string())
            }
            /// As it is now.
            async fn $field(
                &self,
                ctx: &async_graphql::Context<'_>,
            ) -> async_graphql::Result<Option<$object>> {
                let $app = $crate::graphql::dispatch::state(ctx)?;
                let $id = self.id;
                Ok($load
                    .await
                    .map_err($crate::graphql::ApiError::from)?
                    .map($object))
            }
            /// Send as header `consistency-token` to read this write.
            async fn consistency_token(&self) -> &str {
                &self.token
            }
        }
    };
}
pub(crate) use payload;
