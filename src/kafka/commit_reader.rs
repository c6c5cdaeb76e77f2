//! The commit stream: one reader per cluster of Kafka's internal topic `__consumer_offsets`,
//! where every group's commits are written as they happen, so that committed offsets cost
//! no request per watch (Burrow's method).
//!
//! The reader is a named thread (`commit-reader`) with a librdkafka consumer of its own: no
//! group it joins (librdkafka assigns partitions only to a consumer with a group id, so it has
//! one it never joins nor commits to), assigned every partition of the topic from its last
//! stable offset at the start, `read_committed` so that the commits of aborted transactions
//! are never seen. It keeps, for each group some watch reads (`track`), the latest offset
//! committed on each partition since it began tracking the group. Records are decoded by
//! [`crate::consumer_offsets`].
//!
//! A group's commits from before it was tracked come from one OffsetFetch (`bootstrap`).
//! Commits are never lost or rolled back by that: the group is tracked first, OffsetFetch
//! is asked next, and the commits it answers with are all below the topic's last stable
//! offsets read after it answered (the group coordinator answers from what is replicated),
//! which the reader reads up to before the two are merged. A commit seen since tracking is
//! newer than anything OffsetFetch answered for that partition; any other partition keeps
//! OffsetFetch's answer.
//!
//! On every later poll the reader must have read up to the topic's last stable offsets read
//! at or after the poll's scheduled time (one read per cycle, shared with every watch): then
//! its commits are at least as new as an OffsetFetch at that time would answer. When it is
//! not there within [`CATCH_UP_WAIT`], the poll asks OffsetFetch instead (the reader fell
//! behind). A record the reader cannot decode makes every group be bootstrapped again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::admin::CommittedOffset;
use super::ReaderRequests;
use crate::consumer_offsets::{decode, Record};

/// The topic the reader reads.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How long a poll waits for the reader to reach the topic's ends before asking OffsetFetch.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// A tracked group nobody asked about for this long is forgotten (its watch expired).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// How often the reader syncs its positions from librdkafka (which moves past transaction
/// markers without handing them out) and looks for groups to forget.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// The longest a fetch waits at the broker for new commits: an idle reader costs one fetch
/// per broker this often, and a commit is handed over as soon as it is stable.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(4);

/// Why the reader cannot answer for a poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// The reader is not at the topic's ends yet: `records` still to read.
    Behind {
        /// Records between the reader's positions and the ends it had to reach.
        records: i64,
    },
    /// The reader cannot read the topic, for this reason.
    Failed(String),
}

/// The reader of one cluster's `__consumer_offsets`.
pub struct CommitReader {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Where its request counts go (the cluster client's statistics).
    requests: Arc<ReaderRequests>,
}

/// The reader's librdkafka context: its statistics go to the cluster client's counts.
struct ReaderContext {
    requests: Arc<ReaderRequests>,
}

impl ClientContext for ReaderContext {
    fn stats(&self, statistics: Statistics) {
        self.requests.report(&statistics);
    }
}

impl ConsumerContext for ReaderContext {}

struct Shared {
    state: Mutex<State>,
    /// Signalled when positions move.
    moved: Condvar,
    stop: AtomicBool,
    /// Set when the thread stopped because no poll used the reader for its idle time.
    idled_out: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The next offset to read, by partition of the topic.
    positions: HashMap<i32, i64>,
    /// The groups some watch reads.
    groups: HashMap<String, Tracked>,
    /// Why the reader cannot read, while it cannot.
    failure: Option<String>,
    /// Records that could not be decoded.
    undecodable: u64,
    /// When a poll last asked the reader about a group.
    used_at: Option<Instant>,
}

impl State {
    /// `group`'s entry, if it is tracked, marked used now (as the reader is).
    fn used(&mut self, group: &str) -> Option<&mut Tracked> {
        let now = Instant::now();
        self.used_at = Some(now);
        let tracked = self.groups.get_mut(group)?;
        tracked.last_used = now;
        Some(tracked)
    }

