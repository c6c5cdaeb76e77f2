//! A group's committed offsets for a poll: from the cluster's commit stream (module
//! `commit_reader`) where it can answer, else one OffsetFetch (`SCALER_COMMIT_SOURCE`).
//!
//! `auto` starts the reader at the first poll that needs it. When `__consumer_offsets`
//! cannot be read (its description or its records refused, as on managed services that hide
//! internal topics), `auto` falls back to OffsetFetch, logs it once, and tries the stream
//! again after [`RETRY_STREAM_AFTER`]; `stream` fails the polls with the reason instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::Consumer;

use super::admin::{CommittedOffset, End, SLICE};
use super::commit_reader::{CommitReader, Unanswered, CATCH_UP_WAIT, OFFSETS_TOPIC};
use super::topic_read::TopicRead;
use super::{KafkaClient, KafkaError};
use crate::config::CommitSource;
use crate::consumer_offsets::coordinator_partition;
use crate::lag::Isolation;

/// After the stream was refused, `auto` uses OffsetFetch this long before trying it again.
pub const RETRY_STREAM_AFTER: Duration = Duration::from_secs(300);

/// `__consumer_offsets`'s partition leaders are described again when this old.
const LAYOUT_MAX_AGE: Duration = Duration::from_secs(60);

/// Most groups of one cluster bootstrapped at once (each one OffsetFetch, with its
/// FindCoordinator): thousands of watches starting together (a restart) would otherwise
/// send thousands of requests at once, and time out behind each other.
pub const MAX_BOOTSTRAPS: usize = 64;

/// Counts the bootstraps in progress (a semaphore of [`MAX_BOOTSTRAPS`]).
#[derive(Default)]
pub(super) struct Bootstraps {
    running: Mutex<usize>,
    freed: Condvar,
}

/// One bootstrap's place; freed when dropped.
struct Place<'a>(&'a Bootstraps);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() -= 1;
        self.0.freed.notify_one();
    }
}

impl Bootstraps {
    /// A place, waiting until `deadline` (in 100 ms slices that check `stopping`).
    fn enter(&self, deadline: Instant, stopping: &AtomicBool) -> Option<Place<'_>> {
        let mut running = self.running.lock();
        while *running >= MAX_BOOTSTRAPS {
            if stopping.load(Ordering::Acquire) || Instant::now() >= deadline {
                return None;
            }
            let slice = (Instant::now() + SLICE).min(deadline);
            self.freed.wait_until(&mut running, slice);
        }
        *running += 1;
        Some(Place(self))
    }
}

/// The commit stream of one cluster, as far as its client knows.
#[derive(Default)]
pub(super) enum StreamState {
    /// Not needed yet.
    #[default]
    NotStarted,
    /// Reading.
    Running(Arc<CommitReader>),
    /// Could not be read, since then, for this reason.
    Refused { since: Instant, why: String },
}

/// Where a poll's committed offsets came from, for `/metrics` and `lagscaler check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitsFrom {
    /// The commit stream.
    Stream,
    /// OffsetFetch, as configured.
    Fetch,
    /// OffsetFetch, because the stream cannot be read (why).
    FetchFallback(String),
}

/// Why the reader is not running.
enum Unstarted {
    /// The topic cannot be read (authorization): see [`StreamState::Refused`].
    Refused(String),
    /// Kafka did not answer now (logged where it happened).
    Failed,
}

/// Whether a Kafka error says that the topic may not be read (rather than that Kafka did
/// not answer, or that another resource was refused).
fn refused(why: &str) -> bool {
    super::commit_reader::topic_refused(why)
}

/// What the stream answered for one group.
enum Streamed {
    /// Every committed offset of the group.
    Known(Vec<CommittedOffset>),
    /// The reader had not read far enough in time: OffsetFetch's answer, asked for this poll.
    Fetched(Vec<CommittedOffset>),
    /// The stream cannot be read, for this reason.
    Unusable(String),
}

impl KafkaClient {
    /// `group`'s committed offsets, as new as an OffsetFetch asked at `since` (this poll's
    /// scheduled time) or newer: see the module's description.
    pub(super) fn committed_offsets(
        &self,
        group: &str,
        since: Instant,
    ) -> Result<Vec<CommittedOffset>, KafkaError> {
        if self.commit_source == CommitSource::Fetch {
            return self.group_offsets(group);
        }
        match self.streamed(group, since)? {
            Streamed::Known(offsets) => {
                if self.stream_behind.swap(false, Ordering::Relaxed) {
                    info!("commit reader caught up: committed offsets come from the stream");
                }
                Ok(offsets)
            }
            Streamed::Fetched(offsets) => Ok(offsets),
            Streamed::Unusable(why) => match self.commit_source {
                CommitSource::Stream => Err(KafkaError::CommitStream { cause: why }),
                CommitSource::Auto | CommitSource::Fetch => self.group_offsets(group),
            },
        }
    }

