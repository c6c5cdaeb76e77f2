//! A watch's memory of its recent samples: per partition the high watermarks and committed
//! offsets within the rate window, the member counts, and the lag history; each sample it
//! records yields an [`Estimate`]. Pure: no IO, no clock of its own.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EndHistory, Estimate, LagHistory, PartitionEstimate, Rates};
use crate::lag::{LagRule, PartitionOffsets};

/// Most points a partition's series keeps, whatever the window: with a poll interval shorter
/// than `rate window / MAX_POINTS`, the effective window shrinks to `MAX_POINTS` polls.
pub const MAX_POINTS: usize = 360;

/// The longest in-flight time, in poll intervals, whatever the commit interval: a group that
/// commits less often than this has lag beyond it counted as a backlog.
const MAX_IN_FLIGHT_POLLS: f64 = 6.0;

/// The group's commit interval: the median of the gaps between commits seen on any partition
/// (so that a partition that changed once in the window, or a quiet one, does not stretch
/// it), `None` without at least two gaps.
fn commit_interval(gaps: &mut [f64]) -> Option<f64> {
    if gaps.len() < 2 {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    let middle = gaps.len() / 2;
    Some(if gaps.len().is_multiple_of(2) {
        (gaps[middle - 1] + gaps[middle]) / 2.0
    } else {
        gaps[middle]
    })
}

/// A watch's memory of recent samples.
#[derive(Debug)]
pub struct Window {
    rate_window: Duration,
    /// Failed polls between two samples closer than this are bridged: the idle window reads
    /// the samples on either side, as between any two polls. A longer gap counts as activity.
    bridged_gap: Duration,
    /// The time of the latest sample.
    last_sample: Option<Instant>,
    /// When the polls since the latest sample started failing, if they did.
    failing_since: Option<Instant>,
    /// Times of the successful samples within the rate window.
    samples: VecDeque<Instant>,
    /// Per partition, sorted by group, topic and number (see [`key`]).
    partitions: Vec<PartitionHistory>,
    /// Room for the gaps between commits, reused by every sample.
    gaps: Vec<f64>,
    /// Active members of the group at each sample in the window (one per sample, as
    /// `samples`), `None` where unknown.
    members: VecDeque<Option<u32>>,
    history: LagHistory,
    /// The time lag over time, milliseconds (unknown as unbounded), for an idle window on age.
    age_history: LagHistory,
}

#[derive(Debug)]
struct PartitionHistory {
    /// The group whose committed offsets these are.
    group: Arc<str>,
    /// The topic.
    topic: Arc<str>,
    /// The partition number.
    partition: i32,
    /// The topic id the points belong to: a topic created again under the same name starts
    /// its partitions' history afresh.
    topic_id: Arc<str>,
    /// High watermarks.
    produced: Series,
    /// Committed offsets.
    consumed: Series,
    /// The committed offset at the previous sample, for `excludePersistentLag`.
    previous_committed: Option<i64>,
    /// Where the end stood at each poll, as far back as the group's position needs (time lag).
    ends: EndHistory,
}

impl PartitionHistory {
    /// An empty history of the partition of `offsets`.
    fn new(offsets: &PartitionOffsets) -> PartitionHistory {
        PartitionHistory {
            group: Arc::clone(&offsets.group),
            topic: Arc::clone(&offsets.topic),
            partition: offsets.partition,
            topic_id: Arc::clone(&offsets.topic_id),
            produced: Series::default(),
            consumed: Series::default(),
            previous_committed: None,
            ends: EndHistory::default(),
        }
    }

    fn key(&self) -> (&str, &str, i32) {
        (&self.group, &self.topic, self.partition)
    }
}

/// What orders partitions in a window: group, topic, number. Borrowed, so that a poll
/// allocates nothing for a partition it already knows.
fn key(offsets: &PartitionOffsets) -> (&str, &str, i32) {
    (&offsets.group, &offsets.topic, offsets.partition)
}

/// One partition's offsets at the window's latest samples, oldest first, never decreasing:
/// an offset that goes back (topic recreated, group reset) starts the series afresh. Stored
/// compactly: the oldest and newest values and the step between each two samples (4 bytes
/// a sample); the times are the window's own (one per sample, shared by every partition),
/// and a series of `n` points belongs to the window's `n` latest samples. A step too large
/// for 4 bytes (over 4 billion records in one poll) starts the series afresh, as a reset
/// does: the rate is then unknown until the next sample, never wrong.
#[derive(Debug, Default)]
struct Series {
    /// The value at the oldest point, when there is one.
    oldest: Option<i64>,
    /// The value at the newest point.
    newest: i64,
    /// The steps from each point to the next, oldest first: one fewer than the points.
    steps: VecDeque<u32>,
}

impl Series {
    fn len(&self) -> usize {
        self.oldest.map_or(0, |_| self.steps.len() + 1)
    }

    fn push(&mut self, value: i64) {
        let Some(_) = self.oldest else {
            self.oldest = Some(value);
            self.newest = value;
            return;
        };
        match value
            .checked_sub(self.newest)
            .and_then(|step| u32::try_from(step).ok())
        {
            Some(step) => self.steps.push_back(step),
            None => {
                self.steps.clear();
                self.oldest = Some(value);
            }
        }
        self.newest = value;
    }

    fn clear(&mut self) {
        self.steps.clear();
        self.oldest = None;
    }

    /// Keeps the `points` newest points.
    fn keep(&mut self, points: usize) {
        if points == 0 {
            self.clear();
            return;
        }
        while self.len() > points {
            let step = self.steps.pop_front().unwrap_or(0);
            self.oldest = self
                .oldest
                .map(|oldest| oldest.saturating_add(i64::from(step)));
        }
    }

    /// `(time, value relative to the oldest point)` of each point, oldest first, the times
    /// the newest of `times` (the window's samples).
    fn points<'a>(
        &'a self,
        times: &'a VecDeque<Instant>,
    ) -> impl Iterator<Item = (Instant, u64)> + Clone + 'a {
        let values = std::iter::once(0u64).chain(self.steps.iter().scan(0u64, |total, step| {
            *total = total.saturating_add(u64::from(*step));
            Some(*total)
        }));
        times
            .iter()
            .skip(times.len().saturating_sub(self.len()))
            .copied()
            .zip(values)
            .take(self.len())
    }

    /// The seconds between consecutive changes of the value (commits, for committed
    /// offsets): one gap fewer than the changes seen.
    fn change_gaps<'a>(&'a self, times: &'a VecDeque<Instant>) -> impl Iterator<Item = f64> + 'a {
        let changes = self
            .points(times)
            .zip(self.points(times).skip(1))
            .filter(|((_, a), (_, b))| a != b)
            .map(|(_, (at, _))| at);
        changes
            .clone()
            .zip(changes.skip(1))
            .map(|(earlier, later)| later.duration_since(earlier).as_secs_f64())
    }

    /// Records per second: the least-squares slope of the points, `None` with fewer than
    /// two distinct times. Using every point, not the two ends, keeps one late or missed
    /// poll from skewing the rate.
    fn rate(&self, times: &VecDeque<Instant>) -> Option<f64> {
        let (first_at, _) = self.points(times).next()?;
        least_squares_slope(self.points(times).map(move |(at, value)| {
            (
                at.duration_since(first_at).as_secs_f64(),
                // Relative to the first point, so that large offsets keep their precision.
                value as f64,
            )
        }))
    }
}

