//! One websocket connection: the GraphQL protocol (graphql-transport-ws, or
//! the legacy graphql-ws) between the socket and the schema, guarded:
//! - `connection_init` must come within the init timeout (else close 4408),
//!   and before any subscribe (else close 4401);
//! - its token (`{"authorization": "Bearer ..."}`, else the upgrade
//!   request's header) must be valid (else close 4403), and the socket is
//!   closed with 4403 when it expires: the client reconnects with a fresh
//!   token and resumes each subscription from its last cursor;
//! - one identity (or one address without a token) holds at most so many
//!   sockets (else close 4429);
//! - a subscription id already in use closes the socket (4409), as does
//!   one longer than 128 bytes (4400), as does (on graphql-transport-ws)
//!   a message that is not one of the protocol's;
//! - past the limit of subscriptions per socket, a subscribe is refused on
//!   its own (an `error` for its id) and the others go on;
//! - when the gateway stops, each subscription ends with an error carrying
//!   its cursor (see `follow`), and the socket closes with 1001.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message as WsFrame, WebSocket};
use futures_util::{SinkExt, StreamExt};
use mallbots_contracts::ErrorCode;
use mallbots_platform::Shutdown;
use serde_json::{Value, json};
// Its unbounded channel allocates per message, not a block of slots up
// front: an idle socket holds two of them.
use futures_channel::mpsc;

use crate::clients::SocketSlot;
use crate::clients::{RateLimits, SocketCounts};
use crate::graphql::{MallSchema, RequestContext};
use crate::identity::{Auth, Identity};
use crate::shared::{Joined, Out, Outbox, Shared, Subscribe};

/// What a client may hold open on one socket.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub init_timeout: Duration,
    pub max_subscriptions: usize,
}

/// How long a closing socket passes on what its subscriptions say last
/// (their cursors), once they have gone quiet for [`FLUSH_QUIET`].
const FLUSH_AT_MOST: Duration = Duration::from_secs(1);
const FLUSH_QUIET: Duration = Duration::from_millis(100);

/// The most shared messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Close codes of the graphql-transport-ws protocol (4429, too many
/// sockets, is ours: the protocol's own 4429 is "too many inits").
const BAD_REQUEST: u16 = 4400;
/// What async-graphql closes with on a message it cannot read.
const UNREADABLE: u16 = 1002;
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
const INIT_TIMEOUT: u16 = 4408;
const DUPLICATE_ID: u16 = 4409;
const TOO_MANY: u16 = 4429;

/// What a socket is admitted with: who may open it, and what it was
/// opened with.
pub struct Door {
    pub auth: Arc<Auth>,
    pub sockets: Arc<SocketCounts>,
    pub client: IpAddr,
    /// The upgrade request's `Authorization` header.
    pub header: Option<String>,
    /// The upgrade request's context; its identity is set at init.
    pub context: RequestContext,
    /// The limits a subscription's document is held to.
    pub settings: Arc<crate::config::Settings>,
    /// Every operation on the socket counts against its client's rate, as
    /// a request over HTTP does.
    pub rate: Arc<RateLimits>,
    /// The executions subscriptions share.
    pub shared: Arc<Shared>,
}

/// What the guard knows of the conversation.
struct Conversation {
    initialized: bool,
    /// Subscriptions the client started and that have not ended.
    active: HashSet<String>,
    /// Who the client proved to be at `connection_init`.
    identity: Option<Identity>,
    /// This socket's place among its client's sockets.
    slot: Option<SocketSlot>,
    /// Where shared executions queue this socket's messages.
    outbox: Arc<Outbox>,
    /// The subscriptions served by a shared execution, by id.
    joined: HashMap<String, Joined>,
    /// Ids the client completed whose end async-graphql still owes (its
    /// `complete`, or an `error` on its way): graphql-transport-ws sends
    /// nothing more for such an id, so that end is not passed on.
    muted: HashSet<String>,
}

impl Conversation {
    fn new(outbox: Arc<Outbox>) -> Self {
        Conversation {
            initialized: false,
            active: HashSet::new(),
            identity: None,
            slot: None,
            outbox,
            joined: HashMap::new(),
            muted: HashSet::new(),
        }
    }

    /// Notes a shared message the socket is about to write; none when it
    /// is for a joining the client completed already (nothing more is sent
    /// for it, and its id may be in use again).
    fn taken(&mut self, out: Out) -> Option<WsFrame> {
        self.outbox.taken(&out);
        // A ticket is one joining's: found, it is still the id's joining.
        if let Some(ticket) = out.of
            && !self.joined.values().any(|j| j.ticket == ticket)
        {
            return None;
        }
        if let Some(id) = out.ends {
            self.active.remove(&id);
            self.joined.remove(&id);
        }
        Some(out.frame)
    }
}

