//! A read side's change log and checkpoints.
//!
//! Every change a read model commits is also appended to `changes`, in the
//! same transaction: its position is the cursor a live subscription resumes
//! from (on any gateway replica: the log is in the database). `checkpoints`
//! keeps, per source module, the highest event position applied, so a query
//! can wait until a given write has reached this read side.

use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, Condition, ConnectionTrait, QueryOrder, QuerySelect, QueryTrait};
use serde::de::DeserializeOwned;

use crate::PlatformError;

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub position: i64,
        pub topic: String,
        pub key: String,
        pub owner: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub recorded_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod checkpoint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "checkpoints")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        pub position: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A change as logged; its body is JSON text, which the log does not read:
/// its writer and readers agree on a type per topic (the contracts).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub position: i64,
    pub topic: String,
    pub key: String,
    /// Who the change is about (an order's customer), when it says; `None`
    /// also for changes logged before owners were.
    pub owner: Option<String>,
    pub body: String,
    pub recorded_at: DateTime<Utc>,
}

/// A logged body, decoded as `T`.
fn body_of<T: DeserializeOwned>(row: &entity::Model) -> Result<T, PlatformError> {
    serde_json::from_str(&row.body).map_err(|e| PlatformError::Decode {
        what: format!("change {}", row.position),
        reason: e.to_string(),
    })
}

impl From<entity::Model> for Change {
    fn from(row: entity::Model) -> Self {
        Change {
            body: row.body,
            position: row.position,
            topic: row.topic,
            key: row.key,
            owner: row.owner,
            recorded_at: row.recorded_at,
        }
    }
}

/// The log rows of `topics` (only those `about` one entity or owner, when
/// given) after `after`, oldest first: at most `limit`, or those up to
/// `upto` (inclusive).
async fn rows_after<C: ConnectionTrait>(
    conn: &C,
    topics: &[&str],
    about: Option<About<'_>>,
    after: i64,
    bound: Bound,
) -> Result<Vec<entity::Model>, PlatformError> {
    let query = entity::Entity::find()
        .filter(entity::Column::Topic.is_in(topics.iter().copied()))
        .apply_if(about, |query, about| query.filter(about.condition()))
        .filter(entity::Column::Position.gt(after))
        .order_by_asc(entity::Column::Position);
    let query = match bound {
        Bound::Limit(limit) => query.limit(limit),
        Bound::Upto(upto) => query.filter(entity::Column::Position.lte(upto)),
    };
    Ok(query.all(conn).await?)
}

enum Bound {
    Limit(u64),
    Upto(i64),
}

/// A change to log.
#[derive(Clone, Copy, Debug)]
pub struct NewChange<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub owner: Option<&'a str>,
    /// JSON text.
    pub body: &'a str,
}

impl<'a> NewChange<'a> {
    /// A change nobody in particular owns.
    pub fn new(topic: &'a str, key: &'a str, body: &'a str) -> Self {
        NewChange {
            topic,
            key,
            owner: None,
            body,
        }
    }

    pub fn owned_by(self, owner: &'a str) -> Self {
        NewChange {
            owner: Some(owner),
            ..self
        }
    }
}

