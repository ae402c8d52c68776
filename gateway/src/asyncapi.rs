//! The message contracts as an AsyncAPI 3 document: one channel per message
//! type (its exchange and routing key), its payload's JSON Schema generated
//! from the contracts crate, the AMQP properties and headers every message
//! carries, who sends it and which module queues receive it (from the
//! queues' own bindings). Served at `/asyncapi.json`, checked in at
//! `schema/asyncapi.json`; docs/messages.md says what may change within a
//! schema version.

use mallbots_contracts::identity::HEADER_ACTOR;
use mallbots_contracts::{Described, Kind, catalog, module_of};
use mallbots_platform::broker::topic_matches;
use mallbots_platform::envelope::{
    HEADER_CAUSATION_ID, HEADER_IDEMPOTENT, HEADER_POSITION, HEADER_SCHEMA_VERSION,
    HEADER_TIMESTAMP,
};
use mallbots_platform::propagation::{HEADER_TRACEPARENT, HEADER_TRACESTATE};
use mallbots_platform::{Exchange, QueueSpec};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// An AsyncAPI id for a message type: its dots as underscores.
pub fn id_of(message_type: &str) -> String {
    message_type.replace('.', "_")
}

/// The AMQP binding version this document follows.
const AMQP_BINDING: &str = "0.3.0";

fn exchange_of(kind: Kind) -> Option<Exchange> {
    match kind {
        Kind::Command => Some(Exchange::Commands),
        Kind::Event => Some(Exchange::Events),
        Kind::Reply => None,
    }
}

/// The document, pretty-printed as checked in.
pub fn document() -> String {
    let mut text = serde_json::to_string_pretty(&build(&crate::modules::queues()))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

fn build(queues: &[(&'static str, QueueSpec)]) -> Value {
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let (mut channels, mut operations, mut messages) = (Map::new(), Map::new(), Map::new());
    for described in catalog() {
        let id = id_of(described.message_type);
        let payload = described.schema_in(&mut generator);
        messages.insert(id.clone(), message(described, payload.to_value()));
        let Some(exchange) = exchange_of(described.kind()) else {
            channels.insert(id.clone(), reply_channel(&id));
            continue;
        };
        channels.insert(id.clone(), channel(described, exchange, &id, queues));
        operations.insert(format!("send_{id}"), send(described, &id));
        for (module, queue) in queues {
            if receives(queue, exchange, described.message_type) {
                operations.insert(
                    format!("receive_{id}_in_{module}"),
                    json!({
                        "action": "receive",
                        "channel": { "$ref": format!("#/channels/{id}") },
                        "summary": format!("The {module} module handles it, from queue {}.", queue.name),
                        "bindings": { "amqp": { "ack": true, "bindingVersion": AMQP_BINDING } },
                    }),
                );
            }
        }
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert("AmqpHeaders".to_owned(), headers());
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "MallBots messages",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every command, integration event and command reply that MallBots modules exchange over RabbitMQ. A message's body is its payload as JSON. Its AMQP properties carry its type (`type`), id (`message_id`), correlation id (`correlation_id`: the id every message caused by one client request shares), timestamp (seconds) and, on a command, `reply_to`; its headers (AmqpHeaders) carry its schema version, causation, timestamp (RFC 3339) and, when traced, the W3C trace context. Commands go to the topic exchange `mallbots.commands` and events to `mallbots.events`, routed by their type; a reply goes straight to the queue a command names in `reply_to`. Exchange and queue names take AMQP_PREFIX in front. What may change within a schema version: docs/messages.md.",
            "license": { "name": "MIT" },
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "Any RabbitMQ the system is pointed at (AMQP_URL); the embedded mode's in-process broker routes the same way.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages, "schemas": schemas },
    })
}

/// Whether `queue` is bound to what `exchange` routes as `message_type`.
fn receives(queue: &QueueSpec, exchange: Exchange, message_type: &str) -> bool {
    queue
        .bindings
        .iter()
        .any(|b| b.exchange == exchange && topic_matches(&b.pattern, message_type))
}

fn channel(
    described: &Described,
    exchange: Exchange,
    id: &str,
    queues: &[(&'static str, QueueSpec)],
) -> Value {
    let exchange_name = format!("mallbots.{}", exchange.as_str());
    let receivers: Vec<_> = queues
        .iter()
        .filter(|(_, q)| receives(q, exchange, described.message_type))
        .map(|(_, q)| q.name.as_str())
        .collect();
    json!({
        "address": described.message_type,
        "title": described.message_type,
        "description": format!(
            "Routing key `{}` on exchange `{exchange_name}`; queues bound to it: {}.",
            described.message_type,
            if receivers.is_empty() { "none of the modules' (the gateway's live feed, for the read side's notices)".to_owned() } else { receivers.join(", ") }
        ),
        "messages": { id: { "$ref": format!("#/components/messages/{id}") } },
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": { "name": exchange_name, "type": "topic", "durable": true, "autoDelete": false, "vhost": "/" },
                "bindingVersion": AMQP_BINDING,
            }
        },
    })
}

fn reply_channel(id: &str) -> Value {
    json!({
        "address": null,
        "title": "Command replies",
        "description": "The queue a command names in its `reply_to` property (the sender's own, one per gateway process or saga), reached through the default exchange.",
        "messages": { id: { "$ref": format!("#/components/messages/{id}") } },
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": { "name": "{reply_to}", "durable": false, "exclusive": true, "autoDelete": true, "vhost": "/" },
                "bindingVersion": AMQP_BINDING,
            }
        },
    })
}

