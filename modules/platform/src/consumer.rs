//! At-least-once consumption: each delivery is acked only after its handler
//! succeeded (its transaction committed). A transient failure is retried a
//! bounded number of times; an undecodable message or a permanent failure goes
//! to the dead-letter queue with its reason, and the consumer keeps going. A
//! handler that panics is a failure like any other: the consumer survives it.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::envelope::{HEADER_DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON};
use crate::lock;
use crate::propagation;
use crate::streak::FailureStreak;
use crate::telemetry::{Messaging, OTHER, Outcome};
use crate::{Broker, BrokerError, Delivery, Envelope, Exchange, QueueSpec, Shutdown, WireMessage};

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Retrying cannot help (bad payload, unknown type): dead-letter it.
    #[error("{0}")]
    Permanent(String),
    /// Might work later (a conflict, a failed statement): retry, then
    /// dead-letter.
    #[error("{0}")]
    Transient(String),
    /// A dependency said it cannot be reached (a lost connection, a pool
    /// that timed out): not the message's fault, whatever a later check of
    /// that dependency finds. Retried without counting an attempt.
    #[error("{0}")]
    Unreachable(String),
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError>;

    /// Handles several messages as one unit, for queues with a batch size.
    /// When it fails, the consumer handles each message again on its own, so
    /// handlers must be idempotent (the inbox makes command handlers so). The
    /// default handles them one at a time.
    async fn handle_batch(&self, envelopes: &[Envelope]) -> Result<(), HandleError> {
        for envelope in envelopes {
            self.handle(envelope).await?;
        }
        Ok(())
    }

    /// Called once a message whose handling kept failing (or panicking) has
    /// been dead-lettered, so whoever waits on it can be told (a command's
    /// sender gets a reply instead of a timeout).
    async fn gave_up(&self, _envelope: &Envelope, _reason: &str) {}

    /// Called once a message that could not be read as an envelope (why:
    /// `reason`) has been dead-lettered, with what of it could be read (its
    /// properties, no body), so that a sender waiting on it can be told.
    async fn unreadable(&self, _message: &WireMessage, _reason: &str) {}

    /// Whether what the handler stands on (its database) answers right now.
    /// A failure while it does not is not the message's fault: it is retried
    /// for as long as that lasts, without counting toward [`MAX_ATTEMPTS`],
    /// so an outage never dead-letters good messages.
    async fn reachable(&self) -> bool {
        true
    }
}

/// The pause before retrying while the handler's dependencies are down.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(1);

