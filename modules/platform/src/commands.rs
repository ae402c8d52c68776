//! Commands over the broker.
//!
//! Module side, [`CommandProcessor`]: inbox check, the handler, and the reply
//! all in one transaction; the reply leaves through the outbox, so a client
//! hears "accepted" only for a change that committed.
//!
//! Client side, [`CommandBus`]: publishes a command with a `reply_to` queue of
//! its own and waits, bounded, for the reply caused by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mallbots_contracts::identity::HEADER_ACTOR;
use mallbots_contracts::{Actor, Affected, CommandReply, ErrorCode, Message, ReplyError, Role};
use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::consumer::{self, HandleError, Handler, MAX_REASON_BYTES, truncated};
use crate::envelope::HEADER_IDEMPOTENT;
use crate::lock;
use crate::outbox::{Express, Outbox};
use crate::{
    Broker, BrokerError, Envelope, Exchange, Outgoing, PlatformError, QueueSpec, Shutdown,
    WireMessage, inbox,
};

/// What a command handler produced.
#[derive(Clone, Debug, Default)]
pub struct Accepted {
    pub result: Affected,
    /// The module's event-log position of the change, when it made one.
    pub position: Option<i64>,
}

impl From<Accepted> for CommandReply {
    fn from(accepted: Accepted) -> Self {
        CommandReply::Accepted {
            result: accepted.result,
            position: accepted.position,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The domain said no: the reply carries this, nothing else is kept.
    #[error("{}", .0.message)]
    Rejected(ReplyError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

impl CommandError {
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError::Rejected(ReplyError {
            code,
            message: message.into(),
        })
    }
}

/// The actor a public command names. One without an actor (or with one
/// that cannot be read) is refused: a module never guesses who asks.
pub fn actor(command: &Envelope) -> Result<Actor, CommandError> {
    let refused = |why| CommandError::rejected(ErrorCode::Unauthenticated, why);
    match command.headers.get(HEADER_ACTOR) {
        None => Err(refused("the command names no actor")),
        Some(header) => Actor::parse(header)
            .ok_or_else(|| refused("the command's actor cannot be read (not <role>:<uuid>)")),
    }
}

/// Refuses (FORBIDDEN) unless `actor` is trusted or is `owner` in `role`:
/// ownership decided where the data lives. `what` names the thing owned.
pub fn authorize(
    actor: &Actor,
    role: Role,
    owner: Option<Uuid>,
    what: &str,
) -> Result<(), CommandError> {
    if actor.may_act_for(role, owner) {
        Ok(())
    } else {
        Err(CommandError::rejected(
            ErrorCode::Forbidden,
            format!("only {what}'s owner may do this"),
        ))
    }
}

/// An aggregate that belongs to one actor: only it (in its role) or a
/// trusted actor may change it, decided where the data lives.
pub trait Owned {
    /// The owner's role, and what a refusal calls the aggregate.
    const OWNER: (Role, &'static str);
    /// Whether it exists: one that does not has nothing to protect (the
    /// domain refuses it as not found, or creates it).
    fn exists(&self) -> bool;
    fn owner(&self) -> Option<Uuid>;
}

/// Refuses (FORBIDDEN) unless `actor` may act on `aggregate` as it is.
pub fn authorize_owner<A: Owned>(actor: &Actor, aggregate: &A) -> Result<(), CommandError> {
    if !aggregate.exists() {
        return Ok(());
    }
    let (role, what) = A::OWNER;
    authorize(actor, role, aggregate.owner(), what)
}

/// Refuses (FORBIDDEN) unless `actor` is trusted or has one of `roles`.
pub fn require_role(actor: &Actor, roles: &[Role]) -> Result<(), CommandError> {
    if actor.is_trusted() || roles.contains(&actor.role) {
        Ok(())
    } else {
        Err(CommandError::rejected(
            ErrorCode::Forbidden,
            format!("a {} may not do this", actor.role.as_str()),
        ))
    }
}

/// A domain's refusal: its message (the domain's words) and the API's error
/// class. Any such error becomes a rejected reply.
pub trait DomainError: std::fmt::Display {
    fn code(&self) -> ErrorCode;
}

impl<E: DomainError> From<E> for CommandError {
    fn from(err: E) -> Self {
        CommandError::rejected(err.code(), err.to_string())
    }
}

#[async_trait]
pub trait CommandHandler: Send + Sync + 'static {
    /// Handles one command inside `txn`: whatever it writes (events, read
    /// model, outbox) commits together with the reply, or not at all.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        command: &Envelope,
    ) -> Result<Accepted, CommandError>;

    /// Handles several messages inside one `txn` (a batched queue), one
    /// result each, in order. Any error undoes the whole batch; the consumer
    /// then hands each message to [`CommandHandler::handle`] on its own.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        outbox: &Outbox,
        commands: &[&Envelope],
    ) -> Result<Vec<Accepted>, CommandError> {
        let mut accepted = Vec::with_capacity(commands.len());
        for command in commands {
            accepted.push(self.handle(txn, outbox, command).await?);
        }
        Ok(accepted)
    }
}

/// Tries before a command that keeps losing optimistic-concurrency races fails.
const CONFLICT_RETRIES: usize = 10;

pub struct CommandProcessor {
    /// The inbox's name for this consumer.
    name: String,
    db: DatabaseConnection,
    outbox: Outbox,
    handler: Arc<dyn CommandHandler>,
    /// Where replies are published straight after their commit (express),
    /// and refusals that cannot go through the outbox (its database is
    /// down) straight away. Without it, the relay sends every reply.
    direct: Option<Arc<dyn Broker>>,
}

impl CommandProcessor {
    pub fn new(
        name: impl Into<String>,
        db: DatabaseConnection,
        outbox: Outbox,
        handler: Arc<dyn CommandHandler>,
    ) -> Self {
        CommandProcessor {
            name: name.into(),
            db,
            outbox,
            handler,
            direct: None,
        }
    }