/// The slope of the least-squares line through `points` (walked twice, allocating
/// nothing: every watch computes it for each partition at every poll), `None` with fewer
/// than two distinct x values.
pub fn least_squares_slope<I>(points: I) -> Option<f64>
where
    I: IntoIterator<Item = (f64, f64)>,
    I::IntoIter: Clone,
{
    let points = points.into_iter();
    let (count, sum_x, sum_y) = points
        .clone()
        .fold((0usize, 0.0, 0.0), |(n, sx, sy), (x, y)| {
            (n + 1, sx + x, sy + y)
        });
    if count < 2 {
        return None;
    }
    let n = count as f64;
    let (mean_x, mean_y) = (sum_x / n, sum_y / n);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx <= f64::EPSILON {
        return None;
    }
    Some(sxy / sxx)
}

impl Window {
    /// An empty window keeping samples for `rate_window`, bridging gaps of failed polls up to
    /// `bridged_gap` long (the time a sample is served: `SCALER_STALE_AFTER`).
    pub fn new(rate_window: Duration, bridged_gap: Duration) -> Window {
        Window {
            rate_window,
            bridged_gap,
            last_sample: None,
            failing_since: None,
            samples: VecDeque::new(),
            partitions: Vec::new(),
            gaps: Vec::new(),
            members: VecDeque::new(),
            history: LagHistory::default(),
            age_history: LagHistory::default(),
        }
    }

