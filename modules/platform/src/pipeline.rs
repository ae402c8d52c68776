//! One command on one event-sourced aggregate, in the caller's transaction:
//! load, let the domain decide, append the events, write the read side, and
//! put the integration events in the outbox. Modules supply the decision and,
//! through [`Recorded`], what each aggregate shows the world.

use chrono::{DateTime, Utc};
use mallbots_contracts::Affected;
use sea_orm::DatabaseTransaction;
use serde::Serialize;
use uuid::Uuid;

use crate::aggregate::{Aggregate, Versioned};
use crate::commands::{self, Accepted, CommandError, Owned};
use crate::envelope::{HEADER_POSITION, Outgoing};
use crate::event_store::{self, Cause};
use crate::outbox::Outbox;
use crate::views::{self, Row};
use crate::{Envelope, Exchange, PlatformError};

/// Where an aggregate's view is kept among the document views (platform
/// `views`), and what it is looked up by.
pub struct Document {
    pub kind: &'static str,
    /// Its owner (a basket's customer, an invoice's order), to list by.
    pub ref_id: Option<Uuid>,
    pub status: Option<&'static str>,
}

/// What the pipeline needs of an aggregate beyond the domain.
pub trait Recorded: Aggregate + Sync {
    /// What the aggregate shows the world: its integration events carry it,
    /// its read side keeps it.
    type View: Serialize + Send + Sync;

    /// The accepted reply's result for a command on aggregate `id`.
    fn result(id: Uuid, state: &Self) -> Affected;

    /// Aggregate `id`'s view as of `at`.
    fn view(id: Uuid, state: &Self, at: DateTime<Utc>) -> Self::View;

    /// Where [`Recorded::project`] keeps the view as a document; `None` for
    /// a module with tables of its own (it writes them in `project`).
    fn document(state: &Self, view: &Self::View) -> Option<Document>;

    /// The integration event announcing `event`, given the view after it
    /// (`None`: nothing for other modules).
    fn announce(event: &Self::Event, view: Self::View) -> Result<Option<Outgoing>, PlatformError>;

    /// Writes the aggregate's read side as of `position`: by default its
    /// view, as the document [`Recorded::document`] says.
    fn project(
        txn: &DatabaseTransaction,
        id: Uuid,
        state: &Self,
        at: DateTime<Utc>,
        position: i64,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send {
        async move {
            let view = Self::view(id, state, at);
            let Some(document) = Self::document(state, &view) else {
                return Ok(());
            };
            let row = Row {
                kind: document.kind,
                id,
                ref_id: document.ref_id,
                status: document.status,
                body: &view,
                position,
            };
            views::put(txn, row).await.map(drop)
        }
    }
}

/// An integration event caused by `cause`, stamped with its event-log position.
pub fn event_envelope(cause: &Envelope, message: Outgoing, position: i64) -> Envelope {
    let mut envelope = cause.caused_outgoing(message);
    envelope
        .headers
        .insert(HEADER_POSITION.to_owned(), position.to_string());
    envelope
}

/// [`execute`] for the aggregate's owner only: the command's actor must own
/// it (when it exists) before the domain decides.
pub async fn execute_owned<A: Recorded + Owned, E: Into<CommandError>>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    cause: &Envelope,
    id: Uuid,
    decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
) -> Result<Accepted, CommandError> {
    let current = load::<A>(txn, id).await?;
    execute_owned_on(txn, outbox, cause, (id, current), decide).await
}

/// [`execute_owned`] on aggregate `id` as [`load`]ed already (its handler
/// looked up what the domain needs by it first).
pub async fn execute_owned_on<A: Recorded + Owned, E: Into<CommandError>>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    cause: &Envelope,
    (id, current): (Uuid, Versioned<A>),
    decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
) -> Result<Accepted, CommandError> {
    let actor = commands::actor(cause)?;
    execute_on::<A, CommandError>(txn, outbox, cause, (id, current), |aggregate| {
        commands::authorize_owner(&actor, aggregate)?;
        decide(aggregate).map_err(Into::into)
    })
    .await
}

/// Aggregate `id` as of now, for [`execute_on`]: appending what is decided
/// on it fails as a conflict if it changed meanwhile.
pub async fn load<A: Aggregate>(
    txn: &DatabaseTransaction,
    id: Uuid,
) -> Result<Versioned<A>, PlatformError> {
    event_store::load::<A, _>(txn, &id.to_string()).await
}

/// Runs `decide` on aggregate `id` as of now and records what it decided.
pub async fn execute<A: Recorded, E: Into<CommandError>>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    cause: &Envelope,
    id: Uuid,
    decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
) -> Result<Accepted, CommandError> {
    let current = load::<A>(txn, id).await?;
    execute_on(txn, outbox, cause, (id, current), decide).await
}

/// [`execute`] on aggregate `id` as [`load`]ed already.
pub async fn execute_on<A: Recorded, E: Into<CommandError>>(
    txn: &DatabaseTransaction,
    outbox: &Outbox,
    cause: &Envelope,
    (id, current): (Uuid, Versioned<A>),
    decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>,
) -> Result<Accepted, CommandError> {
    let stream = id.to_string();
    let events = decide(&current.state).map_err(Into::into)?;
    let after = current.applied(&events);
    let result = A::result(id, &after);
    if events.is_empty() {
        // Nothing changes (enabling an enabled customer, ...): nothing to record.
        return Ok(Accepted {
            result,
            position: None,
        });
    }
    let by = Cause {
        correlation_id: cause.correlation_id,
        causation_id: cause.id,
        actor: cause.actor(),
    };
    let stored = event_store::append(txn, &stream, &current, &events, by).await?;
    let mut state = current.state;
    let mut last = None;
    for stored in &stored {
        state.apply(&stored.event);
        let view = A::view(id, &state, stored.recorded_at);
        if let Some(message) = A::announce(&stored.event, view)? {
            let key = message.message_type;
            let envelope = event_envelope(cause, message, stored.position);
            outbox
                .enqueue(txn, Exchange::Events, key, &envelope)
                .await?;
        }
        last = Some((stored.position, stored.recorded_at));
    }
    if let Some((position, at)) = last {
        A::project(txn, id, &state, at, position).await?;
    }
    Ok(Accepted {
        result,
        position: last.map(|(p, _)| p),
    })
}
