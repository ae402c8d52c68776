//! One machine for every subscription: replay the change log after the
//! client's cursor, then follow the live feed, with no gap and no duplicate;
//! a subscriber that falls behind its buffer is told so, with the cursor to
//! resume from, and closed: never skipped silently.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_graphql::{Context, ErrorExtensions};
use futures_util::Stream;
use mallbots_contracts::ErrorCode;
use mallbots_contracts::search::ChangeBody;
use mallbots_platform::changes;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::RecvError};

use super::dispatch::state;
use super::errors::ApiError;
use crate::live::{About, LiveChange, Route};
use crate::metrics::Held;
use crate::state::AppState;

/// Changes read from the log per query while replaying.
const REPLAY_PAGE: u64 = 500;

/// A cursor as sent back by a client.
pub fn parse_cursor(after: Option<String>) -> Result<Option<i64>, ApiError> {
    after
        .map(|c| {
            crate::consistency::canonical_position(&c)
                .ok_or_else(|| ApiError::bad_input("after is not a valid cursor"))
        })
        .transpose()
}

/// In the data of a subscription executed once for many sockets (see
/// `crate::shared`): they count themselves in `/metrics`, and learn from it
/// the position each item stands at, whether the execution fell behind,
/// and when it follows the live feed.
#[derive(Debug, Default)]
pub struct SharedRun {
    /// The last position handled: each item's cursor, read as it is pushed.
    pub position: AtomicI64,
    /// Set once every change on its route after `position` is still to
    /// come to it: from the start when it follows from now, once its replay
    /// has caught up otherwise (and woken through `caught_up`).
    pub following: AtomicBool,
    /// Where it caught up: every change on its route through here had been
    /// handed out (or was not its to hand out).
    pub caught_up_at: AtomicI64,
    pub caught_up: Notify,
    /// Asks a following execution, once its route's receiver is empty, to
    /// raise `caught_up_at` to the live feed's position and wake
    /// `caught_up`: on a quiet route nothing else would move it on, and a
    /// hand-over waiting for it would wait for the route's next change.
    pub asked: Notify,
    /// Set when the execution itself fell behind the live feed.
    pub closed_slow: AtomicBool,
    /// Set when its items are the same whoever asks ([`Audience::Anyone`]).
    pub anyone: AtomicBool,
}

/// Whether a subscription's items depend on who asks. One that does not is
/// executed once for every client that sends it, whoever they are; one that
/// does (it authorizes or filters by the actor) only for the same actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Anyone,
    PerActor,
}

struct State<F> {
    app: AppState,
    route: Route,
    topic: &'static str,
    receiver: broadcast::Receiver<Arc<LiveChange>>,
    /// The last position handled (pushed, or skipped as not the client's).
    last: i64,
    replay: VecDeque<Arc<LiveChange>>,
    replaying: bool,
    /// The replay's last page reached `since`: once it is handed out, the
    /// subscription follows the receiver.
    replayed_since: bool,
    /// The last position the live feed had handed out when `receiver`
    /// subscribed: every later change is in the receiver.
    since: i64,
    closed: bool,
    select: F,
    /// The subscription's field, as counted in `/metrics`.
    field: &'static str,
    /// Counted here, or by each socket of a shared execution.
    _active: Option<Held>,
    shared: Option<Arc<SharedRun>>,
}

impl<F> State<F> {
    fn handled(&mut self, position: i64) {
        self.last = position;
        if let Some(shared) = &self.shared {
            shared.position.store(position, Ordering::Release);
        }
    }

    /// Nothing before the live feed's receiver is left to replay: every
    /// change on the route through `since` was committed before the replay
    /// read the log, so it has been handled, and every later one is in the
    /// receiver.
    fn caught_up(&mut self) {
        self.replaying = false;
        self.last = self.last.max(self.since);
        if let Some(shared) = &self.shared {
            shared.position.store(self.last, Ordering::Release);
            shared.caught_up_at.store(self.last, Ordering::Release);
            shared.following.store(true, Ordering::Release);
            shared.caught_up.notify_one();
        }
    }

    /// Answers [`SharedRun::asked`]: with nothing in the receiver, every
    /// change on the route through the live feed's position was handled.
    /// The position is read first: the feed counts a change as handed out
    /// once it is in every receiver on its routes.
    fn quiet(&self, shared: &SharedRun) {
        // Checked first too: the feed's lock is taken only when idle.
        if !self.receiver.is_empty() {
            return;
        }
        let dispatched = self.app.live.dispatched();
        if !self.receiver.is_empty() {
            return;
        }
        if shared.caught_up_at.fetch_max(dispatched, Ordering::AcqRel) < dispatched {
            shared.caught_up.notify_one();
        }
    }
}