/// Leaves every shared execution when the socket ends, however it ends.
struct Leaving {
    conversation: Arc<Mutex<Conversation>>,
    shared: Arc<Shared>,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        let mut c = lock(&self.conversation);
        for (_, joined) in c.joined.drain() {
            self.shared.leave(&joined);
        }
    }
}

/// Checks a `connection_init`'s token and the client's sockets: the close
/// frame that refuses it, or nothing (admitted, noted in `c`).
fn admit(payload: &Value, door: &Door, c: &mut Conversation) -> Option<WsFrame> {
    let given = payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"));
    if given.is_some_and(|v| !v.is_string()) {
        return Some(close(
            FORBIDDEN,
            "Forbidden: authorization must be \"Bearer <token>\"",
        ));
    }
    let token = given.and_then(Value::as_str).or(door.header.as_deref());
    let identity = match door.auth.identify(token) {
        Ok(identity) => identity,
        Err(err) => return Some(close(FORBIDDEN, &format!("Forbidden: {err}"))),
    };
    let key = crate::clients::key(&identity, door.client);
    let Some(slot) = door.sockets.admit(key) else {
        let max = door.sockets.max();
        return Some(close(
            TOO_MANY,
            &format!("at most {max} open connections per client"),
        ));
    };
    c.identity = Some(identity);
    c.slot = Some(slot);
    None
}

fn lock(c: &Mutex<Conversation>) -> std::sync::MutexGuard<'_, Conversation> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The longest subscription id taken: every message of its subscription
/// carries it (a client's long ids would multiply what it holds queued).
const MAX_ID_BYTES: usize = 128;

/// The longest close reason a frame carries (a control frame's payload is
/// at most 125 bytes, two of them the code).
const MAX_REASON: usize = 123;

fn close(code: u16, reason: &str) -> WsFrame {
    WsFrame::Close(Some(CloseFrame {
        code,
        reason: reason[..reason.floor_char_boundary(MAX_REASON)].into(),
    }))
}

/// The guard's look at a client frame: passed on (`Some`), or answered by
/// the guard itself through `say` (`None`).
fn inspect(
    frame: WsFrame,
    conversation: &Mutex<Conversation>,
    door: &Door,
    limits: Limits,
    say: &mpsc::UnboundedSender<WsFrame>,
) -> Option<WsFrame> {
    let WsFrame::Text(text) = &frame else {
        return Some(frame);
    };
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Some(frame); // the protocol answers malformed messages itself
    };
    let id = message["id"].as_str().map(str::to_owned);
    let mut c = lock(conversation);
    match (message["type"].as_str(), id) {
        (Some("connection_init"), _) if !c.initialized => {
            if let Some(refusal) = admit(&message["payload"], door, &mut c) {
                let _ = say.unbounded_send(refusal);
                return None;
            }
            c.initialized = true;
        }
        // `start` is the legacy protocol's subscribe; some clients send it
        // on graphql-transport-ws too, and it is served there.
        (Some("subscribe" | "start"), Some(id)) => {
            if !c.initialized {
                let _ = say.unbounded_send(close(UNAUTHORIZED, "Unauthorized"));
                return None;
            }
            if id.len() > MAX_ID_BYTES {
                let _ = say.unbounded_send(close(
                    BAD_REQUEST,
                    &format!("a subscription id is at most {MAX_ID_BYTES} bytes"),
                ));
                return None;
            }
            if c.active.contains(&id) {
                let _ = say.unbounded_send(close(
                    DUPLICATE_ID,
                    &format!("Subscriber for {id} already exists"),
                ));
                return None;
            }
            let client = crate::clients::key(
                c.identity.as_ref().unwrap_or(&Identity::ANONYMOUS),
                door.client,
            );
            if let Err(wait) = door.rate.check(&client) {
                let _ = say.unbounded_send(error_frame(
                    &id,
                    json!({
                        "message": format!("too many requests: retry in {} ms", wait.as_millis()),
                        "extensions": {
                            "code": "RATE_LIMITED",
                            "retryAfterMs": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        },
                    }),
                ));
                return None;
            }
            // Measured before async-graphql walks it (see limits::oversized).
            let payload = &message["payload"];
            let (oversized, fields, through_fragment, shareable) = payload["query"]
                .as_str()
                .and_then(|q| {
                    let measure = || {
                        let document = async_graphql::parser::parse_query(q).ok()?;
                        let oversized = crate::limits::oversized(&document, &door.settings);
                        let fields = crate::limits::subscription_fields_over_one(&document);
                        let fragment = crate::limits::subscription_root_fragment(&document);
                        let shareable = door.shared.shareable(&document, payload);
                        Some((oversized, fields, fragment, shareable))
                    };
                    crate::limits::off_the_workers(q.len(), measure)
                })
                .unwrap_or_default();
            if let Some((why, limit)) = oversized {
                let _ =
                    say.unbounded_send(error_frame(&id, crate::limits::too_complex(&why, limit)));
                return None;
            }
            if let Some(fields) = fields {
                let fields = match fields >= crate::limits::ROOT_FIELDS_COUNTED {
                    true => format!("{fields} or more"),
                    false => fields.to_string(),
                };
                let _ = say.unbounded_send(error_frame(&id, json!({
                        "message": format!("a subscription selects exactly one top-level field; this one selects {fields}: subscribe to each on its own"),
                        "extensions": { "code": ErrorCode::GraphqlValidationFailed.as_str() },
                    })));
                return None;
            }
            if through_fragment {
                let _ = say.unbounded_send(error_frame(&id, json!({
                        "message": "select the subscription's field directly, not through a fragment",
                        "extensions": { "code": ErrorCode::GraphqlValidationFailed.as_str() },
                    })));
                return None;
            }
            if c.active.len() >= limits.max_subscriptions {
                let max = limits.max_subscriptions;
                let _ = say.unbounded_send(error_frame(&id, json!({
                        "message": format!("at most {max} subscriptions per connection: complete one, or open another connection"),
                        "extensions": { "code": "RATE_LIMITED", "limit": max },
                    })));
                return None;
            }
            if let Some(shareable) = shareable {
                let context = crate::graphql::RequestContext {
                    identity: c.identity.clone().unwrap_or(Identity::ANONYMOUS),
                    ..door.context.clone()
                };
                let subscribe = Subscribe {
                    payload,
                    shareable,
                    context,
                };
                let outbox = c.outbox.clone();
                if let Some(joined) = door.shared.join(subscribe, &outbox, &id) {
                    c.active.insert(id.clone());
                    c.joined.insert(id, joined);
                    return None;
                }
            }
            c.active.insert(id);
        }
        (Some(kind @ ("complete" | "stop")), Some(id)) => {
            // graphql-transport-ws sends nothing more for an id the client
            // completed; the legacy protocol's servers answered a `stop`
            // with `complete`.
            let echoed = kind == "stop";
            let was_active = c.active.remove(&id);
            if let Some(joined) = c.joined.remove(&id) {
                door.shared.leave(&joined);
                if echoed {
                    c.outbox.complete(&id);
                }
                return None;
            }
            if was_active && !echoed {
                c.muted.insert(id);
            }
        }
        _ => {}
    }
    Some(frame)
}

