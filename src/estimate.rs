//! The estimator: produce and consume rates, time to drain (ETA), replica targets and
//! idleness, from a watch's recent samples. Pure: no IO, and no clock of its own (every
//! function is given the times it needs), so it is tested with synthetic sample streams.
//!
//! A watch's [`Window`] remembers, per partition, the high watermarks and committed offsets of
//! the samples within the rate window, and the lag history the idle window needs. Each sample
//! it records yields an [`Estimate`]: what the watch knows at that moment. A trigger's
//! [`Rules`] then turn an estimate into a [`Decision`]: the values of every metric mode and
//! whether the workload is active.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lag::{LagRule, PartitionOffsets};

/// The ETA reported while lag is not draining: one year, in seconds. Large enough that an
/// HPA with `metricType: Value` scales up as far as it may, finite so that KEDA does not turn
/// it into 0 (it maps NaN and infinities to 0). Draining ETAs are capped at it too.
pub const NOT_DRAINING_ETA_SECONDS: f64 = 31_536_000.0;

/// Most points a partition's series keeps, whatever the window: with a poll interval shorter
/// than `rate window / MAX_POINTS`, the effective window shrinks to `MAX_POINTS` polls.
pub const MAX_POINTS: usize = 360;

/// The longest idle window a trigger may ask for; the lag history spans this much.
pub const MAX_IDLE_WINDOW: Duration = Duration::from_secs(3600);

/// The `backlog` metric's largest value, minutes: the Azul scaler's ceiling (9,999,999).
pub const MAX_BACKLOG_MINUTES: f64 = 9_999_999.0;

/// The `backlog` metric's rate scale ε, records per second (1 per minute, the net rate below
/// which the Azul scaler stops dividing): see [`backlog_minutes`].
const BACKLOG_RATE_SCALE: f64 = 1.0 / 60.0;

/// Most entries the lag history keeps (see [`LagHistory`]).
const MAX_HISTORY: usize = 4096;

/// A net drain rate below this many records per second counts as not draining.
const MIN_NET_RATE: f64 = 1e-9;

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
    /// By group, topic and partition.
    partitions: BTreeMap<(String, String, i32), PartitionHistory>,
    /// Active members of the group at each sample in the window, where known.
    members: VecDeque<(Instant, usize)>,
    history: LagHistory,
}

#[derive(Debug, Default)]
struct PartitionHistory {
    /// The topic id the points belong to: a topic created again under the same name starts
    /// its partitions' history afresh.
    topic_id: Option<Arc<str>>,
    /// High watermarks.
    produced: Series,
    /// Committed offsets.
    consumed: Series,
    /// The committed offset at the previous sample, for `excludePersistentLag`.
    previous_committed: Option<i64>,
}

/// Points `(time, offset)` of one partition, oldest first, never decreasing: an offset that
/// goes back (topic recreated, group reset) starts the series afresh.
#[derive(Debug, Default)]
struct Series {
    points: VecDeque<(Instant, i64)>,
}

impl Series {
    fn push(&mut self, at: Instant, value: i64) {
        if self.points.back().is_some_and(|(_, last)| value < *last) {
            self.points.clear();
        }
        self.points.push_back((at, value));
        if self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
    }

    fn clear(&mut self) {
        self.points.clear();
    }

    /// Mean seconds between changes of the value (commits, for committed offsets), `None`
    /// when it never changed in the series.
    fn change_interval(&self) -> Option<f64> {
        let (first_at, _) = self.points.front()?;
        let (last_at, _) = self.points.back()?;
        let changes = self
            .points
            .iter()
            .zip(self.points.iter().skip(1))
            .filter(|((_, a), (_, b))| a != b)
            .count();
        (changes > 0).then(|| last_at.duration_since(*first_at).as_secs_f64() / changes as f64)
    }

    fn prune(&mut self, oldest: Instant) {
        while self.points.front().is_some_and(|(at, _)| *at < oldest) {
            self.points.pop_front();
        }
    }

    /// Records per second: the least-squares slope of the points, `None` with fewer than
    /// two distinct times. Using every point, not the two ends, keeps one late or missed
    /// poll from skewing the rate.
    fn rate(&self) -> Option<f64> {
        let (first_at, first_value) = *self.points.front()?;
        let points: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|(at, value)| {
                (
                    at.duration_since(first_at).as_secs_f64(),
                    // Relative to the first point, so that large offsets keep their precision.
                    value.saturating_sub(first_value) as f64,
                )
            })
            .collect();
        least_squares_slope(&points)
    }
}

/// The slope of the least-squares line through `points`, `None` with fewer than two
/// distinct x values.
pub fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
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

/// What a watch knows after one successful sample.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// When the sample's poll started.
    pub taken_at: Instant,
    /// When the oldest offsets in the sample were read: `taken_at`, or earlier where the
    /// poll could not reach a partition's leader and an earlier read's offsets stand in for
    /// that partition's (the watcher sets it). The sample is served until this is stale.
    pub oldest_read: Instant,
    /// Every partition the watch covers, sorted by topic and number.
    pub partitions: Vec<PartitionEstimate>,
    /// Sum of the partitions' lag (what activation compares).
    pub total_lag: i64,
    /// Produce and consume rates over the window; `None` until it holds two samples.
    pub rates: Option<Rates>,
    /// Active members of the group now; `None` when describing the group failed.
    pub members: Option<usize>,
    /// Mean of the known member counts over the window, what per-member throughput divides
    /// by (the consume rate was earned by the members of the whole window, not only today's).
    pub mean_members: Option<f64>,
    /// Samples within the rate window, this one included.
    pub samples_in_window: usize,
    /// How long a consumed record may stay uncommitted, seconds: the longer of the mean time
    /// between samples and the mean time between commits seen in the window; `None` with one
    /// sample. Lag the group consumes within this is in flight (see [`eta`]).
    pub in_flight_seconds: Option<f64>,
    /// The lag history, for the idle window.
    pub history: Arc<LagHistory>,
}

/// One partition in an [`Estimate`].
#[derive(Clone, Debug)]
pub struct PartitionEstimate {
    /// The offsets read.
    pub offsets: PartitionOffsets,
    /// Its lag under the watch's rule.
    pub lag: i64,
    /// Lag whose committed offset did not move since the previous sample (KEDA's
    /// "persistent lag"); never on a partition's first sample.
    pub persistent: bool,
    /// Growth of the high watermark, records/s; `None` with fewer than two points.
    pub produce_rate: Option<f64>,
    /// Growth of the committed offset, records/s; `None` with fewer than two points.
    pub consume_rate: Option<f64>,
}

