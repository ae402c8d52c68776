//! The event store: each aggregate is a stream of events with consecutive
//! versions. Appending names the version it expects; a unique index on
//! (stream, version) turns a concurrent append into
//! [`PlatformError::Concurrency`] instead of a lost or overwritten event.
//! Every `SNAPSHOT_EVERY` events the state is snapshotted, so loading reads
//! the snapshot and the events after it.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait, QueryOrder, TryInsertResult};
use uuid::Uuid;

use crate::PlatformError;
use crate::aggregate::{Aggregate, DomainEvent, Versioned};
use mallbots_contracts::Actor;

pub const SNAPSHOT_EVERY: i64 = 50;

mod events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub position: i64,
        pub stream_id: String,
        pub stream_type: String,
        pub version: i64,
        pub event_type: String,
        pub schema_version: i32,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub correlation_id: String,
        pub causation_id: String,
        /// Who caused it (`<role>:<uuid>`), when its command said.
        pub actor: Option<String>,
        pub recorded_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod snapshots {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "snapshots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub stream_id: String,
        pub stream_type: String,
        pub version: i64,
        #[sea_orm(column_type = "Text")]
        pub state: String,
        pub taken_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Who caused the events being appended (from the command's envelope).
#[derive(Clone, Copy, Debug)]
pub struct Cause {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Option<Actor>,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent<E> {
    /// Global order across every stream of the module.
    pub position: i64,
    pub stream_id: String,
    pub version: i64,
    pub event: E,
    pub recorded_at: DateTime<Utc>,
}

fn decode_error(what: &str, err: serde_json::Error) -> PlatformError {
    PlatformError::Decode {
        what: what.to_owned(),
        reason: err.to_string(),
    }
}

/// Loads an aggregate: its latest snapshot plus the events after it, read
/// in one statement (one round trip, one consistent view of both tables).
pub async fn load<A: Aggregate, C: ConnectionTrait>(
    conn: &C,
    stream_id: &str,
) -> Result<Versioned<A>, PlatformError> {
    let statement = conn.get_database_backend().build(&stream_query(stream_id));
    let mut parts = conn
        .query_all_raw(statement)
        .await?
        .iter()
        .map(|row| {
            Ok(StreamPart {
                is_event: row.try_get::<i32>("", "is_event")? == 1,
                version: row.try_get("", "version")?,
                body: row.try_get("", "body")?,
                event_type: row.try_get("", "event_type")?,
            })
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    // The snapshot (if any) first, then the events in order.
    parts.sort_by_key(|part| (part.is_event, part.version));
    let mut current = Versioned::<A>::default();
    for part in parts {
        if part.is_event {
            let event: A::Event =
                serde_json::from_str(&part.body).map_err(|e| decode_error(&part.event_type, e))?;
            current.state.apply(&event);
        } else {
            current.state =
                serde_json::from_str(&part.body).map_err(|e| decode_error(A::STREAM_TYPE, e))?;
        }
        current.version = part.version;
    }
    Ok(current)
}

/// A row of [`stream_query`]: the snapshot's state, or an event's payload.
struct StreamPart {
    is_event: bool,
    version: i64,
    body: String,
    event_type: String,
}

/// A stream's snapshot and the events after it: `is_event` 0 for the
/// snapshot's row (its state in `body`), 1 for each event (its payload).
fn stream_query(stream_id: &str) -> sea_orm::sea_query::SelectStatement {
    use events::Column as E;
    use sea_orm::sea_query::{Expr, ExprTrait, Func, Query, UnionType};
    use snapshots::Column as S;
    let snapshot = || {
        Query::select()
            .from(snapshots::Entity)
            .and_where(S::StreamId.eq(stream_id))
            .to_owned()
    };
    let snapshot_version = snapshot().column(S::Version).to_owned();
    let after = Func::coalesce([
        Expr::SubQuery(None, Box::new(snapshot_version.into())),
        0.into(),
    ]);
    let mut events = Query::select()
        .from(events::Entity)
        .and_where(E::StreamId.eq(stream_id))
        .and_where(Expr::col(E::Version).gt(after))
        .to_owned();
    part(&mut events, 1, [E::Version, E::Payload, E::EventType]);
    let mut parts = snapshot();
    part(&mut parts, 0, [S::Version, S::State, S::StreamType]);
    parts.union(UnionType::All, events).to_owned()
}

/// Selects a [`StreamPart`]'s columns: `is_event`, and the version, body
/// and event type from `columns`.
fn part<C: sea_orm::sea_query::IntoColumnRef + Copy>(
    select: &mut sea_orm::sea_query::SelectStatement,
    is_event: i32,
    columns: [C; 3],
) {
    use sea_orm::sea_query::{Alias, Expr};
    let [version, body, event_type] = columns;
    select
        .expr_as(Expr::val(is_event), Alias::new("is_event"))
        .expr_as(Expr::col(version), Alias::new("version"))
        .expr_as(Expr::col(body), Alias::new("body"))
        .expr_as(Expr::col(event_type), Alias::new("event_type"));
}

/// Appends `events` to a stream that must be at `current.version`.
///
/// One statement, `ON CONFLICT DO NOTHING` on (stream, version): a stream that
/// moved on since `current` was loaded inserts fewer rows than asked, which is
/// [`PlatformError::Concurrency`]. The transaction stays usable (no aborted
/// PostgreSQL transaction), and the caller rolls it back.
pub async fn append<A: Aggregate, C: ConnectionTrait>(
    conn: &C,
    stream_id: &str,
    current: &Versioned<A>,
    events: &[A::Event],
    cause: Cause,
) -> Result<Vec<StoredEvent<A::Event>>, PlatformError> {
    let conflict = || PlatformError::Concurrency {
        stream_id: stream_id.to_owned(),
        expected: current.version,
    };
    let now = Utc::now();
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let payload =
            serde_json::to_string(event).map_err(|e| decode_error(event.event_type(), e))?;
        rows.push(events::ActiveModel {
            stream_id: Set(stream_id.to_owned()),
            stream_type: Set(A::STREAM_TYPE.to_owned()),
            version: Set(current.version + 1 + i as i64),
            event_type: Set(event.event_type().to_owned()),
            schema_version: Set(1),
            payload: Set(payload),
            correlation_id: Set(cause.correlation_id.to_string()),
            causation_id: Set(cause.causation_id.to_string()),
            actor: Set(cause.actor.map(|a| a.header())),
            recorded_at: Set(now),
            ..Default::default()
        });
    }
    let inserted = events::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([events::Column::StreamId, events::Column::Version])
        .exec_with_returning_many(conn)
        .await?;
    let mut inserted = match inserted {
        TryInsertResult::Inserted(rows) if rows.len() == events.len() => rows,
        TryInsertResult::Empty => Vec::new(),
        _ => return Err(conflict()),
    };
    inserted.sort_by_key(|row| row.version);
    let stored = inserted
        .into_iter()
        .zip(events)
        .map(|(row, event)| StoredEvent {
            position: row.position,
            stream_id: stream_id.to_owned(),
            version: row.version,
            event: event.clone(),
            recorded_at: now,
        })
        .collect();
    let new_version = current.version + events.len() as i64;
    if new_version / SNAPSHOT_EVERY > current.version / SNAPSHOT_EVERY {
        save_snapshot::<A, C>(conn, stream_id, &current.applied(events), new_version).await?;
    }
    Ok(stored)
}

/// Who did what to a stream: each event's type and actor, in order.
pub async fn recorded_by<C: ConnectionTrait>(
    conn: &C,
    stream_id: &str,
) -> Result<Vec<(String, Option<Actor>)>, PlatformError> {
    let rows = events::Entity::find()
        .filter(events::Column::StreamId.eq(stream_id))
        .order_by_asc(events::Column::Version)
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.event_type, row.actor.as_deref().and_then(Actor::parse)))
        .collect())
}

async fn save_snapshot<A: Aggregate, C: ConnectionTrait>(
    conn: &C,
    stream_id: &str,
    state: &A,
    version: i64,
) -> Result<(), PlatformError> {
    let json = serde_json::to_string(state).map_err(|e| decode_error(A::STREAM_TYPE, e))?;
    let row = snapshots::ActiveModel {
        stream_id: Set(stream_id.to_owned()),
        stream_type: Set(A::STREAM_TYPE.to_owned()),
        version: Set(version),
        state: Set(json),
        taken_at: Set(Utc::now()),
    };
    snapshots::Entity::insert(row)
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(snapshots::Column::StreamId)
                .update_columns([
                    snapshots::Column::Version,
                    snapshots::Column::State,
                    snapshots::Column::TakenAt,
                ])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(())
}

/// The version a stream's snapshot holds (0 when none): for tests and tooling.
pub async fn snapshot_version<C: ConnectionTrait>(
    conn: &C,
    stream_id: &str,
) -> Result<i64, PlatformError> {
    Ok(snapshots::Entity::find_by_id(stream_id.to_owned())
        .one(conn)
        .await?
        .map_or(0, |s| s.version))
}

/// The log's last position (0: empty).
pub async fn head<C: ConnectionTrait>(conn: &C) -> Result<i64, PlatformError> {
    crate::db::max_position::<events::Entity, _>(conn, events::Column::Position).await
}

/// When the first event after `position` was recorded (none: nothing is).
pub async fn recorded_after<C: ConnectionTrait>(
    conn: &C,
    position: i64,
) -> Result<Option<DateTime<Utc>>, PlatformError> {
    Ok(events::Entity::find()
        .filter(events::Column::Position.gt(position))
        .order_by_asc(events::Column::Position)
        .one(conn)
        .await?
        .map(|row| row.recorded_at))
}

/// How many events are stored (for tests and tooling).
pub async fn count<C: ConnectionTrait>(conn: &C) -> Result<u64, PlatformError> {
    Ok(events::Entity::find().count(conn).await?)
}