    /// Adds a successful sample taken `at` (not before the previous one) and estimates.
    /// `members` is `None` when the group could not be described.
    pub fn record(
        &mut self,
        at: Instant,
        mut offsets: Vec<PartitionOffsets>,
        members: Option<usize>,
        rule: LagRule,
    ) -> Estimate {
        let oldest = at.checked_sub(self.rate_window).unwrap_or(at);
        self.samples.push_back(at);
        while self.samples.front().is_some_and(|t| *t < oldest) || self.samples.len() > MAX_POINTS {
            self.samples.pop_front();
        }
        self.members
            .push_back(members.map(|count| u32::try_from(count).unwrap_or(u32::MAX)));
        while self.members.len() > self.samples.len() {
            self.members.pop_front();
        }

        // Samples come sorted; checking is cheaper than sorting.
        if !offsets.is_sorted_by(|a, b| key(a) <= key(b)) {
            offsets.sort_by(|a, b| key(a).cmp(&key(b)));
        }
        if !self.holds_exactly(&offsets) {
            self.match_partitions(&offsets);
        }
        let mut partitions = Vec::with_capacity(offsets.len());
        let mut total_lag = 0i64;
        // The oldest wait over the partitions, `None` once one is unknown.
        let mut time_lag = Some(0.0f64);
        let (mut produce, mut consume) = (0.0, 0.0);
        for (history, offsets) in self.partitions.iter_mut().zip(offsets) {
            history.produced.push(offsets.high_watermark);
            history.produced.keep(self.samples.len());
            let previous = history.previous_committed;
            match offsets.committed {
                Some(committed) => history.consumed.push(committed),
                None => history.consumed.clear(),
            }
            history.consumed.keep(self.samples.len());
            history.previous_committed = offsets.committed;

            let lag = offsets.lag(rule);
            let first_unconsumed = offsets.first_unconsumed(rule);
            // An end an earlier read stands in for is not where the end stood now: records
            // written since would be dated after this poll.
            if offsets.unread.is_none() {
                history.ends.record(
                    at,
                    offsets.high_watermark,
                    first_unconsumed.unwrap_or(offsets.high_watermark),
                );
            }
            let waited = match first_unconsumed {
                None => Some(0.0),
                Some(offset) => history
                    .ends
                    .written_at(offset)
                    .map(|written| at.saturating_duration_since(written))
                    .or(offsets.waited)
                    .map(|waited| waited.as_secs_f64()),
            };
            time_lag = time_lag.zip(waited).map(|(most, waited)| most.max(waited));
            let persistent =
                lag > 0 && offsets.committed.is_some() && previous == offsets.committed;
            let produce_rate = history.produced.rate(&self.samples);
            let consume_rate = history.consumed.rate(&self.samples);
            produce += produce_rate.unwrap_or(0.0);
            consume += consume_rate.unwrap_or(0.0);
            total_lag = total_lag.saturating_add(lag);
            partitions.push(PartitionEstimate {
                offsets,
                lag,
                persistent,
                produce_rate,
                consume_rate,
                time_lag: waited,
            });
        }
        if let Some(failed_at) = self.failing_since.take() {
            let bridged = self
                .last_sample
                .is_some_and(|last| at.saturating_duration_since(last) <= self.bridged_gap);
            if !bridged {
                self.history.record(failed_at, i64::MAX);
                self.age_history.record(failed_at, i64::MAX);
            }
        }
        self.last_sample = Some(at);
        self.history.record(at, total_lag);
        self.age_history
            .record(at, time_lag.map_or(i64::MAX, super::decide::seconds_ms));
        let rates = (self.samples.len() >= 2).then_some(Rates { produce, consume });
        let (known, sum) = self
            .members
            .iter()
            .flatten()
            .fold((0usize, 0.0f64), |(n, sum), count| {
                (n + 1, sum + f64::from(*count))
            });
        let mean_members = (known > 0).then(|| sum / known as f64);
        let poll_spacing = match (self.samples.front(), self.samples.len()) {
            (Some(first), n) if n >= 2 => {
                Some(at.duration_since(*first).as_secs_f64() / (n - 1) as f64)
            }
            _ => None,
        };
        self.gaps.clear();
        for history in &self.partitions {
            self.gaps
                .extend(history.consumed.change_gaps(&self.samples));
        }
        let in_flight_seconds = match (poll_spacing, commit_interval(&mut self.gaps)) {
            (Some(spacing), Some(commits)) => {
                Some(spacing.max(commits.min(MAX_IN_FLIGHT_POLLS * spacing)))
            }
            (spacing, _) => spacing,
        };
        Estimate {
            taken_at: at,
            oldest_read: at,
            partitions,
            total_lag,
            rates,
            members,
            mean_members,
            samples_in_window: self.samples.len(),
            in_flight_seconds,
            time_lag,
            history: Arc::new(self.history.clone()),
            age_history: Arc::new(self.age_history.clone()),
        }
    }