/// Records per second over the rate window, summed over partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Growth of high watermarks.
    pub produce: f64,
    /// Growth of committed offsets.
    pub consume: f64,
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
            partitions: BTreeMap::new(),
            members: VecDeque::new(),
            history: LagHistory::default(),
        }
    }

    /// Adds a successful sample taken `at` (not before the previous one) and estimates.
    /// `members` is `None` when the group could not be described.
    pub fn record(
        &mut self,
        at: Instant,
        offsets: Vec<PartitionOffsets>,
        members: Option<usize>,
        rule: LagRule,
    ) -> Estimate {
        let oldest = at.checked_sub(self.rate_window).unwrap_or(at);
        self.samples.push_back(at);
        while self.samples.front().is_some_and(|t| *t < oldest) || self.samples.len() > MAX_POINTS {
            self.samples.pop_front();
        }
        if let Some(count) = members {
            self.members.push_back((at, count));
        }
        while self.members.front().is_some_and(|(t, _)| *t < oldest)
            || self.members.len() > MAX_POINTS
        {
            self.members.pop_front();
        }

        // Partitions gone from the sample (topic deleted, group left a topic) are forgotten.
        self.partitions.retain(|(group, topic, partition), _| {
            offsets
                .iter()
                .any(|o| &o.group == group && &o.topic == topic && o.partition == *partition)
        });
        let mut partitions = Vec::with_capacity(offsets.len());
        let mut total_lag = 0i64;
        let (mut produce, mut consume) = (0.0, 0.0);
        for offsets in offsets {
            let history = self
                .partitions
                .entry((
                    offsets.group.clone(),
                    offsets.topic.clone(),
                    offsets.partition,
                ))
                .or_default();
            if history.topic_id.as_ref() != Some(&offsets.topic_id) {
                *history = PartitionHistory {
                    topic_id: Some(Arc::clone(&offsets.topic_id)),
                    ..PartitionHistory::default()
                };
            }
            history.produced.push(at, offsets.high_watermark);
            history.produced.prune(oldest);
            let previous = history.previous_committed;
            match offsets.committed {
                Some(committed) => history.consumed.push(at, committed),
                None => history.consumed.clear(),
            }
            history.consumed.prune(oldest);
            history.previous_committed = offsets.committed;

            let lag = offsets.lag(rule);
            let persistent =
                lag > 0 && offsets.committed.is_some() && previous == offsets.committed;
            let produce_rate = history.produced.rate();
            let consume_rate = history.consumed.rate();
            produce += produce_rate.unwrap_or(0.0);
            consume += consume_rate.unwrap_or(0.0);
            total_lag = total_lag.saturating_add(lag);
            partitions.push(PartitionEstimate {
                offsets,
                lag,
                persistent,
                produce_rate,
                consume_rate,
            });
        }
        if let Some(failed_at) = self.failing_since.take() {
            let bridged = self
                .last_sample
                .is_some_and(|last| at.saturating_duration_since(last) <= self.bridged_gap);
            if !bridged {
                self.history.record(failed_at, i64::MAX);
            }
        }
        self.last_sample = Some(at);
        self.history.record(at, total_lag);
        let rates = (self.samples.len() >= 2).then_some(Rates { produce, consume });
        let mean_members = (!self.members.is_empty()).then(|| {
            self.members.iter().map(|(_, n)| *n as f64).sum::<f64>() / self.members.len() as f64
        });
        let poll_spacing = match (self.samples.front(), self.samples.len()) {
            (Some(first), n) if n >= 2 => {
                Some(at.duration_since(*first).as_secs_f64() / (n - 1) as f64)
            }
            _ => None,
        };
        let commit_interval = self
            .partitions
            .values()
            .filter_map(|history| history.consumed.change_interval())
            .fold(None, |longest: Option<f64>, interval| {
                Some(longest.map_or(interval, |l| l.max(interval)))
            });
        let in_flight_seconds = match (poll_spacing, commit_interval) {
            (Some(spacing), Some(commits)) => Some(spacing.max(commits)),
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
            history: Arc::new(self.history.clone()),
        }
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
                    .get(&(now.group.clone(), now.topic.clone(), now.partition))
                    .filter(|history| history.topic_id.as_ref() == Some(&now.topic_id))
                    .and_then(|history| history.previous_committed)
                    .is_some_and(|before| now.committed.is_none_or(|committed| committed < before))
            })
            .count()
    }

    /// Records a failed poll at `at`: the window keeps its samples (so rates and persistent
    /// lag survive a transient error). Missing data never reads as idle, but a gap no longer
    /// than the one bridged (a leader election, a coordinator moving) does not restart the
    /// idle window either: while it lasts the previous sample is served as it stood, and
    /// once a sample arrives within the bridged gap of the previous one, the idle window
    /// reads the two as neighbours. A longer gap counts as activity from its first failure.
    pub fn record_failure(&mut self, at: Instant) {
        self.failing_since.get_or_insert(at);
    }
}

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

/// What the metric reports (trigger metadata `metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricMode {
    /// Records behind, KEDA's semantics; target `lagThreshold` (HPA `AverageValue`).
    Lag,
    /// Seconds to drain; target `targetEtaSeconds` (HPA `Value`).
    Eta,
    /// The replica target; target 1 (HPA `AverageValue`), so desired = the value.
    Replicas,
    /// Azul's `backlog`: minutes to drain, growing smoothly past "never" while the lag does
    /// not drain; target `targetSize` (HPA `AverageValue`). The default for plugins.
    Backlog,
}

impl MetricMode {
    /// The metadata spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricMode::Lag => "lag",
            MetricMode::Eta => "eta",
            MetricMode::Replicas => "replicas",
            MetricMode::Backlog => "backlog",
        }
    }
}

impl fmt::Display for MetricMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trigger's scaling rules: what the decision of one trigger depends on beyond the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// What the metric reports.
    pub metric: MetricMode,
    /// HPA target per replica in `lag` mode (`lagThreshold`).
    pub lag_threshold: i64,
    /// Active when the lag is above this (`activationLagThreshold`).
    pub activation_lag_threshold: i64,
    /// Time to drain aimed at (`targetEtaSeconds`); required by `eta` and `replicas`.
    pub target_eta: Option<Duration>,
    /// Inactive only after the lag stayed at or below the activation threshold this long.
    pub idle_window: Duration,
    /// No cap at the partition count (`allowIdleConsumers`).
    pub allow_idle_consumers: bool,
    /// Persistent lag counts 0 towards the `lag` metric (`excludePersistentLag`).
    pub exclude_persistent_lag: bool,
    /// Cap at the number of partitions with lag (`limitToPartitionsWithLag`).
    pub limit_to_partitions_with_lag: bool,
    /// Replicas rounded up to a divisor of the partition count
    /// (`ensureEvenDistributionOfPartitions`).
    pub ensure_even_distribution: bool,
}

impl Default for Rules {
    /// KEDA's defaults.
    fn default() -> Self {
        Rules {
            metric: MetricMode::Lag,
            lag_threshold: 10,
            activation_lag_threshold: 0,
            target_eta: None,
            idle_window: Duration::ZERO,
            allow_idle_consumers: false,
            exclude_persistent_lag: false,
            limit_to_partitions_with_lag: false,
            ensure_even_distribution: false,
        }
    }
}

/// Time to drain the lag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Eta {
    /// No lag.
    Zero,
    /// Fewer than two samples in the window: the rates are not known yet.
    Unknown,
    /// The lag is no more than the group consumes between two polls or two commits: records
    /// in flight, not a backlog, consumed in this many seconds.
    InFlight(f64),
    /// Lag shrinks; drained in this many seconds at the current rates.
    Draining(f64),
    /// Lag does not shrink, for this reason.
    NotDraining(NotDraining),
}