    /// Lets the processor publish its replies over `broker` as soon as they
    /// commit, and answer UNAVAILABLE straight over it when its database is
    /// unreachable, instead of holding the command until it is back.
    pub fn refusing_when_unreachable(mut self, broker: Arc<dyn Broker>) -> Self {
        self.direct = Some(broker);
        self
    }

    /// Writes the reply to `command` (if it wants one) in `txn`, through
    /// `outbox` (with the rows it kept back, if staging); it is sent with
    /// [`CommandProcessor::send_replies`] once `txn` commits.
    async fn reply(
        &self,
        (txn, outbox): (&DatabaseTransaction, &Outbox),
        command: &Envelope,
        reply: CommandReply,
    ) -> Result<Option<Express>, PlatformError> {
        let Some(queue) = &command.reply_to else {
            return Ok(None);
        };
        let envelope = reply_envelope(command, &reply)?;
        let express = outbox.enqueue_express(txn, queue, &envelope).await?;
        if let Some(request) = command.headers.get(HEADER_IDEMPOTENT) {
            let kept = Kept::Named {
                request: request.clone(),
                reply: reply.clone(),
            };
            let kept = serde_json::to_string(&kept).map_err(|e| PlatformError::Decode {
                what: "a reply".into(),
                reason: e.to_string(),
            })?;
            inbox::keep_reply(txn, &self.name, command.id, &kept).await?;
        }
        Ok(Some(express))
    }

    /// Sends committed replies now, beside the handling of the next
    /// message: the command is acked without waiting for them (RabbitMQ
    /// confirms the command to its sender once it is acked). Without a
    /// broker of its own (or should that fail), the relay sends them.
    fn send_replies(&self, replies: impl IntoIterator<Item = Express>) {
        let Some(broker) = &self.direct else {
            return;
        };
        let replies: Vec<Express> = replies.into_iter().collect();
        if replies.is_empty() {
            return;
        }
        let (db, broker) = (self.db.clone(), broker.clone());
        tokio::spawn(async move {
            for express in replies {
                express.send(&db, broker.as_ref()).await;
            }
        });
    }

