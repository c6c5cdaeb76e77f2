//! Lag that is only transaction markers or aborted records.
//!
//! A transactional producer ends each transaction with a control record (a commit or abort
//! marker) that takes an offset but is never delivered to a consumer. A group that consumed
//! everything can therefore commit one offset short of the end on each partition and read
//! lag 1 forever (KEDA #5675). Aborted records are skipped the same way by a
//! `read_committed` consumer.
//!
//! Offsets alone cannot tell such a partition from one with a record waiting, so the records
//! are read, but only where it can matter: a partition whose lag is small
//! ([`MAX_PROBED_LAG`]) and did not move since an earlier cycle. A consumer made for the
//! probe at the watch's isolation level (group id `lagscaler-probe`, which it never joins
//! nor commits to) reads each such partition of a topic from the committed offset until it
//! gets a record or reaches the end. No record before the end means nothing there is lag.
//! The verdict is kept until the committed offset or the end moves, so a quiet partition is
//! read once, not on every poll. A probe that fails leaves the lag counted.
//!
//! What probes cost is bounded: per cluster, one poll's probes at a time, starting at most
//! once a second (a poll that cannot probe counts its lag and tries again next cycle); a
//! probe is one short-lived consumer per topic. Where a read found a record
//! after a committed offset, that record answers for that offset until the group commits
//! again, however far the end moves: a trickle into a group scaled to zero is read once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::Mutex;
use rdkafka::ClientConfig;

use super::records;
use crate::lag::{Isolation, PartitionOffsets};

/// Larger lag is counted as it is, unread: markers are one per transaction, so a partition
/// this far behind almost surely holds records.
pub const MAX_PROBED_LAG: i64 = 100;

/// Probes of one cluster start at least this far apart.
pub const READ_SPACING: Duration = Duration::from_secs(1);

/// Verdicts kept at most (about 100 bytes each). Beyond, those no poll looked at for
/// [`FORGET_UNSEEN`] are forgotten, and if more than half are left the memory starts over
/// (each verdict costs one read). Until 2026-12-03 the bound was 100,000 and reaching it
/// started over at once, so 10,000 watches of 16 partitions (160,000 verdicts) lost every
/// verdict once a cycle.
const MAX_MEMO: usize = 400_000;

/// A verdict no poll looked at for this long is forgotten once the memory is full.
const FORGET_UNSEEN: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MemoKey {
    group: Arc<str>,
    topic: Arc<str>,
    partition: i32,
    isolation: Isolation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Seen with this lag in the cycle of the given tick; read if it is still there later.
    Seen(Instant),
    /// Nothing a consumer at this isolation reads lies between the two offsets.
    NothingToRead,
    /// A record lies there: the lag is real.
    Readable,
}

#[derive(Clone, Copy, Debug)]
struct Memo {
    committed: i64,
    end: i64,
    verdict: Verdict,
    /// A record a read found: (the committed offset it read from, the record's offset).
    record: Option<(i64, i64)>,
    /// The tick of the latest cycle whose poll looked at it.
    looked_at: Instant,
}

/// A partition to read: (index in the snapshot, partition, committed offset, end).
type ToRead = (usize, i32, i64, i64);

/// Finds partitions whose lag holds nothing to read, and remembers what it found.
pub struct MarkerProbe {
    /// The settings of a record read.
    config: ClientConfig,
    timeout: Duration,
    memo: Mutex<HashMap<MemoKey, Memo>>,
    /// [`MAX_MEMO`], smaller in tests.
    max_memo: usize,
    /// When the latest probe started; held while a probe reads, so one reads at a time.
    last_read: Mutex<Option<Instant>>,
}

impl MarkerProbe {
    /// A probe that makes its consumers from `config` (a record reader's settings, see
    /// [`records::reader_config`]).
    pub fn new(config: ClientConfig, timeout: Duration) -> MarkerProbe {
        MarkerProbe {
            config,
            timeout,
            memo: Mutex::new(HashMap::new()),
            max_memo: MAX_MEMO,
            last_read: Mutex::new(None),
        }
    }

