//! A watcher in fleet mode: the watch's window continued from its Redis stream, a poll of
//! Kafka on each tick it owns, shared with the fleet, and on the others the samples its
//! owner shares (or, when none comes, a failed poll at that tick).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{after, select};
use log::{debug, warn};

use super::Watcher;
use crate::fleet::{self, Fleet, FleetEvent, Published, Subscription};
use crate::kafka::{current_tick, next_tick};
use crate::store::Reading;

/// A watcher's part in its fleet.
pub(super) struct FleetLink {
    fleet: Arc<Fleet>,
    /// The watch's key as the fleet names it.
    name: Arc<str>,
    subscription: Subscription,
    /// Whether catching up from the watch's stream failed last time, to log changes only.
    catch_up_failing: bool,
    /// Whether a sample refused as ahead of the fleet's clock was logged, to warn once until
    /// a sample is shared again.
    ahead_logged: bool,
}

impl FleetLink {
    pub(super) fn new(fleet: Arc<Fleet>, name: Arc<str>) -> FleetLink {
        let subscription = fleet.subscribe(Arc::clone(&name));
        FleetLink {
            fleet,
            name,
            subscription,
            catch_up_failing: false,
            ahead_logged: false,
        }
    }
}

impl Watcher {
    /// Fleet mode: continues the watch's window from its stream, then on each tick polls
    /// if this replica owns the watch (or is alone) and shares the sample, and otherwise
    /// records the samples the owner shares; until stopped.
    pub(super) fn run_in_fleet(&mut self, mut link: FleetLink) {
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let now = Instant::now();
        let mut tick = current_tick(self.origin, self.interval, now);
        let latest = self.catch_up(&mut link);
        let recent = self
            .last_slot
            .is_some_and(|slot| slot.saturating_add(interval_ms) >= link.fleet.slot_ms(tick));
        let going = match latest {
            // The fleet polled it this tick or the one before: no need to ask Kafka.
            Some(reading) if recent => self.send(reading, now, now, false),
            // A watch new to the fleet, or one nobody polled lately: poll it now, once.
            _ => self.poll_for_fleet(&mut link, tick, now),
        };
        if !going {
            return;
        }
        loop {
            let now = Instant::now();
            let mut next = next_tick(self.origin, self.interval, tick);
            if next < now {
                next = current_tick(self.origin, self.interval, now);
            }
            let going = select! {
                recv(self.stop) -> _ => false,
                recv(link.subscription.events) -> event => match event {
                    Ok(FleetEvent::Sample { slot_ms, text }) => {
                        let started = Instant::now();
                        match self.take(&link.fleet, slot_ms, &text) {
                            Some(reading) => {
                                let scheduled = link.fleet.slot_instant(slot_ms);
                                self.send(reading, scheduled, started, false)
                            }
                            None => true,
                        }
                    }
                    Ok(FleetEvent::Wake) => self.wake(&mut link),
                    Err(_) => false,
                },
                recv(after(next.saturating_duration_since(now))) -> _ => {
                    tick = next;
                    if link.fleet.owns(&self.key) {
                        self.poll_for_fleet(&mut link, tick, tick)
                    } else if self
                        .last_slot
                        .is_none_or(|slot| slot.saturating_add(interval_ms) < link.fleet.slot_ms(tick))
                    {
                        // The previous tick's sample has not come: read the stream.
                        let started = Instant::now();
                        match self.catch_up(&mut link) {
                            Some(reading) => self.send(reading, tick, started, false),
                            None => {
                                let missed = tick.checked_sub(self.interval).unwrap_or(tick);
                                let reading = self.missed_tick(&link, missed);
                                self.send(reading, tick, started, false)
                            }
                        }
                    } else {
                        true
                    }
                }
            };
            if !going {
                return;
            }
        }
    }

    /// The members changed or the feed was interrupted: a new owner polls the current tick
    /// if nobody has; a replica that does not own the watch catches up from its stream.
    fn wake(&mut self, link: &mut FleetLink) -> bool {
        let now = Instant::now();
        let tick = current_tick(self.origin, self.interval, now);
        if link.fleet.owns(&self.key) {
            return self.poll_for_fleet(link, tick, now);
        }
        match self.catch_up(link) {
            Some(reading) => self.send(reading, now, now, false),
            None => true,
        }
    }

