//! Rebuilding the search model from the archived events, in one
//! transaction, while the system runs.

use mallbots_contracts::search::{ArchivedEvent, TOPIC_EVENT};
use mallbots_platform::db::{self, DroppedIndexes};
use mallbots_platform::views;
use mallbots_platform::{PlatformError, changes};
use sea_orm::DatabaseTransaction;
use sea_orm::entity::prelude::*;

use super::{CUSTOMER, Fact, customer_row, fact};
use crate::domain::Fold;
use crate::infrastructure::tables::{Rows, items, orders, write_orders};

/// Rebuild: folds every archived event in memory, in the order search
/// applied them, then writes the model afresh, many rows to a statement.
pub(crate) async fn replay_all(txn: &DatabaseTransaction) -> Result<u64, PlatformError> {
    let started = std::time::Instant::now();
    let mut fold = Fold::default();
    // Windows of log positions, about half of them archived events. The
    // next window is read while the last one is folded.
    const WINDOW: i64 = 10_000;
    let last = changes::last(txn).await?;
    let window = |after: i64| async move {
        if after >= last {
            return Ok(None);
        }
        let upto = after.saturating_add(WINDOW);
        let batch =
            changes::between_as::<_, ArchivedEvent>(txn, &[TOPIC_EVENT], after, upto).await?;
        Ok::<_, PlatformError>(Some((upto, batch)))
    };
    let (mut next, mut replayed) = (window(0).await?, 0);
    while let Some((upto, batch)) = next {
        let (read, folded) = tokio::join!(window(upto), async {
            for (_, event) in &batch {
                let position = event.source_position.unwrap_or(0);
                match fact(event)? {
                    Fact::Order(order) => fold.order(order, position),
                    Fact::Customer(customer) => fold.customer(customer, position),
                    Fact::ShoppingList(_) | Fact::Product { .. } | Fact::Other => {}
                }
            }
            Ok::<_, PlatformError>(batch.len() as u64)
        });
        replayed += folded?;
        next = read?;
    }
    tracing::info!(replayed, elapsed = ?started.elapsed(), "rebuild: archive read and folded");
    // Rows are written without their indexes and keys, which are built once
    // at the end (queries on the search tables wait until the rebuild commits).
    let tables = [items::Entity.table_name(), orders::Entity.table_name()];
    let indexes = DroppedIndexes::with_primary_keys(txn, &tables).await?;
    db::empty_tables(txn, &tables).await?;
    views::delete_kind(txn, CUSTOMER).await?;
    tracing::info!(elapsed = ?started.elapsed(), "rebuild: old rows deleted");
    let (summaries, customers) = fold.finish();
    write_orders(txn, &summaries.iter().collect::<Vec<_>>(), Rows::Fresh).await?;
    indexes.create(txn).await?;
    let rows: Vec<_> = customers
        .iter()
        .map(|(customer, position)| customer_row(customer, *position))
        .collect();
    views::insert_all(txn, &rows).await?;
    tracing::info!(orders = summaries.len(), elapsed = ?started.elapsed(), "rebuild: rows written");
    Ok(replayed)
}