    /// Where committed offsets come from now.
    pub fn commits_from(&self) -> CommitsFrom {
        match (&*self.stream.lock(), self.commit_source) {
            (_, CommitSource::Fetch) => CommitsFrom::Fetch,
            (StreamState::Refused { why, .. }, _) => CommitsFrom::FetchFallback(why.clone()),
            (StreamState::Running(reader), _) => match reader.failure() {
                Some(why) => CommitsFrom::FetchFallback(why),
                None => CommitsFrom::Stream,
            },
            (StreamState::NotStarted, _) => CommitsFrom::Stream,
        }
    }

    fn streamed(&self, group: &str, since: Instant) -> Result<Streamed, KafkaError> {
        let reader = match self.commit_reader(since) {
            Ok(reader) => reader,
            Err(Unstarted::Refused(why)) => return Ok(Streamed::Unusable(why)),
            // Kafka not answering now: OffsetFetch, which says whether it answers.
            Err(Unstarted::Failed) => {
                return Ok(Streamed::Fetched(self.group_offsets(group)?));
            }
        };
        if reader.knows(group) {
            let end = match self.group_partition_end(group, since) {
                Ok(Some(end)) => end,
                // A transaction open on the group's partition hides the commits after it
                // from the reader, not from OffsetFetch.
                Ok(None) => return Ok(Streamed::Fetched(self.group_offsets(group)?)),
                Err(err) if refused(&err.to_string()) => {
                    return Ok(self.refuse(&reader, err.to_string()));
                }
                // The end not read: OffsetFetch, which looks the group's coordinator up by
                // itself and says whether it answers. Right after the coordinator's node
                // was killed and started again or moved, the end read failed at once
                // (its leader unknown to librdkafka's metadata) while OffsetFetch was
                // answered in some of those polls (three-node test).
                Err(err) => {
                    debug!(
                        "{group}: the end of its commit partition not read ({err}): OffsetFetch"
                    );
                    return Ok(Streamed::Fetched(self.group_offsets(group)?));
                }
            };
            let deadline = Instant::now() + CATCH_UP_WAIT;
            return Ok(match reader.wait_until_read(&[end], deadline) {
                Ok(()) => match reader.commits(group) {
                    Some(offsets) => Streamed::Known(offsets),
                    // Forgotten or reset while waiting: asked afresh next poll.
                    None => Streamed::Fetched(self.group_offsets(group)?),
                },
                Err(Unanswered::Behind { records }) => {
                    self.note_behind(records);
                    Streamed::Fetched(self.group_offsets(group)?)
                }
                Err(Unanswered::Failed(why)) => self.refuse(&reader, why),
            });
        }
        let Some(_place) = self
            .bootstraps
            .enter(Instant::now() + self.timeout, &self.stopping)
        else {
            return Err(KafkaError::GroupOffsets {
                group: group.to_owned(),
                cause: format!(
                    "{MAX_BOOTSTRAPS} other groups were being read for the first time for {}; \
                     tried again next poll",
                    humantime::format_duration(self.timeout)
                ),
            });
        };
        // Tracked first, OffsetFetch next, then the reader up to the end read after
        // OffsetFetch answered: nothing committed in between is lost or rolled back.
        reader.track(group);
        let fetched = self.group_offsets(group)?;
        let end = match self.group_partition_end(group, Instant::now()) {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(Streamed::Fetched(fetched)),
            Err(err) if refused(&err.to_string()) => {
                return Ok(self.refuse(&reader, err.to_string()));
            }
            Err(_) => return Ok(Streamed::Fetched(fetched)),
        };
        let deadline = Instant::now() + CATCH_UP_WAIT;
        Ok(match reader.wait_until_read(&[end], deadline) {
            Ok(()) => Streamed::Known(reader.bootstrap(group, &fetched)),
            Err(Unanswered::Behind { records }) => {
                self.note_behind(records);
                Streamed::Fetched(fetched)
            }
            Err(Unanswered::Failed(why)) => self.refuse(&reader, why),
        })
    }

