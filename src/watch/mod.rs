//! Watches: the registry that starts, feeds, expires and joins the watcher threads.
//!
//! [`Registry`] is the handle the gRPC handlers use: it looks a watch up in the store, adds
//! a pending slot for a new one and asks the supervisor to start its watcher. The supervisor
//! (thread `registry`) owns the watchers: it receives their poll results over one bounded
//! channel and writes them into the store, expires watches nobody asked about for the TTL,
//! and joins every watcher it stops.

mod watcher;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    after, bounded, never, select, tick, unbounded, Receiver, Sender, TryRecvError,
};
use log::{debug, error, info, warn};
use parking_lot::Mutex;

use crate::directory::Directory;
use crate::fleet::Fleet;
use crate::kafka::Clients;
use crate::store::{Slot, Store};
use crate::trigger::{codec, Trigger, WatchKey};
use watcher::{Never, PollResult};

/// Bounds of the capacity of the channel that carries poll results to the supervisor: one
/// result per watch (`SCALER_MAX_WATCHES`) within these. Every watcher sends its result on
/// the same tick, and a full channel parks each sender and has the supervisor wake them one
/// by one: at 10,000 watches behind a capacity of 1,024, those wakes were most of the
/// supervisor's work (BENCHMARKS.md, §2).
const RESULTS_CAPACITY: (usize, usize) = (1024, 65_536);

/// How often to sleep between checks while joining threads at shutdown.
const JOIN_CHECK: Duration = Duration::from_millis(10);

/// First delay before restarting a watcher that died; doubled for each death in a row.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Longest delay before restarting a watcher that died.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// A watcher that ran this long since its last death starts the backoff afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(300);

/// How watches behave.
#[derive(Clone, Copy, Debug)]
pub struct WatchSettings {
    /// Time between the starts of two polls.
    pub poll_interval: Duration,
    /// A watch not asked about for this long is stopped.
    pub ttl: Duration,
    /// Rates are estimated over this much of the latest samples.
    pub rate_window: Duration,
    /// How old a sample may be and still be served (`SCALER_STALE_AFTER`): failed polls
    /// spanning less than this do not count as activity, and offsets of a partition whose
    /// leader cannot be reached stand in for at most this long.
    pub stale_after: Duration,
    /// Most watches at once; asking for another is refused.
    pub max_watches: usize,
}

/// A new watch was refused: there are `max` already.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error(
    "lagscaler already watches {max} groups/topics (SCALER_MAX_WATCHES={max}); this trigger \
     needs another: raise the limit, or let unused watches expire"
)]
pub struct WatchLimit {
    /// The limit.
    pub max: usize,
}

/// What went wrong while stopping the watches.
#[derive(Debug, Default, thiserror::Error)]
#[error("{panicked} watcher thread(s) panicked and {unjoined} did not stop in time")]
pub struct ShutdownError {
    /// Watcher threads whose join returned a panic.
    pub panicked: usize,
    /// Watcher threads still running at the deadline.
    pub unjoined: usize,
}

/// Handle to the watches: cheap to share between gRPC handlers.
pub struct Registry {
    store: Arc<Store>,
    max_watches: usize,
    /// The latest complete poll cycle's duration, µs ([`NO_CYCLE`] before the first).
    last_cycle: Arc<AtomicU64>,
    panics: Arc<AtomicUsize>,
    control: Sender<Control>,
    supervisor: Mutex<Option<JoinHandle<Result<(), ShutdownError>>>>,
    /// Fleet mode: told of every watch asked about here.
    fleet: Option<Arc<Fleet>>,
}

enum Control {
    /// Start the watcher of a slot just added to the store.
    Start(Arc<Slot>),
    /// Stop every watcher, joining them before the deadline, then exit.
    Shutdown { deadline: Instant },
}

