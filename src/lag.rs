//! Lag of one partition at one moment. Pure: no IO, no clock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Which end of a partition lag is measured to (`isolationLevel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isolation {
    /// The high watermark: every record written, in open transactions too (KEDA's meaning).
    ReadUncommitted,
    /// The last stable offset: what a `read_committed` consumer can read now; records of an
    /// open transaction do not count until it commits.
    ReadCommitted,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        })
    }
}

/// How lag is counted on a partition: the watch-level part of KEDA's lag options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LagRule {
    /// How a partition with no valid committed offset counts (`offsetResetPolicy`).
    pub offset_reset: OffsetResetPolicy,
    /// A partition with no valid committed offset counts 0 (`scaleToZeroOnInvalidOffset`).
    pub zero_on_invalid_offset: bool,
    /// The end lag is measured to (`isolationLevel`).
    pub isolation: Isolation,
}

impl LagRule {
    /// KEDA's defaults: latest, a missing offset counts, up to the high watermark.
    pub const DEFAULT: LagRule = LagRule {
        offset_reset: OffsetResetPolicy::Latest,
        zero_on_invalid_offset: false,
        isolation: Isolation::ReadUncommitted,
    };
}

impl fmt::Display for LagRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsetResetPolicy={}", self.offset_reset)?;
        if self.zero_on_invalid_offset {
            f.write_str(" scaleToZeroOnInvalidOffset=true")?;
        }
        if self.isolation != Isolation::ReadUncommitted {
            write!(f, " isolationLevel={}", self.isolation)?;
        }
        Ok(())
    }
}

/// The offsets of one partition at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The consumer group whose committed offset this is (a plugin's watch spans several);
    /// shared by the partitions of a sample.
    pub group: Arc<str>,
    /// Topic name, shared with the cycle's read of the topic.
    pub topic: Arc<str>,
    /// The topic's id: a topic deleted and created again under the same name gets a new one
    /// (empty where unknown).
    pub topic_id: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first retained record (log start).
    pub log_start: i64,
    /// Where lag is measured to: the high watermark (the offset the next produced record
    /// will get), or the last stable offset under `isolationLevel=read_committed`.
    pub high_watermark: i64,
    /// The group's committed offset, `None` when the group never committed here.
    pub committed: Option<i64>,
    /// The offsets between the committed offset and the end hold no record a consumer at
    /// the watch's isolation level reads: only transaction markers (or, read committed,
    /// aborted records). Found out by reading them (module `kafka::markers`).
    pub nothing_to_read: bool,
    /// Set when the log start and end come from an earlier read, because the latest one could
    /// not reach the partition's leader (see `KafkaClient::snapshot`).
    pub unread: Option<Unread>,
    /// How long the oldest record the group has not consumed here had waited when the
    /// offsets were read, by its timestamp on the broker; read only where the watch's own
    /// history of the end offset does not reach back to the group's position (see
    /// `KafkaClient::first_records`).
    pub waited: Option<Duration>,
}

/// Why a partition's log start and end come from an earlier read: the latest read of its
/// topic reached the other partitions' leaders but not this one's (a leader election in
/// progress, its broker down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unread {
    /// When the offsets given were read.
    pub read_at: Instant,
    /// Why the latest read missed them.
    pub cause: Arc<str>,
}

impl PartitionOffsets {
    /// The offset of the oldest record the group has not consumed, `None` when no record
    /// waits for it under `rule`: no lag, or no committed offset with `offsetResetPolicy`
    /// latest (the group would start at the end; KEDA's rule still counts that as lag 1).
    pub fn first_unconsumed(&self, rule: LagRule) -> Option<i64> {
        if self.lag(rule) == 0 {
            return None;
        }
        match self.valid_committed() {
            Some(committed) => Some(committed),
            None if rule.offset_reset == OffsetResetPolicy::Earliest => Some(self.log_start),
            None => None,
        }
    }

    /// The committed offset, unless the group has none or its records are deleted.
    fn valid_committed(&self) -> Option<i64> {
        self.committed
            .filter(|committed| *committed >= self.log_start)
    }

    /// Records the group still has to consume on this partition, never negative.
    ///
    /// A committed offset past the high watermark (seen with some brokers) counts 0 rather
    /// than cancelling other partitions' lag, unlike KEDA. A committed offset below the log
    /// start (its records deleted by retention or DeleteRecords) is not a position the group
    /// can resume from: its consumers reset as their `auto.offset.reset` says, so it counts
    /// as no committed offset (`offsetResetPolicy`), never the deleted records (KEDA counts
    /// them).
    pub fn lag(&self, rule: LagRule) -> i64 {
        match (self.valid_committed(), rule.offset_reset) {
            (Some(_), _) if self.nothing_to_read => 0,
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
        isolation: Isolation::ReadUncommitted,
    };

    fn partition(log_start: i64, high: i64, committed: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            group: "g".into(),
            topic: "t".into(),
            topic_id: Arc::from(""),
            partition: 0,
            log_start,
            high_watermark: high,
            committed,
            nothing_to_read: false,
            unread: None,
            waited: None,
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
                isolation: Isolation::ReadUncommitted,
            };
            assert_eq!(partition(5, 20, None).lag(rule), 0);
            assert_eq!(partition(5, 20, Some(8)).lag(rule), 12);
        }
    }

    #[test]
    fn a_commit_below_the_log_start_is_an_invalid_offset() {
        // Records 0..6 deleted, 10 written, the group committed at 2: the 4 deleted records
        // it never read are gone, and its consumers reset as their policy says.
        assert_eq!(partition(6, 10, Some(2)).lag(EARLIEST), 4);
        assert_eq!(partition(6, 10, Some(2)).lag(LATEST), 1);
        let zero = LagRule {
            zero_on_invalid_offset: true,
            ..LATEST
        };
        assert_eq!(partition(6, 10, Some(2)).lag(zero), 0);
        // At the log start itself the commit is valid.
        assert_eq!(partition(6, 10, Some(6)).lag(LATEST), 4);
    }

    #[test]
    fn offsets_holding_nothing_to_read_are_no_lag() {
        // Committed at 9, end 10: offset 9 is a transaction marker.
        let marker = PartitionOffsets {
            nothing_to_read: true,
            ..partition(0, 10, Some(9))
        };
        assert_eq!(marker.lag(LATEST), 0);
        assert_eq!(partition(0, 10, Some(9)).lag(LATEST), 1);
        // Without a valid commit the policy still decides.
        let no_commit = PartitionOffsets {
            nothing_to_read: true,
            ..partition(0, 10, None)
        };
        assert_eq!(no_commit.lag(LATEST), 1);
        assert_eq!(no_commit.lag(EARLIEST), 10);
    }

    #[test]
    fn the_rule_names_only_what_differs_from_kedas_defaults() {
        assert_eq!(LATEST.to_string(), "offsetResetPolicy=latest");
        let committed = LagRule {
            isolation: Isolation::ReadCommitted,
            ..LATEST
        };
        assert_eq!(
            committed.to_string(),
            "offsetResetPolicy=latest isolationLevel=read_committed"
        );
    }
}
