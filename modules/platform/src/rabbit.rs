//! RabbitMQ through lapin: durable topology declared idempotently, publisher
//! confirms, manual acks, prefetch, a dead-letter exchange, and a supervised
//! connection: when the broker restarts or the connection drops, a
//! supervisor reconnects with backoff, declares the topology again, and every
//! subscription resumes consuming on the new connection. While disconnected,
//! publishing fails at once ([`BrokerError::Unavailable`]) instead of waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use crate::lock;
use crate::{Broker, BrokerError, Delivery, Exchange, QueueSpec, Subscription, WireMessage};

#[derive(Clone, Debug)]
pub struct RabbitConfig {
    pub url: String,
    /// Prepended to every exchange and queue name: several systems (or test
    /// runs) share one vhost without seeing each other's messages.
    pub prefix: String,
    /// Declare durable queues as quorum queues (clustered RabbitMQ).
    pub quorum_queues: bool,
    /// For amqps:// URLs: the certificates (PEM) of a private CA to trust
    /// besides the public ones.
    pub ca_pem: Option<String>,
}

impl RabbitConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RabbitConfig {
            url: url.into(),
            prefix: String::new(),
            quorum_queues: false,
            ca_pem: None,
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
/// The longest any one exchange with RabbitMQ (connect, declare, consume,
/// ack) may take: a connection that dies mid-call must not leave a task
/// waiting forever.
const RPC_DEADLINE: Duration = Duration::from_secs(10);
/// How long the first connection is tried before starting fails.
const FIRST_CONNECT: Duration = Duration::from_secs(30);
/// A queue whose consumer is not back this long after the connection is
/// makes the broker not ready.
const RESUME_DEADLINE: Duration = Duration::from_secs(15);

/// A failed connection: [`BrokerError::Refused`] when RabbitMQ answered and
/// refused the login (403) or the vhost (530, 402), when TLS failed (a
/// certificate not trusted or not for this host, a port that does not speak
/// TLS), or when the answer is not AMQP: waiting would not change these.
/// Else unavailable.
fn refused_or_down(err: lapin::Error) -> BrokerError {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if matches!(amqp.get_id(), 402 | 403 | 530) => {
            BrokerError::Refused(format!(
                "RabbitMQ refused the connection: {}",
                amqp.get_message()
            ))
        }
        lapin::ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            BrokerError::Refused(format!("TLS to RabbitMQ failed: {io}"))
        }
        // What answered does not speak AMQP: most often a TLS port asked
        // with amqp://.
        lapin::ErrorKind::ParsingError(_) => BrokerError::Refused(format!(
            "what answers at the broker URL does not speak AMQP (a TLS port needs amqps://): {err}"
        )),
        _ => err.into(),
    }
}

/// `call`, failing with [`BrokerError::Unavailable`] after [`RPC_DEADLINE`].
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(RPC_DEADLINE, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(BrokerError::Unavailable(format!(
            "RabbitMQ did not answer {what} within {} s",
            RPC_DEADLINE.as_secs()
        ))),
    }
}

/// Two connections, as RabbitMQ advises: one for consuming (and declaring),
/// one for publishing, so a memory or disk alarm, which blocks publishing
/// connections, never holds up consumers' acks. The publishing channel is in
/// confirm mode; lapin channels are safe to share between tasks.
struct Session {
    connection: Connection,
    publishing: Connection,
    publisher: Channel,
    /// Why RabbitMQ blocks publishers right now (a memory or disk alarm).
    blocked: Mutex<Option<String>>,
}

impl Session {
    fn alive(&self) -> bool {
        self.connection.status().connected()
            && self.publishing.status().connected()
            && self.publisher.status().connected()
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
    /// Every subscription's state, for readiness.
    pumps: Mutex<Vec<std::sync::Weak<PumpHealth>>>,
}

/// Whether a subscription is consuming.
struct PumpHealth {
    queue: String,
    /// Since when it has had no consumer (the connection dropped, or it
    /// could not consume again yet); `None` while it consumes.
    down_since: Mutex<Option<tokio::time::Instant>>,
}

impl PumpHealth {
    fn down(&self) {
        lock(&self.down_since).get_or_insert_with(tokio::time::Instant::now);
    }

