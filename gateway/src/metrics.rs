//! A few counters in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub subscriptions_active: AtomicI64,
    pub subscriptions_closed_slow: AtomicU64,
    pub live_events: AtomicU64,
    pub commands_sent: AtomicU64,
    pub commands_timed_out: AtomicU64,
    pub graphql_requests: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        line(
            "mallbots_subscriptions_active",
            "gauge",
            "Live GraphQL subscriptions.",
            self.subscriptions_active
                .load(Ordering::Relaxed)
                .to_string(),
        );
        line(
            "mallbots_subscriptions_closed_slow_total",
            "counter",
            "Subscriptions closed because the client fell behind.",
            get(&self.subscriptions_closed_slow),
        );
        line(
            "mallbots_live_events_total",
            "counter",
            "Events received for live subscriptions.",
            get(&self.live_events),
        );
        line(
            "mallbots_commands_sent_total",
            "counter",
            "Commands sent by mutations.",
            get(&self.commands_sent),
        );
        line(
            "mallbots_commands_timed_out_total",
            "counter",
            "Commands whose reply did not come in time.",
            get(&self.commands_timed_out),
        );
        line(
            "mallbots_graphql_requests_total",
            "counter",
            "GraphQL requests over HTTP.",
            get(&self.graphql_requests),
        );
        out
    }
}

/// Dead letters by queue and state (dead, replay, replayed), as a gauge.
pub fn dead_letters(counts: &[(String, String, i64)]) -> String {
    let mut out = String::from(
        "# HELP mallbots_dead_letters Dead letters kept, by the queue they failed on and their state.\n\
         # TYPE mallbots_dead_letters gauge\n",
    );
    for (queue, state, n) in counts {
        let queue = queue.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "mallbots_dead_letters{{queue=\"{queue}\",state=\"{state}\"}} {n}"
        );
    }
    out
}