    /// `group`'s entry, a new one (nothing seen, not bootstrapped) if it was not tracked.
    fn tracked(&mut self, group: &str) -> &mut Tracked {
        self.groups
            .entry(group.to_owned())
            .or_insert_with(|| Tracked {
                commits: BTreeMap::new(),
                bootstrapped: false,
                last_used: Instant::now(),
            })
    }
}

struct Tracked {
    /// By topic and partition, the offset committed since tracking began (`None`: deleted),
    /// and once bootstrapped every committed offset of the group.
    commits: BTreeMap<(Arc<str>, i32), Option<i64>>,
    /// Whether OffsetFetch's answer was merged in.
    bootstrapped: bool,
    last_used: Instant,
}

impl CommitReader {
    /// Starts the reader of the cluster whose client settings are `config`, at `starts`
    /// (every partition of the topic with its last stable offset now).
    pub fn start(
        config: &ClientConfig,
        request_timeout: Duration,
        starts: &[(i32, i64)],
        stats: (Option<Duration>, Arc<ReaderRequests>),
        idle: Duration,
    ) -> Result<CommitReader, String> {
        let (stats_interval, requests) = stats;
        let fetch_wait = MAX_FETCH_WAIT
            .min(request_timeout.saturating_sub(Duration::from_secs(1)))
            .max(Duration::from_millis(100));
        // librdkafka wants a socket timeout at least a second past the fetch wait.
        let socket_timeout = request_timeout.max(fetch_wait + Duration::from_secs(1));
        let context = ReaderContext {
            requests: Arc::clone(&requests),
        };
        let stats_ms = stats_interval.map_or(0, |every| every.as_millis());
        let consumer: BaseConsumer<ReaderContext> = config
            .clone()
            .set("client.id", "lagscaler-commits")
            .set("group.id", "lagscaler-commit-reader")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", stats_ms.to_string())
            .set("fetch.wait.max.ms", fetch_wait.as_millis().to_string())
            .set("socket.timeout.ms", socket_timeout.as_millis().to_string())
            .set("queued.max.messages.kbytes", "8192")
            .create_with_context(context)
            .map_err(|err| err.to_string())?;
        let mut assignment = TopicPartitionList::new();
        for &(partition, offset) in starts {
            assignment
                .add_partition_offset(OFFSETS_TOPIC, partition, Offset::Offset(offset))
                .map_err(|err| err.to_string())?;
        }
        consumer
            .assign(&assignment)
            .map_err(|err| err.to_string())?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                positions: starts.iter().copied().collect(),
                used_at: Some(Instant::now()),
                ..State::default()
            }),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
            idled_out: AtomicBool::new(false),
        });
        let thread = thread::Builder::new()
            .name("commit-reader".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || read(&consumer, &shared, idle)
            })
            .map_err(|err| err.to_string())?;
        info!(
            "commit reader started on {} partitions of {OFFSETS_TOPIC}",
            starts.len()
        );
        Ok(CommitReader {
            shared,
            thread: Mutex::new(Some(thread)),
            requests,
        })
    }

    /// Whether the reader stopped because no poll used it for its idle time: the cluster's
    /// client then starts a new one when a poll needs it.
    pub fn idled_out(&self) -> bool {
        self.shared.idled_out.load(Ordering::Acquire)
    }

    /// Why the reader cannot read, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().failure.clone()
    }

    /// `group`'s committed offsets, if the reader knows them all (the group is tracked and
    /// bootstrapped); marks the group as asked about.
    pub fn commits(&self, group: &str) -> Option<Vec<CommittedOffset>> {
        let mut state = self.shared.state.lock();
        let tracked = state.used(group)?;
        tracked.bootstrapped.then(|| listed(&tracked.commits))
    }

    /// Whether `group`'s commits are known ([`CommitReader::commits`] answers), without
    /// copying them.
    pub fn knows(&self, group: &str) -> bool {
        let mut state = self.shared.state.lock();
        state
            .used(group)
            .is_some_and(|tracked| tracked.bootstrapped)
    }

    /// Starts keeping `group`'s commits (from the reader's current positions on), if it
    /// was not kept; a group not bootstrapped yet starts afresh.
    pub fn track(&self, group: &str) {
        let mut state = self.shared.state.lock();
        state.used_at = Some(Instant::now());
        let tracked = state.tracked(group);
        tracked.last_used = Instant::now();
    }

    /// Merges OffsetFetch's answer `fetched` (asked after [`CommitReader::track`], and the
    /// reader since caught up to the ends read after it answered) into `group`'s commits:
    /// what the reader saw since tracking wins. Returns the group's committed offsets.
    pub fn bootstrap(&self, group: &str, fetched: &[CommittedOffset]) -> Vec<CommittedOffset> {
        let mut state = self.shared.state.lock();
        let tracked = state.tracked(group);
        for offset in fetched {
            tracked
                .commits
                .entry((Arc::clone(&offset.topic), offset.partition))
                .or_insert(Some(offset.offset));
        }
        tracked.commits.retain(|_, offset| offset.is_some());
        tracked.bootstrapped = true;
        tracked.last_used = Instant::now();
        listed(&tracked.commits)
    }

    /// Waits until the reader has read up to `ends` (each partition's last stable offset),
    /// at most until `deadline`.
    pub fn wait_until_read(
        &self,
        ends: &[(i32, i64)],
        deadline: Instant,
    ) -> Result<(), Unanswered> {
        let mut state = self.shared.state.lock();
        loop {
            if let Some(failure) = &state.failure {
                return Err(Unanswered::Failed(failure.clone()));
            }
            let behind: i64 = ends
                .iter()
                .map(|(partition, end)| {
                    let at = state.positions.get(partition).copied().unwrap_or(0);
                    end.saturating_sub(at).max(0)
                })
                .sum();
            if behind == 0 {
                return Ok(());
            }
            if self.shared.stop.load(Ordering::Acquire)
                || self
                    .shared
                    .moved
                    .wait_until(&mut state, deadline)
                    .timed_out()
            {
                return Err(Unanswered::Behind { records: behind });
            }
        }
    }

    /// Makes every wait for the reader give up now, and its thread stop soon (the daemon is
    /// stopping).
    pub fn stop_waits(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.moved.notify_all();
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(&self) -> thread::Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.moved.notify_all();
        let joined = match self.thread.lock().take() {
            Some(handle) => handle.join(),
            None => Ok(()),
        };
        self.requests.retire();
        joined
    }
}