/// Appends changes in order, many to a statement; their positions are
/// returned in the same order.
pub async fn record_all<C: ConnectionTrait>(
    conn: &C,
    changes: &[NewChange<'_>],
) -> Result<Vec<i64>, PlatformError> {
    let mut positions = Vec::with_capacity(changes.len());
    for chunk in changes.chunks(1000) {
        let now = Utc::now();
        let rows = chunk.iter().map(|change| entity::ActiveModel {
            topic: Set(change.topic.to_owned()),
            key: Set(change.key.to_owned()),
            owner: Set(change.owner.map(str::to_owned)),
            body: Set(change.body.to_owned()),
            recorded_at: Set(now),
            ..Default::default()
        });
        let mut keys = entity::Entity::insert_many(rows)
            .exec_with_returning_keys(conn)
            .await?;
        // One statement's serial values rise in row order; sorting makes the
        // pairing independent of the order RETURNING lists them in.
        keys.sort_unstable();
        positions.extend(keys);
    }
    Ok(positions)
}

/// Changes of `topics` after `after`, oldest first, at most `limit`.
pub async fn since<C: ConnectionTrait>(
    conn: &C,
    topics: &[&str],
    after: i64,
    limit: u64,
) -> Result<Vec<Change>, PlatformError> {
    Ok(rows_after(conn, topics, None, after, Bound::Limit(limit))
        .await?
        .into_iter()
        .map(Change::from)
        .collect())
}

/// Which changes of a topic a replay wants.
#[derive(Clone, Copy, Debug)]
pub enum About<'a> {
    /// Those about one entity (an order, a store).
    Key(&'a str),
    /// Those of one owner (a customer), and those logged without an owner
    /// (before owners were), which the reader sorts out itself.
    Owner(&'a str),
}

impl About<'_> {
    fn condition(self) -> Condition {
        match self {
            About::Key(key) => Condition::all().add(entity::Column::Key.eq(key)),
            About::Owner(owner) => Condition::any()
                .add(entity::Column::Owner.eq(owner))
                .add(entity::Column::Owner.is_null()),
        }
    }
}

/// The changes of `topic` that are `about` one entity or owner, after
/// `after`, oldest first, at most `limit`. Read through the (topic, key,
/// position) and (topic, owner, position) indexes: a replay for one
/// customer reads that customer's changes, not every change logged after
/// its cursor.
pub async fn since_about<C: ConnectionTrait>(
    conn: &C,
    topic: &str,
    about: About<'_>,
    after: i64,
    limit: u64,
) -> Result<Vec<Change>, PlatformError> {
    Ok(
        rows_after(conn, &[topic], Some(about), after, Bound::Limit(limit))
            .await?
            .into_iter()
            .map(Change::from)
            .collect(),
    )
}

/// The changes of `topics` in positions (`after`, `upto`], oldest first,
/// each body decoded straight into `T` (no JSON tree between): (position,
/// body) pairs. A bounded window, not a limit: the rows it reads do not
/// depend on the planner's statistics, which a freshly filled log lacks (a
/// `LIMIT` page then sorted every later row of the topic, each time).
pub async fn between_as<C: ConnectionTrait, T: DeserializeOwned>(
    conn: &C,
    topics: &[&str],
    after: i64,
    upto: i64,
) -> Result<Vec<(i64, T)>, PlatformError> {
    rows_after(conn, topics, None, after, Bound::Upto(upto))
        .await?
        .iter()
        .map(|row| Ok((row.position, body_of(row)?)))
        .collect()
}

/// The log's last position (0: empty).
pub async fn last<C: ConnectionTrait>(conn: &C) -> Result<i64, PlatformError> {
    crate::db::max_position::<entity::Entity, _>(conn, entity::Column::Position).await
}

/// Notes that events of `source` up to `position` are applied.
pub async fn advance<C: ConnectionTrait>(
    conn: &C,
    source: &str,
    position: i64,
) -> Result<(), PlatformError> {
    let row = checkpoint::ActiveModel {
        source: Set(source.to_owned()),
        position: Set(position),
    };
    // One statement, never backwards: the stored position is replaced only
    // by a higher one.
    let raised = crate::db::offered_is_higher::<checkpoint::Entity>(checkpoint::Column::Position);
    checkpoint::Entity::insert(row)
        .on_conflict(
            OnConflict::column(checkpoint::Column::Source)
                .update_column(checkpoint::Column::Position)
                .action_and_where(raised)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// The highest position of `source` applied here (0: none).
pub async fn applied<C: ConnectionTrait>(conn: &C, source: &str) -> Result<i64, PlatformError> {
    Ok(checkpoint::Entity::find_by_id(source.to_owned())
        .select_only()
        .column(checkpoint::Column::Position)
        .into_tuple::<i64>()
        .one(conn)
        .await?
        .unwrap_or(0))
}

/// The checkpoint name under which the log remembers how far it was pruned.
const PRUNED: &str = "(pruned)";

/// Deletes up to `limit` changes recorded before `cutoff`, except those of
/// `keep` (an archive); how many. Notes the last position deleted: a cursor
/// before it may have lost changes ([`pruned_through`]).
pub async fn prune(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    keep: &[&str],
    limit: u64,
) -> Result<u64, PlatformError> {
    use sea_orm::TransactionTrait;
    let txn = db.begin().await?;
    let old: Vec<i64> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Position)
        .filter(entity::Column::RecordedAt.lt(cutoff))
        .filter(entity::Column::Topic.is_not_in(keep.iter().copied()))
        .order_by_asc(entity::Column::Position)
        .limit(limit)
        .into_tuple()
        .all(&txn)
        .await?;
    let Some(&last) = old.last() else {
        return Ok(0);
    };
    let deleted = entity::Entity::delete_many()
        .filter(entity::Column::Position.is_in(old))
        .exec(&txn)
        .await?
        .rows_affected;
    advance(&txn, PRUNED, last).await?;
    txn.commit().await?;
    Ok(deleted)
}

/// The last position pruned from the log (0: none): a cursor before it
/// cannot be resumed without a gap.
pub async fn pruned_through<C: ConnectionTrait>(conn: &C) -> Result<i64, PlatformError> {
    applied(conn, PRUNED).await
}
