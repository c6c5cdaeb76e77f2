//! One watcher: a named OS thread that polls Kafka for one watch and sends each result to
//! the registry's supervisor over a bounded channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::directory::Directory;
use crate::estimate::{Estimate, Eta, NotDraining, Window};
use crate::fleet::{Fleet, Outcome, Sample};
use crate::kafka::{current_tick, next_tick, Clients, KafkaError, Topics};
use crate::lag::PartitionOffsets;
use crate::store::Reading;
use crate::trigger::{Source, WatchKey};
use in_fleet::FleetLink;
use plugin_poll::PluginState;

mod in_fleet;
mod plugin_poll;

/// Committed offsets that went back or vanished since the previous sample are believed only
/// once they read so for this long: until then the poll fails (the last good sample is
/// served), so that a group coordinator that has just taken over and answers "no commits"
/// for a moment is never passed on as lag.
pub const COMMITS_GONE_BACK_BELIEVED_AFTER: Duration = Duration::from_secs(5);

/// A poll's result, addressed to the watch that made it.
pub struct PollResult {
    /// The watch's slot id.
    pub watch_id: u64,
    /// What the poll found.
    pub reading: Reading,
    /// When the poll was scheduled (a tick of the shared schedule, but for a first poll).
    pub scheduled: Instant,
    /// When it finished.
    pub finished: Instant,
    /// How long it took.
    pub took: Duration,
    /// Whether this replica polled Kafka for it (in fleet mode, most samples come from the
    /// watch's owner instead).
    pub polled: bool,
}

/// Never sent: a watcher stops when its stop channel disconnects.
pub enum Never {}

/// Where a watcher reads from.
pub struct Sources {
    /// Every cluster's client; a poll takes its cluster's current one.
    pub clients: Arc<Clients>,
    /// The dispatcher's plugin directory, for plugin watches.
    pub directory: Arc<Directory>,
    /// Set once a trigger on the watch needs its time lag (`Slot::want_time_lag`).
    pub time_lag_wanted: Arc<AtomicBool>,
    /// Fleet mode: the fleet, and the watch's key as the fleet names it.
    pub fleet: Option<(Arc<Fleet>, Arc<str>)>,
}

/// When a watcher polls and how long its samples count.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Time between the starts of two polls.
    pub interval: Duration,
    /// The start of the schedule every watcher shares.
    pub origin: Instant,
    /// Rates are estimated over this much of the latest samples.
    pub rate_window: Duration,
    /// How old a sample may be and still be served: failed polls spanning less than this
    /// are bridged by the idle window, and offsets carried from an earlier read (a leader
    /// that cannot be reached) stand in for at most this long.
    pub stale_after: Duration,
}

/// Starts the watcher thread for `key`. It polls at once, then on the ticks
/// `origin + k × interval` every watcher shares (so that they share the cycle's reads),
/// until the sender of `stop` is dropped or the supervisor's channel closes.
pub fn spawn(
    watch_id: u64,
    key: WatchKey,
    sources: Sources,
    schedule: Schedule,
    results: Sender<PollResult>,
    stop: Receiver<Never>,
) -> std::io::Result<JoinHandle<()>> {
    let fleet = sources
        .fleet
        .map(|(fleet, name)| FleetLink::new(fleet, name));
    let watcher = Watcher {
        fleet,
        last_slot: None,
        watch_id,
        key,
        clients: sources.clients,
        directory: sources.directory,
        time_lag_wanted: sources.time_lag_wanted,
        interval: schedule.interval,
        origin: schedule.origin,
        stale_after: schedule.stale_after,
        results,
        stop,
        window: Window::new(schedule.rate_window, schedule.stale_after),
        failing: false,
        members_failing: false,
        commits_gone_back_since: None,
        standing_in: false,
        records_failing: false,
        not_draining: None,
        plugin_state: None,
    };
    #[cfg(feature = "test-hooks")]
    if crate::hooks::take_spawn_failure(watcher.key.source.name()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "Resource temporarily unavailable (injected by a test)",
        ));
    }
    thread::Builder::new()
        .name(thread_name(&watcher.key))
        .spawn(move || watcher.run())
}