/// The `error` message refusing subscription `id` with `error`.
fn error_frame(id: &str, error: Value) -> WsFrame {
    let refusal = json!({ "type": "error", "id": id, "payload": [error] });
    WsFrame::Text(refusal.to_string().into())
}

/// The close frame for a frame the socket could not read. The websocket
/// library says which in its error's words only: a message over the size
/// limit (1009), text that is not UTF-8 (1007), anything else (1002).
fn refusal(error: &str) -> WsFrame {
    if error.contains("too long") || error.contains("too big") {
        close(
            axum::extract::ws::close_code::SIZE,
            "the message is larger than this server takes",
        )
    } else if error.contains("UTF-8") || error.contains("utf-8") {
        close(
            axum::extract::ws::close_code::INVALID,
            "text that is not UTF-8",
        )
    } else {
        close(
            axum::extract::ws::close_code::PROTOCOL,
            "a frame that breaks the protocol",
        )
    }
}

/// Notes a subscription async-graphql ended; false for the end of one the
/// client completed, which is not passed on.
fn ended(frame: &WsFrame, conversation: &Mutex<Conversation>) -> bool {
    let WsFrame::Text(text) = frame else {
        return true;
    };
    // Only the server's ends need reading; the rest passes untouched.
    if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
        return true;
    }
    if let Ok(message) = serde_json::from_str::<Value>(text)
        && matches!(message["type"].as_str(), Some("complete" | "error"))
        && let Some(id) = message["id"].as_str()
    {
        let mut c = lock(conversation);
        // The first end after the client's `complete` is that
        // subscription's, whichever it is (a `complete`, or an `error` that
        // was on its way): anything later is a new subscription's.
        if c.muted.remove(id) {
            return false;
        }
        // async-graphql ends only its own subscriptions: an id a shared
        // execution serves now (reused after a `complete`) stays.
        if !c.joined.contains_key(id) {
            c.active.remove(id);
        }
    }
    true
}

