//! Subscriptions executed once for every socket that asks for the same one.
//!
//! Sockets that subscribe to the same field with the same document,
//! variables and actor, from now on (no `after`), join one execution: each
//! change is resolved and serialized once, and only the message's envelope
//! (its subscription id) is written per socket. A subscription with `after`
//! (given in a variable) replays from its own cursor in an execution of its
//! own, and once it has caught up joins the execution from now on, or
//! becomes it: a gateway's clients that all reconnect with their cursors end
//! up shared again. Anything this module does not recognise (an `after`
//! written into the document, say) runs on its own: async-graphql serves
//! it, and answers errors.
//!
//! The hand-over loses and repeats nothing. An execution that follows the
//! live feed has handed out every change on its route through its position
//! (or holds it in hand) and will hand out every later one; a replaying
//! subscription joins one whose position is not past its own, and passes
//! over what it is handed through its own position.
//!
//! Each socket keeps its own contract: it counts in `/metrics`, and one that
//! cannot keep up (its queue reaches the subscription buffer) is closed on
//! its own with RATE_LIMITED and the cursor of the last change it was given,
//! while the others go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use async_graphql::http::WebSocketProtocols;
use async_graphql::parser::Positioned;
use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
    TypeKind, TypeSystemDefinition,
};
use async_graphql::{Request, Value as ConstValue};
use async_graphql_value::Value as AstValue;
use axum::extract::ws::Message as WsFrame;
use futures_channel::mpsc;
use futures_util::StreamExt;
use mallbots_contracts::{Actor, ErrorCode};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::graphql::follow::SharedRun;
use crate::graphql::{MallSchema, RequestContext};
use crate::live::LiveFeed;
use crate::metrics::{Held, Metrics};

/// What makes two subscriptions the same one.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    query: String,
    operation_name: Option<String>,
    /// The variables as sent, serialized.
    variables: String,
    whose: Whose,
}

/// Whose subscription it is, as far as its items go.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Whose {
    /// The resolver said its items are the same whoever asks.
    Anyone,
    /// Until then, the actor's (no token: `None`): resolvers may authorize
    /// and filter by it.
    Actor(Option<Actor>),
}

/// The executions of one gateway, by what they execute.
pub struct Shared {
    schema: MallSchema,
    metrics: Arc<Metrics>,
    /// What a socket may have waiting before a subscription of it is closed
    /// as too slow (the subscription buffer).
    buffer: usize,
    /// Where an execution from now on begins, before its resolver says.
    live: Option<LiveFeed>,
    fields: &'static [&'static str],
    groups: Mutex<HashMap<Key, Arc<Group>>>,
    tickets: std::sync::atomic::AtomicU64,
}

/// A hand-over under way: the members (their tickets) have places held in
/// `target`, which they take once their replay has handed them everything
/// through `through`.
struct HandOver {
    target: Arc<Group>,
    through: i64,
    tickets: Vec<u64>,
}

/// One execution and the sockets it serves.
pub struct Group {
    /// Where the registry has it (it moves once, to [`Whose::Anyone`]); a
    /// replaying execution is not listed until it has caught up.
    key: Mutex<Key>,
    field: &'static str,
    run: Arc<SharedRun>,
    members: Mutex<Vec<Member>>,
    /// The position of the last response handed to the members (written
    /// under `members`' lock).
    delivered: AtomicI64,
    /// A replaying execution handing its members over (see `settle`).
    handing_to: Mutex<Option<HandOver>>,
    task: OnceLock<AbortHandle>,
}

struct Member {
    outbox: Arc<Outbox>,
    /// The execution serving it (a replaying one hands it over).
    seat: Arc<Seat>,
    id: String,
    /// The message envelope up to its payload: `{"type":"next","id":…,"payload":`.
    prefix: Arc<str>,
    /// Which joining of `id` this is (an id is free again once completed).
    ticket: u64,
    /// The cursor of the last change handed to this socket.
    last: i64,
    /// What its own replay handed it already: passed over here.
    replayed_through: i64,
    /// Set while its replay has not yet handed it everything through
    /// `replayed_through`: what it is handed here waits (with each
    /// change's position), to follow the replay's last message.
    held: Option<Vec<(i64, WsFrame)>>,
    /// Counted in `/metrics` (not while held: the replay's own counts).
    counted: Option<Held>,
}

/// Which execution serves a subscription.
pub struct Seat(Mutex<Arc<Group>>);

impl Seat {
    fn group(&self) -> Arc<Group> {
        lock(&self.0).clone()
    }
}

/// A subscription's place in a shared execution.
pub struct Joined {
    pub seat: Arc<Seat>,
    pub ticket: u64,
}

/// A message a socket's shared subscriptions queue for it, in order.
pub struct Out {
    pub frame: WsFrame,
    /// The joining (its ticket) it is for: once the client completed that
    /// one, nothing more of it is written.
    pub of: Option<u64>,
    /// The id of the joining (`of`) it ends, when it ends one: the socket
    /// forgets the id.
    pub ends: Option<String>,
}

/// The most bytes a socket may have waiting before its shared
/// subscriptions are closed as too slow (besides `SUBSCRIPTION_BUFFER`
/// messages): a long subscription id is in every message.
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// A socket's queue of shared messages.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    protocol: WebSocketProtocols,
    /// Woken as the socket takes messages off the queue.
    taken: Notify,
}

fn size(frame: &WsFrame) -> usize {
    match frame {
        WsFrame::Text(text) => text.len(),
        _ => 0,
    }
}

