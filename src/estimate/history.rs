//! The lag history the idle window reads: what "was the lag at most A during the last W"
//! needs, for any A and any W up to [`MAX_IDLE_WINDOW`]. Pure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest idle window a trigger may ask for; the lag history spans this much.
pub const MAX_IDLE_WINDOW: Duration = Duration::from_secs(3600);

/// Most entries the lag history keeps (see [`LagHistory`]).
const MAX_HISTORY: usize = 4096;

/// Total lag over time, reduced to what "was the lag at most A during the last W" needs for
/// any A and any W up to [`MAX_IDLE_WINDOW`]. A recorded lag stands from its sample until the
/// next one: nothing is known of the time between, so a drop to zero counts from the first
/// sample that saw it, never from the last one that saw lag. Each lag that was replaced is
/// kept as the time it was replaced, and only while no later-replaced one is at least as
/// large (suffix maxima), so the largest lag standing at any time since t is the first kept
/// entry replaced after t, or the current lag. A gap of failed polls longer than the window's
/// bridged gap is recorded as unbounded lag: missing data never reads as idle.
#[derive(Clone, Debug, Default)]
pub struct LagHistory {
    /// `(replaced at, lag)`, oldest first, the lags strictly decreasing.
    replaced: VecDeque<(Instant, i64)>,
    /// The latest lag recorded: it stands since its sample.
    current: Option<i64>,
    /// Windows starting before this are not covered: nothing was recorded then, or entries
    /// from then were dropped to bound memory.
    covered_since: Option<Instant>,
}

impl LagHistory {
    /// Adds the lag seen at `at` (not before the previous entry).
    pub fn record(&mut self, at: Instant, lag: i64) {
        match self.current.replace(lag) {
            None => self.covered_since = Some(at),
            Some(previous) => {
                while self
                    .replaced
                    .back()
                    .is_some_and(|(_, last)| *last <= previous)
                {
                    self.replaced.pop_back();
                }
                self.replaced.push_back((at, previous));
            }
        }
        // An entry replaced before the horizon stood only before it: no window reaches back
        // that far (windows end at a sample of this history, at most its newest).
        let horizon = at.checked_sub(MAX_IDLE_WINDOW);
        while let (Some(horizon), Some((replaced_at, _))) = (horizon, self.replaced.front()) {
            if *replaced_at > horizon {
                break;
            }
            self.forget_oldest();
        }
        if self.replaced.len() > MAX_HISTORY {
            self.forget_oldest();
        }
    }

    /// Drops the oldest entry: windows that began while it stood are no longer covered, and
    /// read as active.
    fn forget_oldest(&mut self) {
        if let Some((replaced_at, _)) = self.replaced.pop_front() {
            self.covered_since = self.covered_since.max(Some(replaced_at));
        }
    }

    /// The largest lag standing at any time from `since` on, `None` when the history does
    /// not reach back to `since` (or holds nothing).
    pub fn max_since(&self, since: Instant) -> Option<i64> {
        if self.covered_since? > since {
            return None;
        }
        let current = self.current?;
        let first_after = self.replaced.partition_point(|(at, _)| *at <= since);
        Some(match self.replaced.get(first_after) {
            Some((_, lag)) => (*lag).max(current),
            None => current,
        })
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.replaced.len() + usize::from(self.current.is_some())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.current.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_history_answers_any_threshold_and_window() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut history = LagHistory::default();
        for (s, lag) in [(0, 50), (10, 5), (20, 30), (30, 2), (40, 0), (50, 1)] {
            history.record(at(s), lag);
        }
        assert_eq!(history.max_since(at(0)), Some(50));
        // 50 stood until the sample at 10 s replaced it.
        assert_eq!(history.max_since(at(5)), Some(50));
        assert_eq!(history.max_since(at(10)), Some(30));
        assert_eq!(history.max_since(at(25)), Some(30));
        assert_eq!(history.max_since(at(30)), Some(2));
        assert_eq!(history.max_since(at(45)), Some(1));
        assert_eq!(
            history.max_since(at(55)),
            Some(1),
            "last lag holds until the next"
        );
        assert_eq!(
            history.max_since(start - Duration::from_secs(1)),
            None,
            "before the first sample is unknown"
        );
        assert_eq!(history.len(), 5, "only suffix maxima are kept");
    }

    /// A drop to zero is known from the first sample at zero, not from the last with lag:
    /// the lag between two samples is unknown, and counts as the earlier one.
    #[test]
    fn the_idle_window_counts_from_the_first_sample_at_zero() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut history = LagHistory::default();
        history.record(at(0), 500);
        history.record(at(5), 0);
        // A 10 s window ending at 10.1 s starts at 0.1 s, when 500 still stood.
        assert_eq!(
            history.max_since(at(0) + Duration::from_millis(100)),
            Some(500)
        );
        assert_eq!(
            history.max_since(at(5) - Duration::from_millis(1)),
            Some(500)
        );
        assert_eq!(history.max_since(at(5)), Some(0));
    }

    #[test]
    fn lag_history_stays_bounded() {
        let start = Instant::now();
        let mut history = LagHistory::default();
        // Ever-decreasing lag every second for two hours: every entry is a suffix maximum.
        for s in 0..7200u64 {
            history.record(start + Duration::from_secs(s), 1_000_000 - s as i64);
        }
        assert!(history.len() <= MAX_HISTORY, "{}", history.len());
        let now = start + Duration::from_secs(7199);
        let max = history.max_since(now - Duration::from_secs(60)).unwrap();
        assert_eq!(max, 1_000_000 - 7139);
        // The full hour is still answered, or honestly refused.
        if let Some(max) = history.max_since(now - MAX_IDLE_WINDOW) {
            assert_eq!(max, 1_000_000 - 3599);
        }
    }
}