/// What a panic said, as text.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Runs a handler's future; a panic in it becomes a transient failure (its
/// transaction, dropped unfinished, rolls back), retried and then
/// dead-lettered like any other, instead of ending the consumer's task.
async fn guarded(
    handling: impl Future<Output = Result<(), HandleError>>,
) -> Result<(), HandleError> {
    match AssertUnwindSafe(handling).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => Err(HandleError::Transient(format!(
            "the handler panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// Attempts before a transiently failing message is dead-lettered.
pub const MAX_ATTEMPTS: u32 = 5;

/// Transient failures so far, per message id (shared by the deliveries in
/// flight at the same time).
#[derive(Default)]
struct Attempts(Mutex<HashMap<String, u32>>);

impl Attempts {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        lock(&self.0)
    }

    /// Counts one more failure of `key`: how many so far.
    fn failed(&self, key: &str) -> u32 {
        let mut map = self.map();
        let n = map.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    fn forget(&self, key: &str) {
        self.map().remove(key);
    }
}

/// What one consumer's deliveries are handled with.
struct Consumer<'a> {
    broker: &'a dyn Broker,
    queue: &'a str,
    handler: &'a dyn Handler,
    attempts: Attempts,
    /// Deliveries put back because a dependency was away, in a row.
    unreachable: Mutex<FailureStreak>,
    messaging: &'a Messaging,
}

/// Starts consuming `spec` with `handler` until `shutdown`, counting into
/// `messaging`. The queue exists (and receives) once this returns.
pub async fn spawn(
    broker: Arc<dyn Broker>,
    spec: QueueSpec,
    handler: Arc<dyn Handler>,
    messaging: Messaging,
    mut shutdown: Shutdown,
) -> Result<JoinHandle<()>, BrokerError> {
    let mut subscription = broker.consume(&spec).await?;
    let batch = usize::from(spec.batch.max(1));
    let concurrency = if batch > 1 {
        1
    } else {
        usize::from(spec.concurrency.max(1))
    };
    Ok(tokio::spawn(async move {
        let _running = messaging.consuming(&spec.name);
        let consumer = Consumer {
            broker: broker.as_ref(),
            queue: spec.name.as_str(),
            handler: handler.as_ref(),
            attempts: Attempts::default(),
            unreachable: Mutex::default(),
            messaging: &messaging,
        };
        let consumer = &consumer;
        let queue = consumer.queue;
        let mut in_flight = FuturesUnordered::new();
        loop {
            // Only the wait for the next delivery is interrupted by shutdown:
            // deliveries being handled are finished and settled first.
            let delivery = tokio::select! {
                d = subscription.next(), if in_flight.len() < concurrency => d,
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                    log_unsettled(queue, settled);
                    continue;
                }
                _ = shutdown.wait() => break,
            };
            let Some(delivery) = delivery else {
                tracing::error!(queue, "subscription ended");
                break;
            };
            // The batch takes what has arrived already; it never waits.
            let mut deliveries = vec![delivery];
            while deliveries.len() < batch {
                match subscription.next().now_or_never() {
                    Some(Some(more)) => deliveries.push(more),
                    _ => break,
                }
            }
            in_flight.push(async move {
                match <[Delivery; 1]>::try_from(deliveries) {
                    Ok([delivery]) => consumer.process(delivery).await,
                    Err(deliveries) => consumer.process_batch(deliveries).await,
                }
            });
        }
        while let Some(settled) = in_flight.next().await {
            log_unsettled(queue, settled);
        }
    }))
}

fn log_unsettled(queue: &str, settled: Result<(), BrokerError>) {
    if let Err(err) = settled {
        tracing::warn!(queue, error = %err, "could not settle a delivery");
    }
}

impl Consumer<'_> {
    /// Handles `deliveries` as one unit; when that fails, one by one (so a
    /// bad message is dead-lettered or retried alone, and the others go
    /// through).
    async fn process_batch(&self, deliveries: Vec<Delivery>) -> Result<(), BrokerError> {
        let queue = self.queue;
        let mut decoded = Vec::with_capacity(deliveries.len());
        let mut envelopes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match delivery.message.decode() {
                Ok(envelope) => {
                    envelopes.push(envelope);
                    decoded.push(delivery);
                }
                Err(reason) => self.undecodable(delivery, &reason).await?,
            }
        }
        if envelopes.is_empty() {
            return Ok(());
        }
        // One span for the batch's shared work, with its first message's
        // correlation id; a message handled on its own gets its own span.
        let span = tracing::info_span!(
            "batch",
            queue,
            messages = envelopes.len(),
            correlation_id = %envelopes[0].correlation_id,
            trace_id = tracing::field::Empty,
            otel.name = format!("{queue} process batch"),
            otel.kind = "consumer",
        );
        // The batch continues its first message's trace, linked to the others'.
        propagation::continue_from(&span, &envelopes[0].headers);
        for envelope in &envelopes[1..] {
            propagation::link_to(&span, &envelope.headers);
        }
        let started = Instant::now();
        let outcome = guarded(self.handler.handle_batch(&envelopes))
            .instrument(span.clone())
            .await;
        if outcome.is_ok() {
            span.in_scope(|| tracing::debug!("handled"));
            self.reached();
            // Each message is counted with its share of the batch's time.
            let share = started.elapsed() / u32::try_from(envelopes.len()).unwrap_or(u32::MAX);
            for envelope in &envelopes {
                self.messaging
                    .attempted(queue, &envelope.message_type, share, Outcome::Handled);
            }
        }
        let first_error = match outcome {
            // One acknowledgement for the batch where the broker allows it
            // (batches run one at a time, in order). Awaited one by one, the
            // acks took 5-6 ms a batch of 100.
            Ok(()) => Delivery::ack_all(decoded).await.err(),
            Err(err) => {
                let mut first_error = None;
                for delivery in decoded {
                    if let Err(err) = self.process(delivery).await {
                        first_error.get_or_insert(err);
                    }
                }
                tracing::debug!(queue, error = %err, "batch failed; its messages were handled one by one");
                first_error
            }
        };
        first_error.map_or(Ok(()), Err)
    }

    async fn process(&self, delivery: Delivery) -> Result<(), BrokerError> {
        let envelope = match delivery.message.decode() {
            Ok(envelope) => envelope,
            Err(reason) => return self.undecodable(delivery, &reason).await,
        };
        let span = message_span(self.queue, &envelope);
        self.settle(delivery, &envelope).instrument(span).await
    }

    async fn undecodable(&self, delivery: Delivery, reason: &str) -> Result<(), BrokerError> {
        let reason = &truncated(reason, MAX_REASON_BYTES);
        tracing::warn!(queue = self.queue, %reason, "undecodable message dead-lettered");
        self.messaging
            .settled(self.queue, OTHER, Outcome::DeadLettered);
        let m = &delivery.message;
        // Its properties alone: the body may be large, and is unreadable.
        let sender = m.reply_to.is_some().then(|| WireMessage {
            message_id: m.message_id.clone(),
            message_type: m.message_type.clone(),
            correlation_id: m.correlation_id.clone(),
            reply_to: m.reply_to.clone(),
            ..WireMessage::default()
        });
        dead_letter(self.broker, self.queue, delivery, reason).await?;
        if let Some(sender) = sender {
            let told = self.handler.unreadable(&sender, reason);
            hook_guarded(
                told,
                sender.message_type.as_deref().unwrap_or(OTHER),
                "unreadable",
            )
            .await;
        }
        Ok(())
    }

    /// A message was handled: says once that a streak of unreachable
    /// dependencies ended.
    fn reached(&self) {
        if let Some((lasted, failures)) = lock(&self.unreachable).ended() {
            tracing::info!(
                queue = self.queue,
                ?lasted,
                failures,
                "handling again after a dependency came back"
            );
        }
    }

    /// Hands `envelope` to the handler and settles its delivery by the outcome.
    async fn settle(&self, delivery: Delivery, envelope: &Envelope) -> Result<(), BrokerError> {
        let (queue, handler) = (self.queue, self.handler);
        let key = envelope.id.to_string();
        let started = Instant::now();
        let handled = guarded(handler.handle(envelope)).await;
        let took = started.elapsed();
        let handled = match handled {
            // A failure while the dependency does not answer is not the
            // message's fault either.
            Err(HandleError::Transient(reason)) if !handler.reachable().await => {
                Err(HandleError::Unreachable(reason))
            }
            handled => handled,
        }
        .map_err(HandleError::cut);
        let count = |outcome| {
            self.messaging
                .attempted(queue, &envelope.message_type, took, outcome)
        };
        match handled {
            Ok(()) => {
                self.attempts.forget(&key);
                count(Outcome::Handled);
                tracing::debug!("handled");
                self.reached();
                delivery.ack().await
            }
            Err(HandleError::Permanent(reason)) => {
                self.attempts.forget(&key);
                count(Outcome::DeadLettered);
                tracing::warn!(queue, message_type = %envelope.message_type, %reason, "message dead-lettered");
                dead_letter(self.broker, queue, delivery, &reason).await
            }
            // Said unreachable by the failure itself (at an outage's edge
            // the check may already find the dependency back), or found so.
            Err(HandleError::Unreachable(reason)) => {
                count(Outcome::Retried);
                let (said, failures) = {
                    let mut streak = lock(&self.unreachable);
                    (streak.failed(), streak.failures())
                };
                if said {
                    tracing::warn!(queue, %reason, failures, "a dependency is unreachable; retrying without counting an attempt (said again every 30 s while it is)");
                } else {
                    tracing::debug!(queue, %reason, failures, "a dependency is still unreachable");
                }
                tokio::time::sleep(UNREACHABLE_PAUSE).await;
                delivery.requeue().await
            }
            Err(HandleError::Transient(reason)) => {
                let n = self.attempts.failed(&key);
                if n >= MAX_ATTEMPTS {
                    self.attempts.forget(&key);
                    count(Outcome::DeadLettered);
                    let reason = format!("gave up after {MAX_ATTEMPTS} attempts: {reason}");
                    tracing::error!(queue, message_type = %envelope.message_type, %reason, "message dead-lettered");
                    dead_letter(self.broker, queue, delivery, &reason).await?;
                    let told = handler.gave_up(envelope, &reason);
                    hook_guarded(told, &envelope.message_type, "give-up").await;
                    Ok(())
                } else {
                    count(Outcome::Retried);
                    let backoff = Duration::from_millis(50 * 2u64.pow(n));
                    tracing::warn!(queue, %reason, attempt = n, "handler failed; will retry");
                    tokio::time::sleep(backoff).await;
                    delivery.requeue().await
                }
            }
        }
    }
}