impl Outbox {
    pub fn new(protocol: WebSocketProtocols) -> (Arc<Self>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded();
        let outbox = Outbox {
            tx,
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            protocol,
            taken: Notify::new(),
        };
        (Arc::new(outbox), rx)
    }

    /// Queues `out`; false once the socket is gone.
    fn send(&self, out: Out) -> bool {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.queued_bytes
            .fetch_add(size(&out.frame), Ordering::AcqRel);
        self.tx.unbounded_send(out).is_ok()
    }

    /// Notes a message taken off the queue (the socket is writing it).
    pub fn taken(&self, out: &Out) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes
            .fetch_sub(size(&out.frame), Ordering::AcqRel);
        self.taken.notify_waiters();
    }

    /// Waits until the socket has at most half of what [`Outbox::behind`]
    /// allows waiting, or is gone.
    async fn room(&self, buffer: usize) {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            // Registered before the look, so a message taken in between
            // wakes it.
            taken.as_mut().enable();
            let half = self.queued.load(Ordering::Acquire) < (buffer / 2).max(1)
                && self.queued_bytes.load(Ordering::Acquire) < MAX_QUEUED_BYTES / 2;
            if half || self.tx.is_closed() {
                return;
            }
            taken.await;
        }
    }

    /// Whether the socket has more waiting than `buffer` messages (or
    /// [`MAX_QUEUED_BYTES`]).
    fn behind(&self, buffer: usize) -> bool {
        self.queued.load(Ordering::Acquire) >= buffer
            || self.queued_bytes.load(Ordering::Acquire) >= MAX_QUEUED_BYTES
    }

    /// Answers the client's `complete` of `id` (already forgotten): after
    /// whatever was queued for it.
    pub fn complete(&self, id: &str) {
        self.send(Out {
            frame: complete(id),
            of: None,
            ends: None,
        });
    }
}

fn complete(id: &str) -> WsFrame {
    WsFrame::Text(json!({ "type": "complete", "id": id }).to_string().into())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A subscribe that can be shared: what [`Shared::join`] needs of it.
pub(crate) struct Subscribe<'a> {
    pub(crate) payload: &'a Value,
    pub(crate) shareable: Shareable,
    pub(crate) context: RequestContext,
}

/// A subscription that can be shared, as [`Shared::shareable`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shareable {
    pub(crate) field: &'static str,
    /// The variable its `after` is given in: not part of what makes two
    /// subscriptions the same (a cursor is where one begins, not what it
    /// follows).
    cursor_variable: Option<String>,
    /// It replays from a cursor before it follows.
    replays: bool,
}

