//! RabbitMQ through lapin: durable topology declared idempotently, publisher
//! confirms, manual acks, prefetch, a dead-letter exchange, and automatic
//! recovery (lapin replays the topology and consumers after a reconnect).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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

pub struct RabbitBroker {
    connection: Connection,
    /// In confirm mode; lapin channels are safe to share between tasks.
    publisher: Channel,
    config: RabbitConfig,
}

const PERSISTENT: u8 = 2;

impl RabbitBroker {
    pub async fn connect(config: RabbitConfig) -> Result<Self, BrokerError> {
        let properties = ConnectionProperties::default()
            .enable_auto_recover()
            .with_connection_name("mallbots".into());
        let connection = Connection::connect(&config.url, properties).await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let broker = RabbitBroker {
            connection,
            publisher,
            config,
        };
        broker.declare_exchanges().await?;
        broker.declare(&QueueSpec::dead_letters()).await?;
        Ok(broker)
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

    async fn declare_exchanges(&self) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (exchange, kind) in [
            (Exchange::Events, ExchangeKind::Topic),
            (Exchange::Commands, ExchangeKind::Topic),
            (Exchange::DeadLetter, ExchangeKind::Fanout),
        ] {
            self.publisher
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
        exchange: Exchange,
        routing_key: &str,
        message: &WireMessage,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let key = match exchange {
            Exchange::Queue => self.queue_name(routing_key),
            _ => routing_key.to_owned(),
        };
        self.publisher
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

#[async_trait]
impl Broker for RabbitBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<(), BrokerError> {
        let channel = self.connection.create_channel().await?;
        let declared = self.declare_on(&channel, spec).await;
        let _ = channel.close(200, "declared".into()).await;
        declared
    }

    async fn consume(&self, spec: &QueueSpec) -> Result<Box<dyn Subscription>, BrokerError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        self.declare_on(&channel, spec).await?;
        let consumer = channel
            .basic_consume(
                self.queue_name(&spec.name).as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Box::new(RabbitSubscription {
            channel,
            consumer,
            prefix: self.config.prefix.clone(),
        }))
    }

    async fn publish(
        &self,
        exchange: Exchange,
        routing_key: &str,
        message: WireMessage,
    ) -> Result<(), BrokerError> {
        match self.start_publish(exchange, routing_key, &message).await {
            Ok(confirm) => confirmed(confirm.await?),
            Err(err) => {
                // The connection dropped: wait for lapin to recover it, then once more.
                self.publisher.wait_for_recovery(err).await?;
                let confirm = self.start_publish(exchange, routing_key, &message).await?;
                confirmed(confirm.await?)
            }
        }
    }

    async fn publish_all(
        &self,
        messages: Vec<(Exchange, String, WireMessage)>,
    ) -> Result<(), BrokerError> {
        // Pipelined: every publish goes out before the first confirm is awaited,
        // on one channel, so the broker keeps their order.
        let mut confirms = Vec::with_capacity(messages.len());
        for (exchange, key, message) in &messages {
            match self.start_publish(*exchange, key, message).await {
                Ok(confirm) => confirms.push(confirm),
                Err(err) => {
                    self.publisher.wait_for_recovery(err).await?;
                    return Err(BrokerError::Unavailable(
                        "connection recovered mid-batch; the batch is retried".into(),
                    ));
                }
            }
        }
        for confirm in confirms {
            confirmed(confirm.await?)?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BrokerError> {
        if self.connection.status().connected() {
            Ok(())
        } else {
            Err(BrokerError::Unavailable("not connected to RabbitMQ".into()))
        }
    }
}

struct RabbitSubscription {
    channel: Channel,
    consumer: lapin::Consumer,
    prefix: String,
}

impl RabbitSubscription {
    fn wire(&self, delivery: &lapin::message::Delivery) -> WireMessage {
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
                let queue = queue
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or(&queue)
                    .to_owned();
                headers.insert(HEADER_DEAD_LETTER_QUEUE.to_owned(), queue);
            }
        }
        WireMessage {
            message_id: text(props.message_id()),
            message_type: text(props.kind()),
            timestamp: *props.timestamp(),
            correlation_id: text(props.correlation_id()),
            reply_to: text(props.reply_to()).map(|r| {
                r.strip_prefix(self.prefix.as_str())
                    .map(str::to_owned)
                    .unwrap_or(r)
            }),
            headers,
            ttl_ms: text(props.expiration()).and_then(|t| t.parse().ok()),
            body: delivery.data.clone(),
        }
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.consumer.next().await? {
                Ok(delivery) => {
                    let message = self.wire(&delivery);
                    return Some(Delivery::new(
                        message,
                        delivery.routing_key.as_str().to_owned(),
                        delivery.redelivered,
                        Box::new(RabbitAcker(delivery.acker)),
                    ));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "consumer interrupted; waiting for recovery");
                    if let Err(err) = self.channel.wait_for_recovery(err).await {
                        tracing::error!(error = %err, "consumer could not recover");
                        return None;
                    }
                }
            }
        }
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
