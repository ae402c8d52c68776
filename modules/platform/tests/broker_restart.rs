//! RabbitMQ restarts, for real: the fault tests' own node
//! (TEST_FAULT_AMQP_URL), stopped and started with scripts/fault-rabbit
//! (TEST_FAULT_RABBIT_CTL), which scripts/test sets up. The other suites use
//! another node, so they never see this one go away.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{Note, note};
use mallbots_contracts::Message;
use mallbots_platform::consumer::{self, HandleError, Handler};
use mallbots_platform::rabbit::{RabbitBroker, RabbitConfig};
use mallbots_platform::telemetry::Messaging;
use mallbots_platform::{Broker, BrokerError, Envelope, Exchange, QueueSpec, Shutdown};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// Stops or starts the fault node's broker (`stop` returns once it is down).
async fn rabbit(action: &'static str) {
    let ctl = env("TEST_FAULT_RABBIT_CTL");
    let status = tokio::process::Command::new("bash")
        .arg(&ctl)
        .arg(action)
        .status()
        .await
        .expect("run scripts/fault-rabbit");
    assert!(status.success(), "scripts/fault-rabbit {action} failed");
}

async fn publish(broker: &dyn Broker, n: u32) -> Result<(), BrokerError> {
    let wire = Envelope::new(&note(n)).unwrap().to_wire();
    broker.publish(Exchange::Events, Note::TYPE, wire).await
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} before the deadline"))
        .expect("the channel is open")
}

/// Records each message; holds the first one until released, so it is in
/// hand (delivered, not acked) when the broker goes away.
struct Holding {
    handled: mpsc::UnboundedSender<u32>,
    holding: mpsc::UnboundedSender<()>,
    release: Notify,
    held_once: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Handler for Holding {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let n = envelope
            .decode::<Note>()
            .map_err(|e| HandleError::Permanent(e.to_string()))?
            .n;
        if n == 1
            && !self
                .held_once
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = self.holding.send(());
            self.release.notified().await;
        }
        let _ = self.handled.send(n);
        Ok(())
    }
}

#[tokio::test]
async fn a_broker_restart_is_survived_without_a_process_restart() {
    let config = RabbitConfig {
        url: env("TEST_FAULT_AMQP_URL"),
        prefix: format!("restart-{}.", Uuid::new_v4().simple()),
        quorum_queues: false,
        ca_pem: None,
    };
    let broker: Arc<dyn Broker> = Arc::new(
        RabbitBroker::connect(config)
            .await
            .expect("the fault node is reachable"),
    );
    let (_trigger, shutdown) = Shutdown::new();

    // A durable consumer, and a best-effort listener on a transient queue.
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let (holding_tx, mut holding) = mpsc::unbounded_channel();
    let holder = Arc::new(Holding {
        handled: handled_tx,
        holding: holding_tx,
        release: Notify::new(),
        held_once: false.into(),
    });
    let durable = QueueSpec::durable("restart.durable").bind(Exchange::Events, "test.#");
    consumer::spawn(
        broker.clone(),
        durable,
        holder.clone(),
        Messaging::default(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let reset_tx = heard_tx.clone();
    let live = QueueSpec::transient(format!("restart.live.{}", Uuid::new_v4().simple()))
        .bind(Exchange::Events, "test.#");
    consumer::listen(
        broker.as_ref(),
        live,
        shutdown,
        move |envelope| {
            let n = envelope.decode::<Note>().map(|m| m.n).unwrap_or(0);
            let _ = heard_tx.send(format!("message {n}"));
        },
        move || {
            let _ = reset_tx.send("reset".to_owned());
        },
    )
    .await
    .unwrap();

    publish(broker.as_ref(), 1).await.unwrap();
    recv(&mut holding, "message 1 in the handler's hands").await;
    assert_eq!(recv(&mut heard, "the listener hears 1").await, "message 1");

    rabbit("stop").await;
    let down = Instant::now();
    // Publishing fails at once with Unavailable, never hangs.
    loop {
        let tried = Instant::now();
        let outcome = publish(broker.as_ref(), 2).await;
        assert!(
            tried.elapsed() < Duration::from_secs(2),
            "a publish to a stopped broker took {:?}",
            tried.elapsed()
        );
        match outcome {
            Err(BrokerError::Unavailable(_)) => break,
            other => assert!(
                down.elapsed() < Duration::from_secs(5),
                "publishing still {other:?} 5 s after the broker stopped"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        broker.check().await.is_err(),
        "readiness says the broker is down"
    );
    // The message in hand finishes while the broker is away: its ack cannot
    // reach the broker, so the broker delivers it again later.
    holder.release.notify_one();
    assert_eq!(recv(&mut handled, "message 1 handled").await, 1);

    rabbit("start").await;
    let back = Instant::now();
    loop {
        match publish(broker.as_ref(), 3).await {
            Ok(()) => break,
            Err(err) => assert!(
                back.elapsed() < Duration::from_secs(10),
                "still failing 10 s after the broker came back: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.check().await.expect("ready again");

    // The durable queue: message 1 again (never acked), then 3; 2 was
    // refused to its publisher, so it is nowhere.
    let mut after = vec![
        recv(&mut handled, "a message after the restart").await,
        recv(&mut handled, "another message after the restart").await,
    ];
    after.sort_unstable();
    assert_eq!(after, [1, 3]);
    // The transient queue was made anew: its listener is told before it
    // hears the next message.
    assert_eq!(
        recv(&mut heard, "the listener is told of the reset").await,
        "reset"
    );
    assert_eq!(recv(&mut heard, "the listener hears 3").await, "message 3");
}