impl Shared {
    pub fn new(
        schema: MallSchema,
        metrics: Arc<Metrics>,
        buffer: usize,
        live: Option<LiveFeed>,
    ) -> Arc<Self> {
        let fields = subscription_fields(&schema);
        Arc::new(Shared {
            schema,
            metrics,
            buffer,
            live,
            fields,
            groups: Mutex::new(HashMap::new()),
            tickets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Whether `payload` (a subscribe's) can be shared: one field of the
    /// subscription type, with no directive, from now on or from a cursor
    /// given in a variable.
    pub(crate) fn shareable(
        &self,
        document: &ExecutableDocument,
        payload: &Value,
    ) -> Option<Shareable> {
        if payload.get("extensions").is_some_and(|e| !e.is_null()) {
            return None;
        }
        let operation_name = payload["operationName"].as_str();
        shareable(document, operation_name, &payload["variables"], self.fields)
    }

    /// Joins `outbox`'s subscription `id` to the execution of its kind,
    /// started now if there is none; one that replays gets an execution of
    /// its own, until it has caught up.
    pub fn join(
        self: &Arc<Self>,
        subscribe: Subscribe<'_>,
        outbox: &Arc<Outbox>,
        id: &str,
    ) -> Option<Joined> {
        let payload = subscribe.payload;
        let shareable = subscribe.shareable;
        let mut variables = payload["variables"].clone();
        if let (Some(name), Some(variables)) =
            (&shareable.cursor_variable, variables.as_object_mut())
        {
            variables.remove(name);
        }
        let key = Key {
            query: payload["query"].as_str()?.to_owned(),
            operation_name: payload["operationName"].as_str().map(str::to_owned),
            variables: variables.to_string(),
            whose: Whose::Actor(subscribe.context.identity.actor),
        };
        let mut groups = lock(&self.groups);
        let found = match shareable.replays {
            true => None,
            false => listed(&groups, &key),
        };
        let group = match found {
            Some(group) => group,
            None => {
                let request: Request = serde_json::from_value(payload.clone()).ok()?;
                let run = SharedRun::default();
                if let Some(live) = self.live.as_ref().filter(|_| !shareable.replays) {
                    // Its members' cursor until its first change: where
                    // they would resume should they fall behind before.
                    run.position.store(live.dispatched(), Ordering::Release);
                }
                let run = Arc::new(run);
                let request = request.data(subscribe.context).data(run.clone());
                let group = Arc::new(Group {
                    key: Mutex::new(key.clone()),
                    field: shareable.field,
                    run,
                    members: Mutex::new(Vec::new()),
                    delivered: AtomicI64::new(0),
                    handing_to: Mutex::new(None),
                    task: OnceLock::new(),
                });
                let replays = shareable.replays;
                let task = tokio::spawn(execute(self.clone(), group.clone(), request, replays));
                let _ = group.task.set(task.abort_handle());
                if !shareable.replays {
                    groups.insert(key, group.clone());
                }
                group
            }
        };
        let kind = match outbox.protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        };
        let quoted = Value::from(id).to_string();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let seat = Arc::new(Seat(Mutex::new(group.clone())));
        // Where it resumes should it fall behind before its first change.
        let last = match (shareable.replays, &shareable.cursor_variable) {
            (true, Some(name)) => payload["variables"][name]
                .as_str()
                .and_then(crate::consistency::canonical_position)
                .unwrap_or_default(),
            _ => group.run.position.load(Ordering::Acquire),
        };
        lock(&group.members).push(Member {
            outbox: outbox.clone(),
            seat: seat.clone(),
            id: id.to_owned(),
            prefix: format!("{{\"type\":\"{kind}\",\"id\":{quoted},\"payload\":").into(),
            ticket,
            last,
            replayed_through: 0,
            held: None,
            counted: Some(self.metrics.subscription(group.field)),
        });
        Some(Joined { seat, ticket })
    }

    /// Takes a subscription out of its execution, which stops with its
    /// last member.
    pub fn leave(&self, joined: &Joined) {
        let mut groups = lock(&self.groups);
        let group = &joined.seat.group();
        drop_hand_over(group);
        let mut members = lock(&group.members);
        members.retain(|m| m.ticket != joined.ticket);
        if members.is_empty() {
            forget(&mut groups, group);
            if let Some(task) = group.task.get() {
                task.abort();
            }
        }
    }

    /// Stops `group`'s execution if no member is left (they all fell
    /// behind or went away); false while someone is served.
    fn stop_if_empty(&self, group: &Arc<Group>) -> bool {
        let mut groups = lock(&self.groups);
        if !lock(&group.members).is_empty() {
            return false;
        }
        forget(&mut groups, group);
        drop_hand_over(group);
        true
    }

    /// No new member joins `group` (it ends, or answered an error).
    fn close(&self, group: &Arc<Group>) {
        forget(&mut lock(&self.groups), group);
    }

    /// Once `group`'s resolver has said its items are the same whoever
    /// asks, every actor's subscribers join it (unless another execution
    /// already serves them all).
    fn open_to_anyone(&self, group: &Arc<Group>) {
        if !group.run.anyone.load(Ordering::Acquire) {
            return;
        }
        let mut groups = lock(&self.groups);
        let mut key = lock(&group.key);
        if key.whose == Whose::Anyone {
            return;
        }
        let anyone = Key {
            whose: Whose::Anyone,
            ..key.clone()
        };
        let listed = groups.get(&*key).is_some_and(|g| Arc::ptr_eq(g, group));
        if !listed || groups.contains_key(&anyone) {
            return;
        }
        groups.remove(&*key);
        groups.insert(anyone.clone(), group.clone());
        *key = anyone;
    }
}

/// The listed execution a subscription under `key` joins: the one for
/// anyone, else the actor's.
fn listed(groups: &HashMap<Key, Arc<Group>>, key: &Key) -> Option<Arc<Group>> {
    let anyone = Key {
        whose: Whose::Anyone,
        ..key.clone()
    };
    groups.get(&anyone).or_else(|| groups.get(key)).cloned()
}

/// Takes back a hand-over under way: the members' places held in the
/// other execution go.
fn drop_hand_over(group: &Group) {
    if let Some(HandOver {
        target, tickets, ..
    }) = lock(&group.handing_to).take()
    {
        give_up_places(&mut lock(&target.members), &tickets);
    }
}

/// Takes out of an execution the places it holds for `tickets`.
fn give_up_places(members: &mut Vec<Member>, tickets: &[u64]) {
    members.retain(|m| m.held.is_none() || !tickets.contains(&m.ticket));
}

fn forget(groups: &mut HashMap<Key, Arc<Group>>, group: &Arc<Group>) {
    let key = lock(&group.key);
    if groups.get(&*key).is_some_and(|g| Arc::ptr_eq(g, group)) {
        groups.remove(&*key);
    }
}

/// Runs `group`'s execution: each response serialized once and handed to
/// every member; at its end, each member's subscription completes. A
/// replaying one, once it has caught up, hands its member over to the
/// listed execution of its kind, or becomes it.
async fn execute(shared: Arc<Shared>, group: Arc<Group>, request: Request, replays: bool) {
    // Counted while it runs (a socket may hold its group a while longer).
    let _counted = shared.metrics.execution(group.field);
    let mut responses = shared.schema.execute_stream(request);
    // The first poll runs the resolver, which says who its items are for.
    let mut first = Some(futures_util::poll!(responses.next()));
    // A replaying execution, until it has settled (see `Shared::settle`).
    let mut settling = replays;
    loop {
        shared.open_to_anyone(&group);
        if settling {
            match shared.settle(&group) {
                Settled::HandedOver => return,
                Settled::Listed => settling = false,
                Settled::NotYet => {}
            }
        }
        let response = match first.take() {
            Some(Poll::Ready(response)) => response,
            _ if settling => {
                // A replay goes at its socket's pace: read from the log, it
                // would fill the socket's queue faster than any drains it.
                let pacer = lock(&group.members).first().map(|m| m.outbox.clone());
                if let Some(outbox) = pacer {
                    outbox.room(shared.buffer).await;
                }
                // It may catch up between two changes: settle then.
                tokio::select! {
                    response = responses.next() => response,
                    _ = group.run.caught_up.notified() => continue,
                }
            }
            _ => responses.next().await,
        };
        let Some(response) = response else { break };
        let position = group.run.position.load(Ordering::Acquire);
        let payload = match serde_json::to_string(&response) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(field = group.field, %err, "a subscription's response cannot be serialized");
                continue;
            }
        };
        // An error may be the last word (a refused subscription): later
        // subscribers get an execution of their own.
        let error = response.is_err().then_some(&response);
        if error.is_some() {
            shared.close(&group);
            settling = false;
        }
        let response = Response {
            payload: &payload,
            position,
            error,
        };
        if !group.deliver(response, &shared) && shared.stop_if_empty(&group) {
            return;
        }
    }
    shared.close(&group);
    drop_hand_over(&group);
    for member in lock(&group.members).drain(..) {
        // A place held for a replay: the replay's own execution ends it.
        if member.held.is_none() {
            member.end(complete(&member.id));
        }
    }
}

/// How a replaying execution stands once it has caught up.
#[derive(Debug, PartialEq)]
enum Settled {
    NotYet,
    /// It is the execution of its kind now.
    Listed,
    /// Its members are served by the execution of its kind.
    HandedOver,
}

impl Shared {
    /// Where a replaying execution's members go once it follows the live
    /// feed. With no execution of its kind listed, it becomes that one.
    /// Else they join that one: at once when it has handed out nothing past
    /// what they have had (they pass over what it hands out through there);
    /// otherwise they get places in it that hold what it hands out, the
    /// replay goes on until it has handed them everything that one had, and
    /// then they take their places, the held messages first. A replay that
    /// runs behind the other execution (as it does under a steady stream of
    /// changes on a busy machine) is handed over all the same.
    fn settle(&self, group: &Arc<Group>) -> Settled {
        let run = &group.run;
        if !run.following.load(Ordering::Acquire) {
            return Settled::NotYet;
        }
        // Every change on the route through here has been handed to the
        // members (or was not theirs to have).
        let delivered = group.delivered.load(Ordering::Acquire);
        let through = delivered.max(run.caught_up_at.load(Ordering::Acquire));
        let mut groups = lock(&self.groups);
        let mut handing_to = lock(&group.handing_to);
        if let Some(hand_over) = handing_to.as_ref() {
            if through < hand_over.through {
                // On a quiet route, only the live feed's position moves it on.
                run.asked.notify_one();
                return Settled::NotYet;
            }
            let target = hand_over.target.clone();
            let mut ours = lock(&group.members);
            let mut theirs = lock(&target.members);
            let held = |theirs: &[Member], t: u64| {
                theirs
                    .iter()
                    .position(|m| m.ticket == t && m.held.is_some())
            };
            if ours.iter().any(|m| held(&theirs, m.ticket).is_none()) {
                // A place was given up (it held too much): start over.
                give_up_places(&mut theirs, &hand_over.tickets);
                *handing_to = None;
                return Settled::NotYet;
            }
            for member in ours.drain(..) {
                let Some(at) = held(&theirs, member.ticket) else {
                    continue;
                };
                let place = &mut theirs[at];
                for (position, frame) in place.held.take().unwrap_or_default() {
                    if position > through {
                        place.last = position;
                        place.outbox.send(Out {
                            frame,
                            of: Some(place.ticket),
                            ends: None,
                        });
                    }
                }
                place.last = place.last.max(member.last).max(through);
                place.replayed_through = place.replayed_through.max(through);
                place.counted = member.counted;
                *lock(&member.seat.0) = target.clone();
            }
            *handing_to = None;
            return Settled::HandedOver;
        }
        let key = lock(&group.key).clone();
        let Some(target) = listed(&groups, &key) else {
            groups.insert(key, group.clone());
            return Settled::Listed;
        };
        if !target.run.following.load(Ordering::Acquire) {
            return Settled::NotYet;
        }
        let mut ours = lock(&group.members);
        let mut theirs = lock(&target.members);
        // What the other execution has handed out, or was never its to:
        // every later change on the route reaches whoever joins it now.
        let handed = target
            .delivered
            .load(Ordering::Acquire)
            .max(target.run.caught_up_at.load(Ordering::Acquire));
        if handed <= through {
            for mut member in ours.drain(..) {
                *lock(&member.seat.0) = target.clone();
                member.replayed_through = through;
                member.last = member.last.max(through);
                theirs.push(member);
            }
            return Settled::HandedOver;
        }
        let mut tickets = Vec::with_capacity(ours.len());
        for member in ours.iter() {
            tickets.push(member.ticket);
            theirs.push(Member {
                outbox: member.outbox.clone(),
                seat: member.seat.clone(),
                id: member.id.clone(),
                prefix: member.prefix.clone(),
                ticket: member.ticket,
                last: member.last,
                replayed_through: handed,
                held: Some(Vec::new()),
                counted: None,
            });
        }
        *handing_to = Some(HandOver {
            target: target.clone(),
            through: handed,
            tickets,
        });
        run.asked.notify_one();
        Settled::NotYet
    }
}

/// A response of an execution, to hand to its members.
struct Response<'a> {
    /// Serialized, once for every member.
    payload: &'a str,
    /// The position of the change it answers.
    position: i64,
    /// The response itself, when it is an error.
    error: Option<&'a async_graphql::Response>,
}