    fn up(&self) {
        *lock(&self.down_since) = None;
    }
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
    /// Connects, then keeps the connection up for as long as the broker
    /// lives. The first connection is tried for up to [`FIRST_CONNECT`]
    /// (RabbitMQ may start after this process); then the error is reported.
    pub async fn connect(config: RabbitConfig) -> Result<Self, BrokerError> {
        let shared = Arc::new(Shared {
            config,
            session: watch::Sender::new(None),
            declared: Mutex::new(vec![QueueSpec::dead_letters()]),
            down_because: Mutex::new(None),
            pumps: Mutex::new(Vec::new()),
        });
        if let Err(err) = shared.config.url.parse::<lapin::uri::AMQPUri>() {
            return Err(BrokerError::Refused(format!(
                "the broker URL cannot be read: {err}"
            )));
        }
        let first_try = tokio::time::Instant::now();
        let mut backoff = RECONNECT_FIRST;
        let session = loop {
            match shared.open_session().await {
                Ok(session) => break session,
                Err(err @ BrokerError::Refused(_)) => return Err(err),
                Err(err) if first_try.elapsed() + backoff < FIRST_CONNECT => {
                    tracing::warn!(error = %err, "RabbitMQ not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_LAST);
                }
                Err(err) => return Err(err),
            }
        };
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
        let mut events = futures_util::stream::select(
            session.connection.events_listener(),
            session.publishing.events_listener(),
        );
        let mut tick = tokio::time::interval(WATCH_EVERY);
        let why = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(lapin::Event::Error(err)) => break err.to_string(),
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "RabbitMQ blocks publishing");
                        *lock(&session.blocked) = Some(reason);
                    }
                    Some(lapin::Event::ConnectionUnblocked) => {
                        tracing::info!("RabbitMQ takes publishes again");
                        *lock(&session.blocked) = None;
                    }
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
        let opened = tokio::time::timeout(RPC_DEADLINE, async {
            let connection = self.connect("mallbots").await?;
            let publishing = self.connect("mallbots-publish").await?;
            let publisher = publishing.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let declaring = connection.create_channel().await?;
            self.declare_exchanges(&declaring).await?;
            let specs = lock(&self.declared).clone();
            for spec in &specs {
                self.declare_on(&declaring, spec).await?;
            }
            let _ = declaring.close(200, "declared".into()).await;
            Ok(Session {
                connection,
                publishing,
                publisher,
                blocked: Mutex::new(None),
            })
        })
        .await;
        opened.unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(format!(
                "no connection to RabbitMQ within {} s",
                RPC_DEADLINE.as_secs()
            )))
        })
    }

    /// One connection named `name`: TLS for an amqps:// URL, trusting the
    /// public CAs and the configured one.
    async fn connect(&self, name: &str) -> Result<Connection, BrokerError> {
        use lapin::Connect;
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.config.ca_pem.clone(),
        };
        let runtime = lapin::runtime::default_runtime()?;
        self.config
            .url
            .as_str()
            .connect_with_config(properties, tls, runtime)
            .await
            .map_err(refused_or_down)
    }

    /// The live session for publishing: none while RabbitMQ blocks
    /// publishers (a publish would only wait for its confirm in vain).
    fn publishing_session(&self) -> Result<Arc<Session>, BrokerError> {
        let session = self.session()?;
        if let Some(reason) = lock(&session.blocked).clone() {
            return Err(BrokerError::Unavailable(format!(
                "RabbitMQ blocks publishing: {reason}"
            )));
        }
        Ok(session)
    }

    /// Queues whose consumer has not resumed long after the connection did.
    fn stalled(&self) -> Option<String> {
        let now = tokio::time::Instant::now();
        let mut pumps = lock(&self.pumps);
        pumps.retain(|p| p.strong_count() > 0);
        pumps
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .find_map(|p| {
                let since = (*lock(&p.down_since))?;
                (now.duration_since(since) > RESUME_DEADLINE)
                    .then(|| format!("the consumer of {} has not resumed", p.queue))
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
        if spec.durable && spec.single_active {
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
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
        let channel = bounded("a channel", session.connection.create_channel()).await?;
        let declared = match tokio::time::timeout(
            RPC_DEADLINE,
            self.shared.declare_on(&channel, spec),
        )
        .await
        {
            Ok(declared) => declared,
            Err(_) => Err(BrokerError::Unavailable(
                "RabbitMQ did not declare the queue in time".into(),
            )),
        };
        let _ = tokio::time::timeout(RPC_DEADLINE, channel.close(200, "declared".into())).await;
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
        let health = Arc::new(PumpHealth {
            queue: spec.name.clone(),
            down_since: Mutex::new(None),
        });
        lock(&self.shared.pumps).push(Arc::downgrade(&health));
        let pump = Pump {
            shared: self.shared.clone(),
            spec: spec.clone(),
            tx,
            resets,
            health,
        };
        tokio::spawn(pump.run(open));
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
        let session = self.shared.publishing_session()?;
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
        let session = self.shared.publishing_session()?;
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
        self.shared.publishing_session()?;
        match self.shared.stalled() {
            Some(stalled) => Err(BrokerError::Unavailable(stalled)),
            None => Ok(()),
        }
    }
}

/// A channel consuming one queue, on `session`.
struct OpenConsumer {
    channel: Channel,
    consumer: lapin::Consumer,
    session: Arc<Session>,
    /// This channel among every one opened (channel numbers are reused).
    generation: u64,
    /// Set when a settle on this channel failed: a delivery may be pending
    /// on it unsettled, which a `multiple` ack would take with it.
    missed: Arc<AtomicBool>,
}

/// Numbers each consumer channel opened, for [`RabbitAcker::covers`].
static CHANNELS: AtomicU64 = AtomicU64::new(0);

async fn open_consumer(
    shared: &Shared,
    session: &Arc<Session>,
    spec: &QueueSpec,
) -> Result<OpenConsumer, BrokerError> {
    let opened = tokio::time::timeout(RPC_DEADLINE, async {
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
        Ok(OpenConsumer {
            channel,
            consumer,
            session: session.clone(),
            generation: CHANNELS.fetch_add(1, Ordering::Relaxed),
            missed: Arc::default(),
        })
    })
    .await;
    opened.unwrap_or_else(|_| {
        Err(BrokerError::Unavailable(format!(
            "RabbitMQ did not start the consumer within {} s",
            RPC_DEADLINE.as_secs()
        )))
    })
}

/// Resolves once `session` is no longer the live one.
async fn until_superseded(
    sessions: &mut watch::Receiver<Option<Arc<Session>>>,
    session: &Arc<Session>,
) {
    // The guard `wait_for` returns is dropped at once (it is not `Send`).
    let _ = sessions.wait_for(|s| superseded(s, session)).await;
}

/// Whether `session` is no longer the live one (gone, dead, or replaced).
fn superseded(current: &Option<Arc<Session>>, session: &Arc<Session>) -> bool {
    current
        .as_ref()
        .is_none_or(|c| !Arc::ptr_eq(c, session) || !c.alive())
}

/// Moves deliveries from a queue's consumer to its subscription, opening
/// the consumer again on each new connection, until the subscription is
/// dropped. Running apart from [`Subscription::next`] keeps `next`
/// cancel-safe: a consumer is never left half-opened by a caller that
/// stopped waiting. Every wait in it also watches the connection, so a
/// connection lost while it waits (on a slow handler, say) never leaves the
/// queue without a consumer.
struct Pump {
    shared: Arc<Shared>,
    spec: QueueSpec,
    tx: mpsc::Sender<Delivery>,
    resets: watch::Sender<u64>,
    health: Arc<PumpHealth>,
}

impl Pump {
    async fn run(self, first: OpenConsumer) {
        let mut sessions = self.shared.session.subscribe();
        let mut open = Some(first);
        let mut backoff = RECONNECT_FIRST;
        // The consumer was lost with the connection, which the supervisor
        // logs once for all queues: its own lines then go at DEBUG (a
        // broker restart used to log two lines per queue).
        let mut lost_with_connection = false;
        loop {
            let Some(current) = open.as_mut() else {
                self.health.down();
                let Some(session) = self.live_session(&mut sessions).await else {
                    return;
                };
                match open_consumer(&self.shared, &session, &self.spec).await {
                    Ok(consumer) => {
                        if lost_with_connection {
                            tracing::debug!(queue = %self.spec.name, "consuming again after reconnecting");
                        } else {
                            tracing::info!(queue = %self.spec.name, "consuming again after reconnecting");
                        }
                        if !self.spec.durable {
                            // Told before any delivery from the new queue goes out.
                            self.resets.send_modify(|n| *n += 1);
                        }
                        self.health.up();
                        backoff = RECONNECT_FIRST;
                        open = Some(consumer);
                    }
                    Err(err) => {
                        tracing::warn!(queue = %self.spec.name, error = %err, "cannot consume yet; retrying");
                        tokio::select! {
                            _ = self.tx.closed() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RECONNECT_LAST);
                    }
                }
                continue;
            };
            let mine = current.session.clone();
            let lost = until_superseded(&mut sessions, &mine);
            let next = tokio::select! {
                _ = self.tx.closed() => {
                    let _ = tokio::time::timeout(RPC_DEADLINE, current.channel.close(200, "unsubscribed".into())).await;
                    return;
                }
                _ = lost => None,
                next = current.consumer.next() => Some(next),
            };
            match next {
                Some(Some(Ok(delivery))) => {
                    lost_with_connection = false;
                    let message = wire(&self.shared.config.prefix, &delivery);
                    let delivery = Delivery::new(
                        message,
                        delivery.routing_key.as_str().to_owned(),
                        delivery.redelivered,
                        Box::new(RabbitAcker {
                            acker: delivery.acker,
                            session: mine.clone(),
                            sessions: self.shared.session.subscribe(),
                            channel: current.generation,
                            tag: delivery.delivery_tag,
                            missed: current.missed.clone(),
                        }),
                    );
                    let lost = until_superseded(&mut sessions, &mine);
                    tokio::select! {
                        sent = self.tx.send(delivery) => if sent.is_err() {
                            // Dropped unsettled: RabbitMQ delivers it again when the channel closes.
                            let _ = tokio::time::timeout(RPC_DEADLINE, current.channel.close(200, "unsubscribed".into())).await;
                            return;
                        },
                        // The delivery came on a connection that is gone: it
                        // cannot be settled, and RabbitMQ delivers it again.
                        _ = lost => {
                            tracing::warn!(queue = %self.spec.name, "connection lost while handing a delivery over");
                            open = None;
                        }
                    }
                }
                Some(Some(Err(err))) => {
                    tracing::warn!(queue = %self.spec.name, error = %err, "consumer interrupted; waiting for the connection");
                    lost_with_connection = false;
                    open = None;
                }
                Some(None) => {
                    tracing::warn!(queue = %self.spec.name, "consumer ended; waiting for the connection");
                    lost_with_connection = false;
                    open = None;
                }
                None => {
                    tracing::debug!(queue = %self.spec.name, "connection lost; waiting for it to come back");
                    lost_with_connection = true;
                    open = None;
                }
            }
            if open.is_none() {
                self.health.down();
                // Give the supervisor time to notice a dead connection, so the
                // consumer is not opened again on it; a channel that died alone
                // (the connection is fine) is opened again after this pause.
                let dead = until_superseded(&mut sessions, &mine);
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::timeout(WATCH_EVERY * 4, dead) => {}
                }
            }
        }
    }

    /// Waits for a live session; `None` once nobody needs this pump.
    async fn live_session(
        &self,
        sessions: &mut watch::Receiver<Option<Arc<Session>>>,
    ) -> Option<Arc<Session>> {
        loop {
            let live = tokio::select! {
                _ = self.tx.closed() => return None,
                live = sessions.wait_for(|s| s.as_ref().is_some_and(|s| s.alive())) => match live {
                    Ok(live) => live.clone(),
                    Err(_) => return None, // the broker is gone
                },
            };
            if live.is_some() {
                return live;
            }
        }
    }
}

/// A header's value as JSON: strings as text, tables as objects, byte
/// arrays as (lossy) text.
fn header_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    let text = |bytes: &[u8]| Value::from(String::from_utf8_lossy(bytes).into_owned());
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => text(s.as_bytes()),
        AMQPValue::ByteArray(b) => text(b.as_slice()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldArray(a) => a.as_slice().iter().map(header_json).collect(),
        AMQPValue::FieldTable(t) => t
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), header_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        AMQPValue::Void => Value::Null,
    }
}