/// The items `select` makes of the changes on `route`, from after `after`
/// (or from now), each with its position, for a subscription to `field`.
pub fn follow<T, F>(
    ctx: &Context<'_>,
    field: &'static str,
    route: Route,
    after: Option<String>,
    audience: Audience,
    select: F,
) -> Result<impl Stream<Item = async_graphql::Result<T>> + use<T, F>, ApiError>
where
    T: Send + 'static,
    F: Fn(&LiveChange, &ChangeBody) -> Option<T> + Send + Sync + 'static,
{
    let app = state(ctx)?;
    let shared = ctx.data_opt::<Arc<SharedRun>>().cloned();
    if let Some(shared) = &shared {
        let anyone = audience == Audience::Anyone;
        shared.anyone.store(anyone, Ordering::Release);
    }
    let after = parse_cursor(after)?;
    // Subscribed before the replay reads the log: a change committed while
    // replaying is in the buffer, and skipped there if the replay had it.
    let (receiver, since) = app.live.subscribe(route.clone());
    let mut state = State {
        app: app.clone(),
        topic: route.topic,
        receiver,
        route,
        last: after.unwrap_or(since),
        replay: VecDeque::new(),
        replaying: true,
        replayed_since: false,
        since,
        closed: false,
        select,
        field,
        _active: shared.is_none().then(|| app.metrics.subscription(field)),
        shared,
    };
    if after.is_none() {
        state.caught_up();
    }
    Ok(futures_util::stream::unfold(state, |mut s| async move {
        if s.closed {
            return None;
        }
        loop {
            let change = match next(&mut s).await {
                Ok(Some(change)) => change,
                Ok(None) => return None,
                Err(err) => {
                    s.closed = true;
                    return Some((Err(err), s));
                }
            };
            // The route delivers only its topic; positions already handled
            // (replayed, or before the cursor) are skipped.
            if change.position <= s.last {
                continue;
            }
            s.handled(change.position);
            let body = match &change.body {
                Ok(body) => body,
                Err(_) if change.is_on(&s.route) => {
                    return Some((Err(undecodable(change.position)), s));
                }
                Err(_) => continue,
            };
            if let Some(item) = (s.select)(&change, body) {
                pushed(s.field, &change);
                return Some((Ok(item), s));
            }
        }
    }))
}

/// Marks the push of `change` to a subscriber of `field` in the change's
/// trace (the mutation's, when it had one), as the last span of that trace.
fn pushed(field: &'static str, change: &LiveChange) {
    if change.trace.is_empty() {
        return;
    }
    let span = tracing::info_span!(
        "push",
        field,
        position = change.position,
        trace_id = tracing::field::Empty,
        otel.name = format!("push {field}"),
        otel.kind = "producer",
    );
    mallbots_platform::propagation::continue_from(&span, &change.trace);
    span.in_scope(|| tracing::trace!("pushed"));
}

/// The item a change that cannot be decoded becomes (logged where it was
/// read): an error at its position; the subscription goes on after it.
fn undecodable(position: i64) -> async_graphql::Error {
    let err = async_graphql::Error::from(ApiError::new(
        ErrorCode::Internal,
        format!(
            "the change at cursor {position} cannot be read; the subscription goes on after it"
        ),
    ));
    err.extend_with(|_, e| e.set("cursor", position.to_string()))
}

/// Refuses a replay from before what the change log still keeps (its
/// retention pruned, through `pruned`, changes after `s.last`):
/// CURSOR_EXPIRED, never a gap.
fn check_retention<F>(s: &State<F>, pruned: i64) -> async_graphql::Result<()> {
    if s.last >= pruned {
        return Ok(());
    }
    let err = async_graphql::Error::from(ApiError::new(
        ErrorCode::CursorExpired,
        format!(
            "the cursor {} is older than the change log keeps; subscribe again without after (and read the current state with a query)",
            s.last
        ),
    ));
    let cursor = s.last.to_string();
    Err(err.extend_with(|_, e| e.set("cursor", cursor.clone())))
}

/// Refuses a cursor beyond the change log's `newest` position
/// (BAD_USER_INPUT).
fn check_not_ahead<F>(s: &State<F>, newest: i64) -> async_graphql::Result<()> {
    if s.last <= newest {
        return Ok(());
    }
    Err(ApiError::bad_input(format!(
        "the cursor {} is ahead of the change log; subscribe again without after",
        s.last
    ))
    .into())
}

/// One page of a replay: the changes after `after`, the last position
/// retention pruned (0 for the archive, which is never pruned), and, where
/// the page is empty, the log's newest position.
struct ReplayPage {
    changes: Vec<changes::Change>,
    pruned: i64,
    newest: Option<i64>,
}