    /// A retry of a command handled before: its sender gets the reply the
    /// first one got (kept when the sender asked for idempotency).
    async fn reply_again(
        &self,
        txn: &DatabaseTransaction,
        command: &Envelope,
    ) -> Result<Option<Express>, PlatformError> {
        let Some(queue) = &command.reply_to else {
            return Ok(None);
        };
        let Some(request) = command.headers.get(HEADER_IDEMPOTENT) else {
            return Ok(None);
        };
        let Some(kept) = inbox::kept_reply(txn, &self.name, command.id).await? else {
            return Ok(None);
        };
        let kept: Kept = serde_json::from_str(&kept).map_err(|e| PlatformError::Decode {
            what: "a kept reply".into(),
            reason: e.to_string(),
        })?;
        let reply = match kept {
            Kept::Named { request: first, .. } if !same_request(&first, request) => {
                // Its key was used for another request first: that one's
                // reply would answer a question this one did not ask.
                CommandReply::Rejected(ReplyError {
                    code: ErrorCode::BadUserInput,
                    message: "this Idempotency-Key was used for a different request: \
                              send a new key with a new request"
                        .to_owned(),
                })
            }
            Kept::Named { reply, .. } | Kept::Bare(reply) => reply,
        };
        let envelope = reply_envelope(command, &reply)?;
        self.outbox
            .enqueue_express(txn, queue, &envelope)
            .await
            .map(Some)
    }

    /// Records the command as handled and replies with `error`, in a
    /// transaction of its own (the handler's was rolled back).
    async fn reject(&self, command: &Envelope, error: ReplyError) -> Result<(), PlatformError> {
        if command.reply_to.is_none() {
            // An event the module reacts to, not a command: nobody to tell.
            tracing::warn!(consumer = %self.name, message_type = %command.message_type, reason = %error.message, "reaction refused");
        }
        let txn = self.db.begin().await?;
        let mut express = None;
        if inbox::record(&txn, &self.name, command.id).await? {
            express = self
                .reply((&txn, &self.outbox), command, CommandReply::Rejected(error))
                .await?;
        }
        self.commit((txn, &self.outbox), express).await
    }

    /// Writes what `outbox` kept back and commits `txn`, then lets the relay
    /// know of its rows and sends its reply (if any) at once.
    async fn commit(
        &self,
        (txn, outbox): (DatabaseTransaction, &Outbox),
        express: impl IntoIterator<Item = Express>,
    ) -> Result<(), PlatformError> {
        outbox.write_staged(&txn).await?;
        txn.commit().await?;
        self.outbox.wake();
        self.send_replies(express);
        Ok(())
    }
}

/// `reply` to `command`, naming the request it answers when the command
/// named one (a sender matches it to the send it answers: two requests under
/// one key wait on one command id).
fn reply_envelope(command: &Envelope, reply: &CommandReply) -> Result<Envelope, PlatformError> {
    let mut envelope = command.caused(reply)?;
    if let Some(request) = command.headers.get(HEADER_IDEMPOTENT) {
        envelope
            .headers
            .insert(HEADER_IDEMPOTENT.to_owned(), request.clone());
    }
    Ok(envelope)
}

/// The reply kept for a command sent under an idempotency key, with the
/// request it answered; `Bare` as kept before requests were named.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Kept {
    Named {
        request: String,
        reply: CommandReply,
    },
    Bare(CommandReply),
}

/// Whether two [`HEADER_IDEMPOTENT`] values name the same request (`1`, from
/// a sender that names none, matches any).
fn same_request(first: &str, again: &str) -> bool {
    first == again || first == ANY_REQUEST || again == ANY_REQUEST
}

/// The [`HEADER_IDEMPOTENT`] value of a sender that names no request.
const ANY_REQUEST: &str = "1";

/// A command sent under an idempotency key: the id every send of it has,
/// and a name of the request (a digest of the command) that tells a retry
/// from another request under the same key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotent {
    pub id: Uuid,
    pub request: String,
}

