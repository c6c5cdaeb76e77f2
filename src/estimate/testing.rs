//! Helpers the estimator's unit tests share.

use std::time::{Duration, Instant};

use super::{Estimate, Window};
use crate::lag::{LagRule, PartitionOffsets};

/// The gap of failed polls the windows under test bridge (`SCALER_STALE_AFTER`).
pub(crate) const STALE: Duration = Duration::from_secs(20);

pub(crate) const LATEST: LagRule = LagRule::DEFAULT;

pub(crate) fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0)
}

pub(crate) fn offsets(partition: i32, high: i64, committed: Option<i64>) -> PartitionOffsets {
    PartitionOffsets {
        group: "g".into(),
        topic: "t".into(),
        topic_id: "".into(),
        partition,
        log_start: 0,
        high_watermark: high,
        committed,
        nothing_to_read: false,
        unread: None,
        waited: None,
    }
}

/// Feeds one partition: at each time (seconds after `start`), the watermark and commit.
pub(crate) fn feed(
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
pub(crate) fn steady(
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
