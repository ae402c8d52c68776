//! Event-sourced aggregates, pure: no I/O, no async. The event store loads and
//! saves them; the domain decides.

use serde::{Serialize, de::DeserializeOwned};

/// A domain event of an aggregate.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// The event's name, stored beside it (`ProductAdded`, ...).
    fn event_type(&self) -> &'static str;
}

/// An aggregate whose state is the fold of its events.
///
/// `Default` is the state before any event (the aggregate does not exist
/// yet); the whole state is serializable so it can be snapshotted.
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + Sync {
    /// Stored beside each event; names the stream's kind (`Store`, `Product`).
    const STREAM_TYPE: &'static str;
    type Event: DomainEvent;

    fn apply(&mut self, event: &Self::Event);
}

/// An aggregate's state at a version (the number of events applied).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Versioned<A> {
    pub state: A,
    pub version: i64,
}

impl<A: Aggregate> Versioned<A> {
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// The state after `events`, as the store will see it once they are appended.
    pub fn applied(&self, events: &[A::Event]) -> A {
        let mut state = self.state.clone();
        for event in events {
            state.apply(event);
        }
        state
    }
}