/// `watch-<group>` or `plugin-<name>`; Linux keeps the first 15 bytes of a thread's name.
fn thread_name(key: &WatchKey) -> String {
    match &key.source {
        Source::Group(group) => format!("watch-{group}"),
        Source::Plugin { name, .. } => format!("plugin-{name}"),
    }
}

/// The age at `wall_now` of a record with timestamp `ms` (milliseconds since the Unix
/// epoch); a timestamp in the future (a producer's clock ahead) is taken as now. `None` for a
/// timestamp before the epoch.
fn age(ms: i64, wall_now: SystemTime) -> Option<Duration> {
    let written = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).ok()?);
    Some(wall_now.duration_since(written).unwrap_or(Duration::ZERO))
}

/// Why a poll has no sample.
enum PollFailure {
    /// Kafka could not be read; earlier samples are served until stale.
    Failed(String),
    /// What the watch measures no longer exists (its topic was deleted): nothing earlier
    /// is served.
    Gone(String),
}

struct Watcher {
    /// Fleet mode: where samples are shared.
    fleet: Option<FleetLink>,
    /// Fleet mode: the tick (ms since the epoch) of the latest sample recorded.
    last_slot: Option<u64>,
    watch_id: u64,
    key: WatchKey,
    /// Every cluster's client; a poll takes its cluster's current one.
    clients: Arc<Clients>,
    directory: Arc<Directory>,
    /// Whether a trigger on the watch needs its time lag.
    time_lag_wanted: Arc<AtomicBool>,
    interval: Duration,
    /// The start of the shared poll schedule.
    origin: Instant,
    /// How long offsets carried from an earlier read may stand in ([`Schedule`]).
    stale_after: Duration,
    results: Sender<PollResult>,
    stop: Receiver<Never>,
    /// The estimator's memory of this watch's samples.
    window: Window,
    /// Whether the previous poll failed, so that a failure and a recovery are each logged once.
    failing: bool,
    /// Whether describing the group failed last time, likewise.
    members_failing: bool,
    /// Since when the group's committed offsets read as gone back or vanished (see
    /// [`COMMITS_GONE_BACK_BELIEVED_AFTER`]).
    commits_gone_back_since: Option<Instant>,
    /// Whether the previous sample had partitions whose offsets an earlier read stood in
    /// for, so that the start and end of that are each logged once.
    standing_in: bool,
    /// Whether reading record timestamps for the time lag failed last time, likewise.
    records_failing: bool,
    /// Why the lag was not draining at the previous sample, to log changes only.
    not_draining: Option<NotDraining>,
    /// A plugin watch's last state, to log changes only.
    plugin_state: Option<PluginState>,
}

impl Watcher {
    fn run(mut self) {
        debug!("watcher started: {}", self.key);
        match self.fleet.take() {
            None => self.run_alone(),
            Some(link) => self.run_in_fleet(link),
        }
        debug!("watcher stopped: {}", self.key);
    }

