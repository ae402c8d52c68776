//! Dead letters an operator can see and send back. A keeper takes every
//! message off the dead-letter queue into a table (why it failed, where it
//! came from, the message whole); `mallbots dead-letters` lists, shows,
//! replays and purges them there. A replay is a request in the table: the
//! running system's keeper publishes the message back to its queue, with its
//! own id, so a consumer that did handle it after all (its inbox) ignores it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, Condition, QueryOrder, QuerySelect};
use tokio::task::JoinHandle;

use crate::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON, REASON_EXPIRED};
use crate::streak::FailureStreak;
use crate::{Broker, BrokerError, Exchange, PlatformError, QueueSpec, Shutdown, WireMessage};

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "dead_letters")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub message_id: Option<String>,
        pub message_type: Option<String>,
        pub queue: String,
        pub routing_key: String,
        #[sea_orm(column_type = "Text")]
        pub reason: String,
        #[sea_orm(column_type = "Text")]
        pub properties: String,
        pub body: Vec<u8>,
        pub dead_at: DateTimeUtc,
        pub state: String,
        pub replayed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Where a dead letter is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Failed; waiting for an operator.
    Dead,
    /// Expired before anyone handled it: a command whose sender had stopped
    /// waiting (and answered its client `TIMEOUT`), so it was never applied.
    /// Kept for the record, not as a failure (a broker or database outage
    /// leaves a few); replayed only when asked for by id.
    Expired,
    /// An operator asked to send it back; a keeper will (one keeper: it
    /// claims the letter first, stamping the claim in `replayed_at`).
    Replay,
    /// Sent back to its queue.
    Replayed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Dead => "dead",
            State::Expired => "expired",
            State::Replay => "replay",
            State::Replayed => "replayed",
        }
    }
}

/// A dead letter as an operator sees it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub id: i64,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    /// The queue it failed on (where a replay sends it).
    pub queue: String,
    pub reason: String,
    pub dead_at: DateTime<Utc>,
    pub state: String,
    pub replayed_at: Option<DateTime<Utc>>,
    pub message: WireMessage,
}

impl DeadLetter {
    fn from_row(row: entity::Model) -> Result<Self, PlatformError> {
        let message = WireMessage::from_stored(&row.properties, row.body).map_err(|reason| {
            PlatformError::Decode {
                what: format!("dead letter {}", row.id),
                reason,
            }
        })?;
        Ok(DeadLetter {
            id: row.id,
            message_id: row.message_id,
            message_type: row.message_type,
            queue: row.queue,
            reason: row.reason,
            dead_at: row.dead_at,
            state: row.state,
            replayed_at: row.replayed_at,
            message,
        })
    }
}

/// Which dead letters an operation is about.
#[derive(Clone, Debug)]
pub enum Selection {
    One(i64),
    /// Every one still dead, of one queue or of all.
    All {
        queue: Option<String>,
    },
}

/// A dead letter as a listing shows it: everything but the message, which
/// a listing of many letters does not load.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub id: i64,
    pub state: String,
    pub queue: String,
    pub message_type: Option<String>,
    pub dead_at: DateTime<Utc>,
    pub reason: String,
}

/// Which dead letters a listing shows: oldest first, of `queue` or of all,
/// from the one after `after`, at most `limit`.
#[derive(Clone, Debug, Default)]
pub struct Listing<'a> {
    pub queue: Option<&'a str>,
    pub after: Option<i64>,
    pub limit: u64,
}

/// The dead letters `listing` selects, without their messages.
pub async fn list(
    db: &DatabaseConnection,
    listing: &Listing<'_>,
) -> Result<Vec<Listed>, PlatformError> {
    use entity::Column as C;
    let mut find = entity::Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::State,
            C::Queue,
            C::MessageType,
            C::DeadAt,
            C::Reason,
        ])
        .order_by_asc(C::Id)
        .limit(listing.limit);
    if let Some(queue) = listing.queue {
        find = find.filter(C::Queue.eq(queue));
    }
    if let Some(after) = listing.after {
        find = find.filter(C::Id.gt(after));
    }
    let rows = find
        .into_tuple::<(i64, String, String, Option<String>, DateTimeUtc, String)>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, state, queue, message_type, dead_at, reason)| Listed {
            id,
            state,
            queue,
            message_type,
            dead_at,
            reason,
        })
        .collect())
}

pub async fn show(db: &DatabaseConnection, id: i64) -> Result<Option<DeadLetter>, PlatformError> {
    entity::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(DeadLetter::from_row)
        .transpose()
}

