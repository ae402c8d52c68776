//! What the messaging runtime counts, for `/metrics`: messages handled,
//! failed, retried and dead-lettered by module and type, how long handling
//! took, and which consumers run. One [`Messaging`] per running system (not a
//! process-wide global: tests run several systems in one process), registered
//! in that system's registry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The values a [`Bounded`] label takes at most; later ones are counted
/// under [`OTHER`], so whoever picks a label value (a client's operation
/// name, a publisher's message type) cannot make the registry grow without
/// bound.
pub const MAX_LABEL_SETS: usize = 256;

/// The label value that stands for values past [`MAX_LABEL_SETS`] or not
/// fit to be one.
pub const OTHER: &str = "other";

/// Seconds, from half a millisecond to about eight seconds, doubling: the
/// buckets of every duration histogram here.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// A duration histogram family, as [`Family::new_with_constructor`] takes it.
pub type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// A new, empty [`Durations`] family.
pub fn durations<L: Clone + std::hash::Hash + Eq>() -> Durations<L> {
    Family::new_with_constructor(duration_histogram as fn() -> Histogram)
}

/// The values one label has taken, so that whoever picks them (a client's
/// operation name, a publisher's message type) cannot make the registry grow
/// without bound: past [`MAX_LABEL_SETS`] values, or for one not fit to be a
/// label (only ASCII letters, digits, `_`, `.` and `-`, at most 128 bytes),
/// [`Bounded::admit`] says [`OTHER`].
#[derive(Debug, Default)]
pub struct Bounded(Mutex<HashSet<String>>);

impl Bounded {
    /// `value` when it has been admitted already, else [`OTHER`] (for
    /// values that should not take a place: a request that never ran).
    pub fn known<'a>(&self, value: &'a str) -> &'a str {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(value) { value } else { OTHER }
    }

    pub fn admit<'a>(&self, value: &'a str) -> &'a str {
        let fit = !value.is_empty()
            && value.len() <= 128
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !fit {
            return OTHER;
        }
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(value) || (seen.len() < MAX_LABEL_SETS && seen.insert(value.to_owned())) {
            value
        } else {
            OTHER
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub module: String,
    pub message_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Debug)]
struct Families {
    handled: Family<MessageLabels, Counter>,
    failed: Family<MessageLabels, Counter>,
    retried: Family<MessageLabels, Counter>,
    dead_lettered: Family<MessageLabels, Counter>,
    handling: Durations<MessageLabels>,
    consumers: Family<QueueLabels, Gauge>,
    message_types: Bounded,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            handled: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            handling: durations(),
            consumers: Family::default(),
            message_types: Bounded::default(),
        }
    }
}

/// The messaging runtime's counters. Cloning shares them. A default one
/// counts into a registry nobody reads (tools, tests of the platform).
#[derive(Clone, Debug, Default)]
pub struct Messaging(Arc<Families>);

/// How a delivery's handling ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    /// Failed; it will be tried again.
    Retried,
    /// Failed for good, or undecodable: moved to the dead letters.
    DeadLettered,
}