    /// The partition of `__consumer_offsets` that holds `group`'s commits, with its last
    /// stable offset read at or after `since`; `None` while a transaction is open on it (its
    /// last stable offset is below its high watermark): a read-committed reader does not see
    /// the commits written after the transaction began, which OffsetFetch already answers
    /// with. An error when the partition's leader (the group's coordinator) did not answer;
    /// the caller then asks OffsetFetch, which finds a new coordinator by itself.
    ///
    /// The ends are read per leader (one ListOffsets each, shared by the cycle): a poll
    /// waits only on its own group's coordinator, so a broker that is down holds up only
    /// the groups it coordinates, as it would with OffsetFetch.
    fn group_partition_end(
        &self,
        group: &str,
        since: Instant,
    ) -> Result<Option<(i32, i64)>, KafkaError> {
        // The layout is described again once its leaders are [`LAYOUT_MAX_AGE`] old, and
        // the old one serves while that fails: the number of partitions never changes, and
        // leaders that moved since only group the reads less well (librdkafka sends each
        // partition's request to its leader now), so one DescribeTopics a minute serves
        // every cycle.
        // A layout in which the group's partition has no leader is described again in the
        // next cycle (once per cycle), not a minute later.
        let describe = |described_since: Instant| {
            self.offsets_layout
                .get(OFFSETS_TOPIC, described_since, |previous| {
                    match (self.describe_topic(OFFSETS_TOPIC), previous) {
                        (Err(err), Some(previous)) => {
                            debug!("{OFFSETS_TOPIC}'s leaders not described again ({err})");
                            Ok(previous.clone())
                        }
                        (described, _) => described,
                    }
                })
        };
        let mut layout = describe(since.checked_sub(LAYOUT_MAX_AGE).unwrap_or(since))?;
        let count = i32::try_from(layout.partitions.len()).unwrap_or(i32::MAX);
        let wanted = coordinator_partition(group, count);
        if layout.leader(wanted) == Some(None) {
            layout = describe(since)?;
        }
        let unknown = |cause: String| KafkaError::Watermarks {
            which: "latest",
            cause,
        };
        let leader = layout
            .leader(wanted)
            .ok_or_else(|| unknown(format!("{OFFSETS_TOPIC}[{wanted}] is not in its metadata")))?
            .ok_or_else(|| unknown(format!("{OFFSETS_TOPIC}[{wanted}] has no leader now")))?;
        // The high watermark is read before the last stable offset: with no transaction open
        // the second is then at least the first, and a commit between the two reads does not
        // look like one.
        let end_at = |isolation: Isolation| {
            let led: Vec<(&str, i32)> = layout
                .partitions
                .iter()
                .zip(&layout.leaders)
                .filter(|(_, of)| **of == Some(leader))
                .map(|(partition, _)| (OFFSETS_TOPIC, *partition))
                .collect();
            let key = match isolation {
                Isolation::ReadUncommitted => format!("{OFFSETS_TOPIC}@{leader}"),
                Isolation::ReadCommitted => format!("{OFFSETS_TOPIC}@{leader} read_committed"),
            };
            let read = self.offsets_ends.get(&key, since, |_| {
                let mut ends = self.list_ends(&led, End::Latest, isolation)?;
                Ok(ends.remove(OFFSETS_TOPIC).unwrap_or_default())
            })?;
            let failed = match read.get(&wanted) {
                Some(Ok(end)) => return Ok(*end),
                Some(Err(cause)) => unknown(cause.clone()),
                None => unknown(format!(
                    "{OFFSETS_TOPIC}[{wanted}]: its leader (node {leader}) did not answer"
                )),
            };
            // The leader moved, or the leader epoch librdkafka sends is behind the broker's
            // (FENCED_LEADER_EPOCH, after a re-election): librdkafka does not refresh the
            // metadata of a topic no consumer of it reads, so it is asked for here.
            self.ask_any_broker(
                Some(OFFSETS_TOPIC),
                &format!("reading its end failed ({failed})"),
            );
            Err(failed)
        };
        let high = end_at(Isolation::ReadUncommitted)?;
        let last_stable = end_at(Isolation::ReadCommitted)?;
        Ok((high <= last_stable).then_some((wanted, last_stable)))
    }

