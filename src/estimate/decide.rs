//! A trigger's rules and the decision they make from an estimate: KEDA's lag rules (caps,
//! persistent lag, even distribution), every metric mode's value, and activity with the idle
//! window. Pure: the time of the decision is given.

use std::fmt;
use std::time::{Duration, Instant};

use super::NOT_DRAINING_ETA_SECONDS;
use super::{backlog_minutes, replica_target, Estimate, Eta, PartitionEstimate, Rates};

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
    /// Time lag: seconds the oldest record not consumed has waited, the most over partitions;
    /// target `timeLagThreshold` (HPA `Value`).
    TimeLag,
}

impl MetricMode {
    /// The metadata spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricMode::Lag => "lag",
            MetricMode::Eta => "eta",
            MetricMode::Replicas => "replicas",
            MetricMode::Backlog => "backlog",
            MetricMode::TimeLag => "timeLag",
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
    /// Active only when the time lag is above this too (`activationTimeLagThreshold`).
    pub activation_time_lag: Option<Duration>,
    /// The time lag aimed at (`timeLagThreshold`); required by `timeLag`.
    pub time_lag_threshold: Option<Duration>,
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
            activation_time_lag: None,
            time_lag_threshold: None,
            target_eta: None,
            idle_window: Duration::ZERO,
            allow_idle_consumers: false,
            exclude_persistent_lag: false,
            limit_to_partitions_with_lag: false,
            ensure_even_distribution: false,
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
    /// The `timeLag` metric, seconds; `None` while a partition's is unknown.
    pub time_lag: Option<f64>,
    /// Partitions whose time lag is unknown.
    pub n_time_lag_unknown: usize,
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
            MetricMode::Eta | MetricMode::Replicas | MetricMode::Backlog | MetricMode::TimeLag => {
                value.ceil() as i64
            }
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
            MetricMode::TimeLag => self.time_lag.ok_or_else(|| {
                format!(
                    "the time lag is not known: on {} partitions the oldest record not consumed \
                     was written before this watch's history began, and its timestamp could \
                     not be read from the broker (lag {})",
                    self.n_time_lag_unknown, self.total_lag
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
        match self.time_lag {
            Some(seconds) => write!(f, " time_lag={seconds:.3}s")?,
            None => f.write_str(" time_lag=unknown")?,
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
            time_lag: estimate.time_lag,
            n_time_lag_unknown: estimate
                .partitions
                .iter()
                .filter(|p| p.time_lag.is_none())
                .count(),
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

    /// Whether these rules read the time lag (its metric or its activation threshold).
    pub fn needs_time_lag(&self) -> bool {
        self.metric == MetricMode::TimeLag || self.activation_time_lag.is_some()
    }

    /// IsActive: true on any sample above the activation thresholds (the lag above
    /// `activationLagThreshold` and, where set, the time lag above
    /// `activationTimeLagThreshold`; an unknown time lag counts as above); false only once
    /// that stayed untrue for the whole idle window, with no gap in the data.
    pub fn active(&self, estimate: &Estimate, now: Instant) -> bool {
        let threshold = self.activation_lag_threshold;
        let age_threshold = self.activation_time_lag.map(duration_ms);
        let aged = |age_ms: i64| age_threshold.is_none_or(|threshold| age_ms > threshold);
        let age_now = estimate.time_lag.map_or(i64::MAX, seconds_ms);
        if estimate.total_lag > threshold && aged(age_now) {
            return true;
        }
        if self.idle_window.is_zero() {
            return false;
        }
        let Some(since) = now.checked_sub(self.idle_window) else {
            return true;
        };
        // The most lag and the oldest wait over the window, each on its own: a window where
        // both went above their thresholds counts as active even if not at the same sample,
        // which errs towards active, never idle.
        let lag_over = estimate
            .history
            .max_since(since)
            .is_none_or(|max| max > threshold);
        let age_over =
            age_threshold.is_none() || estimate.age_history.max_since(since).is_none_or(aged);
        lag_over && age_over
    }
}

/// Whole milliseconds of a duration, rounded up.
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

/// Whole milliseconds of `seconds`, rounded up, as the age history keeps them.
pub(super) fn seconds_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).ceil() as i64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::estimate::testing::*;
    use crate::estimate::*;
    use crate::lag::{LagRule, PartitionOffsets};

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
                    time_lag: None,
                })
                .collect(),
            total_lag: lags.iter().map(|(lag, _)| lag).sum(),
            rates: None,
            members: None,
            mean_members: None,
            samples_in_window: 1,
            in_flight_seconds: None,
            time_lag: None,
            history: Arc::new(LagHistory::default()),
            age_history: Arc::new(LagHistory::default()),
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
    fn idle_window_ignores_flapping_and_missing_data() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            activation_lag_threshold: 5,
            idle_window: Duration::from_secs(120),
            ..Rules::default()
        };
        // Lag flaps around the threshold every 5 s for 10 minutes: never idle.
        let mut first_below = None;
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
                first_below = None;
            } else {
                first_below.get_or_insert(at);
            }
        }
        // Then quiet (lag 4): active until the window has passed the first sample below
        // after the last one above (the lag between two samples counts as the earlier's).
        let first_below = first_below.unwrap();
        let quiet_from = start + Duration::from_secs(600);
        let mut seen_idle = false;
        for s in (0..=120u64).step_by(5) {
            let at = quiet_from + Duration::from_secs(s);
            let estimate = window.record(at, vec![offsets(0, 1000, Some(996))], Some(1), LATEST);
            let active = rules.decide(&estimate, at).active;
            assert_eq!(
                active,
                at - rules.idle_window < first_below,
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
        // +155 s, 30 s after the one at +125 s): unknown from the first failure until that
        // sample, so active until the window has passed it.
        for failed in [130u64, 135, 140, 145, 150] {
            window.record_failure(quiet_from + Duration::from_secs(failed));
        }
        for s in [155u64, 200, 249, 251, 274, 275, 276] {
            let at = quiet_from + Duration::from_secs(s);
            let estimate = window.record(at, vec![offsets(0, 1000, Some(1000))], Some(1), LATEST);
            let active = rules.decide(&estimate, at).active;
            assert_eq!(active, s < 275, "at quiet +{s}s");
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
        let later = window.record(at(229), idle.clone(), Some(1), LATEST);
        assert!(
            rules.decide(&later, at(229)).active,
            "the lag seen at 155 s stood until the sample at 170 s"
        );
        let idle_again = window.record(at(230), idle.clone(), Some(1), LATEST);
        assert!(!rules.decide(&idle_again, at(230)).active);
        // A gap longer than the stale bound counts as activity from its first failure to
        // the sample after it.
        window.record_failure(at(235));
        let back = window.record(at(260), idle.clone(), Some(1), LATEST);
        assert!(rules.decide(&back, at(260)).active);
        let still = window.record(at(319), idle.clone(), Some(1), LATEST);
        assert!(
            rules.decide(&still, at(319)).active,
            "nothing was known from 235 s to 260 s"
        );
        let done = window.record(at(320), idle, Some(1), LATEST);
        assert!(!rules.decide(&done, at(320)).active);
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

    /// Lag far past what KEDA's quantities hold (offsets near i64::MAX, no cap) is reported
    /// as the largest value KEDA can hold, never a wrapped or negative one (the fuzz test
    /// below bounds every mode).
    #[test]
    fn values_past_what_keda_holds_are_reported_at_its_maximum() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let offsets = |high: i64| {
            vec![PartitionOffsets {
                group: "g".into(),
                topic: "t".into(),
                topic_id: "".into(),
                partition: 0,
                log_start: 0,
                high_watermark: high,
                committed: Some(0),
                nothing_to_read: false,
                unread: None,
                waited: None,
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

    /// The time lag of a watch: from the broker's record timestamp while the backlog is older
    /// than the watch's history, then from the history; 0 once consumed, however long the
    /// producer stays quiet; unknown (an error, and active) when neither can tell.
    #[test]
    fn time_lag_comes_from_the_broker_before_the_history_and_from_the_history_after() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            metric: MetricMode::TimeLag,
            time_lag_threshold: Some(Duration::from_secs(60)),
            ..Rules::default()
        };
        let sample = |high: i64, committed: i64, waited: Option<u64>| {
            vec![PartitionOffsets {
                waited: waited.map(Duration::from_secs),
                ..offsets(0, high, Some(committed))
            }]
        };
        let value = |estimate: &Estimate, now: Instant| {
            rules
                .decide(estimate, now)
                .metric_value(MetricMode::TimeLag)
        };
        // A backlog from before the watch: what the broker's timestamp says.
        assert_eq!(window.unreached(&sample(100, 0, None), LATEST), [(0, 0)]);
        let first = window.record(at(0), sample(100, 0, Some(900)), Some(1), LATEST);
        assert_eq!(value(&first, at(0)), Ok(900.0));
        // Still before the history and the broker could not be read: unknown, an error, and
        // active whatever the age threshold.
        let unknown = window.record(at(5), sample(110, 50, None), Some(1), LATEST);
        let why = value(&unknown, at(5)).unwrap_err();
        assert!(why.contains("on 1 partitions"), "{why}");
        let on_age = Rules {
            activation_time_lag: Some(Duration::from_secs(3600)),
            ..Rules::default()
        };
        assert!(on_age.decide(&unknown, at(5)).active);
        // Past the first poll's end (100): records 100..110 were written between the polls
        // at 0 s and 5 s, record 105 at 2.75 s, so it has waited 7.25 s at 10 s.
        assert!(window.unreached(&sample(120, 105, None), LATEST).is_empty());
        let history = window.record(at(10), sample(120, 105, None), Some(1), LATEST);
        let waited = value(&history, at(10)).unwrap();
        assert!(close(waited, 7.25), "{waited}");
        assert!(!on_age.decide(&history, at(10)).active, "7.25 s < 1 h");
        // Consumed, then a quiet producer: 0 at every poll.
        for s in (15..=300).step_by(5) {
            let quiet = window.record(at(s), sample(120, 120, None), Some(1), LATEST);
            assert_eq!(value(&quiet, at(s)), Ok(0.0));
        }
        // Two records written after a quiet spell wait from the poll that last saw the end
        // before them, not from the start of the spell.
        let late = window.record(at(305), sample(122, 120, None), Some(1), LATEST);
        let waited = value(&late, at(305)).unwrap();
        assert!(close(waited, 3.75), "{waited}");
    }

    /// Offsets an earlier read stands in for (a leader that did not answer) say nothing of
    /// where the end stood at this poll: records written meanwhile are not dated after it.
    #[test]
    fn a_stand_in_end_does_not_date_the_records_written_meanwhile() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut window = Window::new(Duration::from_secs(60), STALE);
        window.record(at(0), vec![offsets(0, 10, Some(10))], Some(1), LATEST);
        let stand_in = PartitionOffsets {
            unread: Some(crate::lag::Unread {
                read_at: at(0),
                cause: "its leader did not answer".into(),
            }),
            ..offsets(0, 10, Some(10))
        };
        window.record(at(5), vec![stand_in], Some(1), LATEST);
        let estimate = window.record(at(10), vec![offsets(0, 20, Some(10))], Some(1), LATEST);
        // Records 10..20 came between 0 s and 10 s: record 10 at 0.5 s.
        let waited = estimate.time_lag.expect("known");
        assert!(close(waited, 9.5), "{waited}");
    }

    #[test]
    fn activation_on_age_needs_the_lag_and_the_age_over_their_thresholds() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut window = Window::new(Duration::from_secs(60), STALE);
        let rules = Rules {
            activation_time_lag: Some(Duration::from_secs(30)),
            idle_window: Duration::from_secs(20),
            ..Rules::default()
        };
        for s in (0..=30).step_by(5) {
            window.record(at(s), vec![offsets(0, 10, Some(10))], Some(1), LATEST);
        }
        // Ten records written between 30 s and 35 s, not consumed: the oldest at 30.25 s has
        // waited over 30 s from the poll at 65 s on.
        let mut active_from = None;
        for s in (35..=80).step_by(5) {
            let estimate = window.record(at(s), vec![offsets(0, 20, Some(10))], Some(1), LATEST);
            if rules.decide(&estimate, at(s)).active && active_from.is_none() {
                active_from = Some(s);
            }
        }
        assert_eq!(active_from, Some(65));
        // Consumed at 85 s: inactive once the idle window (20 s) holds no sample with an old
        // record (the last at 80 s).
        let mut inactive_from = None;
        for s in (85..=120).step_by(5) {
            let estimate = window.record(at(s), vec![offsets(0, 20, Some(20))], Some(1), LATEST);
            if !rules.decide(&estimate, at(s)).active && inactive_from.is_none() {
                inactive_from = Some(s);
            }
        }
        assert_eq!(inactive_from, Some(105));
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::lag::OffsetResetPolicy;

        /// One poll: time step (ms), then per partition (watermark, commit, log start, the
        /// broker's wait in ms).
        type Poll = (
            u64,
            Vec<(i64, Option<i64>, i64, Option<u64>)>,
            Option<usize>,
            bool,
        );

        fn poll() -> impl Strategy<Value = Poll> {
            let offset = prop_oneof![0i64..1_000, any::<i64>()];
            let waited = prop::option::of(prop_oneof![0u64..100_000, any::<u64>()]);
            (
                0u64..20_000,
                prop::collection::vec(
                    (
                        offset.clone(),
                        prop::option::of(offset.clone()),
                        offset,
                        waited,
                    ),
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
                    activation_time_lag: flags[0].then_some(Duration::from_secs(target)),
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
                        .map(|(i, (high, committed, log_start, waited))| PartitionOffsets {
                            group: "g".into(),
                            topic: "t".into(),
                            topic_id: "".into(),
                            partition: i as i32,
                            log_start: *log_start,
                            high_watermark: *high,
                            committed: *committed,
                            nothing_to_read: false,
                            unread: None,
                            waited: waited.map(Duration::from_millis),
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
                        MetricMode::TimeLag,
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