/// The committed offsets in `commits`, sorted.
fn listed(commits: &BTreeMap<(Arc<str>, i32), Option<i64>>) -> Vec<CommittedOffset> {
    commits
        .iter()
        .filter_map(|((topic, partition), offset)| {
            offset.map(|offset| CommittedOffset {
                topic: Arc::clone(topic),
                partition: *partition,
                offset,
            })
        })
        .collect()
}

/// The reader thread: records in, commits of tracked groups kept, positions moved; it ends
/// when stopped, or when no poll asked it about a group for `idle`.
fn read(consumer: &BaseConsumer<ReaderContext>, shared: &Shared, idle: Duration) {
    let mut synced = Instant::now();
    let mut swept = Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        match consumer.poll(SYNC_EVERY) {
            Some(Ok(message)) => {
                let record = decode(message.key().unwrap_or_default(), message.payload());
                let mut state = shared.state.lock();
                let next = message.offset() + 1;
                let position = state.positions.entry(message.partition()).or_insert(next);
                *position = (*position).max(next);
                if state.failure.take().is_some() {
                    info!("commit reader: reading {OFFSETS_TOPIC} again");
                }
                match record {
                    Ok(Record::Commit {
                        group,
                        topic,
                        partition,
                        offset,
                    }) => {
                        if let Some(tracked) = state.groups.get_mut(&group) {
                            let offset = offset.filter(|offset| *offset >= 0);
                            tracked.commits.insert((topic.into(), partition), offset);
                        }
                    }
                    Ok(Record::Other) => {}
                    Err(err) => {
                        // A commit of a tracked group may be in it: every group is asked
                        // with OffsetFetch again.
                        state.undecodable += 1;
                        if state.undecodable == 1 {
                            warn!(
                                "commit reader: a record of {OFFSETS_TOPIC}[{}] at offset {} \
                                 cannot be read ({err}); groups are read with OffsetFetch \
                                 again",
                                message.partition(),
                                message.offset()
                            );
                        }
                        for tracked in state.groups.values_mut() {
                            tracked.bootstrapped = false;
                            tracked.commits.clear();
                        }
                    }
                }
                drop(state);
                shared.moved.notify_all();
            }
            Some(Err(err)) => note_error(shared, &err),
            None => {}
        }
        if synced.elapsed() < SYNC_EVERY {
            continue;
        }
        synced = Instant::now();
        sync_positions(consumer, shared);
        let unused = shared.state.lock().used_at.map(|at| at.elapsed());
        if unused.is_some_and(|unused| unused >= idle) {
            info!(
                "commit reader stopped: no poll used it for {} (a poll of the cluster starts \
                 it again)",
                humantime::format_duration(idle)
            );
            shared.idled_out.store(true, Ordering::Release);
            shared.stop.store(true, Ordering::Release);
            shared.moved.notify_all();
            return;
        }
        if swept.elapsed() >= FORGET_AFTER / 60 {
            swept = Instant::now();
            let mut state = shared.state.lock();
            let before = state.groups.len();
            state
                .groups
                .retain(|_, tracked| tracked.last_used.elapsed() < FORGET_AFTER);
            let forgotten = before - state.groups.len();
            if forgotten > 0 {
                debug!("commit reader: {forgotten} groups nobody asked about forgotten");
            }
        }
    }
    debug!("commit reader stopped");
}