    /// Whether the window's partitions are those of `offsets` (sorted), in order: the
    /// steady state, where a sample is recorded in place.
    fn holds_exactly(&self, offsets: &[PartitionOffsets]) -> bool {
        self.partitions.len() == offsets.len()
            && self
                .partitions
                .iter()
                .zip(offsets)
                .all(|(history, now)| history.key() == key(now) && history.topic_id == now.topic_id)
    }

    /// Makes the window's partitions those of `offsets` (sorted), in one ordered pass over
    /// both: partitions gone from the sample (topic deleted, group left a topic) are
    /// forgotten, and a partition seen for the first time (or of a topic created again)
    /// starts an empty history.
    fn match_partitions(&mut self, offsets: &[PartitionOffsets]) {
        let mut known = std::mem::take(&mut self.partitions).into_iter().peekable();
        self.partitions = offsets
            .iter()
            .map(|offsets| {
                while known
                    .next_if(|history| history.key().cmp(&key(offsets)) == Ordering::Less)
                    .is_some()
                {}
                known
                    .next_if(|history| history.key() == key(offsets))
                    .filter(|history| history.topic_id == offsets.topic_id)
                    .unwrap_or_else(|| PartitionHistory::new(offsets))
            })
            .collect();
    }

    /// The partitions of `offsets` (by index) with a record waiting that this window's end
    /// history does not reach back to: their time lag needs the record's timestamp from the
    /// broker (`PartitionOffsets::waited`). With each, the offset of that record.
    pub fn unreached(&self, offsets: &[PartitionOffsets], rule: LagRule) -> Vec<(usize, i64)> {
        offsets
            .iter()
            .enumerate()
            .filter_map(|(index, now)| {
                let offset = now.first_unconsumed(rule)?;
                let reached = self
                    .partitions
                    .binary_search_by(|history| history.key().cmp(&key(now)))
                    .ok()
                    .map(|found| &self.partitions[found])
                    .filter(|history| history.topic_id == now.topic_id)
                    .is_some_and(|history| history.ends.reaches(offset));
                (!reached).then_some((index, offset))
            })
            .collect()
    }

