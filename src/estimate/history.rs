//! The lag history the idle window reads: what "was the lag at most A during the last W"
//! needs, for any A and any W up to [`MAX_IDLE_WINDOW`]. Pure.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest idle window a trigger may ask for; the lag history spans this much.
pub const MAX_IDLE_WINDOW: Duration = Duration::from_secs(3600);

/// Most entries the lag history keeps (see [`LagHistory`]).
const MAX_HISTORY: usize = 4096;

/// Total lag over time, reduced to what "was the lag at most A during the last W" needs for
/// any A and any W up to [`MAX_IDLE_WINDOW`]: the suffix maxima. An entry is kept only while
/// no later entry is at least as large, so the largest lag since time t is the first entry at
/// or after t. A gap of failed polls longer than the window's bridged gap is recorded as
/// unbounded lag: missing data never reads as idle.
#[derive(Clone, Debug, Default)]
pub struct LagHistory {
    entries: VecDeque<(Instant, i64)>,
    /// Windows starting before this are not covered: nothing was recorded then, or entries
    /// from then were dropped to bound memory.
    covered_since: Option<Instant>,
}

impl LagHistory {
    /// Adds the lag seen at `at` (not before the previous entry).
    pub fn record(&mut self, at: Instant, lag: i64) {
        if self.covered_since.is_none() {
            self.covered_since = Some(at);
        }
        while self.entries.back().is_some_and(|(_, last)| *last <= lag) {
            self.entries.pop_back();
        }
        self.entries.push_back((at, lag));
        let horizon = at.checked_sub(MAX_IDLE_WINDOW);
        // The first entry also stands for the maxima before it, so it goes only when the one
        // after it is itself beyond the horizon.
        while let (Some(horizon), Some((next, _))) = (horizon, self.entries.get(1)) {
            if *next > horizon {
                break;
            }
            self.entries.pop_front();
        }
        if self.entries.len() > MAX_HISTORY {
            if let Some((dropped_at, _)) = self.entries.pop_front() {
                // What the dropped entry stood for is lost: windows reaching back that far
                // are no longer covered, and read as active.
                self.covered_since = Some(dropped_at + Duration::from_nanos(1));
            }
        }
    }

    /// The largest lag recorded at or after `since`, `None` when the history does not
    /// reach back to `since` (or holds nothing).
    pub fn max_since(&self, since: Instant) -> Option<i64> {
        if self.covered_since? > since {
            return None;
        }
        let first_after = self.entries.partition_point(|(at, _)| *at < since);
        match self.entries.get(first_after) {
            Some((_, lag)) => Some(*lag),
            // Nothing recorded since `since`: the lag then is the one recorded last.
            None => self.entries.back().map(|(_, lag)| *lag),
        }
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        assert_eq!(history.max_since(at(5)), Some(30));
        assert_eq!(history.max_since(at(25)), Some(2));
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
        assert_eq!(history.len(), 4, "only suffix maxima are kept");
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
