//! Subscriptions executed once for every socket that asks for the same one.
//!
//! Sockets that subscribe to the same field with the same document,
//! variables and actor, from now on (no `after`), join one execution: each
//! change is resolved and serialized once, and only the message's envelope
//! (its subscription id) is written per socket. A subscription with `after`
//! replays from its own cursor and runs on its own, as does anything this
//! module does not recognise (async-graphql serves it, and answers errors).
//!
//! Each socket keeps its own contract: it counts in `/metrics`, and one that
//! cannot keep up (its queue reaches the subscription buffer) is closed on
//! its own with RATE_LIMITED and the cursor of the last change it was given,
//! while the others go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use async_graphql::http::WebSocketProtocols;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, TypeKind,
    TypeSystemDefinition,
};
use async_graphql::{Request, Value as ConstValue};
use axum::extract::ws::Message as WsFrame;
use futures_channel::mpsc;
use futures_util::StreamExt;
use mallbots_contracts::{Actor, ErrorCode};
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::graphql::follow::SharedRun;
use crate::graphql::{MallSchema, RequestContext};
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
    fields: &'static [&'static str],
    groups: Mutex<HashMap<Key, Arc<Group>>>,
    tickets: std::sync::atomic::AtomicU64,
}

/// One execution and the sockets it serves.
pub struct Group {
    /// Where the registry has it (it moves once, to [`Whose::Anyone`]).
    key: Mutex<Key>,
    field: &'static str,
    run: Arc<SharedRun>,
    members: Mutex<Vec<Member>>,
    task: OnceLock<AbortHandle>,
}

struct Member {
    outbox: Arc<Outbox>,
    id: String,
    /// The message envelope up to its payload: `{"type":"next","id":…,"payload":`.
    prefix: Arc<str>,
    /// Which joining of `id` this is (an id is free again once completed).
    ticket: u64,
    /// The cursor of the last change handed to this socket.
    last: i64,
    _counted: Held,
}

/// A subscription's place in a shared execution.
pub struct Joined {
    pub group: Arc<Group>,
    pub ticket: u64,
}

/// A message a socket's shared subscriptions queue for it, in order.
pub struct Out {
    pub frame: WsFrame,
    /// The joining it ends, when it ends one (the socket forgets the id).
    pub ends: Option<(String, u64)>,
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
    pub(crate) field: &'static str,
    pub(crate) context: RequestContext,
}

impl Shared {
    pub fn new(schema: MallSchema, metrics: Arc<Metrics>, buffer: usize) -> Arc<Self> {
        let fields = subscription_fields(&schema);
        Arc::new(Shared {
            schema,
            metrics,
            buffer,
            fields,
            groups: Mutex::new(HashMap::new()),
            tickets: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The field `payload` (a subscribe's) asks for when it can be shared:
    /// one field of the subscription type from now on, with no directive.
    pub(crate) fn shareable(
        &self,
        document: &ExecutableDocument,
        payload: &Value,
    ) -> Option<&'static str> {
        if payload.get("extensions").is_some_and(|e| !e.is_null()) {
            return None;
        }
        let operation_name = payload["operationName"].as_str();
        shareable(document, operation_name, &payload["variables"], self.fields)
    }

    /// Joins `outbox`'s subscription `id` to the execution of its kind,
    /// started now if there is none.
    pub fn join(
        self: &Arc<Self>,
        subscribe: Subscribe<'_>,
        outbox: &Arc<Outbox>,
        id: &str,
    ) -> Option<Joined> {
        let payload = subscribe.payload;
        let anyone = Key {
            query: payload["query"].as_str()?.to_owned(),
            operation_name: payload["operationName"].as_str().map(str::to_owned),
            variables: payload["variables"].to_string(),
            whose: Whose::Anyone,
        };
        let key = Key {
            whose: Whose::Actor(subscribe.context.identity.actor),
            ..anyone.clone()
        };
        let mut groups = lock(&self.groups);
        let found = groups.get(&anyone).or_else(|| groups.get(&key)).cloned();
        let group = match found {
            Some(group) => group,
            None => {
                let request: Request = serde_json::from_value(payload.clone()).ok()?;
                let run = Arc::new(SharedRun::default());
                let request = request.data(subscribe.context).data(run.clone());
                let group = Arc::new(Group {
                    key: Mutex::new(key.clone()),
                    field: subscribe.field,
                    run,
                    members: Mutex::new(Vec::new()),
                    task: OnceLock::new(),
                });
                let task = tokio::spawn(execute(self.clone(), group.clone(), request));
                let _ = group.task.set(task.abort_handle());
                groups.insert(key, group.clone());
                group
            }
        };
        let kind = match outbox.protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        };
        let quoted = Value::from(id).to_string();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        lock(&group.members).push(Member {
            outbox: outbox.clone(),
            id: id.to_owned(),
            prefix: format!("{{\"type\":\"{kind}\",\"id\":{quoted},\"payload\":").into(),
            ticket,
            last: group.run.position.load(Ordering::Acquire),
            _counted: self.metrics.subscription(group.field),
        });
        Some(Joined { group, ticket })
    }

    /// Takes a subscription out of its execution, which stops with its
    /// last member.
    pub fn leave(&self, joined: &Joined) {
        let mut groups = lock(&self.groups);
        let group = &joined.group;
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

fn forget(groups: &mut HashMap<Key, Arc<Group>>, group: &Arc<Group>) {
    let key = lock(&group.key);
    if groups.get(&*key).is_some_and(|g| Arc::ptr_eq(g, group)) {
        groups.remove(&*key);
    }
}

/// Runs `group`'s execution: each response serialized once and handed to
/// every member; at its end, each member's subscription completes.
async fn execute(shared: Arc<Shared>, group: Arc<Group>, request: Request) {
    // Counted while it runs (a socket may hold its group a while longer).
    let _counted = shared.metrics.execution(group.field);
    let mut responses = shared.schema.execute_stream(request);
    // The first poll runs the resolver, which says who its items are for.
    let mut first = Some(futures_util::poll!(responses.next()));
    loop {
        shared.open_to_anyone(&group);
        let response = match first.take() {
            Some(Poll::Ready(response)) => response,
            _ => responses.next().await,
        };
        let Some(response) = response else { break };
        let payload = match serde_json::to_string(&response) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(field = group.field, %err, "a subscription's response cannot be serialized");
                continue;
            }
        };
        // An error may be the last word (a refused subscription): later
        // subscribers get an execution of their own.
        if response.is_err() {
            shared.close(&group);
        }
        if !group.deliver(&payload, &shared) && shared.stop_if_empty(&group) {
            return;
        }
    }
    shared.close(&group);
    for member in lock(&group.members).drain(..) {
        member.end(complete(&member.id));
    }
}

impl Group {
    /// Hands `payload`, the response to the last change, to every member;
    /// false when none is left.
    fn deliver(&self, payload: &str, shared: &Shared) -> bool {
        let position = self.run.position.load(Ordering::Acquire);
        let slow = self.run.closed_slow.swap(false, Ordering::AcqRel);
        let mut members = lock(&self.members);
        if slow {
            shared.metrics.closed_slow(self.field, members.len() as u64);
        }
        // Members whose messages are the same to the byte (same protocol
        // and id: clients often number their subscriptions from 1) share
        // one message.
        let mut built = None;
        members.retain_mut(|m| m.push(payload, &mut built, position, shared, self.field));
        !members.is_empty()
    }
}

impl Member {
    /// Hands the member a response at `position`; false when it is closed
    /// (too slow, or its socket is gone).
    fn push(
        &mut self,
        payload: &str,
        built: &mut Option<(Arc<str>, WsFrame)>,
        position: i64,
        shared: &Shared,
        field: &'static str,
    ) -> bool {
        if self.outbox.tx.is_closed() {
            return false;
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
                ends: None,
            });
            self.end(complete(&self.id));
            return false;
        }
        self.last = position;
        let frame = match built {
            Some((prefix, frame)) if *prefix == self.prefix => frame.clone(),
            _ => {
                let frame = self.message(payload);
                *built = Some((self.prefix.clone(), frame.clone()));
                frame
            }
        };
        self.outbox.send(Out { frame, ends: None })
    }