    /// How many partitions of `offsets` have a committed offset that went back or vanished
    /// since this window's previous sample of them (same topic id). Groups do that only when
    /// an operator resets or deletes their offsets; a group coordinator that has just taken
    /// over from a dead broker can answer so for a moment, for a group whose commits it has
    /// not caught up with.
    pub fn commits_gone_back(&self, offsets: &[PartitionOffsets]) -> usize {
        offsets
            .iter()
            .filter(|now| {
                self.partitions
                    .binary_search_by(|history| history.key().cmp(&key(now)))
                    .ok()
                    .map(|found| &self.partitions[found])
                    .filter(|history| history.topic_id == now.topic_id)
                    .and_then(|history| history.previous_committed)
                    .is_some_and(|before| now.committed.is_none_or(|committed| committed < before))
            })
            .count()
    }

    /// The time of the latest sample recorded.
    pub fn last_sample(&self) -> Option<Instant> {
        self.last_sample
    }

    /// Records a failed poll at `at`: the window keeps its samples (so rates and persistent
    /// lag survive a transient error). Missing data never reads as idle, but a gap no longer
    /// than the one bridged (a leader election, a coordinator moving) does not restart the
    /// idle window either: while it lasts the previous sample is served as it stood, and
    /// once a sample arrives within the bridged gap of the previous one, the idle window
    /// reads the two as neighbours. A longer gap counts as activity from its first failure
    /// until the sample after it.
    pub fn record_failure(&mut self, at: Instant) {
        self.failing_since.get_or_insert(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::testing::*;
    use crate::estimate::*;
    use crate::lag::PartitionOffsets;

    #[test]
    fn slope_of_a_line_is_exact_and_needs_two_times() {
        assert_eq!(least_squares_slope([]), None);
        assert_eq!(least_squares_slope([(1.0, 5.0)]), None);
        assert_eq!(least_squares_slope([(1.0, 5.0), (1.0, 7.0)]), None);
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 0.7, 3.0 + 2.5 * i as f64 * 0.7))
            .collect();
        assert!(close(least_squares_slope(line).unwrap(), 2.5));
    }

    #[test]
    fn total_lag_saturates() {
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let estimate = window.record(
            Instant::now(),
            vec![offsets(0, i64::MAX, Some(0)), offsets(1, 5, Some(0))],
            None,
            LATEST,
        );
        assert_eq!(estimate.total_lag, i64::MAX);
    }