impl Control {
    /// Every Registry handle is gone without a shutdown: stop as if asked to.
    fn orphaned() -> Control {
        Control::Shutdown {
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }
}

impl Registry {
    /// Starts the supervisor thread. Plugin watches find their groups through `directory`.
    /// The id of each watch whose reading changed is sent to `updates` (dropped when it is
    /// full: a listener that falls behind re-reads everything anyway). In fleet mode the
    /// watchers share their samples through `fleet`, and the registry also holds the
    /// watches this replica owns that another replica was asked about.
    pub fn start(
        clients: Arc<Clients>,
        directory: Arc<Directory>,
        settings: WatchSettings,
        updates: Sender<u64>,
        fleet: Option<Arc<Fleet>>,
    ) -> std::io::Result<Registry> {
        let store = Arc::new(Store::default());
        let panics = Arc::new(AtomicUsize::new(0));
        let cycle = Cycle::default();
        let last_cycle = Arc::clone(&cycle.last);
        let (control_tx, control_rx) = unbounded();
        let capacity = settings
            .max_watches
            .clamp(RESULTS_CAPACITY.0, RESULTS_CAPACITY.1);
        let (results_tx, results_rx) = bounded(capacity);
        let supervisor = Supervisor {
            store: Arc::clone(&store),
            clients,
            directory,
            updates,
            settings,
            origin: fleet
                .as_ref()
                .map_or_else(Instant::now, |fleet| fleet.origin()),
            fleet: fleet.clone(),
            full_warned: false,
            cycle,
            control: control_rx,
            results_tx,
            results: results_rx,
            watchers: HashMap::new(),
            stopping: Vec::new(),
            deaths: HashMap::new(),
            restarts: Vec::new(),
            panics: Arc::clone(&panics),
            panicked: 0,
        };
        let handle = thread::Builder::new()
            .name("registry".to_owned())
            .spawn(move || supervisor.run())?;
        Ok(Registry {
            store,
            max_watches: settings.max_watches,
            last_cycle,
            panics,
            control: control_tx,
            supervisor: Mutex::new(Some(handle)),
            fleet,
        })
    }

    /// The slot of the watch `trigger` reads, registering the watch if it is new and the
    /// limit allows. Either way the watch counts as asked about now, and from now on reads
    /// what the trigger's rules need (the broker's record timestamps for a time lag).
    pub fn watch(&self, trigger: &Trigger) -> Result<Arc<Slot>, WatchLimit> {
        let key = &trigger.watch;
        let needs_time_lag = trigger.rules.needs_time_lag();
        if let Some(slot) = self.store.get(key) {
            if let Some(fleet) = &self.fleet {
                fleet.note_asked(&slot.fleet_name(), needs_time_lag);
            }
            slot.touch();
            if needs_time_lag {
                slot.want_time_lag();
            }
            return Ok(slot);
        }
        let max = self.max_watches;
        let Some((slot, created)) = self.store.get_or_insert(key, max) else {
            // Another replica may hold it: the fleet hears of it all the same.
            if let Some(fleet) = &self.fleet {
                fleet.note_asked(&Arc::from(codec::encode(key)), needs_time_lag);
            }
            warn!("watch refused, {max} watches already: {key}");
            return Err(WatchLimit { max });
        };
        if let Some(fleet) = &self.fleet {
            fleet.note_asked(&slot.fleet_name(), needs_time_lag);
        }
        slot.touch();
        // Before the watcher starts, so that its first poll reads what the trigger needs.
        if needs_time_lag {
            slot.want_time_lag();
        }
        if created {
            info!("watch added: {key}");
            // Fails only once the supervisor has shut down; the slot then stays pending and
            // the caller answers UNAVAILABLE, which is right for a server that is stopping.
            let _ = self.control.send(Control::Start(Arc::clone(&slot)));
        }
        Ok(slot)
    }

    /// The slot of the watch for `key` if it exists, without registering or touching it.
    pub fn get(&self, key: &WatchKey) -> Option<Arc<Slot>> {
        self.store.get(key)
    }

    /// Every watch's slot, sorted by id.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.store.slots()
    }

    /// Number of watches.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Most watches at once (`SCALER_MAX_WATCHES`).
    pub fn max_watches(&self) -> usize {
        self.max_watches
    }