    /// Marks the partitions of `snapshot` (one group's, read at `isolation` for the cycle of
    /// `tick`) whose lag holds no record to read: see the module's description.
    pub fn mark(
        &self,
        snapshot: &mut [PartitionOffsets],
        isolation: Isolation,
        tick: Instant,
        stop: &AtomicBool,
    ) {
        let mut to_read: BTreeMap<Arc<str>, Vec<ToRead>> = BTreeMap::new();
        {
            let mut memo = self.memo.lock();
            if memo.len() > self.max_memo {
                memo.retain(|_, known| {
                    tick.saturating_duration_since(known.looked_at) < FORGET_UNSEEN
                });
                if memo.len() > self.max_memo / 2 {
                    memo.clear();
                }
            }
            for (index, offsets) in snapshot.iter_mut().enumerate() {
                let Some(committed) = offsets
                    .committed
                    .filter(|committed| *committed >= offsets.log_start)
                else {
                    continue;
                };
                let end = offsets.high_watermark;
                let lag = end.saturating_sub(committed);
                if lag <= 0 || lag > MAX_PROBED_LAG {
                    continue;
                }
                let key = MemoKey {
                    group: Arc::clone(&offsets.group),
                    topic: Arc::clone(&offsets.topic),
                    partition: offsets.partition,
                    isolation,
                };
                let known = memo.get_mut(&key).map(|known| {
                    known.looked_at = known.looked_at.max(tick);
                    *known
                });
                // A record found after this same committed offset is still there.
                let record = known
                    .and_then(|known| known.record)
                    .filter(|(from, _)| *from == committed);
                if record.is_some_and(|(_, offset)| offset < end) {
                    continue;
                }
                let unchanged = known
                    .filter(|known| known.committed == committed && known.end == end)
                    .map(|known| known.verdict);
                match unchanged {
                    Some(Verdict::NothingToRead) => offsets.nothing_to_read = true,
                    Some(Verdict::Readable) => {}
                    // A partition whose leader the cycle could not reach is not read either.
                    Some(Verdict::Seen(seen)) if seen < tick && offsets.unread.is_none() => to_read
                        .entry(Arc::clone(&offsets.topic))
                        .or_default()
                        .push((index, offsets.partition, committed, end)),
                    Some(Verdict::Seen(_)) => {}
                    None => {
                        memo.insert(
                            key,
                            Memo {
                                committed,
                                end,
                                verdict: Verdict::Seen(tick),
                                record,
                                looked_at: tick,
                            },
                        );
                    }
                }
            }
        }
        if to_read.is_empty() {
            return;
        }
        // One probe at a time, one a second at most; the others count their lag this cycle
        // and try again the next.
        let Some(mut last_read) = self.last_read.try_lock() else {
            return;
        };
        if last_read.is_some_and(|at| at.elapsed() < READ_SPACING) {
            return;
        }
        *last_read = Some(Instant::now());
        // One deadline for every topic: a frozen broker costs one timeout, not one a topic.
        let deadline = Instant::now() + self.timeout;
        for (topic, partitions) in to_read {
            let started = Instant::now();
            let found = match self.read(&topic, &partitions, isolation, deadline, stop) {
                Ok(found) => {
                    debug!(
                        "read {} of {} partitions of topic {topic} for markers ({isolation}) in \
                         {:?}: {found:?}",
                        found.len(),
                        partitions.len(),
                        started.elapsed()
                    );
                    found
                }
                Err(cause) => {
                    debug!("reading the lag of topic {topic} for markers failed: {cause}");
                    continue;
                }
            };
            let mut memo = self.memo.lock();
            for (index, partition, committed, end) in partitions {
                let Some(&first) = found.get(&partition) else {
                    continue;
                };
                let readable = first.is_some_and(|offset| offset < end);
                let offsets = &mut snapshot[index];
                offsets.nothing_to_read = !readable;
                memo.insert(
                    MemoKey {
                        group: Arc::clone(&offsets.group),
                        topic: Arc::clone(&topic),
                        partition,
                        isolation,
                    },
                    Memo {
                        committed,
                        end,
                        verdict: if readable {
                            Verdict::Readable
                        } else {
                            Verdict::NothingToRead
                        },
                        record: first.map(|offset| (committed, offset)),
                        looked_at: tick,
                    },
                );
            }
        }
    }

    /// Reads each of `partitions` of `topic` from its committed offset: by partition, the
    /// offset of the first record, or `None` when the end came first. A partition the read
    /// did not settle before `deadline` is left out.
    fn read(
        &self,
        topic: &str,
        partitions: &[ToRead],
        isolation: Isolation,
        deadline: Instant,
        stop: &AtomicBool,
    ) -> Result<HashMap<i32, Option<i64>>, String> {
        let wanted: Vec<(i32, i64)> = partitions
            .iter()
            .map(|&(_, partition, committed, _)| (partition, committed))
            .collect();
        let found =
            records::first_records(&self.config, deadline, topic, &wanted, isolation, stop)?;
        Ok(found
            .into_iter()
            .map(|(partition, first)| (partition, first.map(|record| record.offset)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` partitions of `group` on topic `t`, `lag` records behind each.
    fn snapshot(group: &str, n: i32, lag: i64) -> Vec<PartitionOffsets> {
        (0..n)
            .map(|partition| PartitionOffsets {
                group: group.into(),
                topic: "t".into(),
                topic_id: "id".into(),
                partition,
                log_start: 0,
                high_watermark: 10 + lag,
                committed: Some(10),
                nothing_to_read: false,
                unread: None,
                waited: None,
            })
            .collect()
    }

    /// Marks `snapshot` at `tick`. Partitions seen for the first time are only noted
    /// (nothing is read), and the stop flag is raised so that nothing would be.
    fn mark(probe: &MarkerProbe, mut snapshot: Vec<PartitionOffsets>, tick: Instant) {
        let stop = AtomicBool::new(true);
        probe.mark(&mut snapshot, Isolation::ReadUncommitted, tick, &stop);
    }

    /// A probe that keeps at most 8 verdicts.
    fn small_probe() -> MarkerProbe {
        let mut probe = MarkerProbe::new(ClientConfig::new(), Duration::from_secs(1));
        probe.max_memo = 8;
        probe
    }

    #[test]
    fn a_full_memory_forgets_verdicts_nobody_looked_at_and_keeps_the_others() {
        let probe = small_probe();
        let start = Instant::now();
        mark(&probe, snapshot("a", 6, 2), start);
        let later = start + FORGET_UNSEEN + Duration::from_secs(60);
        mark(&probe, snapshot("b", 4, 2), later);
        assert_eq!(probe.memo.lock().len(), 10);
        // Over the bound: a's verdicts, unseen for longer than FORGET_UNSEEN, go; b's stay.
        mark(&probe, snapshot("c", 2, 0), later + Duration::from_secs(5));
        let memo = probe.memo.lock();
        assert_eq!(memo.len(), 4);
        assert!(memo.keys().all(|key| &*key.group == "b"));
    }

    #[test]
    fn a_memory_full_of_verdicts_looked_at_lately_starts_over() {
        let probe = small_probe();
        let start = Instant::now();
        mark(&probe, snapshot("a", 9, 2), start);
        mark(&probe, snapshot("c", 1, 0), start);
        assert!(probe.memo.lock().is_empty());
    }
}