    #[test]
    fn a_topic_created_again_starts_its_partitions_history_afresh() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let sample = |id: &str, high: i64, committed: i64| PartitionOffsets {
            topic_id: id.into(),
            ..offsets(0, high, Some(committed))
        };
        window.record(at(0), vec![sample("old", 100, 100)], Some(1), LATEST);
        let old = window.record(at(5), vec![sample("old", 150, 150)], Some(1), LATEST);
        assert!(close(old.partitions[0].produce_rate.unwrap(), 10.0));
        // Deleted and created again: 160 records produced and 120 consumed in the new topic
        // by the next sample. Continuing the old topic's points would read 6/s in, a slope
        // through both topics' offsets.
        let new = window.record(at(10), vec![sample("new", 160, 120)], Some(1), LATEST);
        let partition = &new.partitions[0];
        assert_eq!(partition.produce_rate, None);
        assert_eq!(partition.consume_rate, None);
        assert!(!partition.persistent);
        assert_eq!(new.total_lag, 40);
        let next = window.record(at(15), vec![sample("new", 210, 170)], Some(1), LATEST);
        assert!(close(next.partitions[0].produce_rate.unwrap(), 10.0));
        assert!(close(next.partitions[0].consume_rate.unwrap(), 10.0));
    }

    #[test]
    fn commits_that_go_back_or_vanish_are_counted_per_partition_of_the_same_topic() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let sample = |id: &str, committed: [Option<i64>; 3]| -> Vec<PartitionOffsets> {
            (0..3)
                .map(|partition| PartitionOffsets {
                    topic_id: id.into(),
                    ..offsets(partition, 100, committed[partition as usize])
                })
                .collect()
        };
        window.record(start, sample("a", [Some(50), Some(60), None]), None, LATEST);
        assert_eq!(
            window.commits_gone_back(&sample("a", [Some(50), Some(61), Some(1)])),
            0
        );
        assert_eq!(
            window.commits_gone_back(&sample("a", [None, None, None])),
            2
        );
        assert_eq!(
            window.commits_gone_back(&sample("a", [Some(49), Some(60), None])),
            1
        );
        // A topic created again starts from nothing: not a commit gone back.
        assert_eq!(
            window.commits_gone_back(&sample("b", [Some(0), None, None])),
            0
        );
    }

    #[test]
    fn rates_are_unknown_until_two_samples() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let first = feed(&mut window, start, &[(0.0, 100, Some(40))], Some(1));
        assert_eq!(first.rates, None);
        assert_eq!(first.total_lag, 60);
        assert_eq!(first.eta(), Eta::Unknown);
        let second = feed(&mut window, start, &[(5.0, 150, Some(140))], Some(1));
        let rates = second.rates.unwrap();
        assert!(close(rates.produce, 10.0));
        assert!(close(rates.consume, 20.0));
    }

    #[test]
    fn jitter_and_a_missed_poll_do_not_bias_constant_rates() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(120), STALE);
        // Polls meant every 5 s, arriving up to 1.3 s late or early, and the one at 25 s lost.
        let times: [f64; 9] = [0.0, 5.9, 9.2, 15.4, 20.1, 31.3, 34.8, 40.0, 46.1];
        let points: Vec<(f64, i64, Option<i64>)> = times
            .iter()
            .map(|t| {
                (
                    *t,
                    1000 + (12.0 * *t).round() as i64,
                    Some((30.0 * *t).round() as i64),
                )
            })
            .collect();
        let rates = feed(&mut window, start, &points, Some(3)).rates.unwrap();
        assert!((rates.produce - 12.0).abs() < 0.05, "{rates:?}");
        assert!((rates.consume - 30.0).abs() < 0.05, "{rates:?}");
    }

    #[test]
    fn a_burst_is_spread_as_least_squares_says() {
        // 0 records for 20 s, then 100 at once, then nothing: points at 0,5,...,40.
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(120), STALE);
        let points: Vec<(f64, i64, Option<i64>)> = (0..9)
            .map(|i| {
                let t = i as f64 * 5.0;
                (t, if t > 20.0 { 100 } else { 0 }, Some(0))
            })
            .collect();
        let rates = feed(&mut window, start, &points, Some(1)).rates.unwrap();
        // Closed form: x = 0..40 step 5 (mean 20, Sxx = 25·60 = 1500); y = 100 for the last 4
        // (mean 400/9); Sxy = Σ (x-20)·y = 100·(5+10+15+20) = 5000 → slope 10/3.
        assert!(close(rates.produce, 10.0 / 3.0), "{rates:?}");
        assert!(close(rates.consume, 0.0), "{rates:?}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        // 10/s for a minute, then 2/s; a 30 s window sees only the new rate.
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(30), STALE);
        let mut points = Vec::new();
        for i in 0..=24 {
            let t = i as f64 * 5.0;
            let high = if t <= 60.0 {
                (10.0 * t) as i64
            } else {
                600 + (2.0 * (t - 60.0)) as i64
            };
            points.push((t, high, Some(0)));
        }
        let estimate = feed(&mut window, start, &points, Some(1));
        assert!(close(estimate.rates.unwrap().produce, 2.0));
        assert_eq!(estimate.samples_in_window, 7);
    }

    #[test]
    fn offsets_going_back_reset_that_partition_only() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(120), STALE);
        let rule = LATEST;
        let mut estimate = None;
        for i in 0..6 {
            let t = start + Duration::from_secs(5 * i);
            let i = i as i64;
            // Partition 0: steady. Partition 1: topic recreated at sample 3 (watermark back
            // to 0), group reset at sample 4 (commit back to 0).
            let p1_high = if i < 3 { 500 + 50 * i } else { 10 * (i - 3) };
            let p1_commit = if i < 4 { 400 + 40 * i } else { 5 * (i - 4) };
            estimate = Some(window.record(
                t,
                vec![
                    offsets(0, 100 * i, Some(80 * i)),
                    offsets(1, p1_high, Some(p1_commit)),
                ],
                Some(2),
                rule,
            ));
        }
        let estimate = estimate.unwrap();
        let p1 = &estimate.partitions[1];
        assert!(close(p1.produce_rate.unwrap(), 2.0), "{p1:?}");
        assert!(close(p1.consume_rate.unwrap(), 1.0), "{p1:?}");
        let rates = estimate.rates.unwrap();
        assert!(close(rates.produce, 20.0 + 2.0), "{rates:?}");
        assert!(close(rates.consume, 16.0 + 1.0), "{rates:?}");
        assert!(rates.produce >= 0.0 && rates.consume >= 0.0);
    }

    #[test]
    fn a_partition_reset_just_now_counts_no_rate_yet() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(120), STALE);
        feed(
            &mut window,
            start,
            &[(0.0, 100, Some(50)), (5.0, 150, Some(100))],
            Some(1),
        );
        let estimate = feed(&mut window, start, &[(10.0, 3, Some(2))], Some(1));
        assert_eq!(estimate.partitions[0].produce_rate, None);
        assert_eq!(
            estimate.rates,
            Some(Rates {
                produce: 0.0,
                consume: 0.0
            })
        );
    }

    #[test]
    fn persistent_memory_survives_failed_polls() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        feed(&mut window, start, &[(0.0, 100, Some(10))], Some(1));
        window.record_failure(start + Duration::from_secs(5));
        window.record_failure(start + Duration::from_secs(10));
        let estimate = feed(&mut window, start, &[(15.0, 120, Some(10))], Some(1));
        assert!(estimate.partitions[0].persistent);
        let moved = feed(&mut window, start, &[(20.0, 120, Some(30))], Some(1));
        assert!(!moved.partitions[0].persistent);
    }

    #[test]
    fn a_step_too_large_for_the_compact_series_starts_it_afresh() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        feed(
            &mut window,
            start,
            &[(0.0, 10, Some(0)), (5.0, 20, Some(5))],
            Some(1),
        );
        let jump = 20 + i64::from(u32::MAX) + 1;
        let estimate = feed(&mut window, start, &[(10.0, jump, Some(10))], Some(1));
        assert_eq!(
            estimate.partitions[0].produce_rate, None,
            "unknown, not wrong"
        );
        assert!(close(estimate.partitions[0].consume_rate.unwrap(), 1.0));
        let estimate = feed(&mut window, start, &[(15.0, jump + 50, Some(15))], Some(1));
        assert!(close(estimate.partitions[0].produce_rate.unwrap(), 10.0));
    }

    /// The old, uncompacted series: `(time, offset)` per point, as the reference.
    #[derive(Default)]
    struct Reference {
        produced: Vec<(Instant, i64)>,
        consumed: Vec<(Instant, i64)>,
    }

    fn reference_push(points: &mut Vec<(Instant, i64)>, at: Instant, value: i64) {
        if points.last().is_some_and(|(_, last)| value < *last) {
            points.clear();
        }
        points.push((at, value));
    }

    fn reference_rate(points: &[(Instant, i64)]) -> Option<f64> {
        let (first_at, first) = *points.first()?;
        least_squares_slope(points.iter().map(|(at, v)| {
            (
                at.duration_since(first_at).as_secs_f64(),
                (v - first) as f64,
            )
        }))
    }

    mod compact {
        use super::*;
        use proptest::prelude::*;

        /// One poll of one partition: absent, or its end's step (negative: back to that
        /// much) and its commit's (`None`: no commit).
        fn poll() -> impl Strategy<Value = Option<(i64, Option<i64>)>> {
            prop_oneof![
                1 => Just(None),
                12 => (
                    prop_oneof![8 => 0i64..5_000, 1 => -3i64..0],
                    prop_oneof![6 => (0i64..3_000).prop_map(Some), 1 => Just(None)],
                )
                    .prop_map(Some),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            /// The compact window's rates and in-flight time equal those of the series it
            /// replaced, which kept a time and an offset per partition and poll.
            #[test]
            fn rates_equal_the_uncompacted_series(
                polls in prop::collection::vec(
                    (
                        1u64..9_000,
                        prop::collection::vec(poll(), 3),
                        prop::option::weighted(0.8, 0usize..40),
                    ),
                    1..140,
                ),
            ) {
                let start = Instant::now();
                let window_length = Duration::from_secs(120);
                let mut window = Window::new(window_length, STALE);
                let mut reference: Vec<Reference> = (0..3).map(|_| Reference::default()).collect();
                let mut ends = [0i64; 3];
                let mut commits = [0i64; 3];
                let mut times: Vec<(Instant, Option<usize>)> = Vec::new();
                let mut at = start;
                for (gap_ms, partitions, members) in polls {
                    at += Duration::from_millis(gap_ms);
                    let oldest = at - window_length.min(at - start);
                    times.push((at, members));
                    times.retain(|(t, _)| *t >= oldest);
                    if times.len() > MAX_POINTS {
                        times.remove(0);
                    }
                    let mut sample = Vec::new();
                    for (p, poll) in partitions.iter().enumerate() {
                        let Some((end_step, commit_step)) = poll else {
                            reference[p] = Reference::default();
                            continue;
                        };
                        ends[p] = if *end_step < 0 { -end_step } else { ends[p] + end_step };
                        let committed = commit_step.map(|step| {
                            commits[p] = (commits[p] + step).min(ends[p]);
                            commits[p]
                        });
                        sample.push(offsets(p as i32, ends[p], committed));
                        let history = &mut reference[p];
                        reference_push(&mut history.produced, at, ends[p]);
                        match committed {
                            Some(c) => reference_push(&mut history.consumed, at, c),
                            None => history.consumed.clear(),
                        }
                        for points in [&mut history.produced, &mut history.consumed] {
                            points.retain(|(t, _)| *t >= oldest);
                            if points.len() > MAX_POINTS {
                                points.remove(0);
                            }
                        }
                    }
                    let estimate = window.record(at, sample, members, LATEST);
                    let known: Vec<usize> = times.iter().filter_map(|(_, m)| *m).collect();
                    let mean = (!known.is_empty())
                        .then(|| known.iter().sum::<usize>() as f64 / known.len() as f64);
                    match (estimate.mean_members, mean) {
                        (Some(got), Some(want)) => prop_assert!(close(got, want), "{got} against {want}"),
                        (got, want) => prop_assert_eq!(got, want),
                    }
                    for partition in &estimate.partitions {
                        let history = &reference[partition.offsets.partition as usize];
                        for (got, want) in [
                            (partition.produce_rate, reference_rate(&history.produced)),
                            (partition.consume_rate, reference_rate(&history.consumed)),
                        ] {
                            match (got, want) {
                                (Some(got), Some(want)) => prop_assert!(close(got, want), "{got} against {want}"),
                                (got, want) => prop_assert_eq!(got, want),
                            }
                        }
                    }
                    prop_assert_eq!(estimate.samples_in_window, times.len());
                    let mut gaps: Vec<f64> = reference
                        .iter()
                        .flat_map(|history| {
                            let changes: Vec<Instant> = history
                                .consumed
                                .windows(2)
                                .filter(|pair| pair[0].1 != pair[1].1)
                                .map(|pair| pair[1].0)
                                .collect();
                            changes
                                .windows(2)
                                .map(|pair| pair[1].duration_since(pair[0]).as_secs_f64())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let spacing = (times.len() >= 2).then(|| {
                        at.duration_since(times[0].0).as_secs_f64() / (times.len() - 1) as f64
                    });
                    let want = match (spacing, commit_interval(&mut gaps)) {
                        (Some(spacing), Some(commits)) => {
                            Some(spacing.max(commits.min(MAX_IN_FLIGHT_POLLS * spacing)))
                        }
                        (spacing, _) => spacing,
                    };
                    match (estimate.in_flight_seconds, want) {
                        (Some(got), Some(want)) => prop_assert!(close(got, want), "{got} against {want}"),
                        (got, want) => prop_assert_eq!(got, want),
                    }
                }
            }
        }
    }
}