/// A failure worth retrying; `Unreachable` when the error itself says the
/// database (or broker) cannot be reached.
fn retryable(err: impl Into<PlatformError>) -> HandleError {
    let err = err.into();
    if err.is_unavailable() {
        HandleError::Unreachable(err.to_string())
    } else {
        HandleError::Transient(err.to_string())
    }
}

/// How handling a command failed: before anything could have been applied,
/// or at (or after) the commit, when it may have been.
enum Failure {
    NotApplied(HandleError),
    MaybeApplied(HandleError),
}

fn not_applied(err: impl Into<PlatformError>) -> Failure {
    Failure::NotApplied(retryable(err))
}

impl CommandProcessor {
    /// One handling of `command`, with the conflict retries.
    async fn attempt(&self, command: &Envelope) -> Result<(), Failure> {
        for _ in 0..CONFLICT_RETRIES {
            let txn = self.db.begin().await.map_err(not_applied)?;
            if !inbox::record(&txn, &self.name, command.id)
                .await
                .map_err(not_applied)?
            {
                // A redelivery of a command already handled (and replied
                // to), or a retry under the same idempotency key.
                let express = self.reply_again(&txn, command).await.map_err(not_applied)?;
                return self
                    .commit((txn, &self.outbox), express)
                    .await
                    .map_err(|e| Failure::MaybeApplied(retryable(e)));
            }
            // The handler's outbox rows go out in one statement with the reply.
            let outbox = self.outbox.staging();
            match self.handler.handle(&txn, &outbox, command).await {
                Ok(accepted) => {
                    let express = self
                        .reply((&txn, &outbox), command, accepted.into())
                        .await
                        .map_err(not_applied)?;
                    return self
                        .commit((txn, &outbox), express)
                        .await
                        .map_err(|e| Failure::MaybeApplied(retryable(e)));
                }
                Err(CommandError::Rejected(error)) => {
                    txn.rollback().await.map_err(not_applied)?;
                    return self
                        .reject(command, error)
                        .await
                        .map_err(|e| Failure::MaybeApplied(retryable(e)));
                }
                Err(CommandError::Platform(PlatformError::Concurrency { .. })) => {
                    txn.rollback().await.map_err(not_applied)?;
                    continue;
                }
                Err(CommandError::Platform(PlatformError::Decode { what, reason })) => {
                    txn.rollback().await.map_err(not_applied)?;
                    let message = format!("malformed {what}: {reason}");
                    let message = truncated(&message, MAX_REASON_BYTES);
                    let error = ReplyError {
                        code: ErrorCode::BadUserInput,
                        message: message.clone(),
                    };
                    self.reject(command, error)
                        .await
                        .map_err(|e| Failure::MaybeApplied(retryable(e)))?;
                    return Err(Failure::MaybeApplied(HandleError::Permanent(message)));
                }
                Err(CommandError::Platform(err)) => {
                    txn.rollback().await.map_err(not_applied)?;
                    return Err(not_applied(err));
                }
            }
        }
        Err(Failure::NotApplied(HandleError::Transient(format!(
            "{} kept conflicting with concurrent changes",
            command.message_type
        ))))
    }

    /// Tells the sender at once that its command was not applied because
    /// this module's database is unreachable, straight over the broker (the
    /// outbox is in that database). Returns whether the sender was told.
    async fn refuse_unavailable(&self, command: &Envelope) -> bool {
        let (Some(broker), Some(queue)) = (&self.direct, &command.reply_to) else {
            return false;
        };
        let reply = CommandReply::Rejected(ReplyError {
            code: ErrorCode::Unavailable,
            message: "the module's database cannot be reached right now: nothing was applied; \
                      retry shortly"
                .to_owned(),
        });
        let told = match reply_envelope(command, &reply) {
            Ok(envelope) => broker
                .publish(Exchange::Queue, queue, envelope.to_wire())
                .await
                .map_err(PlatformError::from),
            Err(err) => Err(err),
        };
        match told {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(consumer = %self.name, error = %err, "could not refuse a command as unavailable");
                false
            }
        }
    }
}

