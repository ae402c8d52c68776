//! RabbitMQ through lapin: durable topology declared idempotently, publisher
//! confirms, manual acks, prefetch, a dead-letter exchange, and a supervised
//! connection: when the broker restarts or the connection drops, a
//! supervisor reconnects with backoff, declares the topology again, and every
//! subscription resumes consuming on the new connection. While disconnected,
//! publishing fails at once ([`BrokerError::Unavailable`]) instead of waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{Acker, DEAD_LETTER_QUEUE, Settle};
use crate::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use crate::{Broker, BrokerError, Delivery, Exchange, QueueSpec, Subscription, WireMessage};

#[derive(Clone, Debug)]
pub struct RabbitConfig {
    pub url: String,
    /// Prepended to every exchange and queue name: several systems (or test
    /// runs) share one vhost without seeing each other's messages.
    pub prefix: String,
    /// Declare durable queues as quorum queues (clustered RabbitMQ).
    pub quorum_queues: bool,
}

impl RabbitConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RabbitConfig {
            url: url.into(),
            prefix: String::new(),
            quorum_queues: false,
        }
    }
}

/// How long a publish may wait for its confirm before it counts as failed.
const CONFIRM_DEADLINE: Duration = Duration::from_secs(5);
/// Reconnect backoff: from the first to the last, doubling.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_LAST: Duration = Duration::from_secs(2);
/// How often the supervisor looks at the connection's state besides its events.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// One connection and its publishing channel (in confirm mode; lapin
/// channels are safe to share between tasks).
struct Session {
    connection: Connection,
    publisher: Channel,
}

impl Session {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// What the broker handle, its supervisor and its subscriptions share.
struct Shared {
    config: RabbitConfig,
    /// The live session; `None` while reconnecting.
    session: watch::Sender<Option<Arc<Session>>>,
    /// Durable queues declared so far: declared again on every new
    /// connection (a broker that lost its data gets its topology back).
    declared: Mutex<Vec<QueueSpec>>,
    /// Why the broker is unreachable, for readiness.
    down_because: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct RabbitBroker {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
}

impl Drop for RabbitBroker {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

const PERSISTENT: u8 = 2;

impl RabbitBroker {
    /// Connects (the first connection must succeed: a wrong URL is reported
    /// at once), then keeps the connection up for as long as the broker lives.
    pub async fn connect(config: RabbitConfig) -> Result<Self, BrokerError> {
        let shared = Arc::new(Shared {
            config,
            session: watch::Sender::new(None),
            declared: Mutex::new(vec![QueueSpec::dead_letters()]),
            down_because: Mutex::new(None),
        });
        let session = shared.open_session().await?;
        shared.session.send_replace(Some(Arc::new(session)));
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Ok(RabbitBroker { shared, supervisor })
    }
}

/// Watches the session; when it dies, reconnects with backoff until it is
/// back (forever: the broker may be down for long).
async fn supervise(shared: Arc<Shared>) {
    loop {
        let Some(session) = shared.session.borrow().clone() else {
            return;
        };
        let mut events = session.connection.events_listener();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        let why = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(lapin::Event::Error(err)) => break err.to_string(),
                    Some(_) => {}
                    None => break "the connection ended".to_owned(),
                },
                _ = tick.tick() => if !session.alive() {
                    break "the connection is not open".to_owned();
                },
            }
        };
        tracing::warn!(reason = %why, "lost the RabbitMQ connection; reconnecting");
        *lock(&shared.down_because) = Some(why);
        shared.session.send_replace(None);
        drop(session);
        let mut backoff = RECONNECT_FIRST;
        let mut tries = 0u32;
        let session = loop {
            tries += 1;
            match shared.open_session().await {
                Ok(session) => break session,
                Err(err) => {
                    if tries == 1 || tries.is_multiple_of(20) {
                        tracing::warn!(error = %err, tries, "RabbitMQ still unreachable");
                    }
                    *lock(&shared.down_because) = Some(err.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_LAST);
                }
            }
        };
        tracing::info!(tries, "reconnected to RabbitMQ; topology declared again");
        *lock(&shared.down_because) = None;
        shared.session.send_replace(Some(Arc::new(session)));
    }
}