impl Messaging {
    /// New counters, registered in `registry` under `mallbots_`.
    pub fn register(registry: &mut Registry) -> Self {
        let families = Families::default();
        let registry = registry.sub_registry_with_prefix("mallbots");
        registry.register(
            "messages_handled",
            "Messages handled and acknowledged, by module and message type",
            families.handled.clone(),
        );
        registry.register(
            "messages_failed",
            "Failed attempts to handle a message (each attempt counts), by module and message type",
            families.failed.clone(),
        );
        registry.register(
            "messages_retried",
            "Messages put back on their queue to be tried again, by module and message type",
            families.retried.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Messages moved to the dead letters (undecodable ones as type \"other\"), by module and message type",
            families.dead_lettered.clone(),
        );
        registry.register(
            "message_handling_seconds",
            "How long handling a message took (each attempt), by module and message type",
            families.handling.clone(),
        );
        registry.register(
            "consumers_running",
            "Consumers running, by queue (1 while its consumer runs, 0 once it stopped)",
            families.consumers.clone(),
        );
        Messaging(Arc::new(families))
    }

    fn labels(&self, queue: &str, message_type: &str) -> MessageLabels {
        // A module's queues are named like its messages: `<module>.<what>`.
        let module = mallbots_contracts::module_of(queue).to_owned();
        MessageLabels {
            module,
            message_type: self.0.message_types.admit(message_type).to_owned(),
        }
    }

    /// Counts one attempt at a message of `message_type` on `queue` that
    /// took `took` and ended as `outcome`.
    pub fn attempted(&self, queue: &str, message_type: &str, took: Duration, outcome: Outcome) {
        let labels = self.labels(queue, message_type);
        self.0
            .handling
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if outcome != Outcome::Handled {
            self.0.failed.get_or_create(&labels).inc();
        }
        self.counted(&labels, outcome);
    }

    /// Counts a message that ended as `outcome` without a handling attempt
    /// (undecodable: dead-lettered at once).
    pub fn settled(&self, queue: &str, message_type: &str, outcome: Outcome) {
        let labels = self.labels(queue, message_type);
        self.counted(&labels, outcome);
    }

    fn counted(&self, labels: &MessageLabels, outcome: Outcome) {
        let f = &self.0;
        // Every outcome's series exists (at 0) once the type was seen, so an
        // alert on its rate works from the first failure on.
        for (family, this) in [
            (&f.handled, Outcome::Handled),
            (&f.retried, Outcome::Retried),
            (&f.dead_lettered, Outcome::DeadLettered),
        ] {
            let counter = family.get_or_create(labels);
            if this == outcome {
                counter.inc();
            }
        }
        f.failed.get_or_create(labels).inc_by(0);
    }

    /// Marks `queue`'s consumer as running until the returned guard drops.
    pub fn consuming(&self, queue: &str) -> Running {
        let gauge = self.0.consumers.get_or_create_owned(&QueueLabels {
            queue: queue.to_owned(),
        });
        gauge.set(1);
        Running(gauge)
    }
}

/// A consumer counted as running; dropping it counts it stopped.
#[derive(Debug)]
pub struct Running(Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_bounded_in_number_and_shape() {
        let values = Bounded::default();
        assert_eq!(values.admit("stores.commands"), "stores.commands");
        assert_eq!(values.admit("a b"), OTHER);
        assert_eq!(values.admit(""), OTHER);
        assert_eq!(values.admit(&"x".repeat(129)), OTHER);
        for n in 1..MAX_LABEL_SETS {
            assert_eq!(values.admit(&n.to_string()), n.to_string());
        }
        assert_eq!(values.admit("new"), OTHER);
        assert_eq!(values.admit("stores.commands"), "stores.commands");
        assert_eq!(values.known("stores.commands"), "stores.commands");
        assert_eq!(Bounded::default().known("stores.commands"), OTHER);
    }

    #[test]
    fn a_module_is_its_queue_prefix_and_outcomes_count_apart() {
        let mut registry = Registry::default();
        let messaging = Messaging::register(&mut registry);
        let took = Duration::from_millis(3);
        messaging.attempted(
            "stores.commands",
            "stores.CreateStore",
            took,
            Outcome::Retried,
        );
        messaging.attempted(
            "stores.commands",
            "stores.CreateStore",
            took,
            Outcome::Handled,
        );
        messaging.settled("stores.commands", "not a type!", Outcome::DeadLettered);
        let running = messaging.consuming("stores.commands");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "mallbots_messages_handled_total{module=\"stores\",message_type=\"stores.CreateStore\"} 1",
            "mallbots_messages_failed_total{module=\"stores\",message_type=\"stores.CreateStore\"} 1",
            "mallbots_messages_retried_total{module=\"stores\",message_type=\"stores.CreateStore\"} 1",
            "mallbots_messages_dead_lettered_total{module=\"stores\",message_type=\"other\"} 1",
            "mallbots_message_handling_seconds_count{module=\"stores\",message_type=\"stores.CreateStore\"} 2",
            "mallbots_consumers_running{queue=\"stores.commands\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        drop(running);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("mallbots_consumers_running{queue=\"stores.commands\"} 0"));
    }
}
