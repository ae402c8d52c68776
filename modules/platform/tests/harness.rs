//! The given/when/then harness, used as the domains use it.

mod common;

use common::{Added, Counter};
use mallbots_platform::testing::given;

fn add(c: &Counter, n: i64) -> Result<Vec<Added>, &'static str> {
    if c.total + n > 3 {
        Err("too many")
    } else {
        Ok(vec![Added(n)])
    }
}

#[test]
fn the_state_follows_each_decision() {
    let after = given::<Counter>([Added(1)])
        .when(|c| add(c, 2))
        .then([Added(2)])
        .when(|c| add(c, 1))
        .then_refused("too many");
    assert_eq!(after.state(), &Counter { total: 3 });
}

#[test]
#[should_panic(expected = "other events were decided")]
fn other_events_fail() {
    given::<Counter>([]).when(|c| add(c, 1)).then([Added(2)]);
}

#[test]
#[should_panic(expected = "accepted with")]
fn an_acceptance_is_not_a_refusal() {
    given::<Counter>([])
        .when(|c| add(c, 1))
        .then_refused("too many");
}