    /// Queues the last message of this joining, after which the socket
    /// forgets it.
    fn end(&self, frame: WsFrame) {
        self.outbox.send(Out {
            frame,
            ends: Some((self.id.clone(), self.ticket)),
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

/// The field a subscription asks for when it can be shared: one of
/// `fields`, alone at the top of the operation, without directives and
/// without a cursor to replay from.
fn shareable(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Value,
    fields: &[&'static str],
) -> Option<&'static str> {
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
    let name = fields.iter().find(|f| **f == field.name.node.as_str())?;
    let from_cursor = field.arguments.iter().any(|(argument, value)| {
        if argument.node != "after" {
            return false;
        }
        // `after: $a` counts when given (not null) or defaulted.
        let resolved = value.node.clone().into_const_with(|variable| {
            let given = variables
                .get(variable.as_str())
                .is_some_and(|v| !v.is_null());
            let defaulted = operation
                .variable_definitions
                .iter()
                .any(|d| d.node.name.node == variable && d.node.default_value.is_some());
            Ok::<_, std::convert::Infallible>(if given || defaulted {
                ConstValue::Boolean(true)
            } else {
                ConstValue::Null
            })
        });
        resolved.is_ok_and(|v| v != ConstValue::Null)
    });
    (!from_cursor).then_some(*name)
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

    const FIELDS: &[&str] = &["catalogChanged", "orderUpdated"];

    fn field(query: &str, operation: Option<&str>, variables: Value) -> Option<&'static str> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        shareable(&document, operation, &variables, FIELDS)
    }

    #[test]
    fn one_field_from_now_is_shared() {
        let q = "subscription($s: ID!) { catalogChanged(storeId: $s) { cursor } }";
        assert_eq!(field(q, None, json!({ "s": "x" })), Some("catalogChanged"));
        let aliased = "subscription { c: catalogChanged(storeId: \"x\", after: null) { cursor } }";
        assert_eq!(field(aliased, None, json!(null)), Some("catalogChanged"));
    }

    #[test]
    fn a_cursor_to_replay_from_is_not_shared() {
        let q = "subscription($s: ID!, $a: String) { catalogChanged(storeId: $s, after: $a) { cursor } }";
        assert_eq!(field(q, None, json!({ "s": "x", "a": "5" })), None);
        assert_eq!(
            field(q, None, json!({ "s": "x", "a": null })),
            Some("catalogChanged")
        );
        assert_eq!(field(q, None, json!({ "s": "x" })), Some("catalogChanged"));
        let defaulted = "subscription($a: String = \"5\") { catalogChanged(storeId: \"x\", after: $a) { cursor } }";
        assert_eq!(field(defaulted, None, json!({})), None);
        let literal = "subscription { catalogChanged(storeId: \"x\", after: \"5\") { cursor } }";
        assert_eq!(field(literal, None, json!({})), None);
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