fn send(described: &Described, id: &str) -> Value {
    let module = module_of(described.message_type);
    let mut operation = json!({
        "action": "send",
        "channel": { "$ref": format!("#/channels/{id}") },
        "bindings": { "amqp": { "deliveryMode": 2, "mandatory": false, "bindingVersion": AMQP_BINDING } },
    });
    if described.kind() == Kind::Command {
        operation["summary"] = json!(format!(
            "Sent by the gateway (a mutation) or the create-order saga; the {module} module answers on the command's reply_to."
        ));
        let reply = id_of(<mallbots_contracts::CommandReply as mallbots_contracts::Message>::TYPE);
        operation["reply"] = json!({
            "channel": { "$ref": format!("#/channels/{reply}") },
            "address": { "location": "$message.header#/reply_to", "description": "The sender's reply queue." },
        });
    } else {
        operation["summary"] = json!(format!(
            "Published by the {module} module, from its outbox, once the change that caused it committed."
        ));
    }
    operation
}

fn message(described: &Described, payload: Value) -> Value {
    let kind = match described.kind() {
        Kind::Command => "command",
        Kind::Event => "event",
        Kind::Reply => "reply",
    };
    json!({
        "name": described.message_type,
        "title": described.message_type,
        "summary": format!("A {kind}, schema version {}.", described.version),
        "contentType": "application/json",
        "headers": { "$ref": "#/components/schemas/AmqpHeaders" },
        "payload": payload,
        "bindings": {
            "amqp": { "messageType": described.message_type, "contentEncoding": "identity", "bindingVersion": AMQP_BINDING }
        },
        "x-schema-version": described.version,
    })
}

/// The AMQP application headers every message carries (its AMQP
/// properties, `message_id`, `type`, `correlation_id`, `timestamp` and
/// `reply_to`, are described by the message bindings).
fn headers() -> Value {
    json!({
        "type": "object",
        "description": "AMQP application headers (all strings).",
        "required": [HEADER_SCHEMA_VERSION, HEADER_CAUSATION_ID, HEADER_TIMESTAMP],
        "properties": {
            HEADER_SCHEMA_VERSION: { "type": "string", "pattern": "^[0-9]+$", "description": "The payload's schema version; a consumer refuses (dead-letters) one it does not read." },
            HEADER_CAUSATION_ID: { "type": "string", "format": "uuid", "description": "The id of the message that caused this one (its own id for a first message)." },
            HEADER_TIMESTAMP: { "type": "string", "format": "date-time", "description": "When it was sent (RFC 3339)." },
            HEADER_POSITION: { "type": "string", "pattern": "^[0-9]+$", "description": "An event's position in its module's event log." },
            HEADER_ACTOR: { "type": "string", "description": "Who caused it: `<role>:<uuid>`." },
            HEADER_IDEMPOTENT: { "type": "string", "description": "Set on a command retried under one id (an idempotency key): its module keeps the reply. Its value names the request (a digest of the command): another request under the same id is refused BAD_USER_INPUT. `1` matches any request." },
            HEADER_TRACEPARENT: { "type": "string", "maxLength": 256, "description": "W3C trace context: the trace and span that sent it (when the sender was traced)." },
            HEADER_TRACESTATE: { "type": "string", "maxLength": 512, "description": "W3C trace state carried with it." },
        },
        "additionalProperties": { "type": "string" },
    })
}
