//! The estimator: produce and consume rates, time to drain (ETA), replica targets and
//! idleness, from a watch's recent samples. Pure: no IO, and no clock of its own (every
//! function is given the times it needs), so it is tested with synthetic sample streams.
//!
//! A watch's [`Window`] remembers, per partition, the high watermarks and committed offsets of
//! the samples within the rate window, and the lag history the idle window needs. Each sample
//! it records yields an [`Estimate`]: what the watch knows at that moment. A trigger's
//! [`Rules`] then turn an estimate into a [`Decision`]: the values of every metric mode and
//! whether the workload is active.
//!
//! Files: `window` (the samples and their estimate), `history` (the lag history), `age`
//! (when the records waiting were written: time lag), `drain` (ETA, backlog, replica target),
//! `decide` (rules and decisions).

use std::sync::Arc;
use std::time::Instant;

use crate::lag::PartitionOffsets;

mod age;
mod decide;
mod drain;
mod history;
#[cfg(test)]
mod testing;
mod window;

pub use age::{EndHistory, MAX_END_POINTS};
pub use decide::{Decision, MetricMode, Rules, MAX_REPORTED, MAX_REPORTED_INT};
pub use drain::{
    backlog_minutes, eta, replica_target, Eta, NotDraining, MAX_BACKLOG_MINUTES,
    NOT_DRAINING_ETA_SECONDS,
};
pub use history::{LagHistory, MAX_IDLE_WINDOW};
pub use window::{least_squares_slope, Window, MAX_POINTS};

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
    /// between samples and the group's commit interval (the median gap between commits seen
    /// on any partition in the window, at most 6 mean times between samples); `None` with
    /// one sample. Lag the group consumes within this is in flight (see [`eta`]), unless the
    /// producers are clearly ahead.
    pub in_flight_seconds: Option<f64>,
    /// How long the oldest record the group has not consumed had waited at `taken_at`,
    /// seconds, the most over partitions (time lag; 0 when nothing waits); `None` when a
    /// partition's is unknown (see [`PartitionEstimate::time_lag`]).
    pub time_lag: Option<f64>,
    /// The lag history, for the idle window.
    pub history: Arc<LagHistory>,
    /// The time lag history, milliseconds (unknown as unbounded), for an idle window on age.
    pub age_history: Arc<LagHistory>,
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
    /// How long the oldest record the group has not consumed here had waited, seconds (0
    /// when none waits): from the watch's history of the end offset (module `age`), or where
    /// that does not reach back, from the record's timestamp on the broker; `None` when
    /// neither is known.
    pub time_lag: Option<f64>,
}

/// Records per second over the rate window, summed over partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// Growth of high watermarks.
    pub produce: f64,
    /// Growth of committed offsets.
    pub consume: f64,
}

impl Estimate {
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
