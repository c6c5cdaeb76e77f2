//! How long a lag takes to drain and how many consumers it needs: the ETA, the Azul
//! `backlog` metric and the replica target, from an estimate's lag, rates and members. Pure.

use std::fmt;
use std::time::Duration;

use super::{Estimate, Rates};

/// The ETA reported while lag is not draining: one year, in seconds. Large enough that an
/// HPA with `metricType: Value` scales up as far as it may, finite so that KEDA does not turn
/// it into 0 (it maps NaN and infinities to 0). Draining ETAs are capped at it too.
pub const NOT_DRAINING_ETA_SECONDS: f64 = 31_536_000.0;

/// The `backlog` metric's largest value, minutes: the Azul scaler's ceiling (9,999,999).
pub const MAX_BACKLOG_MINUTES: f64 = 9_999_999.0;

/// The `backlog` metric's rate scale ε, records per second (1 per minute, the net rate below
/// which the Azul scaler stops dividing): see [`backlog_minutes`].
const BACKLOG_RATE_SCALE: f64 = 1.0 / 60.0;

/// A net drain rate below this many records per second counts as not draining.
const MIN_NET_RATE: f64 = 1e-9;

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
    let in_flight = in_flight_time(rates, in_flight_seconds);
    if rates.consume > MIN_NET_RATE && in_flight > 0.0 && lag_f <= rates.consume * in_flight {
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

/// How far the producers may lead the consumers, relative to the consume rate, with lag
/// still believed in flight: rates read from commits sampled between polls are a few percent
/// off for a group that keeps pace (2.7 % for one polled every second that commits every
/// 5 s).
const KEEPING_PACE: f64 = 0.1;

/// From this lead on (relative to the consume rate) the group is clearly losing ground, and
/// none of its lag is in flight.
const LOSING_GROUND: f64 = 0.25;

/// How long a consumed record may stay uncommitted at `rates`: all of `in_flight_seconds`
/// while the consumers keep pace (the producers at most [`KEEPING_PACE`] ahead), fading
/// linearly to none as they pull ahead to [`LOSING_GROUND`]. Lag of a group that is clearly
/// losing ground is a backlog however small, never records in flight: with 100/s consumed
/// and 150/s produced, any lag up to what 100/s consumes in the commit interval would
/// otherwise read as draining. The fade keeps the `backlog` metric continuous in the rates.
fn in_flight_time(rates: Rates, in_flight_seconds: Option<f64>) -> f64 {
    let seconds = in_flight_seconds
        .filter(|seconds| seconds.is_finite())
        .unwrap_or(0.0)
        .max(0.0);
    let (produce, consume) = (rates.produce, rates.consume);
    if !(produce.is_finite() && consume.is_finite()) || produce <= consume {
        return seconds;
    }
    if consume <= 0.0 {
        return 0.0;
    }
    let lead = (produce - consume) / consume;
    let losing = (lead - KEEPING_PACE) / (LOSING_GROUND - KEEPING_PACE);
    seconds * (1.0 - losing).clamp(0.0, 1.0)
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
    let tau = in_flight_time(rates, in_flight_seconds);
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
    use crate::estimate::testing::*;
    use crate::estimate::*;

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
        // Commits seen at 5, 10, 15, 20 and 25 s: the median gap between them.
        let seconds = estimate.in_flight_seconds.unwrap();
        assert!((seconds - 5.0).abs() < 1e-9, "{seconds}");
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

    /// A group of `n` partitions polled every 5 s for `samples` polls: partition `i`
    /// receives `produce[i]`/s after a backlog of `backlog` and its group consumes
    /// `consume[i]`/s,
    /// committing what it consumed every `every[i]` polls (0: once, at the second poll,
    /// then never again, as a quiet partition does). The estimate after the last poll.
    fn group(
        backlog: i64,
        produce: &[f64],
        consume: &[f64],
        every: &[usize],
        samples: usize,
    ) -> Estimate {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(300), STALE);
        let mut last = None;
        for poll in 0..samples {
            let t = poll as f64 * 5.0;
            let offsets = (0..produce.len())
                .map(|i| {
                    let high = backlog + (produce[i] * t).round() as i64;
                    let committed_at = match every[i] {
                        0 => t.min(5.0),
                        every => (poll / every * every) as f64 * 5.0,
                    };
                    let committed = ((consume[i] * committed_at).round() as i64).min(high);
                    offsets(i as i32, high, Some(committed))
                })
                .collect();
            let at = start + Duration::from_secs_f64(t);
            last = Some(window.record(at, offsets, Some(produce.len()), LATEST));
        }
        last.expect("at least one poll")
    }

    #[test]
    fn a_quiet_partition_does_not_stretch_the_commit_interval() {
        // Nine partitions commit every poll; the tenth committed once, five minutes ago.
        // (The mean time between its changes, the longest, was taken before: ~295 s.)
        let mut every = vec![1; 10];
        every[9] = 0;
        let estimate = group(200, &[10.0; 10], &[10.0; 10], &every, 60);
        let seconds = estimate.in_flight_seconds.expect("known");
        assert!(close(seconds, 5.0), "{seconds}");
        // Commits every 3 polls on most partitions: the median gap, 15 s.
        let mut every = vec![3; 10];
        every[0] = 1;
        let estimate = group(200, &[10.0; 10], &[10.0; 10], &every, 60);
        let seconds = estimate.in_flight_seconds.expect("known");
        assert!(close(seconds, 15.0), "{seconds}");
        // A group committing every 10 polls: bounded by 6 poll intervals.
        let estimate = group(200, &[10.0; 10], &[10.0; 10], &[10; 10], 60);
        let seconds = estimate.in_flight_seconds.expect("known");
        assert!(close(seconds, 30.0), "{seconds}");
    }

    #[test]
    fn a_group_falling_behind_is_never_in_flight_nor_a_small_backlog() {
        // 150/s produced, 100/s consumed over ten partitions, one of them quiet: the lag
        // grows by 50/s, and it is far below what 100/s consumes in the old in-flight time.
        let mut every = vec![1; 10];
        every[9] = 0;
        let consume = vec![100.0 / 9.0; 10];
        let estimate = group(200, &[15.0; 10], &consume, &every, 24);
        assert!(estimate.total_lag < 10_000, "lag {}", estimate.total_lag);
        let rates = estimate.rates.expect("rates");
        assert!(rates.produce > 1.4 * rates.consume, "{rates:?}");
        assert_eq!(
            estimate.eta(),
            Eta::NotDraining(NotDraining::ProducerFaster),
            "{estimate:?}"
        );
        let backlog = backlog_minutes(
            estimate.total_lag,
            estimate.rates,
            estimate.in_flight_seconds,
        )
        .expect("known");
        assert_eq!(backlog, MAX_BACKLOG_MINUTES);
        // Keeping pace, committing every other poll: the lag is in flight, as before.
        let estimate = group(0, &[10.0; 10], &[10.0; 10], &[2; 10], 24);
        assert!(
            matches!(estimate.eta(), Eta::InFlight(_)),
            "{:?}",
            estimate.eta()
        );
    }

    #[test]
    fn in_flight_time_fades_as_the_producers_pull_ahead() {
        let seconds = Some(10.0);
        let at = |produce, consume| Rates { produce, consume };
        assert_eq!(in_flight_time(at(100.0, 100.0), seconds), 10.0);
        assert_eq!(in_flight_time(at(90.0, 100.0), seconds), 10.0);
        assert!(close(in_flight_time(at(110.0, 100.0), seconds), 10.0));
        assert!(close(in_flight_time(at(117.5, 100.0), seconds), 5.0));
        assert_eq!(in_flight_time(at(125.0, 100.0), seconds), 0.0);
        assert_eq!(in_flight_time(at(150.0, 100.0), seconds), 0.0);
        assert_eq!(in_flight_time(at(1.0, 0.0), seconds), 0.0);
        assert_eq!(in_flight_time(at(1.0, 1.0), None), 0.0);
    }

    proptest::proptest! {
        /// Producers clearly ahead (at least 30 % more than is consumed) over any number of
        /// partitions, any commit pattern, and a partition that committed once: with lag,
        /// the ETA is "not draining", never in flight or draining.
        #[test]
        fn a_group_losing_ground_is_not_draining(
            partitions in proptest::collection::vec(
                (1.0f64..50.0, 1.3f64..4.0, 0usize..4),
                1..12,
            ),
            samples in 8usize..40,
        ) {
            // And one partition that committed once, early, and takes few records.
            let consume: Vec<f64> =
                partitions.iter().map(|(c, _, _)| *c).chain([1.0]).collect();
            let produce: Vec<f64> =
                partitions.iter().map(|(c, k, _)| c * k).chain([0.1]).collect();
            let every: Vec<usize> = partitions.iter().map(|(_, _, e)| *e).chain([0]).collect();
            let estimate = group(200, &produce, &consume, &every, samples);
            proptest::prop_assume!(estimate.total_lag > 0);
            let eta = estimate.eta();
            proptest::prop_assert!(matches!(eta, Eta::NotDraining(_)), "{eta:?} for {estimate:?}");
        }
    }
}
