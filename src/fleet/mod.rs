//! Fleet mode: several replicas share the polling and the history of their watches through
//! one Redis (`SCALER_FLEET_REDIS_URL`).
//!
//! - Membership: each replica renews a lease in a sorted set every TTL/10 (thread `fleet`),
//!   by Redis's clock. A replica that could not renew for the TTL is *alone*: it polls
//!   every watch it holds itself, as a single replica does, until it renews again.
//! - Ownership: rendezvous hashing of the watch's cluster over the live members
//!   ([`assign`]), computed by each replica; no lock per watch. Every watch of a cluster has
//!   one owner, so the fleet makes a cluster's shared reads once, as a single replica does.
//! - Samples: the owner of a watch polls it once per tick for the whole fleet and appends
//!   the sample to the watch's stream with the tick as entry id ([`scripts::WRITE`]): the
//!   stream refuses a second writer of a tick and a late writer of an earlier one, and the
//!   script a tick later than Redis's now. Ticks and sample times are Redis's clock as each
//!   renewal reads it ([`clock`]), so a host whose clock is off takes no other's ticks. Accepted
//!   samples also go to the feed, a stream every replica reads (thread `fleet-feed`) and
//!   passes to its watcher of that watch, which records it in its window as the owner did.
//!   A watcher that starts reads its watch's stream back first ([`Fleet::history`]), so a
//!   restarted replica answers with rates at once.
//! - Watches: replicas record which watches they are asked about (a sorted set scored by
//!   the time asked); the owner of a watch any replica was asked about within the watch TTL
//!   holds it too, so a watch lives while any replica is asked about it.
//!
//! Every Redis call runs on one of the fleet's three threads (`fleet`, `fleet-io`,
//! `fleet-feed`), each with its own connection and 2 s timeouts; watchers hand their writes
//! and reads to `fleet-io` and wait at most 2 s for the reply. No lock is held across Redis
//! IO, and no gRPC handler waits on Redis.

pub mod assign;
pub mod clock;
mod membership;
pub mod sample;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, info, warn};
use parking_lot::{Mutex, RwLock};

use crate::config::{ClusterSet, FleetConfig, FleetRedis};
use crate::trigger::WatchKey;
use clock::FleetClock;
use membership::Membership;
pub use sample::{Clock, Outcome, Sample};

/// Every Redis command, and connecting, gives up after this long.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the feed keeps an entry, at least: it only carries samples to replicas that are
/// up (one that was cut off catches up from the watches' streams), so three poll intervals.
const FEED_KEEP_MIN: Duration = Duration::from_secs(5);

/// A feed read blocks at most this long, so its thread sees a stop in time.
const FEED_BLOCK: Duration = Duration::from_secs(1);

/// Most samples a watcher's inbox holds; one that falls behind catches up from its stream.
const INBOX: usize = 64;

/// What a fleet replica needs to know beyond its configuration.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// This replica's name in the fleet.
    pub member: String,
    /// A member that has not renewed for this long is out.
    pub member_ttl: Duration,
    /// A watch nobody asked about for this long expires fleet-wide.
    pub watch_ttl: Duration,
    /// Time between two ticks; the fleet's ticks are the multiples of it since the epoch.
    pub poll_interval: Duration,
    /// How much history each watch's stream keeps (the rate window, and then some).
    pub keep: Duration,
}

/// What the fleet hands a watcher.
#[derive(Clone, Debug)]
pub enum FleetEvent {
    /// A sample another replica (or this one) wrote for the watch's tick `slot_ms`.
    Sample {
        /// The tick, ms since the epoch.
        slot_ms: u64,
        /// The sample's text ([`sample::encode`]).
        text: Arc<str>,
    },
    /// The members changed, or the feed was interrupted: the watcher checks whether it owns
    /// its watch now, and catches up from the watch's stream.
    Wake,
}

