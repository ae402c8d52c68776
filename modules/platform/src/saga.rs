//! Orchestrated sagas: a definition is a list of steps, each an optional
//! command to send (and what to keep from its reply) and an optional
//! compensation. The engine runs the steps forward one reply at a time; on a
//! rejected reply it runs the compensations of the steps before, backwards.
//!
//! State is saved in the `sagas` table in the same transaction as the command
//! the step sends (through the outbox), so a process stopped at any point
//! resumes where it was: the pending command's reply arrives on a durable
//! queue and finds its saga by the command's id.

use chrono::Utc;
use mallbots_contracts::{Affected, CommandReply, ErrorCode};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseTransaction};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::envelope::Outgoing;
use crate::outbox::Outbox;
use crate::{Envelope, Exchange, PlatformError};

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "sagas")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub step: i32,
        pub compensating: bool,
        pub status: String,
        #[sea_orm(column_type = "Text")]
        pub data: String,
        pub pending_command: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Builds a step's command from the saga's data.
pub type MakeCommand<D> = fn(&D) -> Result<Outgoing, PlatformError>;
/// Builds a compensation's command from the saga's data and why it failed.
pub type MakeCompensation<D> = fn(&D, &str) -> Result<Outgoing, PlatformError>;
/// Keeps what a step's accepted reply returned; an `Err` fails the step.
pub type OnSuccess<D> = fn(&mut D, &Affected) -> Result<(), String>;

pub struct Step<D> {
    pub name: &'static str,
    pub action: Option<MakeCommand<D>>,
    pub on_success: Option<OnSuccess<D>>,
    pub compensation: Option<MakeCompensation<D>>,
}

impl<D> Step<D> {
    pub fn new(name: &'static str) -> Self {
        Step {
            name,
            action: None,
            on_success: None,
            compensation: None,
        }
    }
    pub fn action(mut self, make: MakeCommand<D>) -> Self {
        self.action = Some(make);
        self
    }
    pub fn on_success(mut self, keep: OnSuccess<D>) -> Self {
        self.on_success = Some(keep);
        self
    }
    pub fn compensation(mut self, make: MakeCompensation<D>) -> Self {
        self.compensation = Some(make);
        self
    }
}

/// A saga definition.
pub trait Saga: Send + Sync + 'static {
    /// Names the saga's rows.
    const NAME: &'static str;
    type Data: Serialize + DeserializeOwned + Send + Sync;
    fn steps() -> Vec<Step<Self::Data>>;
}

/// Where a saga is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SagaStatus {
    /// Going forward, waiting for a step's reply.
    Running,
    /// A step failed; undoing the steps before it.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every compensation ran.
    Compensated,
}