/// librdkafka moves a partition's position past transaction markers without handing them
/// out: its positions are taken where they are further on.
fn sync_positions(consumer: &BaseConsumer<ReaderContext>, shared: &Shared) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut moved = false;
    let mut state = shared.state.lock();
    for element in positions.elements() {
        if let Offset::Offset(next) = element.offset() {
            let position = state.positions.entry(element.partition()).or_insert(next);
            if next > *position {
                *position = next;
                moved = true;
            }
        }
    }
    drop(state);
    if moved {
        shared.moved.notify_all();
    }
}

/// Whether a Kafka error's text is the topic's own authorization error
/// (TOPIC_AUTHORIZATION_FAILED, as librdkafka and rdkafka spell it). Any other refusal is
/// not the topic's: librdkafka looks the reader's group id up although the reader never
/// joins that group, and a broker that grants no ACL on it answers
/// GROUP_AUTHORIZATION_FAILED while the topic reads fine.
pub(super) fn topic_refused(why: &str) -> bool {
    [
        "Topic authorization failed",
        "TopicAuthorizationFailed",
        "TOPIC_AUTHORIZATION_FAILED",
    ]
    .iter()
    .any(|spelling| why.contains(spelling))
}

/// A consumer error: one that means the topic cannot be read (its authorization error) is
/// the reader's failure until a record comes; others are logged.
fn note_error(shared: &Shared, err: &RdKafkaError) {
    let text = err.to_string();
    let refused = err.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
        || topic_refused(&text);
    let mut state = shared.state.lock();
    if refused {
        if state.failure.is_none() {
            warn!("commit reader: {OFFSETS_TOPIC} cannot be read: {text}");
        }
        state.failure = Some(text);
        drop(state);
        shared.moved.notify_all();
    } else {
        debug!("commit reader: {text}");
    }
}