/// Why lag is not draining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotDraining {
    /// Nothing commits and the group has no active member.
    NoConsumer,
    /// Nothing commits although the group has members (or their number is unknown).
    Stalled,
    /// The group commits, but no faster than records arrive.
    ProducerFaster,
}

impl fmt::Display for NotDraining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotDraining::NoConsumer => "the group has no active member",
            NotDraining::Stalled => "the group's members commit nothing",
            NotDraining::ProducerFaster => "records arrive at least as fast as they are committed",
        })
    }
}

impl fmt::Display for Eta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Eta::Zero => f.write_str("0s"),
            Eta::Unknown => f.write_str("unknown"),
            Eta::InFlight(seconds) => write!(f, "{seconds:.2}s (in flight)"),
            Eta::Draining(seconds) => write!(f, "{seconds:.1}s"),
            Eta::NotDraining(why) => write!(f, "not draining ({why})"),
        }
    }
}

/// Everything one trigger's answers are made of, for one estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Lag of every covered partition (activation compares this).
    pub total_lag: i64,
    /// The `lag` metric: without persistent lag if excluded, capped, evenly rounded.
    pub metric_lag: i64,
    /// Partitions covered.
    pub n_partitions: usize,
    /// Partitions whose lag counts towards the metric and is above 0.
    pub n_lagging: usize,
    /// Partitions whose lag was left out as persistent.
    pub n_persistent: usize,
    /// Rates over the window.
    pub rates: Option<Rates>,
    /// Active members of the group.
    pub members: Option<usize>,
    /// Time to drain.
    pub eta: Eta,
    /// Replica target, or why there is none (`None` without `targetEtaSeconds`).
    pub replicas: Option<Result<u64, String>>,
    /// The `backlog` metric, minutes; `None` while rates are unknown and there is lag.
    pub backlog: Option<f64>,
    /// The IsActive answer.
    pub active: bool,
}

/// The largest value reported to KEDA, and the largest target accepted: KEDA turns a value
/// into a quantity of value × 1000 in an int64 (up to ~9.22e18), so anything past ~9.22e15
/// would wrap to a negative number, a scale-down. A value beyond it is reported as this,
/// which scales as far as any larger number would.
pub const MAX_REPORTED: f64 = 9e15;
/// [`MAX_REPORTED`] as an integer.
pub const MAX_REPORTED_INT: i64 = 9_000_000_000_000_000;

impl Decision {
    /// GetMetrics' integer `metricValue` for `value`, the float of [`Decision::metric_value`]
    /// in `mode`: the `lag` metric exactly, the others rounded up; at most
    /// [`MAX_REPORTED_INT`].
    pub fn metric_int(&self, mode: MetricMode, value: f64) -> i64 {
        let int = match mode {
            MetricMode::Lag => self.metric_lag,
            // Rounded up, so that older KEDA (integers only) errs towards scaling up.
            MetricMode::Eta | MetricMode::Replicas | MetricMode::Backlog => value.ceil() as i64,
        };
        int.min(MAX_REPORTED_INT)
    }

    /// The value to report for `mode`, or why there is none. Finite, never negative, at
    /// most [`MAX_REPORTED`].
    pub fn metric_value(&self, mode: MetricMode) -> Result<f64, String> {
        self.unbounded_value(mode)
            .map(|value| value.min(MAX_REPORTED))
    }

    fn unbounded_value(&self, mode: MetricMode) -> Result<f64, String> {
        match mode {
            MetricMode::Lag => Ok(self.metric_lag as f64),
            MetricMode::Eta => match self.eta {
                Eta::Zero => Ok(0.0),
                Eta::InFlight(seconds) | Eta::Draining(seconds) => {
                    Ok(seconds.min(NOT_DRAINING_ETA_SECONDS))
                }
                Eta::NotDraining(_) => Ok(NOT_DRAINING_ETA_SECONDS),
                Eta::Unknown => Err(format!(
                    "the ETA is not known yet: rates need two samples in the window and \
                     there is one (lag {})",
                    self.total_lag
                )),
            },
            MetricMode::Replicas => match &self.replicas {
                Some(Ok(replicas)) => Ok(*replicas as f64),
                Some(Err(why)) => Err(why.clone()),
                None => Err("replicas mode needs targetEtaSeconds".to_owned()),
            },
            MetricMode::Backlog => self.backlog.ok_or_else(|| {
                format!(
                    "the backlog is not known yet: rates need two samples in the window and \
                     there is one (lag {})",
                    self.total_lag
                )
            }),
        }
    }
}

impl fmt::Display for Decision {
    /// Every mode's value on one line, for the debug log and the CLI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lag={} metric_lag={} partitions={} lagging={} persistent={}",
            self.total_lag, self.metric_lag, self.n_partitions, self.n_lagging, self.n_persistent
        )?;
        match self.rates {
            Some(rates) => write!(
                f,
                " produce={:.2}/s consume={:.2}/s",
                rates.produce, rates.consume
            )?,
            None => f.write_str(" rates=unknown")?,
        }
        match self.members {
            Some(members) => write!(f, " members={members}")?,
            None => f.write_str(" members=unknown")?,
        }
        write!(f, " eta={}", self.eta)?;
        match &self.replicas {
            Some(Ok(replicas)) => write!(f, " replicas={replicas}")?,
            Some(Err(why)) => write!(f, " replicas=unknown ({why})")?,
            None => {}
        }
        match self.backlog {
            Some(minutes) => write!(f, " backlog={minutes:.3}min")?,
            None => f.write_str(" backlog=unknown")?,
        }
        write!(f, " active={}", self.active)
    }
}

impl Rules {
    /// Decides from `estimate` as of `now`.
    pub fn decide(&self, estimate: &Estimate, now: Instant) -> Decision {
        let n_partitions = estimate.partitions.len();
        let counted = |p: &&PartitionEstimate| !(self.exclude_persistent_lag && p.persistent);
        let uncapped_lag = estimate
            .partitions
            .iter()
            .filter(counted)
            .fold(0i64, |sum, p| sum.saturating_add(p.lag));
        let n_lagging = estimate
            .partitions
            .iter()
            .filter(counted)
            .filter(|p| p.lag > 0)
            .count();
        let n_persistent = estimate
            .partitions
            .iter()
            .filter(|p| self.exclude_persistent_lag && p.persistent)
            .count();
        let cap = self.replica_cap(n_partitions, n_lagging);
        let metric_lag = self.shape_lag(uncapped_lag, cap, n_partitions);
        let eta = estimate.eta();
        let replicas = self.target_eta.map(|target| {
            replica_target(estimate, target).map(|wanted| {
                let capped = cap.map_or(wanted, |cap| wanted.min(cap));
                self.even(capped, n_partitions)
            })
        });
        Decision {
            total_lag: estimate.total_lag,
            metric_lag,
            n_partitions,
            n_lagging,
            n_persistent,
            rates: estimate.rates,
            members: estimate.members,
            eta,
            replicas,
            backlog: backlog_minutes(
                estimate.total_lag,
                estimate.rates,
                estimate.in_flight_seconds,
            ),
            active: self.active(estimate, now),
        }
    }

