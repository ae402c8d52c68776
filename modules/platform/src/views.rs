//! Document read models: one JSON row per entity, keyed by (kind, id), with a
//! reference id (the owner: a basket's customer, an invoice's order) and a
//! status to look rows up by. Modules keep their own query side here, and
//! the caches they fill from other modules' events (event-carried state).
//!
//! Each row remembers the event-log position it was written at, so an event
//! that arrives after a newer one cannot roll a row back. A removed entity
//! leaves a tombstone at its removal's position (never read as a row), so a
//! late event about it cannot bring it back either.

use chrono::Utc;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, QueryOrder, QuerySelect};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::PlatformError;

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "views")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub ref_id: Option<String>,
        pub status: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub position: i64,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One row to write.
pub struct Row<'a, T> {
    pub kind: &'static str,
    pub id: Uuid,
    pub ref_id: Option<Uuid>,
    pub status: Option<&'a str>,
    pub body: &'a T,
    /// The event-log position this state is as of.
    pub position: i64,
}

/// The status of a tombstone: the row of a removed entity.
const TOMBSTONE: &str = "(removed)";

/// The rows that are not tombstones.
fn present() -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(entity::Column::Status.is_null())
        .add(entity::Column::Status.ne(TOMBSTONE))
}

fn decode_error(kind: &str, err: serde_json::Error) -> PlatformError {
    PlatformError::Decode {
        what: format!("{kind} view"),
        reason: err.to_string(),
    }
}

fn model<T: Serialize>(row: &Row<'_, T>) -> Result<entity::ActiveModel, PlatformError> {
    let body = serde_json::to_string(row.body).map_err(|e| decode_error(row.kind, e))?;
    Ok(entity::ActiveModel {
        kind: Set(row.kind.to_owned()),
        id: Set(row.id.to_string()),
        ref_id: Set(row.ref_id.map(|r| r.to_string())),
        status: Set(row.status.map(str::to_owned)),
        body: Set(body),
        position: Set(row.position),
        updated_at: Set(Utc::now()),
    })
}

/// Writes `row` unless the stored one (or its tombstone) is as new or newer;
/// true when written. One statement: the check and the write cannot be
/// split by a concurrent writer.
pub async fn put<C: ConnectionTrait, T: Serialize>(
    conn: &C,
    row: Row<'_, T>,
) -> Result<bool, PlatformError> {
    upsert(conn, model(&row)?).await
}

async fn upsert<C: ConnectionTrait>(
    conn: &C,
    model: entity::ActiveModel,
) -> Result<bool, PlatformError> {
    let newer = crate::db::offered_is_higher::<entity::Entity>(entity::Column::Position);
    let written = entity::Entity::insert(model)
        .on_conflict(
            OnConflict::columns([entity::Column::Kind, entity::Column::Id])
                .update_columns([
                    entity::Column::RefId,
                    entity::Column::Status,
                    entity::Column::Body,
                    entity::Column::Position,
                    entity::Column::UpdatedAt,
                ])
                .action_and_where(newer)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(written > 0)
}

/// Removes an entity as of `position`: its row becomes a tombstone, which
/// reads as absent and which an older write cannot replace; true when the
/// removal is the newest thing known of it.
pub async fn remove<C: ConnectionTrait>(
    conn: &C,
    kind: &'static str,
    id: Uuid,
    position: i64,
) -> Result<bool, PlatformError> {
    let tombstone = Row {
        kind,
        id,
        ref_id: None,
        status: Some(TOMBSTONE),
        body: &(),
        position,
    };
    upsert(conn, model(&tombstone)?).await
}

/// Inserts rows known to be new (a kind just emptied and being rebuilt), many
/// to a statement.
pub async fn insert_all<C: ConnectionTrait, T: Serialize>(
    conn: &C,
    rows: &[Row<'_, T>],
) -> Result<(), PlatformError> {
    // 7 columns a row: well under every backend's bound-parameter limit.
    for chunk in rows.chunks(1000) {
        let models = chunk.iter().map(model).collect::<Result<Vec<_>, _>>()?;
        entity::Entity::insert_many(models)
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Deletes every row of `kind` (a cache being rebuilt).
pub async fn delete_kind<C: ConnectionTrait>(conn: &C, kind: &str) -> Result<(), PlatformError> {
    entity::Entity::delete_many()
        .filter(entity::Column::Kind.eq(kind))
        .exec(conn)
        .await?;
    Ok(())
}

fn decode<T: DeserializeOwned>(row: entity::Model) -> Result<T, PlatformError> {
    serde_json::from_str(&row.body).map_err(|e| decode_error(&row.kind, e))
}

pub async fn get<C: ConnectionTrait, T: DeserializeOwned>(
    conn: &C,
    kind: &str,
    id: Uuid,
) -> Result<Option<T>, PlatformError> {
    entity::Entity::find_by_id((kind.to_owned(), id.to_string()))
        .filter(present())
        .one(conn)
        .await?
        .map(decode)
        .transpose()
}

/// The rows of `kind` with these ids that exist, each with its position.
pub async fn get_all<C: ConnectionTrait, T: DeserializeOwned>(
    conn: &C,
    kind: &str,
    ids: &[Uuid],
) -> Result<Vec<(T, i64)>, PlatformError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let rows = entity::Entity::find()
            .filter(entity::Column::Kind.eq(kind))
            .filter(entity::Column::Id.is_in(chunk.iter().map(Uuid::to_string)))
            .filter(present())
            .all(conn)
            .await?;
        for row in rows {
            let position = row.position;
            found.push((decode(row)?, position));
        }
    }
    Ok(found)
}

/// The rows of `kind` that refer to `ref_id`, oldest first.
pub async fn by_ref<C: ConnectionTrait, T: DeserializeOwned>(
    conn: &C,
    kind: &str,
    ref_id: Uuid,
) -> Result<Vec<T>, PlatformError> {
    entity::Entity::find()
        .filter(entity::Column::Kind.eq(kind))
        .filter(entity::Column::RefId.eq(ref_id.to_string()))
        .filter(present())
        .order_by_asc(entity::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(decode)
        .collect()
}

/// One keyset page in id order (ids are time-ordered UUIDv7s).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<(Uuid, T)>,
    pub has_next: bool,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            items: Vec::new(),
            has_next: false,
        }
    }
}

/// Rows of `kind` (with `status`, when given) after `after`, at most `first`.
pub async fn page<C: ConnectionTrait, T: DeserializeOwned>(
    conn: &C,
    kind: &str,
    status: Option<&str>,
    first: u64,
    after: Option<Uuid>,
) -> Result<Page<T>, PlatformError> {
    let mut query = entity::Entity::find()
        .filter(entity::Column::Kind.eq(kind))
        .filter(present())
        .order_by_asc(entity::Column::Id);
    if let Some(status) = status {
        query = query.filter(entity::Column::Status.eq(status));
    }
    if let Some(after) = after {
        query = query.filter(entity::Column::Id.gt(after.to_string()));
    }
    let mut rows = query.limit(first + 1).all(conn).await?;
    let has_next = rows.len() as u64 > first;
    rows.truncate(first as usize);
    let items = rows
        .into_iter()
        .map(|row| {
            let id = Uuid::parse_str(&row.id).map_err(|_| PlatformError::Decode {
                what: format!("{kind} view id"),
                reason: format!("{:?} is not a UUID", row.id),
            })?;
            Ok((id, decode(row)?))
        })
        .collect::<Result<_, PlatformError>>()?;
    Ok(Page { items, has_next })
}
