//! How long the records a group has not consumed have waited (time lag): when each was
//! written, read off the history of the partition's end offset. Pure: no IO, no clock.
//!
//! The method is kafka-lag-exporter's: every poll sees where the end of the partition stood,
//! so the record at offset `p` was written after the last poll that saw the end at or below
//! `p` and no later than the first poll that saw it past `p`. Between the two, records are
//! taken as written evenly. The error is at most the time between those two polls (one poll
//! interval while the producer writes, longer across a quiet spell), however old the record.
//!
//! The history keeps only what the group's position can still ask about: the points from the
//! last one at or below the position on, each run of equal ends as its first and last point,
//! and at most [`MAX_END_POINTS`] (beyond, every other point in between goes, so the brackets
//! widen evenly and still hold the record's true time). Where the history does not reach back
//! to the position (a backlog older than the watch, a group reset to an earlier offset), it
//! says so, and the watcher asks the broker for the record's timestamp instead.

use std::collections::VecDeque;
use std::time::Instant;

/// Most points one partition's end history keeps.
pub const MAX_END_POINTS: usize = 128;

/// Where a partition's end offset stood at each poll, reduced to what the group's position
/// can still ask about.
#[derive(Clone, Debug, Default)]
pub struct EndHistory {
    /// `(time, end)`: at `time` the records before `end` were written. Times and ends never
    /// decrease.
    points: VecDeque<(Instant, i64)>,
}

impl EndHistory {
    /// Adds the end offset read at `at` (not before the previous point). `position` is the
    /// earliest offset the group may still ask the write time of (its committed offset, or
    /// the end when nothing waits): points only earlier offsets need are dropped. An end
    /// that went back (the topic was truncated or created again) starts the history afresh.
    pub fn record(&mut self, at: Instant, end: i64, position: i64) {
        if self.points.back().is_some_and(|(_, last)| end < *last) {
            self.points.clear();
        }
        let n = self.points.len();
        let run_of_two = n >= 2 && self.points[n - 2].1 == end && self.points[n - 1].1 == end;
        if run_of_two {
            // A run of equal ends needs only its first point (an upper bracket) and its last
            // (a lower bracket).
            self.points[n - 1].0 = at;
        } else {
            self.points.push_back((at, end));
        }
        // The last point at or below the position is the lower bracket of every offset the
        // group can ask about; the points before it are not needed.
        let at_or_below = self.points.partition_point(|(_, end)| *end <= position);
        if at_or_below > 1 {
            self.points.drain(..at_or_below - 1);
        }
        if self.points.len() > MAX_END_POINTS {
            self.thin();
        }
    }

    /// Drops every other point between the first and the last.
    fn thin(&mut self) {
        let last = self.points.len() - 1;
        let mut index = 0;
        self.points.retain(|_| {
            let keep = index == 0 || index == last || index % 2 == 0;
            index += 1;
            keep
        });
    }

    /// Whether the history reaches back to `offset`: it holds a poll that saw the end at or
    /// below it.
    pub fn reaches(&self, offset: i64) -> bool {
        self.points.front().is_some_and(|(_, end)| *end <= offset)
    }

    /// When the record at `offset` was written, by the history: between the last poll that
    /// saw the end at or below `offset` and the first that saw it past, the records in
    /// between taken as written evenly. `None` when the history does not reach back to
    /// `offset`, or no poll saw the end past it yet.
    pub fn written_at(&self, offset: i64) -> Option<Instant> {
        let ((before, end_before), (after, end_after)) = self.bracket(offset)?;
        // The middle of the record's share of the interval: records end_before..end_after
        // were written between the two polls. In floating point: ends anywhere in i64 must
        // not overflow a subtraction.
        let share =
            (offset as f64 - end_before as f64 + 0.5) / (end_after as f64 - end_before as f64);
        Some(before + after.duration_since(before).mul_f64(share.clamp(0.0, 1.0)))
    }

    /// The points kept on either side of the record at `offset`: the last with the end at or
    /// below it, the first with the end past it.
    fn bracket(&self, offset: i64) -> Option<((Instant, i64), (Instant, i64))> {
        let above = self.points.partition_point(|(_, end)| *end <= offset);
        if above == 0 {
            return None;
        }
        Some((self.points[above - 1], *self.points.get(above)?))
    }