#[async_trait]
impl Handler for CommandProcessor {
    async fn handle(&self, command: &Envelope) -> Result<(), HandleError> {
        match self.attempt(command).await {
            Ok(()) => Ok(()),
            Err(Failure::MaybeApplied(err)) => Err(err),
            Err(Failure::NotApplied(err)) => {
                // A sender waits: rather than hold its command until the
                // database is back (and answer it long after the sender
                // gave up), refuse it now and drop it. Nothing was applied.
                let unreachable = matches!(err, HandleError::Unreachable(_));
                if command.reply_to.is_some()
                    && (unreachable || !self.reachable().await)
                    && self.refuse_unavailable(command).await
                {
                    tracing::warn!(consumer = %self.name, command = %command.id, error = %err, "command refused: database unreachable");
                    return Ok(());
                }
                Err(err)
            }
        }
    }

    /// A command that could not be read at all (not an envelope: its body
    /// not JSON, a property missing): its sender, if it named itself, hears
    /// so now instead of timing out. Straight over the broker: there is no
    /// command to record a reply for.
    async fn unreadable(&self, message: &WireMessage, reason: &str) {
        let (Some(broker), Some(queue)) = (&self.direct, &message.reply_to) else {
            return;
        };
        // A sender waits on its command's id.
        let Some(command_id) = message
            .message_id
            .as_deref()
            .and_then(|id| Uuid::try_parse(id).ok())
        else {
            return;
        };
        let reply = CommandReply::Rejected(ReplyError {
            code: ErrorCode::BadUserInput,
            message: format!("the command cannot be read: {reason}"),
        });
        let told = async {
            let mut envelope = Envelope::first(Outgoing::of(&reply)?);
            envelope.causation_id = command_id;
            envelope.correlation_id = message
                .correlation_id
                .as_deref()
                .and_then(|id| Uuid::try_parse(id).ok())
                .unwrap_or(command_id);
            broker
                .publish(Exchange::Queue, queue, envelope.to_wire())
                .await?;
            Ok::<_, PlatformError>(())
        };
        if let Err(err) = told.await {
            tracing::warn!(consumer = %self.name, error = %err, "could not tell the sender of an unreadable command");
        }
    }

    /// A command set aside after failing again and again: its sender hears
    /// so now instead of timing out. Nothing is recorded in the inbox, so a
    /// replay of the dead letter (after a fix) is handled for real.
    async fn gave_up(&self, command: &Envelope, reason: &str) {
        let Some(queue) = &command.reply_to else {
            return;
        };
        tracing::error!(consumer = %self.name, command = %command.id, %reason, "command dead-lettered");
        let reply = CommandReply::Rejected(ReplyError {
            code: ErrorCode::Internal,
            message: format!(
                "the command could not be handled and was set aside for an operator (message {})",
                command.id
            ),
        });
        let told = async {
            let envelope = command.caused(&reply)?;
            let txn = self.db.begin().await?;
            self.outbox
                .enqueue(&txn, Exchange::Queue, queue, &envelope)
                .await?;
            txn.commit().await?;
            self.outbox.wake();
            Ok::<_, PlatformError>(())
        };
        if let Err(err) = told.await {
            tracing::warn!(consumer = %self.name, error = %err, "could not tell the sender of a dead-lettered command");
        }
    }

    async fn reachable(&self) -> bool {
        crate::db::ping(&self.db).await.is_ok()
    }