    /// The most replicas worth having, `None` for no cap (`allowIdleConsumers`).
    fn replica_cap(&self, n_partitions: usize, n_lagging: usize) -> Option<u64> {
        if self.allow_idle_consumers {
            return None;
        }
        // As KEDA: with no partition lagging, the cap falls back to the partition count.
        let cap = if self.limit_to_partitions_with_lag && n_lagging > 0 {
            n_lagging
        } else {
            n_partitions
        };
        Some(cap as u64)
    }

    /// The `lag` metric. Capped at exactly `cap × lagThreshold`, so that the HPA's
    /// ceil(value / threshold) lands on the cap and never one above (KEDA's integer division
    /// lets values up to a threshold more through).
    fn shape_lag(&self, lag: i64, cap: Option<u64>, n_partitions: usize) -> i64 {
        let threshold = self.lag_threshold.max(1);
        let mut lag = lag;
        if let Some(cap) = cap {
            let ceiling = i64::try_from(cap)
                .unwrap_or(i64::MAX)
                .saturating_mul(threshold);
            lag = lag.min(ceiling);
        }
        // Both positive here (lag > 0 is checked before use), so this is ceil(lag / threshold).
        let wanted = (lag / threshold + i64::from(lag % threshold != 0)).max(0) as u64;
        if self.ensure_even_distribution && lag > 0 && wanted <= n_partitions as u64 {
            let even = self.even(wanted, n_partitions);
            lag = i64::try_from(even)
                .unwrap_or(i64::MAX)
                .saturating_mul(threshold)
                .max(lag);
        }
        lag
    }

    /// With `ensureEvenDistributionOfPartitions`, `replicas` rounded up to the smallest
    /// divisor of the partition count that is at least as large; unchanged above the count.
    fn even(&self, replicas: u64, n_partitions: usize) -> u64 {
        if !self.ensure_even_distribution || replicas == 0 {
            return replicas;
        }
        let n = n_partitions as u64;
        (replicas..=n)
            .find(|d| n.is_multiple_of(*d))
            .unwrap_or(replicas)
    }

    /// IsActive: true on any sample above the activation threshold; false only once the lag
    /// stayed at or below it for the whole idle window, with no gap in the data.
    pub fn active(&self, estimate: &Estimate, now: Instant) -> bool {
        let threshold = self.activation_lag_threshold;
        if estimate.total_lag > threshold {
            return true;
        }
        if self.idle_window.is_zero() {
            return false;
        }
        let Some(since) = now.checked_sub(self.idle_window) else {
            return true;
        };
        match estimate.history.max_since(since) {
            Some(max) => max > threshold,
            None => true,
        }
    }
}

impl Estimate {
    /// The time a trigger's decision is made for, when this estimate is served at `now`:
    /// `now`, or, while the polls since it fail, the estimate's own time. A sample served
    /// through failed polls answers as it stood when taken (until it is stale): missing data
    /// neither completes an idle window nor makes an idle workload active.
    pub fn decision_time(&self, polls_failing: bool, now: Instant) -> Instant {
        if polls_failing {
            self.taken_at.min(now)
        } else {
            now
        }
    }

    /// Time to drain the watch's lag; see [`eta`].
    pub fn eta(&self) -> Eta {
        eta(
            self.total_lag,
            self.rates,
            self.members,
            self.in_flight_seconds,
        )
    }
}

/// Time to drain `lag` at `rates`: lag / (consume - produce) while the group gains on it.
///
/// Lag the group consumes within `in_flight_seconds` (the longer of the poll interval and the
/// group's commit interval) is in flight, not a backlog: records consumed but not committed
/// yet. A group that keeps pace always has some, and dividing it by a net rate that is zero
/// give or take estimation noise would report anything from seconds to "never".
pub fn eta(
    lag: i64,
    rates: Option<Rates>,
    members: Option<usize>,
    in_flight_seconds: Option<f64>,
) -> Eta {
    if lag <= 0 {
        return Eta::Zero;
    }
    let Some(rates) = rates else {
        return Eta::Unknown;
    };
    let lag_f = lag as f64;
    if rates.consume > MIN_NET_RATE
        && in_flight_seconds.is_some_and(|seconds| lag_f <= rates.consume * seconds)
    {
        return Eta::InFlight(lag_f / rates.consume);
    }
    let net = rates.consume - rates.produce;
    if net > MIN_NET_RATE {
        return Eta::Draining((lag_f / net).min(NOT_DRAINING_ETA_SECONDS));
    }
    let why = if rates.consume > MIN_NET_RATE {
        NotDraining::ProducerFaster
    } else if members == Some(0) {
        NotDraining::NoConsumer
    } else {
        NotDraining::Stalled
    };
    Eta::NotDraining(why)
}

/// The `backlog` metric: minutes to drain `lag` at `rates`, one formula whatever the rates,
/// continuous in lag and rates, increasing with lag and with the producer's lead, and
/// decreasing with the consumers' pace:
///
/// ```text
/// in flight  F = min(L, μ·τ)                       records consumed but not committed yet
/// flight     f = min(L/μ, τ)   (τ when μ = 0)      seconds they take
/// net rate   d = μ − λ                             records/s the lag shrinks by
/// soft rate  d⁺ = (d + √(d² + 4ε²)) / 2,  ε = 1/60 (one record per minute)
/// backlog    = (f + (L − F) / d⁺) / 60  minutes, at most 9,999,999
/// ```
///
/// `d⁺` is `d` when the lag drains clearly faster than ε (so the value is the ETA in minutes,
/// Azul's lag / r), ε when it does not drain at all, and ε²/|d| when producers pull ahead: the
/// value then grows with the lag and with how far the consumers fall behind, with no cliff
/// and no change of unit. `τ` is the estimate's in-flight time; `None` counts as 0.
pub fn backlog_minutes(
    lag: i64,
    rates: Option<Rates>,
    in_flight_seconds: Option<f64>,
) -> Option<f64> {
    if lag <= 0 {
        return Some(0.0);
    }
    let rates = rates?;
    let lag = lag as f64;
    let consume = if rates.consume.is_finite() {
        rates.consume.max(0.0)
    } else {
        0.0
    };
    let produce = if rates.produce.is_finite() {
        rates.produce.max(0.0)
    } else {
        0.0
    };
    let tau = in_flight_seconds
        .filter(|seconds| seconds.is_finite())
        .unwrap_or(0.0)
        .max(0.0);
    let in_flight = lag.min(consume * tau);
    let flight = if consume > 0.0 {
        (lag / consume).min(tau)
    } else {
        tau
    };
    let net = consume - produce;
    let root = net.hypot(2.0 * BACKLOG_RATE_SCALE);
    // Both forms are (d + √(d² + 4ε²)) / 2; the second avoids cancellation for d < 0.
    let soft_rate = if net >= 0.0 {
        (net + root) / 2.0
    } else {
        2.0 * BACKLOG_RATE_SCALE * BACKLOG_RATE_SCALE / (root - net)
    };
    let seconds = flight + (lag - in_flight).max(0.0) / soft_rate;
    Some((seconds / 60.0).min(MAX_BACKLOG_MINUTES))
}