    /// Number of points kept.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn secs(start: Instant, seconds: f64) -> Instant {
        start + Duration::from_secs_f64(seconds)
    }

    fn seconds_after(start: Instant, at: Instant) -> f64 {
        at.duration_since(start).as_secs_f64()
    }

    #[test]
    fn a_record_is_placed_between_the_polls_that_bracket_it() {
        let start = Instant::now();
        let mut history = EndHistory::default();
        // Ten records written between the polls at 5 s and 10 s.
        history.record(secs(start, 0.0), 100, 100);
        history.record(secs(start, 5.0), 100, 100);
        history.record(secs(start, 10.0), 110, 100);
        let first = seconds_after(start, history.written_at(100).unwrap());
        let last = seconds_after(start, history.written_at(109).unwrap());
        assert!((first - 5.25).abs() < 1e-6, "{first}");
        assert!((last - 9.75).abs() < 1e-6, "{last}");
        assert_eq!(history.written_at(110), None, "not written yet");
        assert_eq!(history.written_at(99), None, "before the history");
        assert!(history.reaches(100) && !history.reaches(99));
    }

    #[test]
    fn a_quiet_spell_is_one_run_and_brackets_from_its_last_poll() {
        let start = Instant::now();
        let mut history = EndHistory::default();
        for second in 0..=60 {
            history.record(secs(start, f64::from(second)), 7, 7);
        }
        assert_eq!(
            history.len(),
            1,
            "nothing waits: only the last point is needed"
        );
        history.record(secs(start, 65.0), 8, 7);
        // The record came after the last quiet poll (60 s), not at the start of the spell.
        let written = seconds_after(start, history.written_at(7).unwrap());
        assert!((written - 62.5).abs() < 1e-6, "{written}");
    }

    #[test]
    fn a_run_keeps_its_first_and_last_point_while_records_before_it_wait() {
        let start = Instant::now();
        let mut history = EndHistory::default();
        history.record(secs(start, 0.0), 0, 0);
        for second in 1..=30 {
            history.record(secs(start, f64::from(second)), 4, 0);
        }
        assert_eq!(history.len(), 3);
        // Records 0..4 came between 0 s and 1 s (the run's first point), not before 30 s.
        let written = seconds_after(start, history.written_at(3).unwrap());
        assert!((written - 0.875).abs() < 1e-6, "{written}");
    }

    #[test]
    fn points_the_position_no_longer_needs_are_dropped() {
        let start = Instant::now();
        let mut history = EndHistory::default();
        for step in 0..10 {
            history.record(secs(start, f64::from(step) * 5.0), i64::from(step) * 10, 0);
        }
        assert_eq!(history.len(), 10);
        // The group consumed up to 45: only the point at 40 and the later ones are needed.
        history.record(secs(start, 50.0), 100, 45);
        assert_eq!(history.len(), 7);
        assert!(history.reaches(45) && !history.reaches(39));
        // Caught up: one point is left.
        history.record(secs(start, 55.0), 100, 100);
        assert_eq!(history.len(), 1);
    }

    #[test]
    fn an_end_that_goes_back_starts_afresh() {
        let start = Instant::now();
        let mut history = EndHistory::default();
        history.record(secs(start, 0.0), 50, 0);
        history.record(secs(start, 5.0), 60, 0);
        history.record(secs(start, 10.0), 3, 0);
        assert_eq!(history.len(), 1);
        assert_eq!(history.written_at(0), None);
    }

    /// Records written at the given times (offset = index), polled at the given times: the
    /// history after every poll, with the group at `position`.
    fn replay(writes: &[f64], polls: &[f64], position: i64) -> (Instant, EndHistory) {
        let start = Instant::now();
        let mut history = EndHistory::default();
        for &poll in polls {
            let end = writes.iter().filter(|written| **written <= poll).count() as i64;
            history.record(secs(start, poll), end, position.min(end));
        }
        (start, history)
    }

    fn sorted(mut values: Vec<f64>) -> Vec<f64> {
        values.sort_by(f64::total_cmp);
        values
    }

    proptest! {
        /// Whatever the writes and polls, the points kept on either side of a record hold its
        /// true time, and the estimate lies between them; with no point thinned out, they are
        /// the last poll that did not see the record and the first that did.
        #[test]
        fn the_estimate_lies_in_the_bracket_that_holds_the_truth(
            writes in prop::collection::vec(0.0..1000.0f64, 1..200).prop_map(sorted),
            polls in prop::collection::vec(0.0..1100.0f64, 1..400).prop_map(sorted),
            position_share in 0.0..1.0f64,
        ) {
            let position = (position_share * writes.len() as f64) as i64;
            let (start, history) = replay(&writes, &polls, position);
            prop_assert!(history.len() <= MAX_END_POINTS);
            let truth = writes[position as usize];
            let first_seen = polls.iter().copied().find(|poll| *poll >= truth);
            let last_unseen = polls.iter().copied().rfind(|poll| *poll < truth);
            match (history.bracket(position), first_seen, last_unseen) {
                (Some(((before, _), (after, _))), Some(first_seen), Some(last_unseen)) => {
                    let (before, after) = (seconds_after(start, before), seconds_after(start, after));
                    prop_assert!(before < truth + 1e-6 && truth <= after + 1e-6);
                    let estimate = seconds_after(start, history.written_at(position).unwrap());
                    prop_assert!(before - 1e-6 <= estimate && estimate <= after + 1e-6);
                    if polls.len() <= MAX_END_POINTS {
                        prop_assert!((before - last_unseen).abs() < 1e-6);
                        prop_assert!((after - first_seen).abs() < 1e-6);
                    }
                }
                (Some(_), _, _) => prop_assert!(false, "a bracket no poll pair makes"),
                // No poll saw the record, or none before it: nothing to estimate from.
                (None, first_seen, last_unseen) => {
                    prop_assert!(first_seen.is_none() || last_unseen.is_none());
                    prop_assert!(history.written_at(position).is_none());
                }
            }
        }
    }
}
