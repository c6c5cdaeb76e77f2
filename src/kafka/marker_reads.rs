//! The marker probe's record reads: one thread per cluster (`marker-reads`), started with
//! the first read asked, reading with one long-lived consumer per isolation level.
//!
//! What a read answers depends only on where it starts, not on the group that asks: the
//! first record at or after an offset of a partition, at an isolation level. So a read is
//! asked by [`Position`] (the topic's id included: a topic deleted and created again under
//! its name is another log), every group committed at that offset shares it, and asks that
//! come in while a read runs wait for the next batch, together. Watchers never wait for a
//! read: a poll asks, the reads thread reads, and a later poll of the same watch finds the
//! answer ([`MarkerReads::found`]).
//!
//! A batch is read in rounds. One round assigns the consumer one position per partition
//! number (librdkafka reports the end of a partition by its number alone) and polls until
//! each gave a record or its end, or the request timeout passed. Reassigning starts a new
//! fetch version in librdkafka, which drops whatever the previous assignment had fetched,
//! so a round sees only its own positions' records and ends; a record before the offset
//! asked is ignored all the same.
//!
//! At 10,000 watches of 16 partitions each committed somewhere else, a batch is at most
//! 160,000 positions in 10,000 rounds of 16 (each about one Fetch per leader broker); groups
//! at the same offsets share their reads, so the usual batch is far smaller.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::{Condvar, Mutex};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::admin::SLICE;
use crate::lag::Isolation;

/// Where a read starts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The topic's id: a topic created again under the same name is another log.
    pub topic_id: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub isolation: Isolation,
    /// The offset the read starts at (a group's committed offset).
    pub from: i64,
}

/// What a read from a [`Position`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The first record a consumer at the isolation level gets from there is at this offset.
    Record(i64),
    /// No record from there up to at least this end (an end the asking poll saw; the read
    /// reached the partition's end, which was no earlier).
    NoneBefore(i64),
}

impl Found {
    /// Whether this answers for lag up to `end`: a record answers for every end, no record
    /// only up to the end the read covered.
    fn covers(self, end: i64) -> bool {
        match self {
            Found::Record(_) => true,
            Found::NoneBefore(covered) => end <= covered,
        }
    }
}

/// Answers kept at most (about 100 bytes each); beyond, those unused for
/// [`FORGET_UNUSED`] are forgotten, and all of them if more than half are left.
const MAX_FOUND: usize = 400_000;

/// An answer no poll used for this long is forgotten once there are too many.
const FORGET_UNUSED: Duration = Duration::from_secs(600);

/// After a batch in which a read failed, the next waits this long: a cluster that cannot be
/// read costs one try a second, not a busy loop.
const RETRY_SPACING: Duration = Duration::from_secs(1);

/// How long a fetch at a partition's end waits for new records: a read needs the end
/// reported, not more records (librdkafka's default, 500 ms, would cost each round that).
const FETCH_WAIT_MS: &str = "10";

#[derive(Default)]
struct State {
    /// Reads asked, with the largest end an asking poll saw.
    pending: HashMap<Position, i64>,
    /// The reads of the batch being read, with their ends: asked again only past them.
    in_flight: HashMap<Position, i64>,
    /// Answers, with when a poll last used one.
    found: HashMap<Position, (Found, Instant)>,
    /// The reads thread, once started.
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

/// The reads of one cluster's marker probe.
pub struct MarkerReads {
    shared: Arc<Shared>,
    /// A record reader's settings (see [`super::records::reader_config`]).
    config: ClientConfig,
    timeout: Duration,
}

impl MarkerReads {
    /// Reads made with consumers from `config`, each round given `timeout`.
    pub fn new(config: ClientConfig, timeout: Duration) -> MarkerReads {
        MarkerReads {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            config,
            timeout,
        }
    }

    /// For each `(position, end)` of `asked`, what a read from there found, where it
    /// answers for lag up to `end`; `None` where no read did yet, and then one is asked
    /// (the reads thread starts with the first).
    pub fn found(&self, asked: &[(Position, i64)], now: Instant) -> Vec<Option<Found>> {
        if asked.is_empty() {
            return Vec::new();
        }
        let mut state = self.shared.state.lock();
        let mut wanted = false;
        let answers = asked
            .iter()
            .map(|(position, end)| {
                if let Some((found, used)) = state.found.get_mut(position) {
                    if found.covers(*end) {
                        *used = now;
                        return Some(*found);
                    }
                }
                if state
                    .in_flight
                    .get(position)
                    .is_some_and(|reading_to| reading_to >= end)
                {
                    return None;
                }
                let most = state.pending.entry(position.clone()).or_insert(*end);
                *most = (*most).max(*end);
                wanted = true;
                None
            })
            .collect();
        if wanted {
            if state.thread.is_none() && !self.shared.stop.load(Ordering::Acquire) {
                state.thread = self.start();
            }
            self.shared.wake.notify_one();
        }
        answers
    }