impl SagaStatus {
    fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [
            SagaStatus::Running,
            SagaStatus::Compensating,
            SagaStatus::Completed,
            SagaStatus::Compensated,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// A saga as stored, for tooling and queries.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaRecord<D> {
    pub id: Uuid,
    /// The step being run (or compensated) or last run.
    pub step: usize,
    pub step_name: &'static str,
    pub status: SagaStatus,
    pub data: D,
    /// Why the saga is compensating, when it is.
    pub last_error: Option<String>,
}

struct State<D> {
    id: Uuid,
    step: usize,
    status: SagaStatus,
    data: D,
    pending: Option<Uuid>,
    last_error: Option<String>,
}

impl<D> State<D> {
    /// Why the saga compensates, for its compensations' commands.
    fn why(&self) -> &str {
        self.last_error.as_deref().unwrap_or_default()
    }
}

pub struct SagaEngine<S: Saga> {
    reply_queue: String,
    steps: Vec<Step<S::Data>>,
}

fn corrupt(what: &str, reason: impl std::fmt::Display) -> PlatformError {
    PlatformError::Decode {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

impl<S: Saga> SagaEngine<S> {
    /// An engine whose commands ask for replies on `reply_queue` (durable,
    /// consumed by whoever calls [`SagaEngine::on_reply`]).
    pub fn new(reply_queue: impl Into<String>) -> Self {
        SagaEngine {
            reply_queue: reply_queue.into(),
            steps: S::steps(),
        }
    }

    /// Starts saga `id` (once: a second start of the same id does nothing).
    pub async fn start(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        id: Uuid,
        data: S::Data,
    ) -> Result<(), PlatformError> {
        if load_row(txn, S::NAME, id).await?.is_some() {
            return Ok(());
        }
        let mut state = State {
            id,
            step: 0,
            status: SagaStatus::Running,
            data,
            pending: None,
            last_error: None,
        };
        self.forward(txn, outbox, cause, &mut state, 0).await?;
        self.save(txn, &state, true).await
    }

    /// Moves the saga the reply `reply` answers on; false when it answers no
    /// pending step (a late duplicate, or not one of this saga's).
    pub async fn on_reply(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        reply: &Envelope,
    ) -> Result<bool, PlatformError> {
        let Some(row) = entity::Entity::find()
            .filter(entity::Column::Name.eq(S::NAME))
            .filter(entity::Column::PendingCommand.eq(reply.causation_id.to_string()))
            .one(txn)
            .await?
        else {
            return Ok(false);
        };
        let mut state = self.state(row)?;
        let answer: CommandReply = reply.decode()?;
        let step = &self.steps[state.step];
        match (state.status, answer) {
            // Refused because the module's database could not be reached
            // (nothing was applied): not an answer to the step, so the same
            // command goes again. The refusal itself took the module its
            // pool's acquire timeout, which paces these.
            (_, CommandReply::Rejected(error)) if error.code == ErrorCode::Unavailable => {
                tracing::info!(saga = S::NAME, id = %state.id, step = step.name, error = %error.message, "step refused for now; sending it again");
                self.resend(txn, outbox, reply, &state).await?
            }
            (SagaStatus::Running, CommandReply::Accepted { result, .. }) => {
                let kept = match step.on_success {
                    Some(keep) => keep(&mut state.data, &result),
                    None => Ok(()),
                };
                match kept {
                    Ok(()) => {
                        let next = state.step + 1;
                        self.forward(txn, outbox, reply, &mut state, next).await?
                    }
                    Err(reason) => self.fail(txn, outbox, reply, &mut state, reason).await?,
                }
            }
            (SagaStatus::Running, CommandReply::Rejected(error)) => {
                let reason = format!("{}: {}", step.name, error.message);
                self.fail(txn, outbox, reply, &mut state, reason).await?
            }
            (_, answer) => {
                // A compensation's reply: go on undoing whatever it said. A
                // refused compensation (already undone, ...) is logged.
                if let CommandReply::Rejected(error) = answer {
                    tracing::warn!(saga = S::NAME, id = %state.id, step = step.name, error = %error.message, "compensation refused");
                }
                let before = state.step.checked_sub(1);
                self.backward(txn, outbox, reply, &mut state, before)
                    .await?
            }
        }
        self.save(txn, &state, false).await?;
        Ok(true)
    }

    async fn fail(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        state: &mut State<S::Data>,
        reason: String,
    ) -> Result<(), PlatformError> {
        tracing::info!(saga = S::NAME, id = %state.id, %reason, "saga step failed; compensating");
        state.last_error = Some(reason);
        state.status = SagaStatus::Compensating;
        // The failed step did nothing to undo; the steps before it did.
        let before = state.step.checked_sub(1);
        self.backward(txn, outbox, cause, state, before).await
    }

    /// Sends the first action at or after `from`, or completes the saga.
    async fn forward(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        state: &mut State<S::Data>,
        from: usize,
    ) -> Result<(), PlatformError> {
        for (i, step) in self.steps.iter().enumerate().skip(from) {
            if let Some(make) = step.action {
                state.step = i;
                state.pending = Some(
                    self.send(txn, outbox, cause, make(&state.data)?, None)
                        .await?,
                );
                return Ok(());
            }
        }
        state.status = SagaStatus::Completed;
        state.pending = None;
        Ok(())
    }

    /// Sends the first compensation at or before `from`, or ends the saga.
    async fn backward(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        state: &mut State<S::Data>,
        from: Option<usize>,
    ) -> Result<(), PlatformError> {
        if let Some(from) = from {
            for i in (0..=from).rev() {
                if let Some(make) = self.steps[i].compensation {
                    state.step = i;
                    let command = make(&state.data, state.why())?;
                    state.pending = Some(self.send(txn, outbox, cause, command, None).await?);
                    return Ok(());
                }
            }
        }
        state.status = SagaStatus::Compensated;
        state.pending = None;
        Ok(())
    }

    /// Sends the pending command again under its own id. Another copy of it
    /// may still arrive (an outbox row published but not yet marked sent
    /// when the database went away goes out again): the module's inbox
    /// applies whichever comes first and knows the rest as duplicates.
    async fn resend(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        state: &State<S::Data>,
    ) -> Result<(), PlatformError> {
        let step = &self.steps[state.step];
        let command = match state.status {
            SagaStatus::Running => step.action.map(|make| make(&state.data)),
            _ => step.compensation.map(|make| make(&state.data, state.why())),
        };
        let (Some(command), Some(id)) = (command, state.pending) else {
            return Err(PlatformError::Unexpected(format!(
                "saga {} {} waits on step {:?}, which has no command",
                S::NAME,
                state.id,
                step.name
            )));
        };
        self.send(txn, outbox, cause, command?, Some(id)).await?;
        Ok(())
    }

    /// Enqueues `command` under `id` (a new one when `None`); returns its id.
    async fn send(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        cause: &Envelope,
        command: Outgoing,
        id: Option<Uuid>,
    ) -> Result<Uuid, PlatformError> {
        let key = command.message_type;
        let mut envelope = cause.caused_outgoing(command);
        if let Some(id) = id {
            envelope.id = id;
        }
        // The saga acts on its own account, whoever's request started it.
        envelope.set_actor(&mallbots_contracts::Actor::SYSTEM);
        envelope.reply_to = Some(self.reply_queue.clone());
        outbox
            .enqueue(txn, Exchange::Commands, key, &envelope)
            .await?;
        Ok(envelope.id)
    }

    fn state(&self, row: entity::Model) -> Result<State<S::Data>, PlatformError> {
        state::<S>(row, self.steps.len())
    }

    async fn save(
        &self,
        txn: &DatabaseTransaction,
        state: &State<S::Data>,
        insert: bool,
    ) -> Result<(), PlatformError> {
        let data = serde_json::to_string(&state.data).map_err(|e| corrupt(S::NAME, e))?;
        let row = entity::ActiveModel {
            name: Set(S::NAME.to_owned()),
            id: Set(state.id.to_string()),
            step: Set(state.step as i32),
            compensating: Set(matches!(
                state.status,
                SagaStatus::Compensating | SagaStatus::Compensated
            )),
            status: Set(state.status.as_str().to_owned()),
            data: Set(data),
            pending_command: Set(state.pending.map(|p| p.to_string())),
            last_error: Set(state.last_error.clone()),
            updated_at: Set(Utc::now()),
        };
        if insert {
            row.insert(txn).await?;
        } else {
            row.update(txn).await?;
        }
        Ok(())
    }
}

/// A stored saga row, read: `steps` is how many steps the saga has.
fn state<S: Saga>(row: entity::Model, steps: usize) -> Result<State<S::Data>, PlatformError> {
    let step = usize::try_from(row.step)
        .ok()
        .filter(|s| *s < steps)
        .ok_or_else(|| corrupt("saga step", row.step))?;
    Ok(State {
        id: Uuid::parse_str(&row.id).map_err(|e| corrupt("saga id", e))?,
        step,
        status: SagaStatus::parse(&row.status)
            .ok_or_else(|| corrupt("saga status", &row.status))?,
        data: serde_json::from_str(&row.data).map_err(|e| corrupt(S::NAME, e))?,
        pending: row
            .pending_command
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|e| corrupt("saga pending command", e))?,
        last_error: row.last_error,
    })
}

/// Saga `id` of kind `S` as stored (a read: no engine, nothing sent).
pub async fn find<S: Saga, C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
) -> Result<Option<SagaRecord<S::Data>>, PlatformError> {
    let Some(row) = load_row(conn, S::NAME, id).await? else {
        return Ok(None);
    };
    let steps = S::steps();
    let state = state::<S>(row, steps.len())?;
    Ok(Some(SagaRecord {
        id: state.id,
        step: state.step,
        step_name: steps[state.step].name,
        status: state.status,
        data: state.data,
        last_error: state.last_error,
    }))
}

async fn load_row<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    id: Uuid,
) -> Result<Option<entity::Model>, PlatformError> {
    Ok(
        entity::Entity::find_by_id((name.to_owned(), id.to_string()))
            .one(conn)
            .await?,
    )
}