impl Group {
    /// Hands `response`, the response to the last change, to every
    /// member; false when none is left.
    fn deliver(&self, response: Response<'_>, shared: &Shared) -> bool {
        let slow = self.run.closed_slow.swap(false, Ordering::AcqRel);
        let mut members = lock(&self.members);
        if slow {
            shared.metrics.closed_slow(self.field, members.len() as u64);
        }
        // Members whose messages are the same to the byte (same protocol
        // and id: clients often number their subscriptions from 1) share
        // one message.
        let mut built = None;
        members.retain_mut(|m| m.push(&response, &mut built, shared, self.field));
        self.delivered.store(response.position, Ordering::Release);
        !members.is_empty()
    }
}

impl Member {
    /// Hands the member `response`; false when it is closed (too slow, or
    /// its socket is gone).
    fn push(
        &mut self,
        response: &Response<'_>,
        built: &mut Option<(Arc<str>, WsFrame)>,
        shared: &Shared,
        field: &'static str,
    ) -> bool {
        if self.outbox.tx.is_closed() {
            return false;
        }
        let position = response.position;
        if let Some(held) = &self.held {
            // A place held for a replay: its messages wait, within the
            // subscription buffer (past it the place is given up, and the
            // replay tries again later).
            if position <= self.replayed_through {
                return true;
            }
            if held.len() >= shared.buffer {
                return false;
            }
            let frame = self.frame(response.payload, built);
            self.held.get_or_insert_default().push((position, frame));
            return true;
        }
        if position <= self.replayed_through {
            // Its own replay handed it this change already. An error is
            // passed on, with a cursor no earlier than the member's own.
            let Some(error) = response.error else {
                return true;
            };
            let payload = restated(error, position, self.replayed_through);
            return self.outbox.send(Out {
                frame: self.message(&payload),
                of: Some(self.ticket),
                ends: None,
            });
        }
        if self.outbox.behind(shared.buffer) {
            shared.metrics.closed_slow(field, 1);
            let cursor = self.last.to_string();
            let error = json!({
                "data": null,
                "errors": [{
                    "message": format!("the subscriber's socket fell {} messages behind and the subscription was closed; subscribe again with after: \"{cursor}\"", shared.buffer),
                    "path": [field],
                    "extensions": { "code": ErrorCode::RateLimited.as_str(), "cursor": cursor },
                }],
            });
            self.outbox.send(Out {
                frame: self.message(&error.to_string()),
                of: Some(self.ticket),
                ends: None,
            });
            self.end(complete(&self.id));
            return false;
        }
        self.last = position;
        let frame = self.frame(response.payload, built);
        self.outbox.send(Out {
            frame,
            of: Some(self.ticket),
            ends: None,
        })
    }