impl Shared {
    /// A new connection with its publisher channel and the whole topology
    /// declared (exchanges, then every durable queue declared so far).
    async fn open_session(&self) -> Result<Session, BrokerError> {
        let properties = ConnectionProperties::default().with_connection_name("mallbots".into());
        let connection = Connection::connect(&self.config.url, properties).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.declare_exchanges(&publisher).await?;
        let specs = lock(&self.declared).clone();
        for spec in &specs {
            self.declare_on(&publisher, spec).await?;
        }
        Ok(Session {
            connection,
            publisher,
        })
    }

    /// The live session, or why there is none.
    fn session(&self) -> Result<Arc<Session>, BrokerError> {
        match self.session.borrow().clone() {
            Some(session) if session.alive() => Ok(session),
            _ => Err(BrokerError::Unavailable(
                lock(&self.down_because).clone().map_or_else(
                    || "not connected to RabbitMQ".to_owned(),
                    |why| format!("not connected to RabbitMQ: {why}"),
                ),
            )),
        }
    }

    fn exchange_name(&self, exchange: Exchange) -> String {
        match exchange {
            Exchange::Events => format!("{}mallbots.events", self.config.prefix),
            Exchange::Commands => format!("{}mallbots.commands", self.config.prefix),
            Exchange::DeadLetter => format!("{}mallbots.dead-letter", self.config.prefix),
            Exchange::Queue => String::new(),
        }
    }