    /// How long the latest complete poll cycle took, from its tick to the end of its
    /// slowest poll; `None` before the first cycle is complete.
    pub fn last_cycle(&self) -> Option<Duration> {
        match self.last_cycle.load(Ordering::Relaxed) {
            NO_CYCLE => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Watcher threads that died (panicked) since the start; each was restarted.
    pub fn watcher_panics(&self) -> usize {
        self.panics.load(Ordering::Relaxed)
    }

    /// Whether there is no watch.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Whether the supervisor thread ended without being told to (it panicked).
    pub fn is_dead(&self) -> bool {
        self.supervisor
            .lock()
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
    }

    /// Stops every watcher and the supervisor, joining them before `deadline`. Idempotent.
    pub fn shutdown(&self, deadline: Instant) -> Result<(), ShutdownError> {
        let Some(handle) = self.supervisor.lock().take() else {
            return Ok(());
        };
        // The supervisor owns the receiver until it exits, so this send cannot fail.
        let _ = self.control.send(Control::Shutdown { deadline });
        while !handle.is_finished() && Instant::now() < deadline {
            thread::sleep(JOIN_CHECK);
        }
        if !handle.is_finished() {
            return Err(ShutdownError {
                panicked: 0,
                unjoined: 1,
            });
        }
        match handle.join() {
            Ok(result) => result,
            Err(_) => Err(ShutdownError {
                panicked: 1,
                unjoined: 0,
            }),
        }
    }
}

struct WatcherHandle {
    slot: Arc<Slot>,
    /// Dropping this sender stops the watcher.
    stop: Sender<Never>,
    thread: JoinHandle<()>,
}

struct Supervisor {
    store: Arc<Store>,
    clients: Arc<Clients>,
    directory: Arc<Directory>,
    updates: Sender<u64>,
    settings: WatchSettings,
    /// Where the poll schedule every watcher shares starts.
    origin: Instant,
    /// Fleet mode.
    fleet: Option<Arc<Fleet>>,
    /// Whether a watch owned in the fleet was refused for the watch limit (logged once).
    full_warned: bool,
    /// The poll cycle results are coming in for.
    cycle: Cycle,
    control: Receiver<Control>,
    results_tx: Sender<PollResult>,
    results: Receiver<PollResult>,
    watchers: HashMap<u64, WatcherHandle>,
    /// Watchers told to stop whose threads have not been joined yet.
    stopping: Vec<(WatchKey, JoinHandle<()>)>,
    /// Per watch id: deaths in a row and when the last one was noticed, for the backoff.
    deaths: HashMap<u64, (u32, Instant)>,
    /// Watches whose dead watcher restarts at the given time.
    restarts: Vec<(Instant, Arc<Slot>)>,
    /// Shared with the handle, for observability.
    panics: Arc<AtomicUsize>,
    panicked: usize,
}

enum Event {
    Control(Control),
    Result(PollResult),
    Tick,
    /// The earliest restart of a watcher is due.
    RestartDue,
}

impl Supervisor {
    fn run(mut self) -> Result<(), ShutdownError> {
        let ticker = tick(expiry_check_period(self.settings.ttl));
        let deadline = loop {
            match self.next_event(&ticker) {
                Event::Control(Control::Start(slot)) => self.start_watcher(slot),
                Event::Control(Control::Shutdown { deadline }) => break deadline,
                Event::Result(result) => self.record(result),
                Event::RestartDue => self.restart_due(),
                Event::Tick => {
                    self.adopt();
                    self.expire_idle();
                    self.restart_dead();
                    self.restart_due();
                    self.join_stopped();
                }
            }
        };
        self.stop_all(deadline)
    }

    /// The next thing to handle; control messages win over poll results. A restart wakes
    /// the supervisor when it is due, so that the backoff is what it says, not rounded up to
    /// the next tick.
    fn next_event(&self, ticker: &Receiver<Instant>) -> Event {
        match self.control.try_recv() {
            Ok(control) => return Event::Control(control),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return Event::Control(Control::orphaned()),
        }
        let restart = match self.restarts.iter().map(|(at, _)| *at).min() {
            Some(at) => after(at.saturating_duration_since(Instant::now())),
            None => never(),
        };
        select! {
            recv(self.control) -> control => match control {
                Ok(control) => Event::Control(control),
                Err(_) => Event::Control(Control::orphaned()),
            },
            // The supervisor holds a sender itself, so this channel never disconnects.
            recv(self.results) -> result => match result {
                Ok(result) => Event::Result(result),
                Err(_) => Event::Tick,
            },
            recv(ticker) -> _ => Event::Tick,
            recv(restart) -> _ => Event::RestartDue,
        }
    }

    fn start_watcher(&mut self, slot: Arc<Slot>) {
        let (stop_tx, stop_rx) = bounded(0);
        let spawned = watcher::spawn(
            slot.id,
            slot.key.clone(),
            watcher::Sources {
                clients: Arc::clone(&self.clients),
                directory: Arc::clone(&self.directory),
                time_lag_wanted: slot.time_lag_wanted(),
                fleet: self
                    .fleet
                    .as_ref()
                    .map(|fleet| (Arc::clone(fleet), slot.fleet_name())),
            },
            watcher::Schedule {
                interval: self.settings.poll_interval,
                origin: self.origin,
                rate_window: self.settings.rate_window,
                stale_after: self.settings.stale_after,
            },
            self.results_tx.clone(),
            stop_rx,
        );
        match spawned {
            Ok(thread) => {
                self.watchers.insert(
                    slot.id,
                    WatcherHandle {
                        slot,
                        stop: stop_tx,
                        thread,
                    },
                );
            }
            // A pids limit (systemd's TasksMax, a container's pids cgroup) or memory: the
            // watch is retried with the same backoff as a dead watcher, and still expires.
            Err(err) => {
                self.schedule_restart(slot, &format!("cannot start a watcher thread: {err}"));
            }
        }
    }

    /// Marks `slot` failed with `cause` (its last good sample is still served until stale)
    /// and starts its watcher again after a backoff: 1 s, doubled for each failure in a row
    /// within [`BACKOFF_RESET`], at most 60 s.
    fn schedule_restart(&mut self, slot: Arc<Slot>, cause: &str) {
        let now = Instant::now();
        let in_a_row = match self.deaths.get(&slot.id) {
            Some((count, last)) if now.duration_since(*last) < BACKOFF_RESET => count + 1,
            _ => 1,
        };
        self.deaths.insert(slot.id, (in_a_row, now));
        let delay = RESTART_BACKOFF
            .saturating_mul(1 << (in_a_row - 1).min(16))
            .min(MAX_RESTART_BACKOFF);
        error!(
            "watcher of {}: {cause}; starting it again in {} (failure {in_a_row} in a row)",
            slot.key,
            humantime::format_duration(delay)
        );
        slot.set_reading(crate::store::Reading::Failed(
            format!("{cause}; retrying in {}", humantime::format_duration(delay)).into(),
        ));
        let _ = self.updates.try_send(slot.id);
        self.restarts.push((now + delay, slot));
    }

    fn record(&mut self, result: PollResult) {
        if result.polled {
            self.cycle.record(
                self.origin,
                self.settings.poll_interval,
                result.scheduled,
                result.finished,
            );
        }
        // A result from a watcher already expired has no slot to go to.
        if let Some(watcher) = self.watchers.get(&result.watch_id) {
            if result.polled {
                let failed = result.reading.failure().is_some();
                watcher.slot.record_poll(failed, result.took);
            }
            watcher.slot.set_reading(result.reading);
            let _ = self.updates.try_send(result.watch_id);
        }
    }

    /// Fleet mode: holds the watches this replica owns that another replica was asked
    /// about, so that they are polled for the fleet.
    fn adopt(&mut self) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        for (key, time_lag) in fleet.unheld(|key| self.store.get(key).is_some()) {
            let Some((slot, created)) = self.store.get_or_insert(&key, self.settings.max_watches)
            else {
                if !self.full_warned {
                    warn!(
                        "the fleet needs this replica to poll {key}, but it holds \
                         SCALER_MAX_WATCHES={} watches already",
                        self.settings.max_watches
                    );
                    self.full_warned = true;
                }
                continue;
            };
            if time_lag {
                slot.want_time_lag();
            }
            if created {
                info!("watch added for the fleet: {key}");
                self.start_watcher(slot);
            }
        }
    }

    /// Whether the fleet needs this replica to keep `watcher`'s watch although nobody asked
    /// this replica about it lately.
    fn kept_for_fleet(&self, watcher: &WatcherHandle) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(|fleet| fleet.keeps(&watcher.slot.fleet_name()))
    }

