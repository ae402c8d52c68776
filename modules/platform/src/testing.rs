//! Given events, when a command, then events (or a refusal): the one way
//! every domain's rules are tested. Pure, like the domains: the history is
//! folded with `apply`, the decision is the domain's own function.
//!
//! ```ignore
//! given::<Order>([created()])
//!     .when(|o| o.approve(list))
//!     .then([OrderEvent::OrderApproved { shopping_list_id: list }])
//!     .when(|o| o.complete())
//!     .then_refused(OrderingError::WrongStatus(..));
//! ```

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// An aggregate as its history left it.
#[derive(Clone, Debug)]
pub struct Given<A>(pub A);

/// The aggregate `events` fold into (none: it does not exist yet).
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.apply(&event);
    }
    Given(state)
}

impl<A: Aggregate> Given<A> {
    /// What the domain decides on this state.
    pub fn when<E>(self, decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>) -> When<A, E> {
        let decided = decide(&self.0);
        When {
            state: self.0,
            decided,
        }
    }

    pub fn state(&self) -> &A {
        &self.0
    }
}

/// A decision, to be checked.
#[derive(Debug)]
pub struct When<A: Aggregate, E> {
    state: A,
    decided: Result<Vec<A::Event>, E>,
}

impl<A, E> When<A, E>
where
    A: Aggregate,
    A::Event: Debug + PartialEq,
    E: Debug + PartialEq,
{
    /// Exactly `expected` was decided; the state after them, to go on.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> Given<A> {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.decided {
            Ok(events) => {
                assert_eq!(events, expected, "other events were decided");
                Given(self.state).after(&events)
            }
            Err(err) => panic!("refused with {err:?}, expected {expected:?}"),
        }
    }

    /// Accepted, whatever it decided: the events, for checks of their own,
    /// and the state after them.
    #[track_caller]
    pub fn then_accepted(self) -> (Vec<A::Event>, Given<A>) {
        match self.decided {
            Ok(events) => {
                let after = Given(self.state).after(&events);
                (events, after)
            }
            Err(err) => panic!("refused with {err:?}, expected it accepted"),
        }
    }

    /// Refused with `expected`, and nothing decided; the state as it was.
    #[track_caller]
    pub fn then_refused(self, expected: E) -> Given<A> {
        match self.decided {
            Err(err) => {
                assert_eq!(err, expected, "refused for another reason");
                Given(self.state)
            }
            Ok(events) => panic!("accepted with {events:?}, expected refused with {expected:?}"),
        }
    }
}

impl<A: Aggregate> Given<A> {
    fn after(mut self, events: &[A::Event]) -> Self {
        for event in events {
            self.0.apply(event);
        }
        self
    }
}