    fn queue_name(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    async fn declare_exchanges(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (exchange, kind) in [
            (Exchange::Events, ExchangeKind::Topic),
            (Exchange::Commands, ExchangeKind::Topic),
            (Exchange::DeadLetter, ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(
                    self.exchange_name(exchange).as_str().into(),
                    kind,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Remembers a durable queue, to declare it again on a new connection.
    fn remember(&self, spec: &QueueSpec) {
        if !spec.durable {
            return;
        }
        let mut declared = lock(&self.declared);
        match declared.iter_mut().find(|s| s.name == spec.name) {
            Some(known) => {
                for binding in &spec.bindings {
                    if !known.bindings.contains(binding) {
                        known.bindings.push(binding.clone());
                    }
                }
            }
            None => declared.push(spec.clone()),
        }
    }
    async fn declare_on(&self, channel: &Channel, spec: &QueueSpec) -> Result<(), BrokerError> {
        let name = self.queue_name(&spec.name);
        let mut arguments = FieldTable::default();
        if spec.durable && spec.name != DEAD_LETTER_QUEUE {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.exchange_name(Exchange::DeadLetter).into()),
            );
        }
        if spec.durable && self.config.quorum_queues {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: spec.durable,
                    auto_delete: !spec.durable,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await?;
        let mut bindings = spec.bindings.clone();
        if spec.name == DEAD_LETTER_QUEUE {
            bindings.push(crate::Binding {
                exchange: Exchange::DeadLetter,
                pattern: "#".into(),
            });
        }
        for binding in bindings {
            if binding.exchange == Exchange::Queue {
                continue; // the default exchange routes by queue name already
            }
            channel
                .queue_bind(
                    name.as_str().into(),
                    self.exchange_name(binding.exchange).as_str().into(),
                    binding.pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn properties(&self, message: &WireMessage) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in &message.headers {
            headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
        }
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_headers(headers);
        if let Some(id) = &message.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        if let Some(t) = &message.message_type {
            props = props.with_type(t.as_str().into());
        }
        if let Some(ts) = message.timestamp {
            props = props.with_timestamp(ts);
        }
        if let Some(c) = &message.correlation_id {
            props = props.with_correlation_id(c.as_str().into());
        }
        if let Some(ttl) = message.ttl_ms {
            props = props.with_expiration(ttl.to_string().as_str().into());
        }
        if let Some(r) = &message.reply_to {
            props = props.with_reply_to(self.queue_name(r).as_str().into());
        }
        props
    }

    async fn start_publish(
        &self,
        session: &Session,
        exchange: Exchange,
        routing_key: &str,
        message: &WireMessage,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let key = match exchange {
            Exchange::Queue => self.queue_name(routing_key),
            _ => routing_key.to_owned(),
        };
        session
            .publisher
            .basic_publish(
                self.exchange_name(exchange).as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                self.properties(message),
            )
            .await
    }
}

fn confirmed(confirmation: lapin::Confirmation) -> Result<(), BrokerError> {
    if confirmation.is_nack() {
        Err(BrokerError::Nacked("publisher confirm was a nack".into()))
    } else {
        Ok(())
    }
}

/// Waits, bounded, for a publisher confirm.
async fn confirm(pending: lapin::PublisherConfirm) -> Result<(), BrokerError> {
    match tokio::time::timeout(CONFIRM_DEADLINE, pending).await {
        Ok(Ok(confirmation)) => confirmed(confirmation),
        Ok(Err(err)) => Err(BrokerError::Unconfirmed(err.to_string())),
        Err(_) => Err(BrokerError::Unconfirmed(format!(
            "no confirm within {} s",
            CONFIRM_DEADLINE.as_secs()
        ))),
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        let session = self.shared.session()?;
        let channel = session.connection.create_channel().await?;
        let declared = self.shared.declare_on(&channel, spec).await;
        let _ = channel.close(200, "declared".into()).await;
        if declared.is_ok() {
            self.shared.remember(spec);
        }
        declared
    }

    async fn consume(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>, BrokerError> {
        // The first consumer opens here, so a wrong spec fails now and the
        // queue exists once this returns; the pump keeps it going after.
        let session = self.shared.session()?;
        let open = open_consumer(&self.shared, &session, spec).await?;
        self.shared.remember(spec);
        // Room for every delivery the prefetch lets in, so a batch finds
        // them waiting (the prefetch, not this, bounds what is in hand).
        let (tx, rx) = mpsc::channel(usize::from(spec.prefetch.max(1)));
        let (resets, resets_rx) = watch::channel(0);
        tokio::spawn(pump(self.shared.clone(), spec.clone(), open, tx, resets));
        Ok(Box::new(RabbitSubscription {
            deliveries: rx,
            resets: resets_rx,
        }))
    }

    async fn publish(
        &self,
        exchange: Exchange,
        routing_key: &str,
        message: WireMessage,
    ) -> Result<(), BrokerError> {
        let session = self.shared.session()?;
        let pending = self
            .shared
            .start_publish(&session, exchange, routing_key, &message)
            .await?;
        confirm(pending).await
    }

    async fn publish_all(
        &self,
        messages: Vec<(Exchange, String, WireMessage)>,
    ) -> Result<(), BrokerError> {
        // Pipelined: every publish goes out before the first confirm is awaited,
        // on one channel, so the broker keeps their order.
        let session = self.shared.session()?;
        let mut confirms = Vec::with_capacity(messages.len());
        for (exchange, key, message) in &messages {
            confirms.push(
                self.shared
                    .start_publish(&session, *exchange, key, message)
                    .await?,
            );
        }
        for pending in confirms {
            confirm(pending).await?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BrokerError> {
        self.shared.session().map(|_| ())
    }
}

/// A channel consuming one queue.
struct OpenConsumer {
    channel: Channel,
    consumer: lapin::Consumer,
}

async fn open_consumer(
    shared: &Shared,
    session: &Session,
    spec: &QueueSpec,
) -> Result<OpenConsumer, BrokerError> {
    let channel = session.connection.create_channel().await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    shared.declare_on(&channel, spec).await?;
    let consumer = channel
        .basic_consume(
            shared.queue_name(&spec.name).as_str().into(),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(OpenConsumer { channel, consumer })
}

/// Moves deliveries from the queue's consumer to its subscription, opening
/// the consumer again on each new connection, until the subscription is
/// dropped. Running apart from [`Subscription::next`] keeps `next`
/// cancel-safe: a consumer is never left half-opened by a caller that
/// stopped waiting.
async fn pump(
    shared: Arc<Shared>,
    spec: QueueSpec,
    first: OpenConsumer,
    tx: mpsc::Sender<Delivery>,
    resets: watch::Sender<u64>,
) {
    let mut sessions = shared.session.subscribe();
    let mut open = Some(first);
    let mut backoff = RECONNECT_FIRST;
    loop {
        let Some(current) = open.as_mut() else {
            // Wait for a live session, then consume again.
            let session = tokio::select! {
                _ = tx.closed() => return,
                live = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.alive())) => match live {
                    Ok(live) => live.clone(),
                    Err(_) => return, // the broker is gone
                },
            };
            let Some(session) = session else { continue };
            match open_consumer(&shared, &session, &spec).await {
                Ok(consumer) => {
                    tracing::info!(queue = %spec.name, "consuming again after reconnecting");
                    if !spec.durable {
                        // Told before any delivery from the new queue goes out.
                        resets.send_modify(|n| *n += 1);
                    }
                    backoff = RECONNECT_FIRST;
                    open = Some(consumer);
                }
                Err(err) => {
                    tracing::warn!(queue = %spec.name, error = %err, "cannot consume yet; retrying");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RECONNECT_LAST);
                }
            }
            continue;
        };
        let next = tokio::select! {
            _ = tx.closed() => {
                let _ = current.channel.close(200, "unsubscribed".into()).await;
                return;
            }
            next = current.consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                let message = wire(&shared.config.prefix, &delivery);
                let delivery = Delivery::new(
                    message,
                    delivery.routing_key.as_str().to_owned(),
                    delivery.redelivered,
                    Box::new(RabbitAcker(delivery.acker)),
                );
                if tx.send(delivery).await.is_err() {
                    // Dropped unsettled: RabbitMQ delivers it again when the channel closes.
                    let _ = current.channel.close(200, "unsubscribed".into()).await;
                    return;
                }
            }
            Some(Err(err)) => {
                tracing::warn!(queue = %spec.name, error = %err, "consumer interrupted; waiting for the connection");
                open = None;
            }
            None => {
                tracing::warn!(queue = %spec.name, "consumer ended; waiting for the connection");
                open = None;
            }
        }
        if open.is_none() {
            // Give the supervisor time to notice a dead connection, so the
            // consumer is not opened again on it; a channel that died alone
            // (the connection is fine) is opened again after this pause.
            let dead = sessions.wait_for(|s| s.as_ref().is_none_or(|s| !s.alive()));
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::timeout(WATCH_EVERY * 4, dead) => {}
            }
        }
    }
}

/// Deliveries of one queue, fed by its [`pump`].
struct RabbitSubscription {
    deliveries: mpsc::Receiver<Delivery>,
    resets: watch::Receiver<u64>,
}

/// A lapin delivery as the platform's wire message.
fn wire(prefix: &str, delivery: &lapin::message::Delivery) -> WireMessage {
    let props = &delivery.properties;
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    let mut headers = BTreeMap::new();
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => s.to_string(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            headers.insert(k.as_str().to_owned(), value);
        }
    }
    // RabbitMQ dead-letters expired and rejected messages by itself, with
    // its own headers: say it in ours too.
    if !headers.contains_key(HEADER_DEAD_LETTER_REASON)
        && let Some(reason) = headers.get("x-first-death-reason").cloned()
    {
        headers.insert(HEADER_DEAD_LETTER_REASON.to_owned(), reason);
        if let Some(queue) = headers.get("x-first-death-queue").cloned() {
            let queue = queue.strip_prefix(prefix).unwrap_or(&queue).to_owned();
            headers.insert(HEADER_DEAD_LETTER_QUEUE.to_owned(), queue);
        }
    }
    WireMessage {
        message_id: text(props.message_id()),
        message_type: text(props.kind()),
        timestamp: *props.timestamp(),
        correlation_id: text(props.correlation_id()),
        reply_to: text(props.reply_to())
            .map(|r| r.strip_prefix(prefix).map(str::to_owned).unwrap_or(r)),
        headers,
        ttl_ms: text(props.expiration()).and_then(|t| t.parse().ok()),
        body: delivery.data.clone(),
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.deliveries.recv().await
    }

    fn resets(&self) -> Option<watch::Receiver<u64>> {
        Some(self.resets.clone())
    }
}

struct RabbitAcker(lapin::Acker);

#[async_trait]
impl Acker for RabbitAcker {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), BrokerError> {
        match how {
            Settle::Ack => self.0.ack(BasicAckOptions::default()).await?,
            Settle::Requeue => {
                self.0
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?
            }
        };
        Ok(())
    }
}
