//! Failures that repeat while a dependency is away. A loop that retries
//! every second would log an outage's every second (9 outbox relays made
//! about 5 lines a second while PostgreSQL was down); a [`FailureStreak`]
//! says when a streak starts, reminds at most every [`REMIND_EVERY`], and
//! says once when it ends and how long it lasted.

use std::time::{Duration, Instant};

/// How often a streak that goes on is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// The failures in a row of one retrying loop.
#[derive(Debug, Default)]
pub struct FailureStreak {
    /// When the streak began and when it was last logged.
    began: Option<(Instant, Instant)>,
    failures: u32,
}

impl FailureStreak {
    /// Counts a failure; whether to log it (the streak's first, or the
    /// first [`REMIND_EVERY`] after the last logged).
    pub fn failed(&mut self) -> bool {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        match &mut self.began {
            None => {
                self.began = Some((now, now));
                true
            }
            Some((_, said)) if now.duration_since(*said) >= REMIND_EVERY => {
                *said = now;
                true
            }
            Some(_) => false,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a success; when it ends a streak, how long the streak lasted
    /// and how many failures it had (to log once).
    pub fn ended(&mut self) -> Option<(Duration, u32)> {
        self.ended_at(Instant::now())
    }

    fn ended_at(&mut self, now: Instant) -> Option<(Duration, u32)> {
        let failures = std::mem::take(&mut self.failures);
        self.began
            .take()
            .map(|(began, _)| (now.duration_since(began), failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_said_when_it_starts_every_reminder_and_when_it_ends() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut streak = FailureStreak::default();
        assert_eq!(streak.ended_at(at(0)), None, "no streak, nothing ended");
        let said: Vec<u64> = (0..=70).filter(|&s| streak.failed_at(at(s))).collect();
        assert_eq!(said, [0, 30, 60]);
        assert_eq!(streak.failures(), 71);
        assert_eq!(streak.ended_at(at(75)), Some((Duration::from_secs(75), 71)));
        assert_eq!(streak.failures(), 0);
        assert!(streak.failed_at(at(80)), "a new streak is said at once");
    }
}