pub async fn serve(
    socket: WebSocket,
    schema: MallSchema,
    protocol: WebSocketProtocols,
    door: Door,
    limits: Limits,
    mut stopping: Shutdown,
) {
    let (outbox, mut queued) = Outbox::new(protocol);
    let conversation = Arc::new(Mutex::new(Conversation::new(outbox)));
    let _leaving = Leaving {
        conversation: conversation.clone(),
        shared: door.shared.clone(),
    };
    let (say, mut said) = mpsc::unbounded();
    let (mut sink, stream) = socket.split();
    let guard = conversation.clone();
    let mut context = door.context.clone();
    let refuse = say.clone();
    let input = stream
        .take_while(move |frame| {
            // A frame the socket could not take ends the conversation, with
            // the close code that says why.
            if let Err(err) = frame {
                let _ = refuse.unbounded_send(refusal(&err.to_string()));
            }
            std::future::ready(frame.is_ok())
        })
        .filter_map(move |frame| {
            let passed = match frame {
                Ok(frame @ (WsFrame::Text(_) | WsFrame::Binary(_))) => {
                    inspect(frame, &guard, &door, limits, &say).map(WsFrame::into_data)
                }
                _ => None,
            };
            std::future::ready(passed)
        });
    // The guard has admitted the init (and noted its identity) before the
    // protocol sees it.
    let admitted = conversation.clone();
    let on_init = move |_payload: Value| async move {
        context.identity = lock(&admitted)
            .identity
            .clone()
            .unwrap_or(Identity::ANONYMOUS);
        let mut data = Data::default();
        data.insert(context);
        Ok(data)
    };
    let output = async_graphql::http::WebSocket::new(schema, input, protocol)
        .on_connection_init(on_init)
        .map(move |message| match message {
            WsMessage::Text(text) => WsFrame::Text(text.into()),
            // async-graphql closes with 1002 on a message it cannot read;
            // graphql-transport-ws asks for 4400 there.
            WsMessage::Close(UNREADABLE, reason) if protocol == WebSocketProtocols::GraphQLWS => {
                close(BAD_REQUEST, &reason)
            }
            WsMessage::Close(code, reason) => close(code, &reason),
        });
    futures_util::pin_mut!(output);
    let init_by = tokio::time::Instant::now() + limits.init_timeout;
    // Shared executions' messages wait for the protocol's acknowledgement.
    let mut acked = false;
    loop {
        let (waiting_for_init, expires_in) = {
            let c = lock(&conversation);
            let expires = c.identity.as_ref().and_then(Identity::remaining);
            (!c.initialized, expires)
        };
        let frame = tokio::select! {
            frame = output.next() => match frame {
                Some(frame) => {
                    // async-graphql's ends free their ids (the guard's own
                    // refusals end nothing: a refused id may be in use
                    // again already), and its ack opens the shared queue.
                    if !ended(&frame, &conversation) {
                        continue;
                    }
                    acked = acked
                        || matches!(&frame, WsFrame::Text(t) if t.contains("\"connection_ack\""));
                    frame
                }
                None => {
                    // The client's side ended: pass on why, when we know.
                    if let Ok(frame) = said.try_recv() {
                        let _ = sink.send(frame).await;
                    }
                    return;
                }
            },
            Some(frame) = said.next() => frame,
            Some(out) = queued.next(), if acked => {
                // Whatever else is waiting goes out with it, in one flush.
                let mut next = Some(out);
                let mut written = 0;
                while let Some(out) = next.take() {
                    let taken = lock(&conversation).taken(out);
                    if let Some(frame) = taken
                        && sink.feed(frame).await.is_err()
                    {
                        return;
                    }
                    written += 1;
                    if written < WRITE_BATCH {
                        next = queued.try_recv().ok();
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                continue;
            }
            _ = tokio::time::sleep_until(init_by), if waiting_for_init => {
                close(INIT_TIMEOUT, "Connection initialisation timeout")
            }
            _ = tokio::time::sleep(expires_in.unwrap_or_default()), if expires_in.is_some() => {
                close(FORBIDDEN, "Forbidden: the token has expired; reconnect with a fresh one, resume from your cursors")
            }
            _ = stopping.wait() => break,
        };
        let closing = matches!(frame, WsFrame::Close(_));
        if sink.send(frame).await.is_err() || closing {
            return;
        }
    }
    let until = tokio::time::Instant::now() + FLUSH_AT_MOST;
    let mut output_ended = false;
    loop {
        let quiet = (tokio::time::Instant::now() + FLUSH_QUIET).min(until);
        let frame = tokio::select! {
            frame = output.next(), if !output_ended => match frame {
                Some(frame) if ended(&frame, &conversation) => frame,
                Some(_) => continue,
                None => {
                    output_ended = true;
                    continue;
                }
            },
            Some(out) = queued.next() => match lock(&conversation).taken(out) {
                Some(frame) => frame,
                None => continue,
            },
            _ = tokio::time::sleep_until(quiet) => break,
        };
        if sink.send(frame).await.is_err() {
            return;
        }
    }
    let _ = sink
        .send(close(
            axum::extract::ws::close_code::AWAY,
            "the server is shutting down; subscribe again with your last cursor",
        ))
        .await;
}