    /// The message of `payload` for this member, built once for all whose
    /// envelope is the same (`built`).
    fn frame(&self, payload: &str, built: &mut Option<(Arc<str>, WsFrame)>) -> WsFrame {
        match built {
            Some((prefix, frame)) if *prefix == self.prefix => frame.clone(),
            _ => {
                let frame = self.message(payload);
                *built = Some((self.prefix.clone(), frame.clone()));
                frame
            }
        }
    }

    /// Queues the last message of this joining, after which the socket
    /// forgets it.
    fn end(&self, frame: WsFrame) {
        self.outbox.send(Out {
            frame,
            of: Some(self.ticket),
            ends: Some(self.id.clone()),
        });
    }

    fn message(&self, payload: &str) -> WsFrame {
        let mut text = String::with_capacity(self.prefix.len() + payload.len() + 1);
        text.push_str(&self.prefix);
        text.push_str(payload);
        text.push('}');
        WsFrame::Text(text.into())
    }
}

/// An error response at cursor `from` as a member whose own replay went on
/// through `to` must have it: resuming from `from` would repeat changes.
fn restated(error: &async_graphql::Response, from: i64, to: i64) -> String {
    let mut errors = error.errors.clone();
    let (from, to) = (from.to_string(), to.to_string());
    for e in &mut errors {
        e.message = e
            .message
            .replace(&format!("\"{from}\""), &format!("\"{to}\""));
        if let Some(extensions) = &mut e.extensions
            && extensions.get("cursor") == Some(&ConstValue::from(from.as_str()))
        {
            extensions.set("cursor", to.as_str());
        }
    }
    serde_json::to_string(&async_graphql::Response::from_errors(errors)).unwrap_or_else(|err| {
        json!({ "errors": [{ "message": format!("the response cannot be serialized: {err}") }] })
            .to_string()
    })
}

/// Whether a subscription can be shared: one of `fields`, alone at the top
/// of the operation, without directives, from now on or from a cursor given
/// in a variable that nothing else uses (the execution it joins has its own).
fn shareable(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Value,
    fields: &[&'static str],
) -> Option<Shareable> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find_map(|(n, op)| (n.as_str() == name).then_some(op))?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let operation = &operation.node;
    if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
        return None;
    }
    let [selection] = operation.selection_set.node.items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &selection.node else {
        return None;
    };
    let field = &field.node;
    if !field.directives.is_empty() {
        return None;
    }
    let name = *fields.iter().find(|f| **f == field.name.node.as_str())?;
    let from_now = Shareable {
        field: name,
        cursor_variable: None,
        replays: false,
    };
    let Some((_, after)) = field.arguments.iter().find(|(a, _)| a.node == "after") else {
        return Some(from_now);
    };
    match &after.node {
        AstValue::Null => Some(from_now),
        AstValue::Variable(variable) => {
            let defaulted = operation
                .variable_definitions
                .iter()
                .any(|d| d.node.name.node == *variable && d.node.default_value.is_some());
            let given = variables
                .get(variable.as_str())
                .is_some_and(|v| !v.is_null());
            // A default cursor would be left out of what makes two the same.
            if defaulted || (given && uses(document, variable) != 1) {
                return None;
            }
            Some(Shareable {
                cursor_variable: Some(variable.to_string()),
                replays: given,
                ..from_now
            })
        }
        // A cursor written into the document.
        _ => None,
    }
}