/// The span every line of a message's handling carries: which message, of
/// which request (its correlation id).
fn message_span(queue: &str, envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "message",
        queue,
        message_type = %envelope.message_type,
        message_id = %envelope.id,
        correlation_id = %envelope.correlation_id,
        trace_id = tracing::field::Empty,
        otel.name = format!("{queue} process {}", envelope.message_type),
        otel.kind = "consumer",
    );
    // A child of the span that sent it (its trace context in the headers).
    propagation::continue_from(&span, &envelope.headers);
    span
}

/// Runs one of the handler's hooks after a dead-lettering (`hook` names it);
/// a panic there is only logged: the message is already set aside.
async fn hook_guarded(told: impl Future<Output = ()>, message_type: &str, hook: &str) {
    if let Err(panic) = AssertUnwindSafe(told).catch_unwind().await {
        tracing::error!(
            message_type,
            hook,
            panic = panic_message(panic.as_ref()),
            "a handler's hook panicked"
        );
    }
}

/// The longest reason kept (in a dead letter, a log line, a refusal), in
/// bytes: a decoder's error may quote a whole hostile value.
pub(crate) const MAX_REASON_BYTES: usize = 2048;

impl HandleError {
    /// The same failure, its reason cut to [`MAX_REASON_BYTES`].
    fn cut(self) -> Self {
        let cut = |reason: String| truncated(&reason, MAX_REASON_BYTES);
        match self {
            HandleError::Permanent(reason) => HandleError::Permanent(cut(reason)),
            HandleError::Transient(reason) => HandleError::Transient(cut(reason)),
            HandleError::Unreachable(reason) => HandleError::Unreachable(cut(reason)),
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}...", &text[..end])
}

/// Moves a delivery to the dead-letter queue with its reason; when that
/// publish fails the delivery is requeued instead, never dropped.
async fn dead_letter(
    broker: &dyn Broker,
    queue: &str,
    delivery: Delivery,
    reason: &str,
) -> Result<(), BrokerError> {
    let mut message = delivery.message.clone();
    // A dead letter stays until someone looks at it.
    message.ttl_ms = None;
    // Headers travel in one AMQP frame: a reason is kept to its first
    // kilobytes, whatever a handler's error said.
    message.headers.insert(
        HEADER_DEAD_LETTER_REASON.to_owned(),
        truncated(reason, MAX_REASON_BYTES),
    );
    message
        .headers
        .insert(HEADER_DEAD_LETTER_QUEUE.to_owned(), queue.to_owned());
    match broker
        .publish(Exchange::DeadLetter, &delivery.routing_key, message)
        .await
    {
        Ok(()) => delivery.ack().await,
        Err(err) => {
            delivery.requeue().await?;
            Err(err)
        }
    }
}

/// Consumes `spec` best-effort, for feeds a late reader can do without (replies
/// nobody waits for any more, live pushes): each delivery is handed to
/// `on_message` and acked; an undecodable one is logged and dropped.
/// `on_reset` is called when the queue was made anew and what was routed to
/// it meanwhile is lost (see [`crate::Subscription::resets`]), before any
/// later message.
pub async fn listen(
    broker: &dyn Broker,
    spec: QueueSpec,
    mut shutdown: Shutdown,
    mut on_message: impl FnMut(Envelope) + Send + 'static,
    mut on_reset: impl FnMut() + Send + 'static,
) -> Result<JoinHandle<()>, BrokerError> {
    let mut subscription = broker.consume(&spec).await?;
    let mut resets = subscription.resets();
    Ok(tokio::spawn(async move {
        loop {
            let reset = async {
                match resets.as_mut() {
                    Some(resets) => resets.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let delivery = tokio::select! {
                biased;
                _ = shutdown.wait() => return,
                live = reset => {
                    if live {
                        tracing::warn!(queue = %spec.name, "the queue was made anew; messages routed meanwhile are lost");
                        on_reset();
                    } else {
                        resets = None;
                    }
                    continue;
                }
                d = subscription.next() => d,
            };
            let Some(delivery) = delivery else { return };
            match delivery.message.decode() {
                Ok(envelope) => {
                    let heard = std::panic::catch_unwind(AssertUnwindSafe(|| on_message(envelope)));
                    if let Err(panic) = heard {
                        tracing::error!(queue = %spec.name, panic = panic_message(panic.as_ref()), "a listener panicked on a message; it goes on");
                    }
                }
                Err(reason) => {
                    tracing::warn!(queue = %spec.name, %reason, "undecodable message dropped")
                }
            }
            let _ = delivery.ack().await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_cut_to_its_limit_on_a_character_boundary() {
        let quoted = format!("invalid type: string \"{}\"", "é".repeat(5000));
        let cut = HandleError::Permanent(quoted).cut().to_string();
        assert!(cut.len() <= MAX_REASON_BYTES + 3, "{}", cut.len());
        assert!(cut.ends_with("..."));
        let short = HandleError::Transient("short".into()).cut();
        assert_eq!(short.to_string(), "short");
    }
}