/// Reads the page of a replay after `after` in a task of its own, during
/// its turn ([`mallbots_search::SearchQueries::replay_turn`]): the task
/// runs to its end and gives the turn back whether or not the subscriber
/// reads on, so a socket that stops reading cannot keep the other replays
/// waiting.
async fn read_page<F>(s: &State<F>) -> async_graphql::Result<ReplayPage> {
    let search = s.app.queries.search.clone();
    let (topic, about, after) = (s.topic, s.route.about.clone(), s.last);
    let read = tokio::spawn(async move {
        let _turn = search.replay_turn().await?;
        // A route about one entity or owner replays only its changes.
        let about = match &about {
            About::All => None,
            About::Key(key) => Some(changes::About::Key(key)),
            About::Owner(owner) => Some(changes::About::Owner(owner)),
        };
        let changes = search.changes(topic, about, after, REPLAY_PAGE).await?;
        // Read after the page: pruning that removed anything the page could
        // have held shows here, so a gap is refused, never passed over.
        let pruned = if crate::state::ARCHIVE.contains(&topic) {
            0
        } else {
            search.pruned_through().await?
        };
        let newest = match changes.is_empty() {
            true => Some(search.last_position().await?),
            false => None,
        };
        Ok::<_, mallbots_platform::PlatformError>(ReplayPage {
            changes,
            pruned,
            newest,
        })
    });
    let failed = match read.await {
        Ok(Ok(page)) => return Ok(page),
        Ok(Err(err)) => ApiError::from(err),
        Err(lost) => ApiError::new(
            ErrorCode::Internal,
            format!("reading the change log failed: {lost}"),
        ),
    };
    // Where to resume once the log can be read again.
    let cursor = s.last.to_string();
    Err(async_graphql::Error::from(failed).extend_with(|_, e| e.set("cursor", cursor.clone())))
}

/// The next change to consider: from the log while replaying, then live.
/// Shared, not copied: a change goes to every subscriber on its route.
async fn next<F>(s: &mut State<F>) -> async_graphql::Result<Option<Arc<LiveChange>>> {
    loop {
        if let Some(change) = next_once(s).await? {
            return Ok(Some(change));
        }
        if s.app.live.stopping() {
            return Ok(None);
        }
        // The live feed closed the route: it lost notices (its broker queue
        // was made anew). Follow the new route, then replay the log from the
        // last change handled: no gap, and no duplicate (positions).
        (s.receiver, s.since) = s.app.live.subscribe(s.route.clone());
        s.replaying = true;
        s.replayed_since = false;
    }
}

/// [`next`] until the route closes (`None`).
async fn next_once<F>(s: &mut State<F>) -> async_graphql::Result<Option<Arc<LiveChange>>> {
    while s.replaying {
        if let Some(change) = s.replay.pop_front() {
            return Ok(Some(change));
        }
        if s.replayed_since {
            // The rest is in the receiver: a replay that read on until the
            // log ran dry would never end while changes keep coming faster
            // than it takes its turns.
            s.replayed_since = false;
            s.caught_up();
            break;
        }
        let page = read_page(s).await?;
        check_retention(s, page.pruned)?;
        if let Some(newest) = page.newest {
            // Nothing after the cursor: it must be one the log has given out
            // (a cursor from elsewhere would wait forever for its changes).
            check_not_ahead(s, newest)?;
            s.caught_up();
        }
        s.replayed_since = page.changes.last().is_some_and(|c| c.position >= s.since);
        s.replay.extend(
            page.changes
                .into_iter()
                .map(|c| Arc::new(LiveChange::from(c))),
        );
    }
    let mut stopping = s.app.stopping.clone();
    let shared = s.shared.clone();
    let received = loop {
        let asked = async {
            match &shared {
                Some(shared) => shared.asked.notified().await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            received = s.receiver.recv() => Some(received),
            () = asked => None,
            _ = stopping.wait() => {
                let cursor = s.last.to_string();
                let err = async_graphql::Error::from(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the server is shutting down; subscribe again (on any replica) with after: \"{cursor}\""
                    ),
                ));
                return Err(err.extend_with(|_, e| e.set("cursor", cursor.clone())));
            }
        };
        match (received, &shared) {
            (Some(received), _) => break received,
            (None, Some(shared)) => s.quiet(shared),
            (None, None) => {}
        }
    };
    match received {
        Ok(change) => Ok(Some(change)),
        Err(RecvError::Lagged(missed)) => {
            match &s.shared {
                Some(shared) => shared.closed_slow.store(true, Ordering::Release),
                None => s.app.metrics.closed_slow(s.field, 1),
            }
            let cursor = s.last.to_string();
            let err = async_graphql::Error::from(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "the subscriber fell {missed} changes behind and was closed; subscribe again with after: \"{cursor}\""
                ),
            ));
            Err(err.extend_with(|_, e| e.set("cursor", cursor.clone())))
        }
        Err(RecvError::Closed) => Ok(None),
    }
}
