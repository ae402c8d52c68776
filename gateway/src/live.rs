//! The gateway's live feed: the read side's change notifications (published
//! by the search module after each change commits), consumed on a queue of
//! this gateway process's own and fanned out to its subscriptions through
//! bounded broadcasts, one per route (topic, and entity or owner). Every change has a position in the read side's change
//! log: the subscription cursor, resumable on any replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mallbots_contracts::Message;
use mallbots_contracts::search::{
    ChangeBody, CommittedAsRead, ReadChange, TOPIC_CATALOG, TOPIC_EVENT, TOPIC_ORDER,
    TOPIC_SHOPPING_LIST,
};
use mallbots_platform::changes::Change;
use mallbots_platform::{Broker, BrokerError, Exchange, QueueSpec, Shutdown, consumer};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::metrics::Metrics;

/// A committed read-side change, as pushed: its body, or why it could not
/// be decoded (its subscribers are told, at its position).
#[derive(Clone, Debug, PartialEq)]
pub struct LiveChange {
    pub position: i64,
    pub topic: String,
    pub key: String,
    /// From a live notice, or from the log (where changes logged before
    /// owners were have none).
    pub owner: Option<String>,
    pub body: Result<ChangeBody, String>,
    /// The trace context of the work that made it (empty: none, or
    /// replayed from the log).
    pub trace: BTreeMap<String, String>,
}

impl LiveChange {
    fn new(read: ReadChange, trace: BTreeMap<String, String>) -> Self {
        if let Err(reason) = &read.body {
            tracing::warn!(position = read.position, topic = %read.topic, key = %read.key, %reason, "a read-side change cannot be decoded");
        }
        LiveChange {
            position: read.position,
            topic: read.topic,
            key: read.key,
            owner: read.owner,
            body: read.body,
            trace,
        }
    }

    /// Whether the change is on `route`, as far as it can tell without its
    /// body (a change that cannot be decoded goes only where it surely
    /// belongs).
    pub fn is_on(&self, route: &Route) -> bool {
        match &route.about {
            About::All => true,
            About::Key(key) => *key == self.key,
            About::Owner(owner) => self.owner.as_ref() == Some(owner),
        }
    }
}

impl From<Change> for LiveChange {
    fn from(change: Change) -> Self {
        LiveChange::new(
            ReadChange {
                body: ChangeBody::decode(&change.topic, &change.body),
                position: change.position,
                topic: change.topic,
                key: change.key,
                owner: change.owner,
            },
            BTreeMap::new(),
        )
    }
}

/// Which changes a subscription listens to: a topic, and optionally only
/// those about one entity (`key`: an order, a store) or one owner (a
/// customer). A change wakes only the subscriptions on its routes, not every
/// subscription of the process.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Route {
    pub topic: &'static str,
    pub about: About,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum About {
    All,
    Key(String),
    Owner(String),
}

/// The buffer of a route about one order or one customer.
pub const QUIET_ROUTE_BUFFER: usize = 64;

type Routes = Arc<Mutex<RouteTable>>;

#[derive(Default)]
struct RouteTable {
    senders: HashMap<Route, broadcast::Sender<Arc<LiveChange>>>,
    /// The position of the last change handed out (changes come in
    /// position order): whoever subscribes now gets every later one.
    dispatched: i64,
}

#[derive(Clone)]
pub struct LiveFeed {
    routes: Routes,
    buffer: usize,
    shutdown: Shutdown,
    /// How many routes the last sweep left (see `subscribe`).
    swept_to: Arc<AtomicUsize>,
}

/// Routes kept before the first sweep of those nobody listens to.
const ROUTES_BEFORE_SWEEP: usize = 64;

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, RouteTable> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands `change` to the subscriptions on its routes; forgets routes nobody
/// listens to any more.
fn dispatch(routes: &Routes, change: LiveChange) {
    let Some(topic) = [TOPIC_ORDER, TOPIC_SHOPPING_LIST, TOPIC_EVENT, TOPIC_CATALOG]
        .into_iter()
        .find(|t| *t == change.topic)
    else {
        return;
    };
    let mut abouts = vec![About::All, About::Key(change.key.clone())];
    abouts.extend(change.owner.clone().map(About::Owner));
    let change = Arc::new(change);
    let mut table = lock(routes);
    table.dispatched = table.dispatched.max(change.position);
    for about in abouts {
        let route = Route { topic, about };
        if let Some(sender) = table.senders.get(&route)
            && sender.send(change.clone()).is_err()
        {
            table.senders.remove(&route);
        }
    }
}