    async fn handle_batch(&self, commands: &[Envelope]) -> Result<(), HandleError> {
        let txn = self.db.begin().await.map_err(retryable)?;
        let ids: Vec<_> = commands.iter().map(|c| c.id).collect();
        let mut recorded = inbox::record_all(&txn, &self.name, &ids)
            .await
            .map_err(retryable)?;
        // Redeliveries (and repeats within the batch) are skipped; a retry
        // under an idempotency key gets the first reply again.
        let (fresh, seen): (Vec<&Envelope>, Vec<&Envelope>) =
            commands.iter().partition(|c| recorded.remove(&c.id));
        let mut replies = Vec::new();
        for command in seen {
            replies.extend(self.reply_again(&txn, command).await.map_err(retryable)?);
        }
        let outbox = self.outbox.staging();
        let accepted = match self.handler.handle_batch(&txn, &outbox, &fresh).await {
            Ok(accepted) if accepted.len() == fresh.len() => accepted,
            Ok(accepted) => {
                txn.rollback().await.map_err(retryable)?;
                return Err(HandleError::Transient(format!(
                    "a batch handler gave {} results for {} messages",
                    accepted.len(),
                    fresh.len()
                )));
            }
            Err(err) => {
                txn.rollback().await.map_err(retryable)?;
                return Err(HandleError::Transient(format!(
                    "a batch of {} failed: {err}",
                    commands.len()
                )));
            }
        };
        for (command, accepted) in fresh.iter().zip(accepted) {
            replies.extend(
                self.reply((&txn, &outbox), command, accepted.into())
                    .await
                    .map_err(retryable)?,
            );
        }
        self.commit((txn, &outbox), replies)
            .await
            .map_err(retryable)
    }
}

/// Why a command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

/// Who waits for the reply to each command id: several, when a client
/// retries a command under one idempotency key while the first still waits;
/// each with the request it sent (see [`HEADER_IDEMPOTENT`]), as another
/// request under the same key waits on the same id for its own answer.
type Pending = Arc<Mutex<Waiters>>;

struct Waiter {
    request: Option<String>,
    tx: oneshot::Sender<CommandReply>,
}

/// Sends commands and waits for their replies.
#[derive(Clone)]
pub struct CommandBus {
    broker: Arc<dyn Broker>,
    reply_queue: String,
    pending: Pending,
    timeout: Duration,
}

type Waiters = HashMap<Uuid, Vec<Waiter>>;

/// Hands `reply` to those waiting on `id` whose request it answers (all of
/// them when either side names none); the others wait on.
fn answer(waiters: &mut Waiters, id: Uuid, request: Option<&str>, reply: &CommandReply) {
    let Some(waiting) = waiters.remove(&id) else {
        return; // nobody waits any more (timed out)
    };
    let (answered, still): (Vec<Waiter>, Vec<Waiter>) =
        waiting
            .into_iter()
            .partition(|w| match (request, &w.request) {
                (Some(replied), Some(sent)) => same_request(replied, sent),
                _ => true,
            });
    for waiter in answered {
        let _ = waiter.tx.send(reply.clone());
    }
    if !still.is_empty() {
        waiters.insert(id, still);
    }
}

impl CommandBus {
    /// Opens this process's reply queue and starts listening on it.
    pub async fn start(
        broker: Arc<dyn Broker>,
        timeout: Duration,
        shutdown: Shutdown,
    ) -> Result<Self, BrokerError> {
        let reply_queue = format!("replies.{}", Uuid::new_v4().simple());
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        consumer::listen(
            broker.as_ref(),
            QueueSpec::transient(&reply_queue),
            shutdown,
            move |envelope| match envelope.decode::<CommandReply>() {
                Ok(reply) => {
                    let request = envelope.headers.get(HEADER_IDEMPOTENT).map(String::as_str);
                    answer(&mut lock(&waiting), envelope.causation_id, request, &reply);
                }
                Err(err) => tracing::warn!(error = %err, "undecodable reply dropped"),
            },
            // Replies lost with the old queue leave their waiters to time out.
            || {},
        )
        .await?;
        Ok(CommandBus {
            broker,
            reply_queue,
            pending,
            timeout,
        })
    }

    /// Sends `command` for `actor` (as part of `correlation_id`'s request)
    /// and waits for its reply.
    pub async fn send<M: Message>(
        &self,
        command: &M,
        correlation_id: Option<Uuid>,
        actor: &Actor,
    ) -> Result<CommandReply, SendError> {
        self.send_as(command, correlation_id, None, actor).await
    }