/// Asks the running system to send `which` back to their queues; how many.
pub async fn request_replay(
    db: &DatabaseConnection,
    which: Selection,
) -> Result<u64, PlatformError> {
    let update = entity::Entity::update_many()
        .col_expr(entity::Column::State, Expr::value(State::Replay.as_str()))
        // Unclaimed: a keeper stamps its claim here (see `replay_requested`).
        .col_expr(entity::Column::ReplayedAt, Expr::value(None::<DateTimeUtc>));
    let (dead, expired) = (State::Dead.as_str(), State::Expired.as_str());
    let update = match which {
        Selection::One(id) => update
            .filter(entity::Column::Id.eq(id))
            .filter(entity::Column::State.is_in([dead, expired])),
        Selection::All { queue } => {
            let update = update.filter(entity::Column::State.eq(dead));
            match queue {
                Some(queue) => update.filter(entity::Column::Queue.eq(queue)),
                None => update,
            }
        }
    };
    Ok(update.exec(db).await?.rows_affected)
}

/// Deletes dead letters that are not waiting for a replay; how many.
pub async fn purge(db: &DatabaseConnection, queue: Option<&str>) -> Result<u64, PlatformError> {
    let mut delete =
        entity::Entity::delete_many().filter(entity::Column::State.ne(State::Replay.as_str()));
    if let Some(queue) = queue {
        delete = delete.filter(entity::Column::Queue.eq(queue));
    }
    Ok(delete.exec(db).await?.rows_affected)
}

/// (queue, state, how many), for metrics.
pub async fn counts(db: &DatabaseConnection) -> Result<Vec<(String, String, i64)>, PlatformError> {
    Ok(entity::Entity::find()
        .select_only()
        .column(entity::Column::Queue)
        .column(entity::Column::State)
        .column_as(entity::Column::Id.count(), "n")
        .group_by(entity::Column::Queue)
        .group_by(entity::Column::State)
        .into_tuple::<(String, String, i64)>()
        .all(db)
        .await?)
}

/// How often the keeper looks for replay requests.
const REPLAY_EVERY: Duration = Duration::from_millis(500);
/// The pause before taking a dead letter again when the table cannot be written.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Starts the keeper: records every dead letter, and sends back those an
/// operator asked to replay, until `shutdown`.
pub async fn keep(
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    shutdown: Shutdown,
) -> Result<Vec<JoinHandle<()>>, BrokerError> {
    let mut dead = broker.consume(&QueueSpec::dead_letters()).await?;
    let recorder = {
        let (db, mut shutdown) = (db.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut streak = FailureStreak::default();
            loop {
                let delivery = tokio::select! {
                    d = dead.next() => d,
                    _ = shutdown.wait() => return,
                };
                let Some(delivery) = delivery else { return };
                match record(&db, &delivery.message, &delivery.routing_key).await {
                    Ok(()) => {
                        if let Some((lasted, failures)) = streak.ended() {
                            tracing::info!(?lasted, failures, "recording dead letters again");
                        }
                        if let Err(err) = delivery.ack().await {
                            tracing::warn!(error = %err, "could not settle a dead letter");
                        }
                    }
                    Err(err) => {
                        if streak.failed() {
                            tracing::warn!(error = %err, failures = streak.failures(), "cannot record a dead letter yet (said again every 30 s while it fails)");
                        } else {
                            tracing::debug!(error = %err, failures = streak.failures(), "cannot record a dead letter yet");
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                        let _ = delivery.requeue().await;
                    }
                }
            }
        })
    };
    let replayer = tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut streak = FailureStreak::default();
        loop {
            match replay_requested(&db, broker.as_ref()).await {
                Ok(()) => {
                    if let Some((lasted, failures)) = streak.ended() {
                        tracing::info!(?lasted, failures, "dead-letter replays working again");
                    }
                }
                Err(err) => {
                    if streak.failed() {
                        tracing::warn!(error = %err, failures = streak.failures(), "dead-letter replay failed; retrying (said again every 30 s while it fails)");
                    } else {
                        tracing::debug!(error = %err, failures = streak.failures(), "dead-letter replay failed again");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REPLAY_EVERY) => {}
                _ = shutdown.wait() => return,
            }
        }
    });
    Ok(vec![recorder, replayer])
}