    fn expire_idle(&mut self) {
        let ttl = self.settings.ttl;
        let expired: Vec<u64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.slot.idle_for() >= ttl)
            .filter(|(_, watcher)| !self.kept_for_fleet(watcher))
            .filter(|(_, watcher)| self.store.remove_if_idle(&watcher.slot.key, ttl))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.deaths.remove(&id);
            let Some(watcher) = self.watchers.remove(&id) else {
                continue;
            };
            info!(
                "watch expired: {} (not asked about for {})",
                watcher.slot.key,
                humantime::format_duration(ttl)
            );
            drop(watcher.stop);
            self.stopping
                .push((watcher.slot.key.clone(), watcher.thread));
        }
    }

    /// A watcher only ends when told to; one that ended by itself panicked. The panic is
    /// logged and counted, and the watch restarts after a backoff ([`Self::schedule_restart`]).
    fn restart_dead(&mut self) {
        let dead: Vec<u64> = self
            .watchers
            .iter()
            .filter(|(_, watcher)| watcher.thread.is_finished())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            let Some(watcher) = self.watchers.remove(&id) else {
                continue;
            };
            let cause = match watcher.thread.join() {
                Err(panic) => panic_message(panic.as_ref()),
                Ok(()) => "it stopped unexpectedly".to_owned(),
            };
            self.panicked += 1;
            self.panics.fetch_add(1, Ordering::Relaxed);
            self.schedule_restart(watcher.slot, &format!("the watcher thread died ({cause})"));
        }
    }

    /// Starts the watchers whose restart is due, unless their watch expired meanwhile.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.restarts.drain(..).partition(|(at, _)| *at <= now);
        self.restarts = waiting;
        for (_, slot) in due {
            let kept = self
                .fleet
                .as_ref()
                .is_some_and(|fleet| fleet.keeps(&slot.fleet_name()));
            if !kept && self.store.remove_if_idle(&slot.key, self.settings.ttl) {
                info!("watch expired while its watcher was down: {}", slot.key);
                self.deaths.remove(&slot.id);
                continue;
            }
            info!("restarting the watcher of {}", slot.key);
            self.start_watcher(slot);
        }
    }

    fn join_stopped(&mut self) {
        let (finished, running): (Vec<_>, Vec<_>) = self
            .stopping
            .drain(..)
            .partition(|(_, thread)| thread.is_finished());
        self.stopping = running;
        for (key, thread) in finished {
            if thread.join().is_err() {
                self.panicked += 1;
                error!("watcher thread of {key} panicked");
            }
        }
    }

    fn stop_all(mut self, deadline: Instant) -> Result<(), ShutdownError> {
        for (_, watcher) in self.watchers.drain() {
            drop(watcher.stop);
            self.stopping
                .push((watcher.slot.key.clone(), watcher.thread));
        }
        self.store.clear();
        loop {
            self.join_stopped();
            if self.stopping.is_empty() || Instant::now() >= deadline {
                break;
            }
            // Watchers blocked on a full results channel leave as soon as they see the stop,
            // but draining keeps them from waiting on it at all.
            while self.results.try_recv().is_ok() {}
            thread::sleep(JOIN_CHECK);
        }
        let unjoined = self.stopping.len();
        for (key, _) in &self.stopping {
            error!("watcher thread of {key} did not stop before the shutdown deadline");
        }
        debug!("registry stopped");
        if self.panicked == 0 && unjoined == 0 {
            Ok(())
        } else {
            Err(ShutdownError {
                panicked: self.panicked,
                unjoined,
            })
        }
    }
}