/// What became of a sample handed to [`Fleet::publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// It is the tick's sample.
    Accepted,
    /// Another writer wrote this tick or a later one first.
    Refused,
    /// The tick is later than Redis's now (and its allowance): this replica's clock runs
    /// ahead of the fleet's, and the sample is not shared.
    Ahead,
    /// This replica's lease has lapsed: it must not write.
    NotMember,
    /// Redis could not be reached.
    Unavailable(String),
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct FleetStats {
    /// Samples this replica wrote.
    pub written: AtomicU64,
    /// Samples refused because another writer had the tick.
    pub refused: AtomicU64,
    /// Samples refused because their tick was later than Redis's now.
    pub ahead: AtomicU64,
    /// Samples that could not be written (Redis down, lease lapsed).
    pub unwritten: AtomicU64,
    /// Samples received from the feed.
    pub received: AtomicU64,
    /// Lease renewals that failed.
    pub renew_failures: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Live members, sorted.
    members: Vec<String>,
    /// When the latest successful renewal started.
    renewed_at: Option<Instant>,
    /// Watches some replica asked about within the watch TTL: key text → key, whether a
    /// trigger reads its time lag.
    live: HashMap<Arc<str>, (WatchKey, bool)>,
}

/// A watch this replica was asked about, to tell the fleet.
struct Asked {
    time_lag: bool,
    /// Asked about since the last time the fleet was told.
    fresh: bool,
    /// When the fleet was last told (`None`: never, or Redis lost it).
    told_at: Option<Instant>,
    asked_at: Instant,
}

/// The replica's handle on its fleet.
pub struct Fleet {
    settings: FleetSettings,
    redis: FleetRedis,
    prefix: String,
    /// This process's clock mapped to Redis's: the fleet's ticks and sample times.
    time: FleetClock,
    clusters: ClusterSet,
    state: RwLock<State>,
    subscribers: Mutex<HashMap<Arc<str>, Sender<FleetEvent>>>,
    asked: Mutex<HashMap<Arc<str>, Asked>>,
    io: Sender<IoRequest>,
    io_rx: Receiver<IoRequest>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// For `/metrics`.
    pub stats: FleetStats,
}

enum IoRequest {
    Write {
        key: Arc<str>,
        slot_ms: u64,
        text: String,
        reply: Sender<Published>,
        deadline: Instant,
    },
    History {
        key: Arc<str>,
        after: Option<u64>,
        reply: Sender<Result<Vec<(u64, String)>, String>>,
        deadline: Instant,
    },
}

/// A watcher's subscription to its watch's samples; dropping it unsubscribes.
pub struct Subscription {
    fleet: Arc<Fleet>,
    key: Arc<str>,
    /// The samples and wake-ups for this watch.
    pub events: Receiver<FleetEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fleet.subscribers.lock().remove(&self.key);
    }
}

impl Fleet {
    /// Joins the fleet: renews the lease once (a failure is logged, and the replica starts
    /// alone) and starts the fleet's threads.
    pub fn start(
        config: &FleetConfig,
        settings: FleetSettings,
        clusters: ClusterSet,
    ) -> std::io::Result<Arc<Fleet>> {
        let time = FleetClock::new(Clock::now(), settings.poll_interval);
        let (io, io_rx) = bounded(16_384);
        let fleet = Arc::new(Fleet {
            prefix: format!("lagscaler:fleet:{}:", config.name),
            redis: config.redis.clone(),
            settings,
            time,
            clusters,
            state: RwLock::new(State::default()),
            subscribers: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
            io,
            io_rx,
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            stats: FleetStats::default(),
        });
        let mut membership = Membership::new(Arc::clone(&fleet));
        membership.round();
        // The schedule starts by Redis's clock where the first renewal could read it.
        fleet.origin();
        let mut threads = Vec::new();
        threads.push(
            thread::Builder::new()
                .name("fleet".to_owned())
                .spawn(move || membership.run())?,
        );
        let io_fleet = Arc::clone(&fleet);
        threads.push(
            thread::Builder::new()
                .name("fleet-io".to_owned())
                .spawn(move || io_fleet.run_io())?,
        );
        let feed_fleet = Arc::clone(&fleet);
        threads.push(
            thread::Builder::new()
                .name("fleet-feed".to_owned())
                .spawn(move || feed_fleet.run_feed())?,
        );
        *fleet.threads.lock() = threads;
        Ok(fleet)
    }

    /// This replica's name in the fleet.
    pub fn member(&self) -> &str {
        &self.settings.member
    }