/// Consumers needed to keep up with production and drain the lag within `target`:
/// ceil((produce + lag / target) / per-member throughput), at least 1 while there is lag.
/// Not capped here.
pub fn replica_target(estimate: &Estimate, target: Duration) -> Result<u64, String> {
    let lag = estimate.total_lag;
    // Scaled to zero with work waiting: wake one consumer up, refine once it runs.
    if lag > 0 && estimate.members == Some(0) {
        return Ok(1);
    }
    let Some(rates) = estimate.rates else {
        return Err(
            "the replica target is not known yet: rates need two samples in the window".into(),
        );
    };
    let Some(members) = estimate.members else {
        return Err("the replica target needs the group's members, which are unknown".into());
    };
    let busy = lag > 0 || rates.produce > MIN_NET_RATE;
    if members == 0 {
        return Ok(u64::from(busy));
    }
    let mean_members = estimate.mean_members.unwrap_or(members as f64).max(1.0);
    let per_member = rates.consume / mean_members;
    if per_member <= MIN_NET_RATE {
        // Nothing was consumed, so nothing says what a member can do: keep the members there
        // are (or none, with nothing to do).
        return Ok(if busy { members as u64 } else { 0 });
    }
    let target_seconds = target.as_secs_f64().max(f64::MIN_POSITIVE);
    let needed = (rates.produce.max(0.0) + lag as f64 / target_seconds) / per_member;
    // Float noise must not turn an exact 2.0 into 3.
    let wanted = (needed - 1e-9).ceil().max(0.0);
    let wanted = if wanted >= u64::MAX as f64 {
        u64::MAX
    } else {
        wanted as u64
    };
    Ok(if lag > 0 { wanted.max(1) } else { wanted })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gap of failed polls the windows under test bridge (`SCALER_STALE_AFTER`).
    const STALE: Duration = Duration::from_secs(20);

    const LATEST: LagRule = LagRule::DEFAULT;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0)
    }

    fn offsets(partition: i32, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            group: "g".to_owned(),
            topic: "t".to_owned(),
            topic_id: "".into(),
            partition,
            log_start: 0,
            high_watermark: high,
            committed,
            nothing_to_read: false,
            unread: None,
        }
    }

    /// Feeds one partition: at each time (seconds after `start`), the watermark and commit.
    fn feed(
        window: &mut Window,
        start: Instant,
        points: &[(f64, i64, Option<i64>)],
        members: Option<usize>,
    ) -> Estimate {
        let mut last = None;
        for (seconds, high, committed) in points {
            let at = start + Duration::from_secs_f64(*seconds);
            last = Some(window.record(at, vec![offsets(0, *high, *committed)], members, LATEST));
        }
        last.expect("at least one point")
    }

    /// Producer at `produce`/s from `backlog`, consumer at `consume`/s from 0, every `step`
    /// seconds for `n` samples.
    fn steady(
        produce: f64,
        consume: f64,
        backlog: i64,
        step: f64,
        n: usize,
    ) -> Vec<(f64, i64, Option<i64>)> {
        (0..n)
            .map(|i| {
                let t = i as f64 * step;
                let high = backlog + (produce * t).round() as i64;
                let committed = ((consume * t).round() as i64).min(high);
                (t, high, Some(committed))
            })
            .collect()
    }

    #[test]
    fn slope_of_a_line_is_exact_and_needs_two_times() {
        assert_eq!(least_squares_slope(&[]), None);
        assert_eq!(least_squares_slope(&[(1.0, 5.0)]), None);
        assert_eq!(least_squares_slope(&[(1.0, 5.0), (1.0, 7.0)]), None);
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 0.7, 3.0 + 2.5 * i as f64 * 0.7))
            .collect();
        assert!(close(least_squares_slope(&line).unwrap(), 2.5));
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
    fn constant_rates_give_the_closed_form_eta() {
        // 2000 behind, 20/s in, 50/s out: drains at 30/s.
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let estimate = feed(
            &mut window,
            start,
            &steady(20.0, 50.0, 2000, 5.0, 7),
            Some(2),
        );
        let rates = estimate.rates.unwrap();
        assert!(close(rates.produce, 20.0), "{rates:?}");
        assert!(close(rates.consume, 50.0), "{rates:?}");
        // After 30 s: 2000 + 20·30 in, 50·30 out.
        let lag = estimate.total_lag;
        assert_eq!(lag, 1100);
        let Eta::Draining(seconds) = estimate.eta() else {
            panic!("not draining: {estimate:?}");
        };
        assert!(close(seconds, lag as f64 / 30.0), "{seconds} for lag {lag}");
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
    fn stalled_consumer_is_not_draining() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let points: Vec<_> = (0..5)
            .map(|i| (i as f64 * 5.0, 100 + 10 * i, Some(40)))
            .collect();
        let estimate = feed(&mut window, start, &points, Some(2));
        assert_eq!(estimate.eta(), Eta::NotDraining(NotDraining::Stalled));
        assert!(estimate.partitions[0].persistent);
    }

    #[test]
    fn no_consumer_is_not_draining_and_wakes_one_replica() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let points: Vec<_> = (0..4).map(|i| (i as f64 * 5.0, 10 * i, None)).collect();
        let estimate = feed(&mut window, start, &points, Some(0));
        assert_eq!(
            estimate.total_lag, 1,
            "latest policy: 1 per uncommitted partition"
        );
        assert_eq!(estimate.eta(), Eta::NotDraining(NotDraining::NoConsumer));
        assert_eq!(replica_target(&estimate, Duration::from_secs(60)), Ok(1));
        // Even before rates are known.
        let mut fresh = Window::new(Duration::from_secs(60), STALE);
        let first = feed(&mut fresh, start, &[(0.0, 500, Some(0))], Some(0));
        assert_eq!(replica_target(&first, Duration::from_secs(60)), Ok(1));
    }

    #[test]
    fn producer_faster_is_not_draining_and_reported_large_and_finite() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let estimate = feed(&mut window, start, &steady(50.0, 20.0, 10, 5.0, 6), Some(1));
        assert_eq!(
            estimate.eta(),
            Eta::NotDraining(NotDraining::ProducerFaster)
        );
        let rules = Rules {
            metric: MetricMode::Eta,
            target_eta: Some(Duration::from_secs(60)),
            ..Rules::default()
        };
        let value = rules
            .decide(&estimate, estimate.taken_at)
            .metric_value(MetricMode::Eta)
            .unwrap();
        assert_eq!(value, NOT_DRAINING_ETA_SECONDS);
        assert!(value.is_finite());
    }

    #[test]
    fn lag_between_commits_is_in_flight() {
        // Polled every second; the group keeps pace at 10/s but commits every 5 s, so just
        // before a commit up to 50 records are consumed and not yet committed.
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let points: Vec<(f64, i64, Option<i64>)> = (0..=29)
            .map(|i| {
                let high = 10 * i;
                (i as f64, high, Some(high / 50 * 50))
            })
            .collect();
        let estimate = feed(&mut window, start, &points, Some(1));
        assert_eq!(estimate.total_lag, 40);
        let seconds = estimate.in_flight_seconds.unwrap();
        assert!((seconds - 29.0 / 5.0).abs() < 1e-9, "{seconds}");
        assert!(
            matches!(estimate.eta(), Eta::InFlight(_)),
            "{:?}",
            estimate.eta()
        );
    }

    #[test]
    fn zero_lag_is_eta_zero_even_without_rates() {
        assert_eq!(eta(0, None, None, None), Eta::Zero);
        let rates = Some(Rates {
            produce: 5.0,
            consume: 0.0,
        });
        assert_eq!(eta(0, rates, Some(0), Some(5.0)), Eta::Zero);
    }

    #[test]
    fn lag_consumed_within_a_poll_is_in_flight_not_a_backlog() {
        // Keeping pace at 20/s with 30 behind, polled every 5 s: consumed in 1.5 s.
        let even = Some(Rates {
            produce: 20.0,
            consume: 20.0,
        });
        assert_eq!(eta(30, even, Some(2), Some(5.0)), Eta::InFlight(1.5));
        // Slightly behind on paper (estimation noise) changes nothing.
        let noisy = Some(Rates {
            produce: 20.01,
            consume: 20.0,
        });
        assert_eq!(eta(30, noisy, Some(2), Some(5.0)), Eta::InFlight(1.5));
        // More than a poll's worth is a backlog again.
        assert_eq!(
            eta(101, even, Some(2), Some(5.0)),
            Eta::NotDraining(NotDraining::ProducerFaster)
        );
        let draining = Some(Rates {
            produce: 10.0,
            consume: 20.0,
        });
        assert_eq!(eta(500, draining, Some(2), Some(5.0)), Eta::Draining(50.0));
    }

    #[test]
    fn replica_target_matches_the_closed_form() {
        // 30/s in, 45/s out by 3 members (15/s each), target 60 s.
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let estimate = feed(
            &mut window,
            start,
            &steady(30.0, 45.0, 9000, 5.0, 7),
            Some(3),
        );
        let lag = estimate.total_lag as f64;
        let expected = ((30.0 + lag / 60.0) / 15.0).ceil() as u64;
        assert_eq!(
            replica_target(&estimate, Duration::from_secs(60)),
            Ok(expected)
        );
        assert_eq!(expected, 12, "lag {lag}");
    }

    #[test]
    fn replica_target_is_capped_at_partitions_unless_idle_consumers_are_allowed() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let mut estimate = None;
        for i in 0..5i64 {
            let at = start + Duration::from_secs(5 * i as u64);
            // 4 partitions, each 10/s in and 1/s out by one member: far behind.
            let parts = (0..4)
                .map(|p| offsets(p, 10_000 + 50 * i, Some(5 * i)))
                .collect();
            estimate = Some(window.record(at, parts, Some(1), LATEST));
        }
        let estimate = estimate.unwrap();
        let capped = Rules {
            metric: MetricMode::Replicas,
            target_eta: Some(Duration::from_secs(60)),
            ..Rules::default()
        };
        let decision = capped.decide(&estimate, estimate.taken_at);
        assert_eq!(decision.replicas, Some(Ok(4)));
        let unbounded = Rules {
            allow_idle_consumers: true,
            ..capped.clone()
        };
        let lag = estimate.total_lag as f64;
        let expected = ((40.0 + lag / 60.0) / 4.0).ceil() as u64;
        assert_eq!(
            unbounded.decide(&estimate, estimate.taken_at).replicas,
            Some(Ok(expected))
        );
        assert!(expected > 4);
    }

    #[test]
    fn replica_target_holds_when_members_consume_nothing() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let points: Vec<_> = (0..4).map(|i| (i as f64 * 5.0, 100, Some(10))).collect();
        let estimate = feed(&mut window, start, &points, Some(3));
        assert_eq!(replica_target(&estimate, Duration::from_secs(30)), Ok(3));
        let idle: Vec<_> = (4..8).map(|i| (i as f64 * 5.0, 100, Some(100))).collect();
        let estimate = feed(&mut window, start, &idle, Some(3));
        assert_eq!(replica_target(&estimate, Duration::from_secs(30)), Ok(0));
    }

    #[test]
    fn replica_target_needs_rates_and_members() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let first = feed(&mut window, start, &[(0.0, 100, Some(0))], Some(2));
        assert!(replica_target(&first, Duration::from_secs(60)).is_err());
        let second = feed(&mut window, start, &[(5.0, 200, Some(50))], None);
        let why = replica_target(&second, Duration::from_secs(60)).unwrap_err();
        assert!(why.contains("members"), "{why}");
    }

    fn keda_estimate(lags: &[(i64, bool)]) -> Estimate {
        let now = Instant::now();
        Estimate {
            taken_at: now,
            oldest_read: now,
            partitions: lags
                .iter()
                .enumerate()
                .map(|(i, (lag, persistent))| PartitionEstimate {
                    offsets: offsets(i as i32, 1000, Some(1000 - lag)),
                    lag: *lag,
                    persistent: *persistent,
                    produce_rate: None,
                    consume_rate: None,
                })
                .collect(),
            total_lag: lags.iter().map(|(lag, _)| lag).sum(),
            rates: None,
            members: None,
            mean_members: None,
            samples_in_window: 1,
            in_flight_seconds: None,
            history: Arc::new(LagHistory::default()),
        }
    }

    #[test]
    fn lag_cap_lands_on_exactly_the_partition_count() {
        // 3 partitions, threshold 10: 35 is between 3×10 and 4×10; KEDA lets it through
        // (HPA asks for 4), lagscaler reports 30 (HPA asks for 3).
        let estimate = keda_estimate(&[(20, false), (10, false), (5, false)]);
        let rules = Rules::default();
        let decision = rules.decide(&estimate, estimate.taken_at);
        assert_eq!(decision.metric_lag, 30);
        assert_eq!(decision.total_lag, 35);
        let idle_ok = Rules {
            allow_idle_consumers: true,
            ..Rules::default()
        };
        assert_eq!(idle_ok.decide(&estimate, estimate.taken_at).metric_lag, 35);
        // Below the cap nothing changes.
        let small = keda_estimate(&[(20, false), (0, false), (5, false)]);
        assert_eq!(rules.decide(&small, small.taken_at).metric_lag, 25);
    }

    #[test]
    fn limit_to_partitions_with_lag_caps_at_lagging_partitions() {
        let estimate = keda_estimate(&[(100, false), (0, false), (0, false), (0, false)]);
        let rules = Rules {
            limit_to_partitions_with_lag: true,
            ..Rules::default()
        };
        let decision = rules.decide(&estimate, estimate.taken_at);
        assert_eq!(decision.n_lagging, 1);
        assert_eq!(decision.metric_lag, 10);
        // No partition lagging: the cap is the partition count, as KEDA.
        let none = keda_estimate(&[(0, false), (0, false)]);
        assert_eq!(rules.decide(&none, none.taken_at).metric_lag, 0);
    }

    #[test]
    fn persistent_lag_is_excluded_from_the_metric_but_not_from_activation() {
        let estimate = keda_estimate(&[(50, true), (4, false)]);
        let rules = Rules {
            exclude_persistent_lag: true,
            activation_lag_threshold: 10,
            ..Rules::default()
        };
        let decision = rules.decide(&estimate, estimate.taken_at);
        assert_eq!(decision.metric_lag, 4);
        assert_eq!(decision.n_persistent, 1);
        assert!(
            decision.active,
            "activation counts persistent lag: {decision:?}"
        );
        let keep = Rules {
            activation_lag_threshold: 10,
            ..Rules::default()
        };
        assert_eq!(keep.decide(&estimate, estimate.taken_at).metric_lag, 20);
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
    fn even_distribution_rounds_up_to_a_divisor() {
        // 12 partitions, threshold 10, lag 45 → 5 replicas → next divisor of 12 is 6 → 60.
        let lags: Vec<(i64, bool)> = (0..12)
            .map(|i| (if i < 3 { 15 } else { 0 }, false))
            .collect();
        let estimate = keda_estimate(&lags);
        let rules = Rules {
            ensure_even_distribution: true,
            ..Rules::default()
        };
        assert_eq!(rules.decide(&estimate, estimate.taken_at).metric_lag, 60);
        assert_eq!(rules.even(5, 12), 6);
        assert_eq!(rules.even(7, 12), 12);
        assert_eq!(rules.even(4, 12), 4);
        assert_eq!(rules.even(13, 12), 13);
        let zero = keda_estimate(&[(0, false); 12]);
        assert_eq!(rules.decide(&zero, zero.taken_at).metric_lag, 0);
    }

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

    #[test]
    fn idle_window_ignores_flapping_and_missing_data() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            activation_lag_threshold: 5,
            idle_window: Duration::from_secs(120),
            ..Rules::default()
        };
        // Lag flaps around the threshold every 5 s for 10 minutes: never idle.
        let mut last_above = start;
        for i in 0..120u64 {
            let at = start + Duration::from_secs(5 * i);
            let lag = if i % 7 == 3 { 6 } else { 4 };
            let estimate = window.record(
                at,
                vec![offsets(0, 1000, Some(1000 - lag))],
                Some(1),
                LATEST,
            );
            assert!(
                rules.decide(&estimate, at).active,
                "false idle at sample {i}"
            );
            if lag > 5 {
                last_above = at;
            }
        }
        // Then quiet (lag 4): active until the window has passed the last sample above.
        let quiet_from = start + Duration::from_secs(600);
        let mut seen_idle = false;
        for s in (0..=120u64).step_by(5) {
            let at = quiet_from + Duration::from_secs(s);
            let estimate = window.record(at, vec![offsets(0, 1000, Some(996))], Some(1), LATEST);
            let active = rules.decide(&estimate, at).active;
            assert_eq!(
                active,
                at - rules.idle_window <= last_above,
                "at quiet +{s}s"
            );
            seen_idle |= !active;
        }
        assert!(seen_idle);
        // One sample above: active at once.
        let up_at = quiet_from + Duration::from_secs(125);
        let up = window.record(up_at, vec![offsets(0, 1000, Some(990))], Some(1), LATEST);
        assert!(rules.decide(&up, up_at).active);
        // Failed polls for longer than the bridged gap (from +130 s to the sample at
        // +155 s, 30 s after the one at +125 s): active until the window passes the first
        // failure.
        for failed in [130u64, 135, 140, 145, 150] {
            window.record_failure(quiet_from + Duration::from_secs(failed));
        }
        for s in [155u64, 200, 249, 251] {
            let at = quiet_from + Duration::from_secs(s);
            let estimate = window.record(at, vec![offsets(0, 1000, Some(1000))], Some(1), LATEST);
            let active = rules.decide(&estimate, at).active;
            assert_eq!(active, s <= 250, "at quiet +{s}s");
        }
    }

    #[test]
    fn failed_polls_shorter_than_the_stale_bound_do_not_restart_the_idle_window() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            idle_window: Duration::from_secs(60),
            ..Rules::default()
        };
        let at = |s: u64| start + Duration::from_secs(s);
        let idle = vec![offsets(0, 1000, Some(1000))];
        // Idle for 60 s: inactive.
        for s in (0..=60).step_by(5) {
            window.record(at(s), idle.clone(), Some(1), LATEST);
        }
        // A leader election: polls fail from 65 s to 80 s, then the next sample at 85 s,
        // 20 s after the one at 65 s. Idle on both sides: still inactive, every sample on.
        let before = window.record(at(65), idle.clone(), Some(1), LATEST);
        assert!(!rules.decide(&before, at(65)).active);
        for s in [70, 75, 80] {
            window.record_failure(at(s));
        }
        for s in (85..=150).step_by(5) {
            let estimate = window.record(at(s), idle.clone(), Some(1), LATEST);
            assert!(!rules.decide(&estimate, at(s)).active, "active at {s} s");
        }
        // Lag seen on either side of a bridged gap counts as usual.
        let busy = window.record(at(155), vec![offsets(0, 1000, Some(990))], Some(1), LATEST);
        assert!(rules.decide(&busy, at(155)).active);
        window.record_failure(at(160));
        let after = window.record(at(170), idle.clone(), Some(1), LATEST);
        assert!(rules.decide(&after, at(170)).active);
        let later = window.record(at(215), idle.clone(), Some(1), LATEST);
        assert!(rules.decide(&later, at(215)).active, "155 s is within 60 s");
        let idle_again = window.record(at(216), idle.clone(), Some(1), LATEST);
        assert!(!rules.decide(&idle_again, at(216)).active);
        // A gap longer than the stale bound counts as activity from its first failure.
        window.record_failure(at(220));
        let back = window.record(at(240), idle.clone(), Some(1), LATEST);
        assert!(rules.decide(&back, at(240)).active);
        let still = window.record(at(279), idle.clone(), Some(1), LATEST);
        assert!(
            rules.decide(&still, at(279)).active,
            "the gap began at 220 s"
        );
        let done = window.record(at(281), idle, Some(1), LATEST);
        assert!(!rules.decide(&done, at(281)).active);
    }

    #[test]
    fn a_new_watch_is_not_idle_before_its_window_is_covered() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            idle_window: Duration::from_secs(30),
            ..Rules::default()
        };
        let first = window.record(start, vec![offsets(0, 10, Some(10))], Some(1), LATEST);
        assert!(rules.decide(&first, start).active);
        assert!(!rules.decide(&first, start + Duration::from_secs(30)).active);
        let no_window = Rules::default();
        assert!(!no_window.decide(&first, start).active);
    }

    fn rates(produce: f64, consume: f64) -> Option<Rates> {
        Some(Rates { produce, consume })
    }

    #[test]
    fn backlog_is_minutes_to_drain_while_draining_clearly() {
        // 6000 behind, net 10/s, nothing in flight: 600 s = 10 min (Azul: lag / r).
        let minutes = backlog_minutes(6000, rates(20.0, 30.0), Some(0.0)).unwrap();
        assert!((minutes - 10.0).abs() < 1e-4, "{minutes}");
        // With a 5 s commit interval, 150 records are in flight: done in 5 s, and the other
        // 5850 drain at 10/s.
        let minutes = backlog_minutes(6000, rates(20.0, 30.0), Some(5.0)).unwrap();
        assert!((minutes - (5.0 + 585.0) / 60.0).abs() < 1e-4, "{minutes}");
        // Only records in flight: their time, however close the producer is.
        let minutes = backlog_minutes(100, rates(50.0, 50.0), Some(5.0)).unwrap();
        assert!((minutes - 2.0 / 60.0).abs() < 1e-9, "{minutes}");
    }

    #[test]
    fn backlog_without_lag_is_zero_and_unknown_rates_are_no_number() {
        assert_eq!(backlog_minutes(0, None, None), Some(0.0));
        assert_eq!(backlog_minutes(5, None, None), None);
    }

    #[test]
    fn backlog_grows_with_the_producers_lead_without_a_cliff() {
        // Not draining at all: (L - F) / ε, so 1 minute per record beyond the ones in flight.
        let minutes = backlog_minutes(1000, rates(10.0, 10.0), Some(5.0)).unwrap();
        assert!((minutes - (5.0 / 60.0 + 950.0)).abs() < 1e-6, "{minutes}");
        // Falling behind by 1/s: about ε²/|d|, i.e. 3600 × the records beyond, in seconds.
        let minutes = backlog_minutes(1000, rates(11.0, 10.0), Some(0.0)).unwrap();
        assert!((minutes / (1000.0 * 60.0) - 1.0).abs() < 0.01, "{minutes}");
        // Saturates at Azul's ceiling rather than overflowing.
        let minutes = backlog_minutes(i64::MAX, rates(1e9, 0.0), None).unwrap();
        assert_eq!(minutes, MAX_BACKLOG_MINUTES);
    }

    #[test]
    fn backlog_is_continuous_and_monotonic_across_the_drain_boundary() {
        // Net rate swept from -5/s to +5/s in steps of 1e-5/s at fixed consume: values never
        // go up as the net rate rises, and neighbours differ by a small fraction (the value
        // is proportional to the deficit when falling behind, so coarser steps near the
        // boundary are large relative changes of a continuous function, not a cliff).
        let consume = 40.0;
        let mut previous: Option<f64> = None;
        for step in 0..=1_000_000 {
            let net = -5.0 + step as f64 * 1e-5;
            let value = backlog_minutes(5_000, rates(consume - net, consume), Some(5.0)).unwrap();
            assert!(value.is_finite() && value > 0.0);
            if let Some(before) = previous {
                assert!(
                    value <= before + 1e-9,
                    "rises at net {net}: {before} -> {value}"
                );
                assert!(
                    before - value <= 0.01 * before,
                    "jump at net {net}: {before} -> {value}"
                );
            }
            previous = Some(value);
        }
        // And in lag, across the in-flight boundary (consume 40/s × 5 s = 200 records).
        let mut previous = 0.0;
        for lag in 1..=1_000 {
            let value = backlog_minutes(lag, rates(40.0, 40.0), Some(5.0)).unwrap();
            assert!(value >= previous, "falls at lag {lag}");
            assert!(
                value - previous <= 1.0 + 1e-9,
                "jump at lag {lag}: {previous} -> {value}"
            );
            previous = value;
        }
    }

    /// Lag far past what KEDA's quantities hold (offsets near i64::MAX, no cap) is reported
    /// as the largest value KEDA can hold, never a wrapped or negative one (the fuzz test
    /// below bounds every mode).
    #[test]
    fn values_past_what_keda_holds_are_reported_at_its_maximum() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let offsets = |high: i64| {
            vec![PartitionOffsets {
                group: "g".to_owned(),
                topic: "t".to_owned(),
                topic_id: "".into(),
                partition: 0,
                log_start: 0,
                high_watermark: high,
                committed: Some(0),
                nothing_to_read: false,
                unread: None,
            }]
        };
        let rule = LagRule::DEFAULT;
        window.record(start, offsets(i64::MAX / 2), Some(1), rule);
        let later = start + Duration::from_secs(10);
        let estimate = window.record(later, offsets(i64::MAX - 1), Some(1), rule);
        let rules = Rules {
            allow_idle_consumers: true,
            ..Rules::default()
        };
        let decision = rules.decide(&estimate, later);
        let value = decision.metric_value(MetricMode::Lag).expect("a value");
        assert_eq!(value, MAX_REPORTED);
        assert_eq!(
            decision.metric_int(MetricMode::Lag, value),
            MAX_REPORTED_INT
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::lag::OffsetResetPolicy;

        /// One poll: time step (ms), then per partition (watermark, commit, log start).
        type Poll = (u64, Vec<(i64, Option<i64>, i64)>, Option<usize>, bool);

        fn poll() -> impl Strategy<Value = Poll> {
            let offset = prop_oneof![0i64..1_000, any::<i64>()];
            (
                0u64..20_000,
                prop::collection::vec(
                    (offset.clone(), prop::option::of(offset.clone()), offset),
                    0..5,
                ),
                prop::option::of(0usize..10),
                any::<bool>(),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5_000))]

            /// Any stream of samples (offsets anywhere in i64, going back, partitions coming
            /// and going, failed polls): no panic, and every metric finite and >= 0.
            #[test]
            fn any_sample_stream_gives_finite_answers(
                polls in prop::collection::vec(poll(), 1..30),
                earliest in any::<bool>(),
                threshold in prop_oneof![1i64..1_000, 1i64..=MAX_REPORTED_INT],
                target in 1u64..1_000,
                flags in any::<[bool; 4]>(),
            ) {
                let rule = LagRule {
                    offset_reset: if earliest {
                        OffsetResetPolicy::Earliest
                    } else {
                        OffsetResetPolicy::Latest
                    },
                    zero_on_invalid_offset: flags[0],
                    isolation: crate::lag::Isolation::ReadUncommitted,
                };
                let rules = Rules {
                    lag_threshold: threshold,
                    target_eta: Some(Duration::from_secs(target)),
                    idle_window: Duration::from_secs(target),
                    allow_idle_consumers: flags[1],
                    exclude_persistent_lag: flags[2],
                    ensure_even_distribution: flags[3],
                    ..Rules::default()
                };
                let start = Instant::now();
                let mut at = start;
                let mut window = Window::new(Duration::from_secs(60), STALE);
                for (step, partitions, members, failed) in polls {
                    at += Duration::from_millis(step);
                    if failed {
                        window.record_failure(at);
                        continue;
                    }
                    let offsets = partitions
                        .iter()
                        .enumerate()
                        .map(|(i, (high, committed, log_start))| PartitionOffsets {
                            group: "g".to_owned(),
                            topic: "t".to_owned(),
                            topic_id: "".into(),
                            partition: i as i32,
                            log_start: *log_start,
                            high_watermark: *high,
                            committed: *committed,
                            nothing_to_read: false,
                            unread: None,
                        })
                        .collect();
                    let estimate = window.record(at, offsets, members, rule);
                    prop_assert!(estimate.total_lag >= 0);
                    if let Some(rates) = estimate.rates {
                        prop_assert!(rates.produce.is_finite() && rates.consume.is_finite());
                        prop_assert!(rates.produce >= -1e-6 && rates.consume >= -1e-6);
                    }
                    let decision = rules.decide(&estimate, at);
                    prop_assert!(decision.metric_lag >= 0);
                    for mode in [
                        MetricMode::Lag,
                        MetricMode::Eta,
                        MetricMode::Replicas,
                        MetricMode::Backlog,
                    ] {
                        if let Ok(value) = decision.metric_value(mode) {
                            prop_assert!(value.is_finite() && value >= 0.0, "{mode}: {value}");
                            // KEDA stores value × 1000 in an int64.
                            prop_assert!(value <= MAX_REPORTED, "{mode}: {value}");
                            let int = decision.metric_int(mode, value);
                            prop_assert!((0..=MAX_REPORTED_INT).contains(&int), "{mode}: {int}");
                        }
                    }
                }
            }
        }
    }
}
