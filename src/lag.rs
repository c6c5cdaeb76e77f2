//! Lag of one partition at one moment. Pure: no IO, no clock.

use std::fmt;

/// How a partition with no committed offset counts, as KEDA's `offsetResetPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OffsetResetPolicy {
    /// The group would start at the end: the partition counts 1 (KEDA's rule).
    Latest,
    /// The group would start at the log start: every retained record counts.
    Earliest,
}

impl fmt::Display for OffsetResetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffsetResetPolicy::Latest => "latest",
            OffsetResetPolicy::Earliest => "earliest",
        })
    }
}

/// How lag is counted on a partition: the watch-level part of KEDA's lag options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LagRule {
    /// How a partition with no committed offset counts (`offsetResetPolicy`).
    pub offset_reset: OffsetResetPolicy,
    /// A partition with no committed offset counts 0 (`scaleToZeroOnInvalidOffset`).
    pub zero_on_invalid_offset: bool,
}

impl LagRule {
    /// KEDA's defaults: latest, and a missing offset counts.
    pub const DEFAULT: LagRule = LagRule {
        offset_reset: OffsetResetPolicy::Latest,
        zero_on_invalid_offset: false,
    };
}

impl fmt::Display for LagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsetResetPolicy={}", self.offset_reset)?;
        if self.zero_on_invalid_offset {
            f.write_str(" scaleToZeroOnInvalidOffset=true")?;
        }
        Ok(())
    }
}

/// The offsets of one partition at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The consumer group whose committed offset this is (a plugin's watch spans several).
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first retained record (log start).
    pub log_start: i64,
    /// Offset the next produced record will get (high watermark).
    pub high_watermark: i64,
    /// The group's committed offset, `None` when the group never committed here.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records the group still has to consume on this partition, never negative.
    ///
    /// A committed offset past the high watermark (seen with some brokers) counts 0 rather
    /// than cancelling other partitions' lag, unlike KEDA.
    pub fn lag(&self, rule: LagRule) -> i64 {
        match (self.committed, rule.offset_reset) {
            (Some(committed), _) => self.high_watermark.saturating_sub(committed).max(0),
            (None, _) if rule.zero_on_invalid_offset => 0,
            (None, OffsetResetPolicy::Latest) => 1,
            // Only records still retained can be consumed; KEDA counts deleted ones too.
            (None, OffsetResetPolicy::Earliest) => {
                self.high_watermark.saturating_sub(self.log_start).max(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATEST: LagRule = LagRule::DEFAULT;
    const EARLIEST: LagRule = LagRule {
        offset_reset: OffsetResetPolicy::Earliest,
        zero_on_invalid_offset: false,
    };

    fn partition(log_start: i64, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            group: "g".to_owned(),
            topic: "t".to_owned(),
            partition: 0,
            log_start,
            high_watermark: high,
            committed,
        }
    }

    #[test]
    fn committed_lag_is_watermark_minus_commit() {
        assert_eq!(partition(0, 10, Some(4)).lag(LATEST), 6);
        assert_eq!(partition(0, 10, Some(10)).lag(EARLIEST), 0);
    }

    #[test]
    fn commit_past_watermark_clamps_at_zero() {
        assert_eq!(partition(0, 1, Some(10)).lag(LATEST), 0);
        let parts = [partition(0, 1, Some(10)), partition(0, 8, Some(3))];
        let total: i64 = parts.iter().map(|p| p.lag(LATEST)).sum();
        assert_eq!(total, 5, "a commit past the watermark cancels no other lag");
    }

    #[test]
    fn missing_commit_follows_the_policy() {
        assert_eq!(partition(5, 20, None).lag(LATEST), 1);
        assert_eq!(partition(0, 0, None).lag(LATEST), 1);
        assert_eq!(partition(5, 20, None).lag(EARLIEST), 15);
        assert_eq!(partition(0, 0, None).lag(EARLIEST), 0);
    }

    #[test]
    fn scale_to_zero_on_invalid_offset_counts_missing_commits_zero() {
        for offset_reset in [OffsetResetPolicy::Latest, OffsetResetPolicy::Earliest] {
            let rule = LagRule {
                offset_reset,
                zero_on_invalid_offset: true,
            };
            assert_eq!(partition(5, 20, None).lag(rule), 0);
            assert_eq!(partition(5, 20, Some(8)).lag(rule), 12);
        }
    }
}