    /// The mapping of this process's clock to Redis's wall clock the samples use.
    pub fn clock(&self) -> Clock {
        self.time.clock()
    }

    /// Where the fleet's shared schedule starts: ticks are the multiples of the poll
    /// interval since the Unix epoch by Redis's clock, the same on every replica.
    pub fn origin(&self) -> Instant {
        self.time.origin()
    }

    /// The slot of tick `tick`: its time by Redis's clock, ms since the epoch.
    pub fn slot_ms(&self, tick: Instant) -> u64 {
        self.time.slot_ms(tick)
    }

    /// The instant of slot `slot_ms`.
    pub fn slot_instant(&self, slot_ms: u64) -> Instant {
        self.time.slot_instant(slot_ms)
    }

    /// Whether this replica could not renew its lease for the member TTL: it then polls
    /// every watch it holds itself.
    pub fn is_alone(&self) -> bool {
        let state = self.state.read();
        self.alone(&state)
    }

    fn alone(&self, state: &State) -> bool {
        state
            .renewed_at
            .is_none_or(|at| at.elapsed() >= self.settings.member_ttl)
    }

    /// Whether this replica polls the watch `key` now: it owns its cluster, or it is alone.
    pub fn owns(&self, key: &WatchKey) -> bool {
        let state = self.state.read();
        self.alone(&state) || self.owner_in(&state, key)
    }

    fn owner_in(&self, state: &State, key: &WatchKey) -> bool {
        self.owns_shard(state, assign::shard(key.cluster.as_deref()))
    }

    fn owns_shard(&self, state: &State, shard: &str) -> bool {
        assign::owner(shard, state.members.iter().map(String::as_str)) == Some(self.member())
    }

    /// Every configured cluster (`default` first) with whether this replica polls its
    /// watches now: it owns the cluster, or it is alone.
    pub fn polled_clusters(&self) -> Vec<(String, bool)> {
        let state = self.state.read();
        let alone = self.alone(&state);
        self.clusters
            .names()
            .into_iter()
            .map(|name| {
                let polled = alone || self.owns_shard(&state, name);
                (name.to_owned(), polled)
            })
            .collect()
    }

    /// The live members, sorted (empty while alone).
    pub fn members(&self) -> Vec<String> {
        let state = self.state.read();
        if self.alone(&state) {
            return Vec::new();
        }
        state.members.clone()
    }

    /// Whether this replica must keep the watch `key` although nobody asked it about the
    /// watch: some replica was asked within the watch TTL and this one owns it.
    pub fn keeps(&self, key: &str) -> bool {
        let state = self.state.read();
        !self.alone(&state)
            && state
                .live
                .get(key)
                .is_some_and(|(watch, _)| self.owner_in(&state, watch))
    }

    /// The watches this replica owns that some replica was asked about, and which `held`
    /// says it does not hold yet; with each, whether a trigger reads its time lag.
    pub fn unheld(&self, held: impl Fn(&WatchKey) -> bool) -> Vec<(WatchKey, bool)> {
        let state = self.state.read();
        if self.alone(&state) {
            return Vec::new();
        }
        state
            .live
            .iter()
            .filter(|(_, (key, _))| self.owner_in(&state, key) && !held(key))
            .map(|(_, (key, time_lag))| (key.clone(), *time_lag))
            .collect()
    }

    /// Whether some replica's trigger on the watch `key` reads its time lag.
    pub fn time_lag_wanted(&self, key: &str) -> bool {
        self.state
            .read()
            .live
            .get(key)
            .is_some_and(|(_, time_lag)| *time_lag)
    }

    /// Records that a trigger asked this replica about the watch `key`; the fleet hears of
    /// it within a lease renewal when the watch is new to this replica, and at most every
    /// quarter watch TTL after.
    pub fn note_asked(&self, key: &Arc<str>, time_lag: bool) {
        let now = Instant::now();
        let mut asked = self.asked.lock();
        let entry = asked.entry(Arc::clone(key)).or_insert(Asked {
            time_lag,
            fresh: true,
            told_at: None,
            asked_at: now,
        });
        entry.fresh = true;
        entry.asked_at = now;
        if time_lag && !entry.time_lag {
            entry.time_lag = true;
            entry.told_at = None;
        }
    }