    /// Polls Kafka for the tick `tick` (reads since `scheduled` are fresh enough), shares
    /// the sample and records it; when another replica wrote the tick first, records
    /// that one instead. Nothing when the tick is recorded already.
    fn poll_for_fleet(&mut self, link: &mut FleetLink, tick: Instant, scheduled: Instant) -> bool {
        let slot = link.fleet.slot_ms(tick);
        if self.last_slot.is_some_and(|last| last >= slot) {
            return true;
        }
        let started = Instant::now();
        let time_lag =
            self.time_lag_wanted.load(Ordering::Relaxed) || link.fleet.time_lag_wanted(&link.name);
        let sample = self.sample(scheduled, time_lag);
        let text = fleet::sample::encode(&sample, &link.fleet.clock());
        let reading = match link.fleet.publish(&link.name, slot, text.clone()) {
            // Another replica wrote the tick first: its sample; where it cannot be read, the
            // tick counts as a failed poll.
            Published::Refused => {
                let caught = self.catch_up(link);
                if self.last_slot.is_none_or(|last| last < slot) {
                    Some(self.missed_tick(link, tick))
                } else {
                    caught
                }
            }
            // The tick is later than Redis's now: this host's clock ran ahead of the
            // fleet's. Recording the sample would take a tick the fleet has not reached.
            Published::Ahead => Some(self.unshared_tick(link, tick)),
            // Written; or not shareable now (Redis down, lease lapsed), but a sample
            // nonetheless. Recorded as the others decode it, so that all windows agree.
            Published::Accepted | Published::NotMember | Published::Unavailable(_) => {
                link.ahead_logged = false;
                self.take(&link.fleet, slot, &text)
            }
        };
        match reading {
            Some(reading) => self.send(reading, scheduled, started, true),
            None => true,
        }
    }

    /// A tick whose sample this replica neither made nor could read from the fleet: a
    /// failed poll at `at`, so that the latest sample is decided as it stood and the idle
    /// window never reads the missing tick as idle. Logged at debug: the fleet's threads log
    /// an outage of its Redis once, and an owner that stopped sharing is replaced within the
    /// member TTL.
    fn missed_tick(&mut self, link: &FleetLink, at: Instant) -> Reading {
        self.window.record_failure(at);
        let cause = format!(
            "the fleet has no sample of {} for the tick at {} (its owner has not shared it)",
            self.key,
            tick_time(link, at)
        );
        debug!("{cause}");
        Reading::Failed(cause.into())
    }

    /// A tick this replica polled but could not share because its slot is later than the
    /// fleet Redis's clock: a failed poll at `at` (never a sample at a time the fleet has
    /// not reached). Warned once until a sample is shared again.
    fn unshared_tick(&mut self, link: &mut FleetLink, at: Instant) -> Reading {
        self.window.record_failure(at);
        let cause = format!(
            "the sample of {} for the tick at {} is later than the fleet Redis's clock \
             (this host's clock runs ahead of it)",
            self.key,
            tick_time(link, at)
        );
        if !link.ahead_logged {
            warn!("{cause}; counted as a failed poll");
            link.ahead_logged = true;
        }
        Reading::Failed(cause.into())
    }

    /// Records the samples of the watch's stream after the latest recorded one; the
    /// reading of the last of them.
    fn catch_up(&mut self, link: &mut FleetLink) -> Option<Reading> {
        match link.fleet.history(&link.name, self.last_slot) {
            Ok(entries) => {
                // Debug only: the fleet's threads log an outage of its Redis once.
                if link.catch_up_failing {
                    debug!(
                        "{}: reading its samples from the fleet works again",
                        self.key
                    );
                    link.catch_up_failing = false;
                }
                let mut latest = None;
                for (slot, text) in entries {
                    if let Some(reading) = self.take(&link.fleet, slot, &text) {
                        latest = Some(reading);
                    }
                }
                latest
            }
            Err(cause) => {
                if !link.catch_up_failing {
                    debug!(
                        "{}: cannot read its samples from the fleet: {cause}",
                        self.key
                    );
                    link.catch_up_failing = true;
                }
                None
            }
        }
    }

    /// Records the shared sample `text` of tick `slot` unless a sample of that tick or a
    /// later one is recorded already. Ticks missed since the latest recorded sample count
    /// as failed polls (the idle window never reads missing data as idle).
    fn take(&mut self, fleet: &Fleet, slot: u64, text: &str) -> Option<Reading> {
        if self.last_slot.is_some_and(|last| last >= slot) {
            return None;
        }
        let mut sample = match fleet::sample::decode(text, &fleet.clock()) {
            Ok(sample) => sample,
            Err(err) => {
                warn!(
                    "{}: a shared sample cannot be read ({err}); skipped",
                    self.key
                );
                return None;
            }
        };
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if let Some(last) = self.last_slot {
            if slot > last.saturating_add(interval_ms) {
                self.window
                    .record_failure(fleet.slot_instant(last.saturating_add(interval_ms)));
            }
        }
        self.last_slot = Some(slot);
        // Replicas' clocks differ a little: a sample is never recorded before the previous.
        if let Some(last) = self.window.last_sample() {
            sample.taken_at = sample.taken_at.max(last);
        }
        Some(self.record(sample))
    }
}

/// The time of the tick at `at` by the fleet's clock, for logs.
fn tick_time(link: &FleetLink, at: Instant) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(link.fleet.slot_ms(at)))
}