    /// Like [`CommandBus::send`]; with `idempotent`, the command always has
    /// its id (derived from a client's idempotency key): however often it is
    /// sent, its module applies it once and answers every send of the same
    /// request with the same reply, and another request under that id with
    /// BAD_USER_INPUT.
    pub async fn send_as<M: Message>(
        &self,
        command: &M,
        correlation_id: Option<Uuid>,
        idempotent: Option<Idempotent>,
        actor: &Actor,
    ) -> Result<CommandReply, SendError> {
        let mut envelope = Envelope::new(command)?;
        envelope.set_actor(actor);
        let request = idempotent.map(|Idempotent { id, request }| {
            envelope.id = id;
            envelope.causation_id = id;
            envelope
                .headers
                .insert(HEADER_IDEMPOTENT.to_owned(), request.clone());
            request
        });
        envelope.correlation_id = correlation_id.unwrap_or(envelope.id);
        envelope.reply_to = Some(self.reply_queue.clone());
        let (tx, rx) = oneshot::channel();
        // One deadline for the publish and the reply together.
        let deadline = tokio::time::Instant::now() + self.timeout;
        lock(&self.pending)
            .entry(envelope.id)
            .or_default()
            .push(Waiter { request, tx });
        let mut wire = envelope.to_wire();
        wire.ttl_ms = u64::try_from(self.timeout.as_millis()).ok();
        let timeout = SendError::Timeout(self.timeout);
        let exchanged = tokio::time::timeout_at(deadline, async move {
            let publish = self.broker.publish(Exchange::Commands, M::TYPE, wire);
            tokio::pin!(publish);
            let mut rx = rx;
            tokio::select! {
                // The reply may come before the publisher confirm: RabbitMQ
                // confirms a persistent message once its consumer has acked
                // it (or it is on disk), and the reply proves it arrived.
                reply = &mut rx => reply.ok(),
                published = &mut publish => match published {
                    Ok(()) => rx.await.ok(),
                    Err(err) => return Err(SendError::from(err)),
                },
            }
            .ok_or(SendError::Timeout(self.timeout))
        })
        .await;
        let outcome = match exchanged {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(timeout),
        };
        // This send's waiter is gone (its receiver dropped): forget it.
        let mut pending = lock(&self.pending);
        if let Some(waiters) = pending.get_mut(&envelope.id) {
            waiters.retain(|w| !w.tx.is_closed());
            if waiters.is_empty() {
                pending.remove(&envelope.id);
            }
        }
        outcome
    }
}

impl From<sea_orm::DbErr> for CommandError {
    fn from(err: sea_orm::DbErr) -> Self {
        CommandError::Platform(PlatformError::Database(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two requests under one key wait on one command id: each gets the
    /// reply that names its own request; a reply naming none answers all.
    #[test]
    fn a_reply_goes_to_the_sends_of_the_request_it_answers() {
        let id = Uuid::now_v7();
        let mut waiters = Waiters::new();
        let mut wait = |request: Option<&str>| {
            let (tx, rx) = oneshot::channel();
            waiters.entry(id).or_default().push(Waiter {
                request: request.map(str::to_owned),
                tx,
            });
            rx
        };
        let (mut a, mut b, mut any) = (wait(Some("a")), wait(Some("b")), wait(None));
        let applied = CommandReply::Accepted {
            result: Affected::Nothing,
            position: Some(1),
        };
        answer(&mut waiters, id, Some("a"), &applied);
        assert_eq!(a.try_recv().ok(), Some(applied.clone()));
        assert_eq!(any.try_recv().ok(), Some(applied));
        assert!(b.try_recv().is_err(), "b waits for its own answer");
        let refused = CommandReply::Rejected(ReplyError {
            code: ErrorCode::BadUserInput,
            message: "another request".into(),
        });
        answer(&mut waiters, id, Some("b"), &refused);
        assert_eq!(b.try_recv().ok(), Some(refused));
        assert!(waiters.is_empty());
    }

    #[test]
    fn a_lost_database_is_unreachable_a_failed_statement_is_not() {
        let lost = sea_orm::DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout);
        assert!(matches!(retryable(lost), HandleError::Unreachable(_)));
        let failed = sea_orm::DbErr::Custom("no such column".into());
        assert!(matches!(retryable(failed), HandleError::Transient(_)));
    }
}