/// How many times `document` uses the variable `name` (in arguments, at
/// any depth; definitions do not count).
fn uses(document: &ExecutableDocument, name: &str) -> usize {
    fn value(v: &AstValue, name: &str) -> usize {
        match v {
            AstValue::Variable(v) => usize::from(v.as_str() == name),
            AstValue::List(items) => items.iter().map(|v| value(v, name)).sum(),
            AstValue::Object(fields) => fields.values().map(|v| value(v, name)).sum(),
            _ => 0,
        }
    }
    fn directives(ds: &[Positioned<Directive>], name: &str) -> usize {
        ds.iter()
            .flat_map(|d| &d.node.arguments)
            .map(|(_, v)| value(&v.node, name))
            .sum()
    }
    fn selections(set: &SelectionSet, name: &str) -> usize {
        set.items
            .iter()
            .map(|s| match &s.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let arguments: usize =
                        f.arguments.iter().map(|(_, v)| value(&v.node, name)).sum();
                    arguments
                        + directives(&f.directives, name)
                        + selections(&f.selection_set.node, name)
                }
                Selection::FragmentSpread(f) => directives(&f.node.directives, name),
                Selection::InlineFragment(f) => {
                    directives(&f.node.directives, name)
                        + selections(&f.node.selection_set.node, name)
                }
            })
            .sum()
    }
    let operations: usize = document
        .operations
        .iter()
        .map(|(_, op)| {
            directives(&op.node.directives, name) + selections(&op.node.selection_set.node, name)
        })
        .sum();
    let fragments: usize = document
        .fragments
        .values()
        .map(|f| {
            directives(&f.node.directives, name) + selections(&f.node.selection_set.node, name)
        })
        .sum();
    operations + fragments
}

