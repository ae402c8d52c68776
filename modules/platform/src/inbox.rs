//! The inbox: a consumer records each message id in the transaction that
//! handles it, so a redelivered message is recognised and changes nothing.

use std::collections::HashSet;

use chrono::Utc;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, ConnectionTrait, TryInsertResult};
use uuid::Uuid;

use crate::PlatformError;

mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub consumer: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub received_at: DateTimeUtc,
        /// The reply sent, for commands whose sender asked for idempotency.
        #[sea_orm(column_type = "Text", nullable)]
        pub reply: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Records `message_id` for `consumer`; false when it was recorded before
/// (the message is a redelivery and must be skipped).
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, PlatformError> {
    let row = entity::ActiveModel {
        consumer: Set(consumer.to_owned()),
        message_id: Set(message_id.to_string()),
        received_at: Set(Utc::now()),
        reply: Set(None),
    };
    let result = entity::Entity::insert(row)
        .on_conflict_do_nothing_on([entity::Column::Consumer, entity::Column::MessageId])
        .exec_without_returning(txn)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(n) if n > 0))
}

/// Whether any consumer of this database has handled `message_id`.
pub async fn seen<C: ConnectionTrait>(conn: &C, message_id: Uuid) -> Result<bool, PlatformError> {
    Ok(entity::Entity::find()
        .filter(entity::Column::MessageId.eq(message_id.to_string()))
        .one(conn)
        .await?
        .is_some())
}

/// Records many message ids for `consumer` in one statement; returns those
/// recorded now (the others were handled before).
pub async fn record_all<C: ConnectionTrait>(
    txn: &C,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<HashSet<Uuid>, PlatformError> {
    let now = Utc::now();
    let unique: HashSet<Uuid> = message_ids.iter().copied().collect();
    let rows = unique.iter().map(|id| entity::ActiveModel {
        consumer: Set(consumer.to_owned()),
        message_id: Set(id.to_string()),
        received_at: Set(now),
        reply: Set(None),
    });
    let result = entity::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([entity::Column::Consumer, entity::Column::MessageId])
        .exec_with_returning_keys(txn)
        .await?;
    let TryInsertResult::Inserted(keys) = result else {
        return Ok(HashSet::new());
    };
    Ok(keys
        .into_iter()
        .filter_map(|(_, id)| Uuid::parse_str(&id).ok())
        .collect())
}

/// Keeps the reply `message_id` got (JSON), for a retry of it.
pub async fn keep_reply<C: ConnectionTrait>(
    txn: &C,
    consumer: &str,
    message_id: Uuid,
    reply: &str,
) -> Result<(), PlatformError> {
    entity::Entity::update_many()
        .col_expr(entity::Column::Reply, Expr::value(reply))
        .filter(entity::Column::Consumer.eq(consumer))
        .filter(entity::Column::MessageId.eq(message_id.to_string()))
        .exec(txn)
        .await?;
    Ok(())
}

/// The reply kept for `message_id`, if any.
pub async fn kept_reply<C: ConnectionTrait>(
    conn: &C,
    consumer: &str,
    message_id: Uuid,
) -> Result<Option<String>, PlatformError> {
    Ok(
        entity::Entity::find_by_id((consumer.to_owned(), message_id.to_string()))
            .one(conn)
            .await?
            .and_then(|row| row.reply),
    )
}

/// Deletes up to `limit` rows received before `cutoff`; how many. A message
/// redelivered after its row is gone would be handled again: the retention
/// is far longer than any redelivery.
pub async fn prune(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
    limit: u64,
) -> Result<u64, PlatformError> {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    let old = Query::select()
        .columns([entity::Column::Consumer, entity::Column::MessageId])
        .from(entity::Entity)
        .and_where(entity::Column::ReceivedAt.lt(cutoff))
        .limit(limit)
        .to_owned();
    let key = Expr::tuple([
        Expr::col(entity::Column::Consumer),
        Expr::col(entity::Column::MessageId),
    ]);
    Ok(entity::Entity::delete_many()
        .filter(key.in_subquery(old))
        .exec(db)
        .await?
        .rows_affected)
}