    /// Subscribes a watcher to the samples of `key`.
    pub fn subscribe(self: &Arc<Self>, key: Arc<str>) -> Subscription {
        let (sender, events) = bounded(INBOX);
        self.subscribers.lock().insert(Arc::clone(&key), sender);
        Subscription {
            fleet: Arc::clone(self),
            key,
            events,
        }
    }

    /// Writes a poll's sample for tick `slot_ms` of the watch `key`, fenced by the tick.
    /// Nothing is tried while this replica is alone: its lease has lapsed.
    pub fn publish(&self, key: &Arc<str>, slot_ms: u64, text: String) -> Published {
        if self.is_alone() {
            self.stats.unwritten.fetch_add(1, Ordering::Relaxed);
            return Published::NotMember;
        }
        self.ask(|reply, deadline| IoRequest::Write {
            key: Arc::clone(key),
            slot_ms,
            text,
            reply,
            deadline,
        })
        .unwrap_or_else(Published::Unavailable)
    }

    /// The samples of the watch `key` in its stream after tick `after` (all with `None`),
    /// oldest first.
    pub fn history(
        &self,
        key: &Arc<str>,
        after: Option<u64>,
    ) -> Result<Vec<(u64, String)>, String> {
        self.ask(|reply, deadline| IoRequest::History {
            key: Arc::clone(key),
            after,
            reply,
            deadline,
        })?
    }

    /// Hands the request `make` builds to thread `fleet-io` and waits for its reply, at most
    /// [`REDIS_TIMEOUT`] (the thread drops a request whose deadline passed).
    fn ask<T>(&self, make: impl FnOnce(Sender<T>, Instant) -> IoRequest) -> Result<T, String> {
        let (reply, answer) = bounded(1);
        let deadline = Instant::now() + REDIS_TIMEOUT;
        self.io
            .try_send(make(reply, deadline))
            .map_err(|_| "the fleet's Redis queue is full".to_owned())?;
        answer
            .recv_deadline(deadline + Duration::from_millis(100))
            .map_err(|_| "no answer from Redis in time".to_owned())
    }