/// The text of a panic payload, for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return format!("panic: {text}");
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return format!("panic: {text}");
    }
    "panic".to_owned()
}

/// Expiry is checked often enough to stop a watch within a quarter TTL (at most 1 s) of it
/// going idle.
fn expiry_check_period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The polls of one tick of the shared schedule, to tell how long a cycle takes: logged at
/// debug (target `lagscaler::cycle`) when the next tick's first result arrives, and with a
/// warning when a cycle starts taking longer than the poll interval (polls fall behind).
struct Cycle {
    tick: Option<Instant>,
    polls: usize,
    /// From the tick to the end of its slowest poll.
    duration: Duration,
    behind: bool,
    /// The latest reported cycle's duration, µs, shared with the [`Registry`].
    last: Arc<AtomicU64>,
}

/// [`Registry::last_cycle`] before any cycle is complete.
const NO_CYCLE: u64 = u64::MAX;

impl Default for Cycle {
    fn default() -> Cycle {
        Cycle {
            tick: None,
            polls: 0,
            duration: Duration::ZERO,
            behind: false,
            last: Arc::new(AtomicU64::new(NO_CYCLE)),
        }
    }
}

impl Cycle {
    fn record(&mut self, origin: Instant, interval: Duration, scheduled: Instant, done: Instant) {
        // A watch's first poll is off the schedule; it belongs to no cycle.
        if crate::kafka::current_tick(origin, interval, scheduled) != scheduled {
            return;
        }
        match self.tick {
            Some(tick) if tick == scheduled => {}
            Some(tick) if tick > scheduled => return,
            _ => {
                self.report(interval);
                self.tick = Some(scheduled);
                self.polls = 0;
                self.duration = Duration::ZERO;
            }
        }
        self.polls += 1;
        self.duration = self.duration.max(done.saturating_duration_since(scheduled));
    }

    fn report(&mut self, interval: Duration) {
        if self.tick.is_none() {
            return;
        }
        let (polls, duration) = (self.polls, self.duration);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(NO_CYCLE - 1);
        self.last.store(micros.min(NO_CYCLE - 1), Ordering::Relaxed);
        debug!(
            target: "lagscaler::cycle",
            "poll cycle: {polls} polls, the last done {:.1} ms after the tick",
            duration.as_secs_f64() * 1000.0
        );
        let behind = duration > interval;
        if behind && !self.behind {
            warn!(
                "a poll cycle of {polls} polls took {duration:?}, longer than the poll interval \
                 {interval:?}: polls are falling behind (fewer watches, a longer \
                 SCALER_POLL_INTERVAL or a faster Kafka would help)"
            );
        } else if !behind && self.behind {
            info!("poll cycles fit in the poll interval again ({polls} polls in {duration:?})");
        }
        self.behind = behind;
    }
}