    /// The cluster's reader, started at the topic's last stable offsets if it is not
    /// running; why not when it is not.
    fn commit_reader(&self, since: Instant) -> Result<Arc<CommitReader>, Unstarted> {
        if let Some(known) = self.stream_now() {
            return known;
        }
        // From each partition's last stable offset (an earlier one where an earlier read
        // stands in: reading more is harmless). The read is shared by the cycle, failure
        // included, so the polls racing here cost one request.
        let read = self.offsets_topic_read(since, Isolation::ReadCommitted);
        // One poll starts the reader (local work only: no Kafka call under this lock); the
        // polls that find it starting wait for that and take its reader. Without this, the
        // first polls of watches started together (KEDA connecting with many ScaledObjects)
        // each started a reader, a librdkafka consumer and a thread, and all but one were
        // shut down again: 13 for 16 watches in
        // `commits::watches_polling_for_the_first_time_together_start_one_commit_reader`.
        let _starting = self.reader_start.lock();
        if let Some(known) = self.stream_now() {
            return known;
        }
        let started = read.map_err(|err| err.to_string()).and_then(|read| {
            let starts: Vec<(i32, i64)> = read
                .partitions
                .iter()
                .map(|partition| (partition.partition, partition.high_watermark))
                .collect();
            let stats = (
                self.stats_interval,
                Arc::clone(&self.consumer.context().readers),
            );
            CommitReader::start(&self.reader, self.timeout, &starts, stats, self.reader_idle)
        });
        let mut stream = self.stream.lock();
        match started {
            Ok(reader) => {
                let reader = Arc::new(reader);
                *stream = StreamState::Running(Arc::clone(&reader));
                Ok(reader)
            }
            Err(why) if !refused(&why) => {
                debug!("the commit reader could not start now: {why}");
                Err(Unstarted::Failed)
            }
            Err(why) => {
                if !matches!(&*stream, StreamState::Refused { .. }) {
                    warn!(
                        "the commit stream ({OFFSETS_TOPIC}) cannot be read: {why}; committed \
                         offsets {}",
                        self.fallback_words()
                    );
                }
                *stream = StreamState::Refused {
                    since: Instant::now(),
                    why: why.clone(),
                };
                Err(Unstarted::Refused(why))
            }
        }
    }

    /// The running reader, or why the stream is refused while it stays so; `None` when a
    /// reader is to be started.
    fn stream_now(&self) -> Option<Result<Arc<CommitReader>, Unstarted>> {
        let mut stream = self.stream.lock();
        if matches!(&*stream, StreamState::Running(reader) if reader.idled_out()) {
            let StreamState::Running(reader) =
                std::mem::replace(&mut *stream, StreamState::NotStarted)
            else {
                unreachable!("matched just above");
            };
            drop(stream);
            // Its thread has ended: this joins it and keeps its request counts.
            let _ = reader.shutdown();
            return None;
        }
        match &*stream {
            StreamState::Running(reader) => Some(Ok(Arc::clone(reader))),
            StreamState::Refused {
                since: refused,
                why,
            } => (refused.elapsed() < RETRY_STREAM_AFTER)
                .then(|| Err(Unstarted::Refused(why.clone()))),
            StreamState::NotStarted => None,
        }
    }

    /// Stops `reader` for good (it cannot read) and records why.
    fn refuse(&self, reader: &Arc<CommitReader>, why: String) -> Streamed {
        let mut stream = self.stream.lock();
        let ours =
            matches!(&*stream, StreamState::Running(running) if Arc::ptr_eq(running, reader));
        if ours {
            *stream = StreamState::Refused {
                since: Instant::now(),
                why: why.clone(),
            };
        }
        drop(stream);
        if ours {
            warn!(
                "the commit stream ({OFFSETS_TOPIC}) cannot be read: {why}; committed offsets \
                 {}",
                self.fallback_words()
            );
            // Not under the lock: stopping the reader waits for its thread.
            let _ = reader.shutdown();
        }
        Streamed::Unusable(why)
    }

    fn fallback_words(&self) -> String {
        match self.commit_source {
            CommitSource::Stream => {
                "are unknown (SCALER_COMMIT_SOURCE=stream): the polls fail".to_owned()
            }
            CommitSource::Auto | CommitSource::Fetch => format!(
                "come from OffsetFetch per watch; the stream is tried again in {}",
                humantime::format_duration(RETRY_STREAM_AFTER)
            ),
        }
    }

    fn note_behind(&self, records: i64) {
        if !self.stream_behind.swap(true, Ordering::Relaxed) {
            warn!(
                "commit reader still {records} records behind after {}: committed offsets \
                 come from OffsetFetch until it catches up",
                humantime::format_duration(CATCH_UP_WAIT)
            );
        }
    }

    /// `__consumer_offsets` with every partition's end at `isolation` (the last stable
    /// offset, or the high watermark), read at or after `since` (once per cycle, shared by
    /// every watch of the cluster).
    fn offsets_topic_read(
        &self,
        since: Instant,
        isolation: Isolation,
    ) -> Result<Arc<TopicRead>, KafkaError> {
        self.topic_read_alone(OFFSETS_TOPIC, isolation, since)
    }
}
