//! What every resolver shares: the app state, id parsing, and sending a
//! command over the broker for its reply.

use std::time::Instant;

use async_graphql::{Context, ID};
use mallbots_contracts::{Affected, Message, module_of};
use mallbots_platform::commands::{Idempotent, SendError};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::authz::RequestContext;
use super::errors::accepted;
use super::errors::{ApiError, internal};
use crate::state::AppState;

pub fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState, ApiError> {
    ctx.data::<AppState>().map_err(|e| internal(e.message))
}

/// An id as the API hands them out: a UUID in its canonical form (lower
/// case, hyphenated; no braces, no `urn:uuid:`), so one entity has one id.
pub fn parse_id(id: &ID, field: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id)
        .ok()
        .filter(|uuid| uuid.hyphenated().to_string() == id.as_str())
        .ok_or_else(|| ApiError::bad_input(format!("{field} is not a valid id")))
}

/// An accepted command: its result and the token that reads its write.
pub struct Sent {
    pub result: Affected,
    /// `<module>:<position>`: send as header `consistency-token`.
    pub token: String,
}

/// Where ids derived from idempotency keys live (UUID v5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6d61_6c6c_626f_7473_8069_6465_6d70_6f74);

/// The id `what` gets in this mutation: derived from the request's
/// idempotency key when it has one, so a retry names the same entity;
/// otherwise new. The key is the caller's own: the name also holds who asks
/// (another caller's same key names other ids) and the field it is for (one
/// request's several mutations differ).
pub fn id_for(ctx: &Context<'_>, what: &str) -> Uuid {
    derived(ctx, || what.as_bytes().to_vec()).unwrap_or_else(Uuid::now_v7)
}

/// The id named by the request's idempotency key, its caller, the field,
/// and `what` (made only when there is a key); `None` without a key.
fn derived(ctx: &Context<'_>, what: impl FnOnce() -> Vec<u8>) -> Option<Uuid> {
    let request = ctx.data_opt::<RequestContext>()?;
    let key = request.idempotency_key.as_deref()?;
    let caller = request
        .identity
        .actor
        .map(|a| a.header())
        .unwrap_or_default();
    let field = ctx.path_node.map(|p| p.to_string()).unwrap_or_default();
    let mut name = format!("{caller}\n{key}\n{field}\n").into_bytes();
    name.extend_from_slice(&what());
    Some(Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, &name))
}

/// Sends `command` and waits for its reply: the domain's refusal, a timeout,
/// or what it did. Under an idempotency key the command's id is derived from
/// it: a retry is applied once and answered with the first reply.
pub async fn send<M: Message>(ctx: &Context<'_>, command: M) -> Result<Sent, ApiError> {
    let app = state(ctx)?;
    let actor = super::authz::actor(ctx)?;
    let request = ctx.data_opt::<RequestContext>();
    let correlation = request.map(|r| r.correlation_id);
    // The command's id is the key's (for this caller and field); the
    // request is named by a digest of the command, so the module tells a
    // retry (the first reply again) from another request under the same
    // key (refused, never answered with the first one's reply).
    let idempotent = derived(ctx, || format!("command\n{}", M::TYPE).into_bytes()).map(|id| {
        let body = serde_json::to_vec(&command).unwrap_or_default();
        let digest = Sha256::new()
            .chain_update(M::TYPE)
            .chain_update(b"\n")
            .chain_update(&body)
            .finalize();
        Idempotent {
            id,
            request: hex(&digest),
        }
    });
    app.metrics.command_sent(M::TYPE);
    let sent_at = Instant::now();
    let reply = app
        .bus
        .send_as(&command, correlation, idempotent, &actor)
        .await;
    let timed_out = matches!(reply, Err(SendError::Timeout(_)));
    app.metrics
        .command_done(M::TYPE, sent_at.elapsed(), timed_out);
    let reply = reply?;
    let (result, position) = accepted(reply)?;
    Ok(Sent {
        result,
        token: format!("{}:{}", module_of(M::TYPE), position.unwrap_or(0)),
    })
}

/// `bytes` in lower-case hexadecimal.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
                    .map_err($crate::graphql::errors::read_back)?
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