/// Deliveries of one queue, fed by its [`Pump`].
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
                // RabbitMQ's own (`x-death`: a list of tables): JSON text,
                // for an operator to read.
                other => header_json(other).to_string(),
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

/// Settles a delivery on the connection it came on.
struct RabbitAcker {
    acker: lapin::Acker,
    session: Arc<Session>,
    sessions: watch::Receiver<Option<Arc<Session>>>,
    /// The channel it came on ([`OpenConsumer::generation`]) and its tag there.
    channel: u64,
    tag: u64,
    missed: Arc<AtomicBool>,
}

#[async_trait]
impl Acker for RabbitAcker {
    /// Bounded, and given up at once when the delivery's connection is gone:
    /// an ack sent as the connection dies may never be answered, and a
    /// consumer waiting on it would stand still. An ack that fails only means
    /// RabbitMQ delivers the message again (the inbox makes that harmless).
    async fn settle(mut self: Box<Self>, how: Settle) -> Result<(), BrokerError> {
        let this = &mut *self;
        let settled = async {
            match how {
                Settle::Ack => bounded("an ack", this.acker.ack(BasicAckOptions::default())).await,
                Settle::AckThrough => {
                    let through = BasicAckOptions { multiple: true };
                    bounded("an ack", this.acker.ack(through)).await
                }
                Settle::Requeue => {
                    let requeue = BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    };
                    bounded("a requeue", this.acker.nack(requeue)).await
                }
            }
        };
        let settled = tokio::select! {
            settled = settled => settled.map(|_| ()),
            _ = until_superseded(&mut this.sessions, &this.session) => Err(BrokerError::Unavailable(
                "the delivery's connection is gone; RabbitMQ delivers it again".into(),
            )),
        };
        if settled.is_err() {
            this.missed.store(true, Ordering::Relaxed);
        }
        settled
    }

    /// RabbitMQ's `multiple` ack settles every unsettled delivery of the
    /// channel up to this tag: right when each earlier one came on the same
    /// channel with a lower tag and no settle on that channel has failed
    /// (the caller vouches that every other delivery before them was
    /// settled, and a failed settle would have left one pending).
    fn covers(&self, earlier: &[Box<dyn Acker>]) -> bool {
        !self.missed.load(Ordering::Relaxed)
            && earlier.iter().all(|a| {
                a.as_any()
                    .downcast_ref::<RabbitAcker>()
                    .is_some_and(|a| a.channel == self.channel && a.tag < self.tag)
            })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn rabbitmqs_own_headers_read_as_json() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from("orders")),
        );
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        let deaths = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)]));
        assert_eq!(
            header_json(&deaths).to_string(),
            r#"[{"count":2,"queue":"orders","time":1700000000}]"#
        );
        let bytes = AMQPValue::ByteArray(vec![b'o', b'k', 0xff].into());
        assert_eq!(header_json(&bytes), serde_json::json!("ok\u{fffd}"));
    }
}