async fn record(
    db: &DatabaseConnection,
    message: &WireMessage,
    routing_key: &str,
) -> Result<(), PlatformError> {
    let header = |name: &str| message.headers.get(name).cloned();
    let queue = header(HEADER_DEAD_LETTER_QUEUE).unwrap_or_else(|| "unknown".to_owned());
    let reason = header(HEADER_DEAD_LETTER_REASON).unwrap_or_else(|| "not given".to_owned());
    let state = if reason == REASON_EXPIRED {
        tracing::info!(%queue, message_type = ?message.message_type, "expired message recorded");
        State::Expired
    } else {
        tracing::warn!(%queue, %reason, message_type = ?message.message_type, "dead letter recorded");
        State::Dead
    };
    entity::ActiveModel {
        message_id: Set(message.message_id.clone()),
        message_type: Set(message.message_type.clone()),
        queue: Set(queue),
        routing_key: Set(routing_key.to_owned()),
        reason: Set(reason),
        properties: Set(message.properties_json()),
        body: Set(message.body.clone()),
        dead_at: Set(Utc::now()),
        state: Set(state.as_str().to_owned()),
        replayed_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Whether a header is about an earlier death (ours, or RabbitMQ's own).
fn about_death(name: &str) -> bool {
    name == HEADER_DEAD_LETTER_REASON
        || name == HEADER_DEAD_LETTER_QUEUE
        || name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
}

/// How long a keeper's claim on a replay holds: a keeper that stopped
/// between claiming a letter and marking it sent leaves it to another (or to
/// itself, started again) after this. A publish gives up well within it.
const CLAIM_HOLDS: Duration = Duration::from_secs(60);
/// The most letters one pass sends back before it lets the others have a go.
const REPLAY_PER_PASS: usize = 100;

/// Sends back what operators asked to replay. Every gateway runs a keeper,
/// so each letter is first claimed (the claim stamped in `replayed_at`, its
/// state still `replay`), by one keeper only; and read whole one at a time,
/// so a pass holds one message in memory, however many wait.
async fn replay_requested(
    db: &DatabaseConnection,
    broker: &dyn Broker,
) -> Result<(), PlatformError> {
    for _ in 0..REPLAY_PER_PASS {
        let Some(id) = claim_next(db).await? else {
            return Ok(());
        };
        let Some(row) = entity::Entity::find_by_id(id).one(db).await? else {
            continue; // purged meanwhile
        };
        let queue = row.queue.clone();
        let message = match DeadLetter::from_row(row) {
            Ok(letter) => letter.message,
            Err(err) => {
                // It cannot be sent back as it is stored: it stays dead, and
                // the others go on.
                tracing::error!(id, error = %err, "a dead letter cannot be replayed");
                set_state(db, id, State::Dead, None).await?;
                continue;
            }
        };
        if let Err(err) = send_back(broker, &queue, message).await {
            // Another pass may take it at once, not after the claim lapses.
            let released = entity::Entity::update_many()
                .col_expr(entity::Column::ReplayedAt, Expr::value(None::<DateTimeUtc>))
                .filter(entity::Column::Id.eq(id))
                .filter(entity::Column::State.eq(State::Replay.as_str()))
                .exec(db)
                .await;
            if let Err(release) = released {
                tracing::warn!(id, error = %release, "a failed replay stays claimed until its claim lapses");
            }
            return Err(err);
        }
        set_state(db, id, State::Replayed, Some(Utc::now())).await?;
        tracing::info!(id, %queue, "dead letter replayed");
    }
    Ok(())
}

/// The id of the next letter waiting for a replay that no keeper holds, now
/// claimed by this one; `None` when there is none.
async fn claim_next(db: &DatabaseConnection) -> Result<Option<i64>, PlatformError> {
    loop {
        let now = Utc::now();
        let lapsed = now - CLAIM_HOLDS;
        let unclaimed = || {
            Condition::all()
                .add(entity::Column::State.eq(State::Replay.as_str()))
                .add(
                    Condition::any()
                        .add(entity::Column::ReplayedAt.is_null())
                        .add(entity::Column::ReplayedAt.lt(lapsed)),
                )
        };
        let Some(id) = entity::Entity::find()
            .select_only()
            .column(entity::Column::Id)
            .filter(unclaimed())
            .order_by_asc(entity::Column::Id)
            .into_tuple::<i64>()
            .one(db)
            .await?
        else {
            return Ok(None);
        };
        // Only if no other keeper claimed it since it was read.
        let claimed = entity::Entity::update_many()
            .col_expr(entity::Column::ReplayedAt, Expr::value(now))
            .filter(entity::Column::Id.eq(id))
            .filter(unclaimed())
            .exec(db)
            .await?;
        if claimed.rows_affected == 1 {
            return Ok(Some(id));
        }
    }
}

/// Publishes a letter back to the queue it failed on.
async fn send_back(
    broker: &dyn Broker,
    queue: &str,
    mut message: WireMessage,
) -> Result<(), PlatformError> {
    message.headers.retain(|name, _| !about_death(name));
    // Its sender gave up long ago: no expiry on the way back.
    message.ttl_ms = None;
    broker.publish(Exchange::Queue, queue, message).await?;
    Ok(())
}

async fn set_state(
    db: &DatabaseConnection,
    id: i64,
    state: State,
    replayed_at: Option<DateTime<Utc>>,
) -> Result<(), PlatformError> {
    entity::Entity::update_many()
        .col_expr(entity::Column::State, Expr::value(state.as_str()))
        .col_expr(entity::Column::ReplayedAt, Expr::value(replayed_at))
        .filter(entity::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}