    /// Stops the fleet's threads, joining them before `deadline`; `false` if one did not
    /// stop in time. The lease is left to expire (a replica restarting under the same name
    /// takes it up again).
    pub fn shutdown(&self, deadline: Instant) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *self.threads.lock());
        let mut joined = true;
        for thread in threads {
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                joined = false;
            }
        }
        joined
    }

    /// Whether every fleet thread is alive (until shutdown).
    pub fn threads_alive(&self) -> bool {
        self.threads
            .lock()
            .iter()
            .all(|thread| !thread.is_finished())
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn stream_key(&self, watch: &str) -> String {
        format!("{}w:{watch}", self.prefix)
    }

    /// A connection to the fleet's Redis (with Sentinel: the master the sentinels name now).
    fn connect(&self, read_timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let client = match &self.redis {
            FleetRedis::Direct(connection) => redis::Client::open(connection.clone())?,
            FleetRedis::Sentinel {
                sentinels,
                master,
                settings,
            } => {
                let addresses: Vec<redis::ConnectionInfo> = sentinels
                    .iter()
                    .map(|(host, port)| {
                        redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
                            host.clone(),
                            *port,
                        ))
                    })
                    .collect::<redis::RedisResult<_>>()?;
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(settings.clone());
                redis::sentinel::SentinelClient::build(
                    addresses,
                    master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )?
                .get_client()?
            }
        };
        let connection = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
        connection.set_read_timeout(Some(read_timeout))?;
        connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
        Ok(connection)
    }

    /// Sleeps `duration` in slices that notice a stop; `false` once stopping.
    fn pause(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            thread::sleep((until - now).min(Duration::from_millis(100)));
        }
        false
    }

    fn wake_all(&self) {
        for sender in self.subscribers.lock().values() {
            let _ = sender.try_send(FleetEvent::Wake);
        }
    }

    /// Thread `fleet-io`: the watchers' writes and reads, a batch per round trip.
    fn run_io(self: Arc<Self>) {
        let write = redis::Script::new(scripts::WRITE);
        let mut connection: Option<redis::Connection> = None;
        let mut failing = false;
        // After a failure, requests are answered at once with it for a second, so that a
        // Redis that hangs costs each watcher one wait, not one per poll.
        let mut failed: Option<(Instant, String)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let first = match self.io_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let now = Instant::now();
            let batch: Vec<IoRequest> = std::iter::once(first)
                .chain(self.io_rx.try_iter().take(255))
                .filter(|request| match request {
                    IoRequest::Write { deadline, .. } | IoRequest::History { deadline, .. } => {
                        *deadline > now
                    }
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let Some((until, cause)) = &failed {
                if now < *until {
                    for request in batch {
                        self.answer(request, Err(cause.clone()));
                    }
                    continue;
                }
            }
            let result = match connection.as_mut() {
                Some(connection) => Ok(connection),
                None => self
                    .connect(REDIS_TIMEOUT)
                    .map(|made| connection.insert(made)),
            }
            .and_then(|connection| self.run_batch(connection, &write, &batch));
            match result {
                Ok(replies) => {
                    failed = None;
                    if failing {
                        info!("fleet: writing samples to Redis works again");
                        failing = false;
                    }
                    for (request, reply) in batch.into_iter().zip(replies) {
                        self.answer(request, Ok(reply));
                    }
                }
                Err(err) => {
                    connection = None;
                    let cause = format!("fleet Redis: {err}");
                    if !failing {
                        warn!("{cause}; samples are not shared until it answers again");
                        failing = true;
                    }
                    failed = Some((Instant::now() + Duration::from_secs(1), cause.clone()));
                    for request in batch {
                        self.answer(request, Err(cause.clone()));
                    }
                }
            }
        }
        debug!("fleet-io stopped");
    }

    /// One pipeline for `batch`; loads the write script once if Redis lost it.
    fn run_batch(
        &self,
        connection: &mut redis::Connection,
        write: &redis::Script,
        batch: &[IoRequest],
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let pipeline = self.pipeline(write, batch);
        match pipeline.query::<Vec<redis::Value>>(connection) {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(scripts::WRITE)
                    .query::<String>(connection)?;
                pipeline.query(connection)
            }
            other => other,
        }
    }

    fn pipeline(&self, write: &redis::Script, batch: &[IoRequest]) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        let members = self.key("members");
        let feed = self.key("feed");
        let keep_ms = u64::try_from(self.settings.keep.as_millis()).unwrap_or(u64::MAX);
        let expire_ms = u64::try_from((self.settings.watch_ttl + self.settings.keep).as_millis())
            .unwrap_or(u64::MAX);
        let feed_keep_ms = u64::try_from(
            (3 * self.settings.poll_interval)
                .max(FEED_KEEP_MIN)
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        for request in batch {
            match request {
                IoRequest::Write {
                    key, slot_ms, text, ..
                } => {
                    pipeline
                        .cmd("EVALSHA")
                        .arg(write.get_hash())
                        .arg(3)
                        .arg(self.stream_key(key))
                        .arg(&feed)
                        .arg(&members)
                        .arg(self.member())
                        .arg(slot_ms)
                        .arg(text.as_str())
                        .arg(slot_ms.saturating_sub(keep_ms))
                        .arg(feed_keep_ms)
                        .arg(expire_ms)
                        .arg(&**key)
                        .arg(self.time.ahead_allowed_ms());
                }
                IoRequest::History { key, after, .. } => {
                    let start = after.map_or_else(|| "-".to_owned(), |slot| format!("({slot}-0"));
                    pipeline
                        .cmd("XRANGE")
                        .arg(self.stream_key(key))
                        .arg(start)
                        .arg("+");
                }
            }
        }
        pipeline
    }

    fn answer(&self, request: IoRequest, reply: Result<redis::Value, String>) {
        match request {
            IoRequest::Write { reply: to, .. } => {
                let published = match reply {
                    Err(cause) => Published::Unavailable(cause),
                    Ok(value) => match redis::from_redis_value::<String>(value).as_deref() {
                        Ok("ok") => Published::Accepted,
                        Ok("refused") => Published::Refused,
                        Ok("ahead") => Published::Ahead,
                        Ok("not-member") => Published::NotMember,
                        _ => Published::Unavailable("an unexpected answer from Redis".into()),
                    },
                };
                match &published {
                    Published::Accepted => &self.stats.written,
                    Published::Refused => &self.stats.refused,
                    Published::Ahead => &self.stats.ahead,
                    _ => &self.stats.unwritten,
                }
                .fetch_add(1, Ordering::Relaxed);
                let _ = to.send(published);
            }
            IoRequest::History { reply: to, .. } => {
                let _ = to.send(reply.and_then(|value| stream_entries(value, "s")));
            }
        }
    }

    /// Thread `fleet-feed`: every sample written by any replica, to this replica's
    /// watchers of it. After an interruption every watcher is woken to catch up from its
    /// watch's stream (the feed may have moved on, or Redis failed over).
    fn run_feed(self: Arc<Self>) {
        let feed = self.key("feed");
        let mut connection: Option<redis::Connection> = None;
        let mut last_id: Option<String> = None;
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            let connected = match connection.as_mut() {
                Some(connection) => Ok(connection),
                None => self
                    .connect(FEED_BLOCK + REDIS_TIMEOUT)
                    .and_then(|mut made| {
                        if last_id.is_none() {
                            let (seconds, micros): (u64, u64) =
                                redis::cmd("TIME").query(&mut made)?;
                            last_id = Some(format!("{}-0", seconds * 1000 + micros / 1000));
                        } else {
                            // Reconnected: what the feed carried meanwhile may be gone.
                            self.wake_all();
                        }
                        Ok(connection.insert(made))
                    }),
            };
            let read = connected.and_then(|connection| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1000)
                    .arg("BLOCK")
                    .arg(FEED_BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&feed)
                    .arg(last_id.as_deref().unwrap_or("$"))
                    .query::<redis::Value>(connection)
            });
            match read {
                Ok(value) => {
                    if failing {
                        info!("fleet: reading the feed works again");
                        failing = false;
                    }
                    for (id, fields) in feed_entries(value) {
                        self.deliver(&fields);
                        last_id = Some(id);
                    }
                }
                Err(err) => {
                    connection = None;
                    if !failing {
                        warn!("fleet Redis: reading the feed failed: {err}");
                        failing = true;
                    }
                    self.pause(Duration::from_secs(1));
                }
            }
        }
        debug!("fleet-feed stopped");
    }

    fn deliver(&self, fields: &HashMap<String, String>) {
        let (Some(watch), Some(slot), Some(text)) = (
            fields.get("w"),
            fields.get("slot").and_then(|slot| slot.parse::<u64>().ok()),
            fields.get("s"),
        ) else {
            return;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let subscribers = self.subscribers.lock();
        if let Some(sender) = subscribers.get(watch.as_str()) {
            let event = FleetEvent::Sample {
                slot_ms: slot,
                text: text.as_str().into(),
            };
            // A full inbox: the watcher catches up from the stream when it sees the gap.
            if let Err(TrySendError::Full(_)) = sender.try_send(event) {
                debug!("fleet: the inbox of {watch} is full; it catches up later");
            }
        }
    }
}

/// A stream entry: its id and fields.
type Entry = (String, HashMap<String, String>);

/// `(id, fields)` of each entry of an XREAD reply (one stream).
fn feed_entries(value: redis::Value) -> Vec<Entry> {
    let streams: Vec<(String, Vec<Entry>)> = match redis::from_redis_value(value) {
        Ok(streams) => streams,
        // Nil: nothing within the block time.
        Err(_) => return Vec::new(),
    };
    streams
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .collect()
}

/// `(slot, field)` of each entry of an XRANGE reply whose id is `<slot>-0`.
fn stream_entries(value: redis::Value, field: &str) -> Result<Vec<(u64, String)>, String> {
    let entries: Vec<Entry> = redis::from_redis_value(value)
        .map_err(|err| format!("a watch stream that is not one: {err}"))?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let slot = id.split_once('-')?.0.parse::<u64>().ok()?;
            Some((slot, fields.remove(field)?))
        })
        .collect())
}
