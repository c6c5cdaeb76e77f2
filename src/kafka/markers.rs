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
//! ([`MAX_PROBED_LAG`]) and did not move since an earlier cycle. Such a partition is read
//! from the committed offset, at the watch's isolation level, until a record or the end
//! ([`super::marker_reads`]: one thread and one long-lived consumer per isolation level per
//! cluster, group id `lagscaler-probe`, never joined nor committed to; groups at the same
//! offset share a read). No record before the end means nothing there is lag. A poll never
//! waits for a read: it asks, counts the lag this cycle, and a later poll of the group finds
//! the answer, so a verdict takes about two cycles. The verdict is kept until the committed
//! offset or the end moves, so a quiet partition is read once, not on every poll. A read
//! that fails leaves the lag counted (and is asked again).
//!
//! Where a read found a record after a committed offset, that record answers for that
//! offset until the group commits again, however far the end moves: a trickle into a group
//! scaled to zero is read once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::ClientConfig;

use super::marker_reads::{Found, MarkerReads, Position};
use crate::lag::{Isolation, PartitionOffsets};

/// Larger lag is counted as it is, unread: markers are one per transaction, so a partition
/// this far behind almost surely holds records.
pub const MAX_PROBED_LAG: i64 = 100;

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

/// Finds partitions whose lag holds nothing to read, and remembers what it found.
pub struct MarkerProbe {
    /// Each group's verdicts.
    memo: Mutex<HashMap<MemoKey, Memo>>,
    /// [`MAX_MEMO`], smaller in tests.
    max_memo: usize,
    /// The reads, shared by every group.
    reads: MarkerReads,
}

impl MarkerProbe {
    /// A probe that reads with consumers from `config` (a record reader's settings, see
    /// [`super::records::reader_config`]), each round of reads given `timeout`.
    pub fn new(config: ClientConfig, timeout: Duration) -> MarkerProbe {
        MarkerProbe {
            memo: Mutex::new(HashMap::new()),
            max_memo: MAX_MEMO,
            reads: MarkerReads::new(config, timeout),
        }
    }

    /// Stops and joins the reads thread. Idempotent.
    pub fn shutdown(&self) -> std::thread::Result<()> {
        self.reads.shutdown()
    }

    /// Marks the partitions of `snapshot` (one group's, read at `isolation` for the cycle of
    /// `tick`) whose lag holds no record to read: see the module's description.
    pub fn mark(&self, snapshot: &mut [PartitionOffsets], isolation: Isolation, tick: Instant) {
        let mut memo = self.memo.lock();
        if memo.len() > self.max_memo {
            memo.retain(|_, known| tick.saturating_duration_since(known.looked_at) < FORGET_UNSEEN);
            if memo.len() > self.max_memo / 2 {
                memo.clear();
            }
        }
        // (index in the snapshot, committed offset, end) of the partitions to ask about.
        let mut to_ask: Vec<(usize, i64, i64)> = Vec::new();
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
            let key = memo_key(offsets, isolation);
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
                Some(Verdict::Seen(seen)) if seen < tick && offsets.unread.is_none() => {
                    to_ask.push((index, committed, end));
                }
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
        if to_ask.is_empty() {
            return;
        }
        let asked: Vec<(Position, i64)> = to_ask
            .iter()
            .map(|&(index, committed, end)| {
                let offsets = &snapshot[index];
                let position = Position {
                    topic_id: Arc::clone(&offsets.topic_id),
                    topic: Arc::clone(&offsets.topic),
                    partition: offsets.partition,
                    isolation,
                    from: committed,
                };
                (position, end)
            })
            .collect();
        let answers = self.reads.found(&asked, tick);
        for (&(index, committed, end), answer) in to_ask.iter().zip(answers) {
            let Some(answer) = answer else {
                // Asked: a later poll of this group finds the answer.
                continue;
            };
            let record = match answer {
                Found::Record(offset) => Some(offset),
                Found::NoneBefore(_) => None,
            };
            let readable = record.is_some_and(|offset| offset < end);
            let offsets = &mut snapshot[index];
            offsets.nothing_to_read = !readable;
            memo.insert(
                memo_key(offsets, isolation),
                Memo {
                    committed,
                    end,
                    verdict: if readable {
                        Verdict::Readable
                    } else {
                        Verdict::NothingToRead
                    },
                    record: record.map(|offset| (committed, offset)),
                    looked_at: tick,
                },
            );
        }
    }
}

fn memo_key(offsets: &PartitionOffsets, isolation: Isolation) -> MemoKey {
    MemoKey {
        group: Arc::clone(&offsets.group),
        topic: Arc::clone(&offsets.topic),
        partition: offsets.partition,
        isolation,
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

    /// Marks `snapshot` at `tick`. Partitions seen for the first time are only noted:
    /// nothing is asked, so no read starts.
    fn mark(probe: &MarkerProbe, mut snapshot: Vec<PartitionOffsets>, tick: Instant) {
        probe.mark(&mut snapshot, Isolation::ReadUncommitted, tick);
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
