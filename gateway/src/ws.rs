//! One websocket connection: the GraphQL protocol (graphql-transport-ws, or
//! the legacy graphql-ws) between the socket and the schema, guarded:
//! - `connection_init` must come within the init timeout (else close 4408),
//!   and before any subscribe (else close 4401);
//! - a subscription id already in use closes the socket (4409);
//! - past the limit of subscriptions per socket, a subscribe is refused on
//!   its own (an `error` for its id) and the others go on;
//! - when the gateway stops, each subscription ends with an error carrying
//!   its cursor (see `follow`), and the socket closes with 1001.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message as WsFrame, WebSocket};
use futures_util::{SinkExt, StreamExt};
use mallbots_platform::Shutdown;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::graphql::MallSchema;

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

/// Close codes of the graphql-transport-ws protocol.
const UNAUTHORIZED: u16 = 4401;
const INIT_TIMEOUT: u16 = 4408;
const DUPLICATE_ID: u16 = 4409;

/// What the guard knows of the conversation.
#[derive(Default)]
struct Conversation {
    initialized: bool,
    /// Subscriptions the client started and that have not ended.
    active: HashSet<String>,
}

fn lock(c: &Mutex<Conversation>) -> std::sync::MutexGuard<'_, Conversation> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn close(code: u16, reason: &str) -> WsFrame {
    WsFrame::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The guard's look at a client frame: passed on (`Some`), or answered by
/// the guard itself through `say` (`None`).
fn inspect(
    frame: WsFrame,
    conversation: &Mutex<Conversation>,
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
        (Some("connection_init"), _) => c.initialized = true,
        // `start` is the legacy protocol's subscribe; some clients send it
        // on graphql-transport-ws too, and it is served there.
        (Some("subscribe" | "start"), Some(id)) => {
            if !c.initialized {
                let _ = say.send(close(UNAUTHORIZED, "Unauthorized"));
                return None;
            }
            if c.active.contains(&id) {
                let _ = say.send(close(
                    DUPLICATE_ID,
                    &format!("Subscriber for {id} already exists"),
                ));
                return None;
            }
            if c.active.len() >= limits.max_subscriptions {
                let max = limits.max_subscriptions;
                let refusal = json!({
                    "type": "error",
                    "id": id,
                    "payload": [{
                        "message": format!("at most {max} subscriptions per connection: complete one, or open another connection"),
                        "extensions": { "code": "RATE_LIMITED", "limit": max },
                    }],
                });
                let _ = say.send(WsFrame::Text(refusal.to_string().into()));
                return None;
            }
            c.active.insert(id);
        }
        (Some("complete" | "stop"), Some(id)) => {
            c.active.remove(&id);
        }
        _ => {}
    }
    Some(frame)
}

/// Notes a subscription the server ended.
fn ended(frame: &WsFrame, conversation: &Mutex<Conversation>) {
    let WsFrame::Text(text) = frame else { return };
    // Only the server's ends need reading; the rest passes untouched.
    if !(text.contains("\"complete\"") || text.contains("\"error\"")) {
        return;
    }
    if let Ok(message) = serde_json::from_str::<Value>(text)
        && matches!(message["type"].as_str(), Some("complete" | "error"))
        && let Some(id) = message["id"].as_str()
    {
        lock(conversation).active.remove(id);
    }
}

pub async fn serve<F, Fut>(
    socket: WebSocket,
    schema: MallSchema,
    protocol: WebSocketProtocols,
    on_init: F,
    limits: Limits,
    mut stopping: Shutdown,
) where
    F: FnOnce(Value) -> Fut + Send + 'static,
    Fut: Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let conversation = Arc::new(Mutex::new(Conversation::default()));
    let (say, mut said) = mpsc::unbounded_channel();
    let (mut sink, stream) = socket.split();
    let guard = conversation.clone();
    let input = stream
        .take_while(|frame| std::future::ready(frame.is_ok()))
        .filter_map(move |frame| {
            let passed = match frame {
                Ok(frame @ (WsFrame::Text(_) | WsFrame::Binary(_))) => {
                    inspect(frame, &guard, limits, &say).map(WsFrame::into_data)
                }
                _ => None,
            };
            std::future::ready(passed)
        });
    let output = async_graphql::http::WebSocket::new(schema, input, protocol)
        .on_connection_init(on_init)
        .map(|message| match message {
            WsMessage::Text(text) => WsFrame::Text(text.into()),
            WsMessage::Close(code, reason) => close(code, &reason),
        });
    futures_util::pin_mut!(output);
    let init_by = tokio::time::Instant::now() + limits.init_timeout;
    loop {
        let waiting_for_init = !lock(&conversation).initialized;
        let frame = tokio::select! {
            frame = output.next() => match frame {
                Some(frame) => frame,
                None => return,
            },
            Some(frame) = said.recv() => frame,
            _ = tokio::time::sleep_until(init_by), if waiting_for_init => {
                close(INIT_TIMEOUT, "Connection initialisation timeout")
            }
            _ = stopping.wait() => break,
        };
        ended(&frame, &conversation);
        let closing = matches!(frame, WsFrame::Close(_));
        if sink.send(frame).await.is_err() || closing {
            return;
        }
    }
    let until = tokio::time::Instant::now() + FLUSH_AT_MOST;
    loop {
        let quiet = (tokio::time::Instant::now() + FLUSH_QUIET).min(until);
        match tokio::time::timeout_at(quiet, output.next()).await {
            Ok(Some(frame)) => {
                if sink.send(frame).await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let _ = sink
        .send(close(
            axum::extract::ws::close_code::AWAY,
            "the server is shutting down; subscribe again with your last cursor",
        ))
        .await;
}