/// The subscription type's fields, from the schema's own SDL (named once
/// per process: they label `/metrics`).
fn subscription_fields(schema: &MallSchema) -> &'static [&'static str] {
    static FIELDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let Ok(document) = async_graphql::parser::parse_schema(schema.sdl()) else {
            tracing::warn!("the schema's SDL does not parse: no subscription is shared");
            return Vec::new();
        };
        let root = document
            .definitions
            .iter()
            .find_map(|d| match d {
                TypeSystemDefinition::Schema(s) => {
                    s.node.subscription.as_ref().map(|n| n.node.to_string())
                }
                _ => None,
            })
            .unwrap_or_else(|| "Subscription".to_owned());
        document
            .definitions
            .iter()
            .find_map(|d| match d {
                TypeSystemDefinition::Type(t) if t.node.name.node == root => match &t.node.kind {
                    TypeKind::Object(object) => Some(
                        object
                            .fields
                            .iter()
                            .map(|f| &*String::leak(f.node.name.node.to_string()))
                            .collect(),
                    ),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    const FIELDS: &[&str] = &["catalogChanged", "orderUpdated"];

    fn found(query: &str, operation: Option<&str>, variables: Value) -> Option<Shareable> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        shareable(&document, operation, &variables, FIELDS)
    }

    fn field(query: &str, operation: Option<&str>, variables: Value) -> Option<&'static str> {
        found(query, operation, variables).map(|s| s.field)
    }

    #[test]
    fn one_field_from_now_is_shared() {
        let q = "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor } }";
        assert_eq!(field(q, None, json!({ "s": "x" })), Some("catalogChanged"));
        let aliased = "subscription { c: catalogChanged(storeId: \"x\", after: null) { cursor } }";
        assert_eq!(field(aliased, None, json!(null)), Some("catalogChanged"));
    }

    #[test]
    fn a_cursor_in_a_variable_replays_then_is_shared() {
        let q = "subscription($s: ID!, $a: String) { catalogChanged(storeId: $s, after: $a) { cursor } }";
        let shareable = |replays| Shareable {
            field: "catalogChanged",
            cursor_variable: Some("a".to_owned()),
            replays,
        };
        let from_cursor = found(q, None, json!({ "s": "x", "a": "5" }));
        assert_eq!(from_cursor, Some(shareable(true)));
        let null = found(q, None, json!({ "s": "x", "a": null }));
        assert_eq!(null, Some(shareable(false)));
        assert_eq!(found(q, None, json!({ "s": "x" })), Some(shareable(false)));
    }

    #[test]
    fn a_cursor_the_execution_could_not_leave_out_is_not_shared() {
        let defaulted = "subscription($a: String = \"5\") { catalogChanged(storeId: \"x\", after: $a) { cursor } }";
        assert_eq!(field(defaulted, None, json!({})), None);
        let literal = "subscription { catalogChanged(storeId: \"x\", after: \"5\") { cursor } }";
        assert_eq!(field(literal, None, json!({})), None);
        // Used again, the variable is more than a cursor.
        let twice = "subscription($a: String) { catalogChanged(storeId: \"x\", after: $a) { cursor ...F } } fragment F on CatalogChange { product @include(if: $a) { id } }";
        assert_eq!(field(twice, None, json!({ "a": "5" })), None);
        assert_eq!(field(twice, None, json!({})), Some("catalogChanged"));
        let nested = "subscription($a: String) { catalogChanged(storeId: \"x\", after: $a) { product { name(x: [{ y: $a }]) } } }";
        assert_eq!(field(nested, None, json!({ "a": "5" })), None);
    }

    fn executions() -> Arc<Shared> {
        let schema = crate::graphql::builder().finish();
        Shared::new(schema, Arc::new(Metrics::new()), 16, None)
    }

    /// An execution following the feed from `position`, listed when asked.
    fn execution(shared: &Shared, position: i64, listed: bool) -> Arc<Group> {
        let key = Key {
            query: "subscription { catalogChanged(storeId: \"x\") { cursor } }".to_owned(),
            operation_name: None,
            variables: "{}".to_owned(),
            whose: Whose::Anyone,
        };
        let run = SharedRun::default();
        run.position.store(position, Ordering::Release);
        run.caught_up_at.store(position, Ordering::Release);
        run.following.store(true, Ordering::Release);
        let group = Arc::new(Group {
            key: Mutex::new(key.clone()),
            field: "catalogChanged",
            run: Arc::new(run),
            members: Mutex::new(Vec::new()),
            delivered: AtomicI64::new(0),
            handing_to: Mutex::new(None),
            task: OnceLock::new(),
        });
        if listed {
            lock(&shared.groups).insert(key, group.clone());
        }
        group
    }

    /// A subscription `id` of `group`, and what its socket is sent.
    fn member(
        shared: &Shared,
        group: &Arc<Group>,
        id: &str,
    ) -> (Joined, mpsc::UnboundedReceiver<Out>) {
        let (outbox, queued) = Outbox::new(WebSocketProtocols::GraphQLWS);
        let seat = Arc::new(Seat(Mutex::new(group.clone())));
        let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
        lock(&group.members).push(Member {
            outbox,
            seat: seat.clone(),
            id: id.to_owned(),
            prefix: format!("{{\"type\":\"next\",\"id\":\"{id}\",\"payload\":").into(),
            ticket,
            last: group.run.position.load(Ordering::Acquire),
            replayed_through: 0,
            held: None,
            counted: Some(shared.metrics.subscription("catalogChanged")),
        });
        (Joined { seat, ticket }, queued)
    }

    fn sent(queued: &mut mpsc::UnboundedReceiver<Out>) -> Vec<Value> {
        std::iter::from_fn(|| queued.try_recv().ok())
            .map(|out| match out.frame {
                WsFrame::Text(text) => serde_json::from_str(&text).expect("JSON"),
                other => panic!("not text: {other:?}"),
            })
            .collect()
    }

    fn change(group: &Group, shared: &Shared, position: i64) {
        assert!(handed(group, shared, position), "someone is served");
    }

    /// Whether anyone is left once `group` has handed out the change at
    /// `position`.
    fn handed(group: &Group, shared: &Shared, position: i64) -> bool {
        let payload = format!("{{\"data\":{{\"cursor\":\"{position}\"}}}}");
        let response = Response {
            payload: &payload,
            position,
            error: None,
        };
        group.deliver(response, shared)
    }

    #[test]
    fn a_caught_up_replay_joins_an_execution_not_past_it() {
        let shared = executions();
        let live = execution(&shared, 10, true);
        let (_, mut ours) = member(&shared, &live, "live");
        let replaying = execution(&shared, 12, false);
        let (joined, mut theirs) = member(&shared, &replaying, "replayed");

        assert_eq!(settle_at(&shared, &replaying, 0), Settled::HandedOver);
        assert!(Arc::ptr_eq(&joined.seat.group(), &live));
        assert!(lock(&replaying.members).is_empty());
        // What it had from its own replay is passed over; the rest comes.
        for position in 11..=13 {
            change(&live, &shared, position);
        }
        let cursor = |sent: Vec<Value>| -> Vec<Value> {
            sent.iter()
                .map(|m| m["payload"]["data"]["cursor"].clone())
                .collect()
        };
        assert_eq!(
            cursor(sent(&mut ours)),
            [json!("11"), json!("12"), json!("13")]
        );
        assert_eq!(cursor(sent(&mut theirs)), [json!("13")]);
        // It leaves the execution it was handed to.
        shared.leave(&joined);
        assert_eq!(lock(&live.members).len(), 1);
    }

    /// Settles `group` as if its last response were at `delivered`.
    fn settle_at(shared: &Shared, group: &Arc<Group>, delivered: i64) -> Settled {
        group.delivered.store(delivered, Ordering::Release);
        shared.settle(group)
    }

    fn cursors(queued: &mut mpsc::UnboundedReceiver<Out>) -> Vec<Value> {
        sent(queued)
            .iter()
            .map(|m| m["payload"]["data"]["cursor"].clone())
            .collect()
    }

    fn active(shared: &Shared) -> i64 {
        shared.metrics.subscriptions_active("catalogChanged")
    }

    #[test]
    fn a_replay_behind_the_execution_gets_a_place_that_holds_what_it_misses() {
        let shared = executions();
        let live = execution(&shared, 15, true);
        let replaying = execution(&shared, 12, false);
        let (joined, mut queued) = member(&shared, &replaying, "replayed");
        assert_eq!(active(&shared), 1);
        // The other has handed out through 15: a place that holds.
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::NotYet);
        assert_eq!(active(&shared), 1, "counted once");
        // On a quiet route only the live feed's position would move it on.
        let asked = replaying.run.asked.notified().now_or_never();
        assert!(asked.is_some(), "the replay is asked for its position");
        change(&live, &shared, 16);
        assert!(cursors(&mut queued).is_empty(), "held");
        // The replay hands out what it had, then takes its place.
        for position in 13..=15 {
            change(&replaying, &shared, position);
        }
        assert_eq!(settle_at(&shared, &replaying, 14), Settled::NotYet);
        assert_eq!(settle_at(&shared, &replaying, 15), Settled::HandedOver);
        assert!(Arc::ptr_eq(&joined.seat.group(), &live));
        change(&live, &shared, 17);
        let got = cursors(&mut queued);
        assert_eq!(got, ["13", "14", "15", "16", "17"].map(|c| json!(c)));
        assert_eq!(active(&shared), 1);
        shared.leave(&joined);
        assert!(lock(&live.members).is_empty());
        assert_eq!(active(&shared), 0);
    }

    #[test]
    fn a_place_that_holds_too_much_is_given_up_and_tried_again() {
        let shared = executions();
        let live = execution(&shared, 15, true);
        let replaying = execution(&shared, 12, false);
        let (joined, mut queued) = member(&shared, &replaying, "replayed");
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::NotYet);
        // More than the buffer (16) while the replay stays behind.
        for position in 16..=40 {
            handed(&live, &shared, position);
        }
        assert!(lock(&live.members).is_empty(), "the place is given up");
        assert_eq!(settle_at(&shared, &replaying, 15), Settled::NotYet);
        assert!(lock(&replaying.handing_to).is_none());
        // Tried again, behind what the other has now.
        assert_eq!(settle_at(&shared, &replaying, 15), Settled::NotYet);
        assert_eq!(settle_at(&shared, &replaying, 40), Settled::HandedOver);
        assert!(Arc::ptr_eq(&joined.seat.group(), &live));
        assert!(cursors(&mut queued).is_empty());
    }

    #[test]
    fn a_subscription_that_leaves_during_a_hand_over_leaves_both() {
        let shared = executions();
        let live = execution(&shared, 15, true);
        let replaying = execution(&shared, 12, false);
        let (joined, _queued) = member(&shared, &replaying, "replayed");
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::NotYet);
        assert_eq!(lock(&live.members).len(), 1);
        shared.leave(&joined);
        assert!(lock(&live.members).is_empty());
        assert!(lock(&replaying.members).is_empty());
    }

    #[test]
    fn a_replay_not_caught_up_or_alone_stays_or_is_listed() {
        let shared = executions();
        let replaying = execution(&shared, 12, false);
        let _member = member(&shared, &replaying, "replayed");
        replaying.run.following.store(false, Ordering::Release);
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::NotYet);
        replaying.run.following.store(true, Ordering::Release);
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::Listed);
        let key = lock(&replaying.key).clone();
        let listed = lock(&shared.groups).get(&key).cloned().expect("listed");
        assert!(Arc::ptr_eq(&listed, &replaying));
    }

    #[test]
    fn an_error_before_what_the_replay_had_carries_its_cursor() {
        let shared = executions();
        let live = execution(&shared, 10, true);
        let replaying = execution(&shared, 12, false);
        let (_, mut queued) = member(&shared, &replaying, "replayed");
        assert_eq!(settle_at(&shared, &replaying, 0), Settled::HandedOver);
        let error = async_graphql::Response::from_errors(vec![{
            let mut e = async_graphql::ServerError::new(
                "the server is shutting down; subscribe again with after: \"11\"",
                None,
            );
            e.extensions
                .get_or_insert_with(Default::default)
                .set("cursor", "11");
            e
        }]);
        let payload = serde_json::to_string(&error).expect("JSON");
        let response = Response {
            payload: &payload,
            position: 11,
            error: Some(&error),
        };
        assert!(live.deliver(response, &shared));
        let sent = sent(&mut queued);
        let error = &sent[0]["payload"]["errors"][0];
        assert_eq!(error["extensions"]["cursor"], "12", "{error}");
        let message = error["message"].as_str().expect("a message");
        assert!(message.ends_with("after: \"12\""), "{message}");
    }

    #[test]
    fn anything_else_runs_on_its_own() {
        let unknown = "subscription { nothing { cursor } }";
        assert_eq!(field(unknown, None, json!({})), None);
        let query = "query { catalogChanged(storeId: \"x\") { cursor } }";
        assert_eq!(field(query, None, json!({})), None);
        let two = "subscription { a: catalogChanged(storeId: \"x\") { cursor } b: orderUpdated(orderId: \"y\") { cursor } }";
        assert_eq!(field(two, None, json!({})), None);
        let directive =
            "subscription { catalogChanged(storeId: \"x\") @skip(if: false) { cursor } }";
        assert_eq!(field(directive, None, json!({})), None);
        let spread = "subscription { ...F } fragment F on Subscription { catalogChanged(storeId: \"x\") { cursor } }";
        assert_eq!(field(spread, None, json!({})), None);
        let named = "subscription A { catalogChanged(storeId: \"x\") { cursor } } subscription B { orderUpdated(orderId: \"y\") { cursor } }";
        assert_eq!(field(named, None, json!({})), None);
        assert_eq!(field(named, Some("B"), json!({})), Some("orderUpdated"));
    }
}
