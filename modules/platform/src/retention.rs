//! Retention: what a module's database keeps only for a while. Sent outbox
//! rows and inbox rows go after `messages`; change-log entries after
//! `changes` (except an archive's topic, which a rebuild replays). Pruned in
//! the background, in small batches, so writers never wait on it; an unsent
//! outbox row is never pruned.

use std::time::Duration;

use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use crate::{PlatformError, Shutdown, changes, inbox, outbox};

#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Sent outbox rows and inbox rows (a kept idempotent reply with them).
    pub messages: Duration,
    /// Change-log entries (the cursors of live subscriptions).
    pub changes: Duration,
}

/// Rows per delete statement.
const BATCH: u64 = 1000;

/// How many rows one pass removed, by table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub inbox: u64,
    pub changes: u64,
}

fn cutoff(keep: Duration) -> chrono::DateTime<Utc> {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(keep)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
}

/// Deletes batch after batch until nothing older than the retention is
/// left in `db` (`archive`: change-log topics kept whatever their age).
pub async fn prune(
    db: &DatabaseConnection,
    retention: Retention,
    archive: &[&str],
) -> Result<Pruned, PlatformError> {
    let mut pruned = Pruned::default();
    let messages = cutoff(retention.messages);
    let logged = cutoff(retention.changes);
    loop {
        let outbox = outbox::prune_sent(db, messages, BATCH).await?;
        let inbox = inbox::prune(db, messages, BATCH).await?;
        let changes = changes::prune(db, logged, archive, BATCH).await?;
        pruned.outbox += outbox;
        pruned.inbox += inbox;
        pruned.changes += changes;
        if outbox < BATCH && inbox < BATCH && changes < BATCH {
            return Ok(pruned);
        }
        // Let writers in between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes `db` now and then until `shutdown`: every quarter of the shorter
/// retention, at most every minute.
pub fn spawn(
    name: &'static str,
    db: DatabaseConnection,
    retention: Retention,
    archive: &'static [&'static str],
    mut shutdown: Shutdown,
) -> JoinHandle<()> {
    let every = (retention.messages.min(retention.changes) / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        loop {
            match prune(&db, retention, archive).await {
                Ok(pruned) if pruned != Pruned::default() => {
                    tracing::debug!(module = name, ?pruned, "retention: old rows pruned")
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(module = name, error = %err, "retention: pruning failed; trying again later")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
        }
    })
}