    /// Polls at once, then on every tick, until stopped.
    fn run_alone(&mut self) {
        // The time the poll is scheduled for: Kafka reads made since then are fresh enough.
        let mut scheduled = Instant::now();
        loop {
            let started = Instant::now();
            let time_lag = self.time_lag_wanted.load(Ordering::Relaxed);
            let sample = self.sample(scheduled, time_lag);
            let reading = self.record(sample);
            if !self.send(reading, scheduled, started, true) {
                break;
            }
            // The next shared tick; at once, on the tick just passed, if this poll overran.
            let now = Instant::now();
            scheduled = next_tick(self.origin, self.interval, scheduled);
            if scheduled < now {
                scheduled = current_tick(self.origin, self.interval, now);
            }
            match self.stop.recv_deadline(scheduled) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(never) => match never {},
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Passes a reading to the supervisor; `false` when the watcher must stop.
    fn send(&self, reading: Reading, scheduled: Instant, started: Instant, polled: bool) -> bool {
        let finished = Instant::now();
        let result = PollResult {
            watch_id: self.watch_id,
            reading,
            scheduled,
            finished,
            took: finished - started,
            polled,
        };
        // A full channel must not keep the watcher from seeing its stop signal.
        select! {
            send(self.results, result) -> sent => sent.is_ok(),
            recv(self.stop) -> _ => false,
        }
    }

    /// One poll of Kafka, checked, not yet recorded.
    fn sample(&mut self, scheduled: Instant, time_lag: bool) -> Sample {
        #[cfg(feature = "test-hooks")]
        if crate::hooks::take_watcher_panic(self.key.source.name()) {
            panic!("panic injected by a test into the watcher of {}", self.key);
        }
        let started = Instant::now();
        let outcome = match self
            .read(scheduled)
            .and_then(|read| self.check_commits(read, started))
            .and_then(|read| Ok((self.check_unread(&read.0, started)?, read)))
        {
            Ok((oldest_read, (mut offsets, members))) => {
                if time_lag {
                    self.read_waited(&mut offsets, started);
                }
                Outcome::Fresh {
                    offsets,
                    members,
                    oldest_read,
                }
            }
            Err(PollFailure::Failed(cause)) => Outcome::Failed(cause),
            Err(PollFailure::Gone(cause)) => Outcome::Gone(cause),
        };
        Sample {
            taken_at: started,
            outcome,
        }
    }

    /// Records a sample in the window: the reading the watch serves.
    fn record(&mut self, sample: Sample) -> Reading {
        let taken_at = sample.taken_at;
        match sample.outcome {
            Outcome::Fresh {
                offsets,
                members,
                oldest_read,
            } => {
                let mut estimate =
                    self.window
                        .record(taken_at, offsets, members, self.key.lag_rule);
                estimate.oldest_read = estimate.oldest_read.min(oldest_read);
                debug!(
                    "sample {}: lag {} over {} partitions, rates {:?}, members {:?}, {:?} after \
                     it was taken",
                    self.key,
                    estimate.total_lag,
                    estimate.partitions.len(),
                    estimate.rates,
                    estimate.members,
                    taken_at.elapsed()
                );
                if self.failing {
                    info!("watch recovered: {}", self.key);
                    self.failing = false;
                }
                self.log_drain_change(&estimate);
                Reading::Fresh(Arc::new(estimate))
            }
            Outcome::Failed(cause) => self.record_failure(taken_at, cause, false),
            Outcome::Gone(cause) => self.record_failure(taken_at, cause, true),
        }
    }

    /// Records a failed poll at `at` (`gone`: what the watch measures no longer exists).
    fn record_failure(&mut self, at: Instant, cause: String, gone: bool) -> Reading {
        self.window.record_failure(at);
        if cause.ends_with(crate::kafka::STOPPING) {
            // The daemon is stopping: not a failure anyone needs to hear of.
            debug!("poll {} given up: {cause}", self.key);
        } else if !self.failing {
            warn!("watch failing: {}: {cause}", self.key);
            self.failing = true;
        } else {
            debug!("poll {} failed again: {cause}", self.key);
        }
        if gone {
            Reading::Gone(cause.into())
        } else {
            Reading::Failed(cause.into())
        }
    }

    /// Passes `read` on unless committed offsets went back or vanished since the previous
    /// sample and have not read so for [`COMMITS_GONE_BACK_BELIEVED_AFTER`] yet.
    fn check_commits(
        &mut self,
        read: (Vec<PartitionOffsets>, Option<usize>),
        now: Instant,
    ) -> Result<(Vec<PartitionOffsets>, Option<usize>), PollFailure> {
        let gone_back = self.window.commits_gone_back(&read.0);
        if gone_back == 0 {
            self.commits_gone_back_since = None;
            return Ok(read);
        }
        let since = *self.commits_gone_back_since.get_or_insert(now);
        if now.duration_since(since) >= COMMITS_GONE_BACK_BELIEVED_AFTER {
            warn!(
                "{}: the committed offsets of {gone_back} partitions went back or vanished {} \
                 ago and still read so: taken as reset or deleted",
                self.key,
                humantime::format_duration(Duration::from_secs(
                    now.duration_since(since).as_secs()
                ))
            );
            self.commits_gone_back_since = None;
            return Ok(read);
        }
        Err(PollFailure::Failed(format!(
            "the committed offsets of {gone_back} partitions went back or vanished since the \
             previous poll (a group coordinator that has just taken over can answer so for a \
             moment); believed if they still read so after {}",
            humantime::format_duration(COMMITS_GONE_BACK_BELIEVED_AFTER)
        )))
    }

    /// When the oldest offsets of `offsets` were read: `now`, or earlier when the poll could
    /// not reach some partitions' leaders and an earlier read's offsets stand in for theirs
    /// (see `KafkaClient::snapshot`). That is believed for [`Schedule::stale_after`], as a
    /// served sample is, and fails the poll after that.
    fn check_unread(
        &mut self,
        offsets: &[PartitionOffsets],
        now: Instant,
    ) -> Result<Instant, PollFailure> {
        let unread: Vec<&PartitionOffsets> = offsets
            .iter()
            .filter(|offsets| offsets.unread.is_some())
            .collect();
        let oldest = unread
            .iter()
            .filter_map(|offsets| offsets.unread.as_ref())
            .min_by_key(|unread| unread.read_at);
        let Some(oldest) = oldest else {
            if self.standing_in {
                info!("{}: every partition is read again", self.key);
                self.standing_in = false;
            }
            return Ok(now);
        };
        let names: Vec<String> = unread
            .iter()
            .take(8)
            .map(|offsets| format!("{}[{}]", offsets.topic, offsets.partition))
            .collect();
        let more = if unread.len() > names.len() {
            ", ..."
        } else {
            ""
        };
        let age = now.saturating_duration_since(oldest.read_at);
        let age_text = humantime::format_duration(crate::answer::round_to_ms(age));
        if age > self.stale_after {
            return Err(PollFailure::Failed(format!(
                "{} partitions ({}{more}) could not be read for {age_text} (stale after {}): \
                 {}",
                unread.len(),
                names.join(", "),
                humantime::format_duration(self.stale_after),
                oldest.cause
            )));
        }
        if !self.standing_in {
            info!(
                "{}: {} partitions ({}{more}) could not be read now; their offsets read \
                 {age_text} ago stand in, for at most {}: {}",
                self.key,
                unread.len(),
                names.join(", "),
                humantime::format_duration(self.stale_after),
                oldest.cause
            );
            self.standing_in = true;
        }
        Ok(oldest.read_at)
    }

    /// Sets `waited` of the partitions of `offsets` (a sample taken at `taken_at`) whose
    /// time lag the window's own history cannot tell, from the timestamp of the first record
    /// at the group's position, read from the broker. Where that read fails, the time
    /// lag stays unknown (logged once); partitions whose leader could not be reached are not
    /// read.
    fn read_waited(&mut self, offsets: &mut [PartitionOffsets], taken_at: Instant) {
        let rule = self.key.lag_rule;
        let unreached: Vec<(usize, i64)> = self
            .window
            .unreached(offsets, rule)
            .into_iter()
            .filter(|(index, _)| offsets[*index].unread.is_none())
            .collect();
        let Some(client) = self.clients.get(self.key.cluster.as_deref()) else {
            return;
        };
        if unreached.is_empty() {
            return;
        }
        let wanted: Vec<(&str, i32, i64)> = unreached
            .iter()
            .map(|&(index, offset)| {
                let partition = &offsets[index];
                (&*partition.topic, partition.partition, offset)
            })
            .collect();
        let read = client.first_records(&wanted, rule.isolation);
        // The wait at the sample's time: the record's age now, less the time since.
        let since_sample = taken_at.elapsed();
        let wall_now = SystemTime::now();
        let found = match read {
            Ok(found) => {
                if self.records_failing {
                    info!("{}: reading record timestamps works again", self.key);
                    self.records_failing = false;
                }
                found
            }
            Err(err) => {
                if !self.records_failing {
                    warn!("{}: {err}; the time lag is unknown", self.key);
                    self.records_failing = true;
                }
                return;
            }
        };
        for (index, _) in unreached {
            let partition = &mut offsets[index];
            partition.waited = match found.get(&(partition.topic.to_string(), partition.partition))
            {
                // Nothing a consumer at the watch's isolation reads lies there: nothing waits.
                Some(None) => Some(Duration::ZERO),
                Some(Some(record)) => record
                    .timestamp_ms
                    .and_then(|ms| age(ms, wall_now))
                    .map(|age| age.saturating_sub(since_sample)),
                None => None,
            };
        }
    }

    /// One sample's offsets (only the partitions the watch covers) and the group's active
    /// members, `None` when the group could not be described (only the replica target
    /// needs them, so that is not a failed poll).
    fn read(
        &mut self,
        since: Instant,
    ) -> Result<(Vec<PartitionOffsets>, Option<usize>), PollFailure> {
        // Trigger parsing only lets configured clusters through.
        let client = self
            .clients
            .get(self.key.cluster.as_deref())
            .ok_or_else(|| {
                PollFailure::Failed(format!(
                    "cluster {} is not configured",
                    self.key.cluster.as_deref().unwrap_or("default")
                ))
            })?;
        let group = match &self.key.source {
            Source::Group(group) => group.clone(),
            Source::Plugin {
                name,
                include_historic,
            } => {
                let (name, include_historic) = (name.clone(), *include_historic);
                return self
                    .read_plugin(&client, &name, include_historic, since)
                    .map_err(PollFailure::Failed);
            }
        };
        let topics = match (&self.key.topic, &self.key.topic_pattern) {
            (Some(topics), _) => Topics::Listed(topics),
            (None, Some(pattern)) => Topics::Matching {
                pattern: pattern.as_str(),
                regex: pattern.regex(),
            },
            (None, None) => Topics::Committed,
        };
        let mut offsets = client
            .snapshot(&group, topics, since, self.key.lag_rule.isolation)
            .map_err(|err| match err {
                KafkaError::UnknownTopic { .. } | KafkaError::OnlyDeletedTopics { .. } => {
                    PollFailure::Gone(err.to_string())
                }
                err => PollFailure::Failed(client.with_login_refusal(err.to_string())),
            })?;
        if let Some(set) = &self.key.partitions {
            let n_partitions = offsets.len();
            offsets.retain(|offsets| set.contains(offsets.partition));
            if offsets.is_empty() {
                return Err(PollFailure::Failed(format!(
                    "partitionLimitation {set} matches none of the {n_partitions} partitions \
                     of topic {}",
                    self.key.topic.as_deref().unwrap_or("*")
                )));
            }
        }
        let members = self.note_members(client.group_members(&group, since));
        Ok((offsets, members))
    }

    /// The member count of a describe, `None` when it failed (only the replica target needs
    /// members, so that is not a failed poll); a failure and a recovery are each logged once.
    fn note_members(&mut self, members: Result<usize, KafkaError>) -> Option<usize> {
        match members {
            Ok(members) => {
                if self.members_failing {
                    info!("describing the group works again: {}", self.key);
                    self.members_failing = false;
                }
                Some(members)
            }
            Err(err) => {
                if !self.members_failing {
                    warn!("{err}; replica targets of {} are unknown", self.key);
                    self.members_failing = true;
                }
                None
            }
        }
    }

    /// Logs when the lag stops draining (and why) or drains again.
    fn log_drain_change(&mut self, estimate: &Estimate) {
        match estimate.eta() {
            Eta::NotDraining(why) => {
                if self.not_draining != Some(why) {
                    info!(
                        "watch {}: lag {} is not draining: {why}",
                        self.key, estimate.total_lag
                    );
                    self.not_draining = Some(why);
                }
            }
            eta @ (Eta::Draining(_) | Eta::InFlight(_) | Eta::Zero) => {
                if self.not_draining.take().is_some() {
                    info!(
                        "watch {}: lag {} drains again (eta {eta})",
                        self.key, estimate.total_lag
                    );
                }
            }
            Eta::Unknown => {}
        }
    }
}