    /// Starts the reads thread; `None` (logged) if the system refuses one: the asks stay,
    /// and the next ask tries again.
    fn start(&self) -> Option<JoinHandle<()>> {
        let shared = Arc::clone(&self.shared);
        let config = self.config.clone();
        let timeout = self.timeout;
        thread::Builder::new()
            .name("marker-reads".to_owned())
            .spawn(move || read_loop(&shared, &config, timeout))
            .map_err(|err| warn!("cannot start the marker-reads thread: {err}"))
            .ok()
    }

    /// Stops and joins the reads thread. Idempotent.
    pub fn shutdown(&self) -> thread::Result<()> {
        self.shared.stop.store(true, Ordering::Release);
        let thread = {
            let mut state = self.shared.state.lock();
            self.shared.wake.notify_all();
            state.thread.take()
        };
        match thread {
            Some(handle) => handle.join(),
            None => Ok(()),
        }
    }

    /// How many answers are kept (for tests).
    #[cfg(test)]
    fn answers(&self) -> usize {
        self.shared.state.lock().found.len()
    }
}

impl Drop for MarkerReads {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The reads thread: takes every read asked, reads them, stores the answers; until stopped.
fn read_loop(shared: &Shared, config: &ClientConfig, timeout: Duration) {
    let mut consumers: BTreeMap<Isolation, BaseConsumer> = BTreeMap::new();
    loop {
        let batch: Vec<(Position, i64)> = {
            let mut state = shared.state.lock();
            while state.pending.is_empty() && !shared.stop.load(Ordering::Acquire) {
                shared.wake.wait_for(&mut state, Duration::from_secs(1));
            }
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            let batch: Vec<(Position, i64)> = state.pending.drain().collect();
            state.in_flight = batch.iter().cloned().collect();
            batch
        };
        let started = Instant::now();
        let asked = batch.len();
        let mut failed = false;
        let mut by_isolation: BTreeMap<Isolation, Vec<(Position, i64)>> = BTreeMap::new();
        for (position, end) in batch {
            by_isolation
                .entry(position.isolation)
                .or_default()
                .push((position, end));
        }
        let mut answered = 0;
        for (isolation, positions) in by_isolation {
            let consumer = match consumers.entry(isolation) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    match config
                        .clone()
                        .set("client.id", "lagscaler-markers")
                        .set("isolation.level", isolation.to_string())
                        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
                        .create()
                    {
                        Ok(consumer) => entry.insert(consumer),
                        Err(err) => {
                            debug!("marker reads: cannot make a {isolation} consumer: {err}");
                            failed = true;
                            continue;
                        }
                    }
                }
            };
            for round in rounds(positions) {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                let deadline = Instant::now() + timeout;
                let found = match read_round(consumer, &round, deadline, &shared.stop) {
                    Ok(found) => found,
                    Err(cause) => {
                        debug!("marker reads: {cause}");
                        failed = true;
                        continue;
                    }
                };
                if found.len() < round.len() {
                    failed = true;
                }
                answered += found.len();
                store(shared, found);
            }
        }
        shared.state.lock().in_flight.clear();
        debug!(
            "marker reads: {answered} of {asked} positions read in {:?}",
            started.elapsed()
        );
        if failed {
            // Reads left unanswered are asked again by the next polls that need them.
            let until = Instant::now() + RETRY_SPACING;
            let mut state = shared.state.lock();
            while !shared.stop.load(Ordering::Acquire) && Instant::now() < until {
                shared.wake.wait_until(&mut state, until);
            }
        }
    }
    debug!("marker-reads thread stopped");
}

/// Stores what a round found, with the time as its last use; forgets answers beyond
/// [`MAX_FOUND`].
fn store(shared: &Shared, found: Vec<(Position, Found)>) {
    let now = Instant::now();
    let mut state = shared.state.lock();
    if state.found.len() > MAX_FOUND {
        state
            .found
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < FORGET_UNUSED);
        if state.found.len() > MAX_FOUND / 2 {
            state.found.clear();
        }
    }
    for (position, answer) in found {
        state.found.insert(position, (answer, now));
    }
}

/// Splits positions into rounds with at most one position per partition number each.
fn rounds(mut positions: Vec<(Position, i64)>) -> Vec<Vec<(Position, i64)>> {
    positions.sort_by(|a, b| (a.0.partition, &a.0).cmp(&(b.0.partition, &b.0)));
    let mut rounds: Vec<Vec<(Position, i64)>> = Vec::new();
    let mut index = 0;
    let mut previous = None;
    for position in positions {
        if previous == Some(position.0.partition) {
            index += 1;
        } else {
            index = 0;
            previous = Some(position.0.partition);
        }
        if rounds.len() <= index {
            rounds.push(Vec::new());
        }
        rounds[index].push(position);
    }
    rounds
}

