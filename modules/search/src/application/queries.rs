//! The search read side, as the gateway queries it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mallbots_contracts::search::OrderSummary;
use mallbots_platform::PlatformError;
use mallbots_platform::changes::{self, About, Change};
use mallbots_platform::views;
use rust_decimal::Decimal;
use sea_orm::entity::prelude::*;
use sea_orm::{Condition, DatabaseConnection, QueryOrder, QuerySelect, QueryTrait};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::domain::cents;
use crate::infrastructure::tables::{decode_summary, items, orders};

/// The filters of `searchOrders`; every one given must hold.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    pub customer_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub store_ids: Vec<Uuid>,
    pub product_ids: Vec<Uuid>,
    pub min_total: Option<Decimal>,
    pub max_total: Option<Decimal>,
    pub status: Option<String>,
}

/// How many subscription replays read the change log at once, in one
/// process: fewer than the pool's connections (10 on PostgreSQL, 1 on
/// SQLite), so that however many replays clients start, queries, the
/// readiness check and the projection still get theirs.
fn replays_at_once(db: &DatabaseConnection) -> usize {
    match db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => 1,
        _ => 4,
    }
}

/// The longest a replay waits for its turn to read.
const REPLAY_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The search read side.
#[derive(Clone)]
pub struct SearchQueries {
    db: DatabaseConnection,
    replays: Arc<Semaphore>,
}

/// A replay's turn to read the change log ([`SearchQueries::replay_turn`]):
/// held across the reads of one page, given back when dropped.
pub struct ReplayTurn {
    _permit: OwnedSemaphorePermit,
}

impl SearchQueries {
    pub fn new(db: DatabaseConnection) -> Self {
        SearchQueries {
            replays: Arc::new(Semaphore::new(replays_at_once(&db))),
            db,
        }
    }

    /// Waits for a replay's turn to read (at most [`REPLAY_TURN_WAIT`];
    /// then the database counts as unavailable to it, as a pool that had
    /// no connection to give).
    pub async fn replay_turn(&self) -> Result<ReplayTurn, PlatformError> {
        let waited = tokio::time::timeout(REPLAY_TURN_WAIT, self.replays.clone().acquire_owned());
        match waited.await {
            Ok(Ok(permit)) => Ok(ReplayTurn { _permit: permit }),
            Ok(Err(_)) | Err(_) => Err(PlatformError::Database(sea_orm::DbErr::ConnectionAcquire(
                sea_orm::ConnAcquireErr::Timeout,
            ))),
        }
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderSummary>, PlatformError> {
        orders::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| decode_summary(&row))
            .transpose()
    }

    /// Orders matching `filter` after `after`, oldest first.
    pub async fn search(
        &self,
        filter: &OrderFilter,
        first: u64,
        after: Option<Uuid>,
    ) -> Result<views::Page<OrderSummary>, PlatformError> {
        use orders::Column as O;
        let mut cond = Condition::all();
        if let Some(c) = filter.customer_id {
            cond = cond.add(O::CustomerId.eq(c.to_string()));
        }
        if let Some(t) = filter.created_after {
            cond = cond.add(O::CreatedAt.gte(t));
        }
        if let Some(t) = filter.created_before {
            cond = cond.add(O::CreatedAt.lt(t));
        }
        if let Some(m) = filter.min_total {
            cond = cond.add(O::TotalCents.gte(cents(m)));
        }
        if let Some(m) = filter.max_total {
            cond = cond.add(O::TotalCents.lte(cents(m)));
        }
        if let Some(s) = &filter.status {
            cond = cond.add(O::Status.eq(s.clone()));
        }
        for (ids, column) in [
            (&filter.store_ids, items::Column::StoreId),
            (&filter.product_ids, items::Column::ProductId),
        ] {
            if !ids.is_empty() {
                let holding = items::Entity::find()
                    .select_only()
                    .column(items::Column::OrderId)
                    .filter(column.is_in(ids.iter().map(Uuid::to_string)))
                    .into_query();
                cond = cond.add(O::OrderId.in_subquery(holding));
            }
        }
        if let Some(after) = after {
            cond = cond.add(O::OrderId.gt(after.to_string()));
        }
        let mut rows = orders::Entity::find()
            .filter(cond)
            .order_by_asc(O::OrderId)
            .limit(first + 1)
            .all(&self.db)
            .await?;
        let has_next = rows.len() as u64 > first;
        rows.truncate(first as usize);
        let items = rows
            .iter()
            .map(|row| {
                let summary = decode_summary(row)?;
                Ok((summary.order.order_id, summary))
            })
            .collect::<Result<_, PlatformError>>()?;
        Ok(views::Page { items, has_next })
    }

    /// The last change pruned from the log (0: none).
    pub async fn pruned_through(&self) -> Result<i64, PlatformError> {
        changes::pruned_through(&self.db).await
    }

    /// The change log's last position (0: empty): no cursor is beyond it.
    pub async fn last_position(&self) -> Result<i64, PlatformError> {
        changes::last(&self.db).await
    }

    /// Logged changes of `topic` after `after`, only those `about` one
    /// entity or owner when it is given (subscription replay).
    pub async fn changes(
        &self,
        topic: &str,
        about: Option<About<'_>>,
        after: i64,
        limit: u64,
    ) -> Result<Vec<Change>, PlatformError> {
        match about {
            Some(about) => changes::since_about(&self.db, topic, about, after, limit).await,
            None => changes::since(&self.db, &[topic], after, limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// Replays beyond the allowance wait for a turn, whoever starts them,
    /// and get one as soon as another replay gives its turn back.
    #[tokio::test]
    async fn replays_read_in_turns() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let queries = SearchQueries::new(db);
        let first = queries.replay_turn().await.unwrap();
        let second = queries.replay_turn();
        tokio::pin!(second);
        assert!(
            second.as_mut().now_or_never().is_none(),
            "a second replay read beside the first on SQLite's one connection"
        );
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
            .await
            .expect("the turn given back goes to the waiting replay");
        assert!(second.is_ok());
    }
}