impl LiveFeed {
    /// `buffer`: changes held for a subscriber before it counts as too slow.
    pub async fn start(
        broker: Arc<dyn Broker>,
        metrics: Arc<Metrics>,
        buffer: usize,
        shutdown: Shutdown,
    ) -> Result<Self, BrokerError> {
        let routes: Routes = Arc::default();
        let spec = QueueSpec::transient(format!("gateway.live.{}", Uuid::new_v4().simple()))
            .bind(Exchange::Events, CommittedAsRead::TYPE);
        let feed = LiveFeed {
            routes: routes.clone(),
            buffer: buffer.max(1),
            shutdown: shutdown.clone(),
            swept_to: Arc::new(AtomicUsize::new(ROUTES_BEFORE_SWEEP / 2)),
        };
        let reset_routes = routes.clone();
        let on_reset = move || {
            // Notices were lost while the broker was away: every route is
            // closed, and its subscriptions replay the change log from their
            // own last position before following the new routes.
            lock(&reset_routes).senders.clear();
        };
        let on_message = move |envelope: mallbots_platform::Envelope| {
            // Each change's body is decoded on its own: one that cannot be
            // reaches its subscribers as an error at its position.
            let committed = match envelope.decode::<CommittedAsRead>() {
                Ok(committed) => committed,
                Err(err) => {
                    tracing::warn!(message_type = %envelope.message_type, error = %err, "unreadable change notice dropped");
                    return;
                }
            };
            let count = u64::try_from(committed.changes.len()).unwrap_or(u64::MAX);
            metrics.live_changes(count);
            // The notice's trace goes on to each push it causes.
            let span = tracing::info_span!(
                "live",
                changes = count,
                trace_id = tracing::field::Empty,
                otel.name = "gateway receive change notice",
                otel.kind = "consumer",
            );
            mallbots_platform::propagation::continue_from(&span, &envelope.headers);
            let _entered = span.enter();
            let mut trace = BTreeMap::new();
            mallbots_platform::propagation::inject_current(&mut trace);
            for read in committed.changes {
                dispatch(&routes, LiveChange::new(read, trace.clone()));
            }
        };
        consumer::listen(broker.as_ref(), spec, shutdown, on_message, on_reset).await?;
        Ok(feed)
    }

    /// Counts the changes through `position` as handed out: the log's
    /// newest when the feed starts (its queue bound), so that every change
    /// after it is handed out through the feed.
    pub fn begin_at(&self, position: i64) {
        let mut table = lock(&self.routes);
        table.dispatched = table.dispatched.max(position);
    }

    /// The position of the last change handed out.
    pub fn dispatched(&self) -> i64 {
        lock(&self.routes).dispatched
    }

    /// Whether the gateway is stopping (a closed route then means the end).
    pub fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// A receiver of the changes on `route` from now on, and the position
    /// of the last change handed out before it: it gets every later one.
    pub fn subscribe(&self, route: Route) -> (broadcast::Receiver<Arc<LiveChange>>, i64) {
        // A broadcast allocates all its slots up front. Busy, shared routes
        // (a topic, a store's catalog) get the whole buffer; the many quiet
        // ones (one order, one customer) get at most QUIET_ROUTE_BUFFER.
        let busy = route.about == About::All || route.topic == TOPIC_CATALOG;
        let capacity = if busy {
            self.buffer
        } else {
            self.buffer.min(QUIET_ROUTE_BUFFER)
        };
        let mut table = lock(&self.routes);
        let routes = &mut table.senders;
        // A route goes when a change finds nobody on it; one that never
        // changes (a client can make one per store id it names) would stay
        // for good, with its buffer. So routes nobody listens to are swept
        // whenever the map has doubled since the last sweep.
        if routes.len() >= 2 * self.swept_to.load(Ordering::Relaxed) {
            routes.retain(|_, sender| sender.receiver_count() > 0);
            let kept = routes.len().max(ROUTES_BEFORE_SWEEP / 2);
            self.swept_to.store(kept, Ordering::Relaxed);
        }
        let receiver = routes
            .entry(route)
            .or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        (receiver, table.dispatched)
    }
}