/// Reads one round: its positions' partition numbers are distinct. What each position
/// found, for those settled before `deadline`.
fn read_round(
    consumer: &BaseConsumer,
    round: &[(Position, i64)],
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Vec<(Position, Found)>, String> {
    let mut assignment = TopicPartitionList::new();
    for (position, _) in round {
        assignment
            .add_partition_offset(
                &position.topic,
                position.partition,
                Offset::Offset(position.from),
            )
            .map_err(|err| err.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| format!("assigning {} partitions: {err}", round.len()))?;

    let mut pending: HashMap<i32, &(Position, i64)> = round
        .iter()
        .map(|asked| (asked.0.partition, asked))
        .collect();
    let mut found = Vec::with_capacity(round.len());
    while !pending.is_empty() && Instant::now() < deadline {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let slice = SLICE.min(deadline.saturating_duration_since(Instant::now()));
        match consumer.poll(slice) {
            Some(Ok(record)) => {
                let Some((position, _)) = pending.get(&record.partition()).copied() else {
                    continue;
                };
                if *position.topic != *record.topic() || record.offset() < position.from {
                    continue;
                }
                found.push((position.clone(), Found::Record(record.offset())));
                pending.remove(&record.partition());
            }
            Some(Err(RdKafkaError::PartitionEOF(partition))) => {
                if let Some((position, end)) = pending.remove(&partition) {
                    found.push((position.clone(), Found::NoneBefore(*end)));
                }
            }
            Some(Err(err)) => debug!("marker reads: {err}"),
            None => {}
        }
    }
    // Nothing fetched for this round is kept for the next (which reassigns anyway).
    if let Err(err) = consumer.unassign() {
        debug!("marker reads: unassign: {err}");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(topic: &str, partition: i32, from: i64) -> Position {
        Position {
            topic_id: format!("{topic}-id").into(),
            topic: topic.into(),
            partition,
            isolation: Isolation::ReadUncommitted,
            from,
        }
    }

    #[test]
    fn rounds_hold_each_partition_number_once() {
        let positions = vec![
            (position("a", 0, 5), 10),
            (position("b", 0, 5), 10),
            (position("a", 0, 7), 10),
            (position("a", 1, 5), 10),
            (position("c", 2, 1), 10),
        ];
        let rounds = rounds(positions);
        assert_eq!(rounds.len(), 3);
        for round in &rounds {
            let mut numbers: Vec<i32> = round.iter().map(|(p, _)| p.partition).collect();
            numbers.sort_unstable();
            numbers.dedup();
            assert_eq!(numbers.len(), round.len(), "{round:?}");
        }
        assert_eq!(rounds.iter().map(Vec::len).sum::<usize>(), 5);
    }

    #[test]
    fn an_answer_without_a_record_covers_only_the_end_it_read_to() {
        assert!(Found::NoneBefore(10).covers(10));
        assert!(Found::NoneBefore(10).covers(9));
        assert!(!Found::NoneBefore(10).covers(11));
        assert!(Found::Record(12).covers(1_000));
    }

    #[test]
    fn an_ask_is_answered_once_stored_and_asked_again_past_its_end() {
        let reads = MarkerReads::new(ClientConfig::new(), Duration::from_secs(1));
        // No thread is started while stopped: the ask is only recorded.
        reads.shared.stop.store(true, Ordering::Release);
        let now = Instant::now();
        let at = position("t", 0, 9);
        assert_eq!(reads.found(&[(at.clone(), 10)], now), vec![None]);
        assert_eq!(reads.shared.state.lock().pending.get(&at), Some(&10));
        store(&reads.shared, vec![(at.clone(), Found::NoneBefore(10))]);
        assert_eq!(
            reads.found(&[(at.clone(), 10)], now),
            vec![Some(Found::NoneBefore(10))]
        );
        // The end moved past what the read covered: asked again, up to the new end.
        assert_eq!(reads.found(&[(at.clone(), 12)], now), vec![None]);
        assert_eq!(reads.shared.state.lock().pending.get(&at), Some(&12));
        // Asked while a read of it up to that end runs: not asked twice.
        reads.shared.state.lock().pending.clear();
        reads.shared.state.lock().in_flight.insert(at.clone(), 12);
        assert_eq!(reads.found(&[(at.clone(), 12)], now), vec![None]);
        assert!(reads.shared.state.lock().pending.is_empty());
        assert_eq!(reads.found(&[(at.clone(), 13)], now), vec![None]);
        assert_eq!(reads.shared.state.lock().pending.get(&at), Some(&13));
        // Another incarnation of the topic is another position.
        let mut again = at.clone();
        again.topic_id = "t-new-id".into();
        assert_eq!(reads.found(&[(again, 10)], now), vec![None]);
        assert_eq!(reads.answers(), 1);
    }
}
