//! Who may do what at the gateway (README, "Identity and who may do what"):
//! roles are checked here, before a command is sent or a read model read;
//! ownership of what a command changes is decided again by the module that
//! owns the data, from the command's actor.

use async_graphql::Context;
use mallbots_contracts::{Actor, ErrorCode, Role};
use uuid::Uuid;

use super::errors::ApiError;
use crate::identity::Identity;

/// One request's context, from HTTP headers or the websocket's
/// `connection_init`: threaded into every resolver and onto every command.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub correlation_id: Uuid,
    /// Who asks: the verified token's actor (or the open mode's operator).
    pub identity: Identity,
    /// The client's `Idempotency-Key`: a retried request under it gets the
    /// first one's outcome instead of applying again.
    pub idempotency_key: Option<String>,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            correlation_id: Uuid::now_v7(),
            identity: Identity::ANONYMOUS,
            idempotency_key: None,
        }
    }
}

/// The request's actor; none (no token) is UNAUTHENTICATED.
pub fn actor(ctx: &Context<'_>) -> Result<Actor, ApiError> {
    ctx.data_opt::<RequestContext>()
        .and_then(|r| r.identity.actor)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "sign in: send a bearer token (Authorization: Bearer <token>)",
            )
        })
}

fn forbidden(actor: &Actor) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("a {} may not do this", actor.role.as_str()),
    )
}

/// The actor, when it is an operator or has one of `roles`.
pub fn require(ctx: &Context<'_>, roles: &[Role]) -> Result<Actor, ApiError> {
    let actor = actor(ctx)?;
    if actor.is_trusted() || roles.contains(&actor.role) {
        Ok(actor)
    } else {
        Err(forbidden(&actor))
    }
}

/// Operators only.
pub fn operator(ctx: &Context<'_>) -> Result<Actor, ApiError> {
    require(ctx, &[])
}

/// The actor, when it is `owner` in `role` (or an operator).
pub fn owner(ctx: &Context<'_>, role: Role, owner: Uuid) -> Result<Actor, ApiError> {
    let actor = actor(ctx)?;
    if actor.may_act_for(role, Some(owner)) {
        Ok(actor)
    } else if actor.role == role {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "this belongs to someone else",
        ))
    } else {
        Err(forbidden(&actor))
    }
}
