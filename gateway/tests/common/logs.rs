//! What the system in this test process logs: printed as RUST_LOG says (off
//! unless set), to see what a failing test saw, and every warning or error
//! kept, so a test can check that something was logged.

use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The warnings and errors logged so far, each as `LEVEL message k=v ...`;
/// the oldest are dropped beyond this many.
const KEPT: usize = 10_000;
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the process's subscriber (once; later calls do nothing).
pub fn install() {
    let printed = fmt::layer()
        .with_test_writer()
        .with_filter(EnvFilter::from_default_env());
    let _ = tracing_subscriber::registry()
        .with(printed)
        .with(Kept.with_filter(LevelFilter::WARN))
        .try_init();
}

/// The warnings and errors logged so far that contain every one of `parts`.
pub fn logged(parts: &[&str]) -> Vec<String> {
    let logged = LOGGED.lock().expect("the log is readable");
    logged
        .iter()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .cloned()
        .collect()
}

struct Kept;

impl<S: Subscriber> Layer<S> for Kept {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        let level = if level == Level::ERROR {
            "ERROR"
        } else {
            "WARN"
        };
        let mut line = Line(level.to_owned());
        event.record(&mut line);
        let mut logged = LOGGED.lock().expect("the log is writable");
        if logged.len() >= KEPT {
            logged.remove(0);
        }
        logged.push(line.0);
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
