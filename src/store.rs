//! The metric store: the latest reading of every watch, behind a parking_lot lock.
//!
//! gRPC handlers read it (and add a pending slot for a watch they ask about first); the watch
//! registry's supervisor thread is the only writer of readings. No lock here is ever held
//! across IO.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::estimate::{Estimate, Rules};
use crate::trigger::WatchKey;

/// What a watch knows right now.
#[derive(Clone, Debug)]
pub enum Reading {
    /// The first poll has not finished.
    Pending,
    /// The last poll succeeded: what the watch knows since.
    Fresh(Arc<Estimate>),
    /// The last poll failed, for this reason.
    Failed(Arc<str>),
    /// The last poll found that what the watch measures no longer exists (its topic was
    /// deleted), for this reason: earlier samples describe something gone, so none is
    /// served, however recent.
    Gone(Arc<str>),
}

impl Reading {
    /// Why the last poll failed, `None` unless it did.
    pub fn failure(&self) -> Option<&Arc<str>> {
        match self {
            Reading::Failed(cause) | Reading::Gone(cause) => Some(cause),
            Reading::Pending | Reading::Fresh(_) => None,
        }
    }
}

/// A watch's latest reading together with its latest good estimate, which outlives failed
/// polls so that it can be served until it is stale.
#[derive(Clone, Debug)]
pub struct View {
    /// The latest poll's outcome.
    pub reading: Reading,
    /// The estimate of the latest poll that succeeded, if any did.
    pub last_good: Option<Arc<Estimate>>,
}

/// One watch's entry: its latest reading and when an RPC last asked about it.
pub struct Slot {
    /// The watch's number, unique for the life of the store.
    pub id: u64,
    /// What the watch polls.
    pub key: WatchKey,
    view: Mutex<View>,
    changed: Condvar,
    origin: Instant,
    last_asked_ms: AtomicU64,
    /// Polls since the watch started.
    polls: AtomicU64,
    /// Polls that failed since the watch started.
    poll_errors: AtomicU64,
    /// How long the latest poll took, µs.
    last_poll_us: AtomicU64,
    /// The triggers served from this watch, for `/metrics`.
    triggers: Mutex<Vec<TriggerSeen>>,
    /// Set once a trigger on this watch needs its time lag: its watcher then reads the
    /// broker's record timestamps where its own history does not reach back.
    time_lag_wanted: Arc<AtomicBool>,
    /// The key as fleet mode names it in Redis, made once when first needed.
    fleet_name: OnceLock<Arc<str>>,
}

/// A watch's poll counts, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct PollStats {
    /// Polls since the watch started.
    pub polls: u64,
    /// Of those, the polls that failed.
    pub failed: u64,
    /// How long the latest poll took.
    pub latest: Duration,
}

/// Most triggers one watch remembers for `/metrics`; beyond, the one asked about longest
/// ago is forgotten.
pub const MAX_TRIGGERS_PER_WATCH: usize = 64;

/// A trigger served from a watch: whose, its rules (whose metric mode, with the watch, gives
/// the metric's name), and when it was last asked about.
#[derive(Clone, Debug)]
pub struct TriggerSeen {
    /// The ScaledObject, `namespace/name`.
    pub scaled_object: String,
    /// How the watch's estimates become the trigger's answers.
    pub rules: Rules,
    /// When an RPC last asked for this trigger.
    pub asked: Instant,
}

impl Slot {
    /// The latest view, waiting up to `max_wait` while the first poll is still running.
    pub fn first_view(&self, max_wait: Duration) -> View {
        let deadline = Instant::now() + max_wait;
        let mut view = self.view.lock();
        while matches!(view.reading, Reading::Pending) {
            if self.changed.wait_until(&mut view, deadline).timed_out() {
                break;
            }
        }
        view.clone()
    }

    /// Counts a poll: whether it failed and how long it took.
    pub fn record_poll(&self, failed: bool, took: Duration) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.poll_errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.last_poll_us.store(micros, Ordering::Relaxed);
    }

    /// Polls and failed polls since the watch started, and how long the latest poll took.
    pub fn poll_stats(&self) -> PollStats {
        PollStats {
            polls: self.polls.load(Ordering::Relaxed),
            failed: self.poll_errors.load(Ordering::Relaxed),
            latest: Duration::from_micros(self.last_poll_us.load(Ordering::Relaxed)),
        }
    }

    /// The latest view, without waiting.
    pub fn view(&self) -> View {
        self.view.lock().clone()
    }

    /// Replaces the reading (a fresh one also becomes the last good estimate; a `Gone` one
    /// forgets it) and wakes anyone waiting for the first one.
    pub fn set_reading(&self, reading: Reading) {
        {
            let mut view = self.view.lock();
            match &reading {
                Reading::Fresh(estimate) => view.last_good = Some(Arc::clone(estimate)),
                Reading::Gone(_) => view.last_good = None,
                Reading::Pending | Reading::Failed(_) => {}
            }
            view.reading = reading;
        }
        self.changed.notify_all();
    }

    /// Records that a trigger of `scaled_object` (`namespace/name`) is answered with `rules`
    /// from this watch now; a ScaledObject has one trigger per metric mode here, with the
    /// latest rules. Allocates only for a trigger not seen before.
    pub fn note_trigger(&self, scaled_object: &str, rules: &Rules) {
        let now = Instant::now();
        let mut triggers = self.triggers.lock();
        let known = triggers
            .iter_mut()
            .find(|seen| seen.scaled_object == scaled_object && seen.rules.metric == rules.metric);
        if let Some(seen) = known {
            if seen.rules != *rules {
                seen.rules = rules.clone();
            }
            seen.asked = now;
            return;
        }
        if triggers.len() >= MAX_TRIGGERS_PER_WATCH {
            let oldest = triggers
                .iter()
                .enumerate()
                .min_by_key(|(_, seen)| seen.asked)
                .map(|(index, _)| index);
            if let Some(index) = oldest {
                triggers.swap_remove(index);
            }
        }
        triggers.push(TriggerSeen {
            scaled_object: scaled_object.to_owned(),
            rules: rules.clone(),
            asked: now,
        });
    }

    /// The triggers asked about within `within`, by ScaledObject and metric mode.
    pub fn triggers(&self, within: Duration) -> Vec<TriggerSeen> {
        let mut seen: Vec<TriggerSeen> = self
            .triggers
            .lock()
            .iter()
            .filter(|seen| seen.asked.elapsed() <= within)
            .cloned()
            .collect();
        seen.sort_by(|a, b| {
            (&a.scaled_object, a.rules.metric).cmp(&(&b.scaled_object, b.rules.metric))
        });
        seen
    }

    /// Records that a trigger on this watch needs its time lag (kept for the watch's life).
    pub fn want_time_lag(&self) {
        self.time_lag_wanted.store(true, Ordering::Relaxed);
    }

    /// The flag [`Slot::want_time_lag`] sets, for the watch's watcher to read.
    pub fn time_lag_wanted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.time_lag_wanted)
    }

    /// The watch's key as fleet mode names it (`trigger::codec`).
    pub fn fleet_name(&self) -> Arc<str> {
        Arc::clone(
            self.fleet_name
                .get_or_init(|| crate::trigger::codec::encode(&self.key).into()),
        )
    }

    /// Records that an RPC asked about this watch now.
    pub fn touch(&self) {
        let now_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_asked_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// How long since an RPC last asked about this watch.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_asked_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Every watch's slot, by key.
pub struct Store {
    slots: RwLock<HashMap<WatchKey, Arc<Slot>>>,
    next_id: AtomicU64,
    origin: Instant,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            slots: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            origin: Instant::now(),
        }
    }
}

impl Store {
    /// Every slot, sorted by id.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        let mut slots: Vec<Arc<Slot>> = self.slots.read().values().cloned().collect();
        slots.sort_by_key(|slot| slot.id);
        slots
    }

    /// The slot of `key`, if the watch exists.
    pub fn get(&self, key: &WatchKey) -> Option<Arc<Slot>> {
        self.slots.read().get(key).cloned()
    }

    /// The slot of `key`, created (pending) if absent and fewer than `max` slots exist;
    /// `true` when this call created it, `None` when the store is full.
    pub fn get_or_insert(&self, key: &WatchKey, max: usize) -> Option<(Arc<Slot>, bool)> {
        let mut slots = self.slots.write();
        if let Some(slot) = slots.get(key) {
            return Some((Arc::clone(slot), false));
        }
        if slots.len() >= max {
            return None;
        }
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: key.clone(),
            view: Mutex::new(View {
                reading: Reading::Pending,
                last_good: None,
            }),
            changed: Condvar::new(),
            origin: self.origin,
            last_asked_ms: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            poll_errors: AtomicU64::new(0),
            last_poll_us: AtomicU64::new(0),
            triggers: Mutex::new(Vec::new()),
            time_lag_wanted: Arc::new(AtomicBool::new(false)),
            fleet_name: OnceLock::new(),
        });
        slot.touch();
        slots.insert(key.clone(), Arc::clone(&slot));
        Some((slot, true))
    }

    /// Removes `key`'s slot if nobody asked about it for `ttl`; `true` when removed. Checked
    /// under the write lock, so a concurrent lookup either sees the slot first or not at all.
    pub fn remove_if_idle(&self, key: &WatchKey, ttl: Duration) -> bool {
        let mut slots = self.slots.write();
        match slots.get(key) {
            Some(slot) if slot.idle_for() >= ttl => {
                slots.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Removes every slot (at shutdown).
    pub fn clear(&self) {
        self.slots.write().clear();
    }

    /// Number of watches.
    pub fn len(&self) -> usize {
        self.slots.read().len()
    }

    /// Whether there is no watch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::lag::LagRule;

    fn key(group: &str) -> WatchKey {
        WatchKey {
            cluster: None,
            source: crate::trigger::Source::Group(group.to_owned()),
            topic_pattern: None,
            topic: None,
            partitions: None,
            lag_rule: LagRule::DEFAULT,
        }
    }

    #[test]
    fn first_reading_waits_for_the_writer_and_no_longer() {
        let store = Store::default();
        let (slot, created) = store.get_or_insert(&key("g"), 10).unwrap();
        assert!(created);
        let started = Instant::now();
        assert!(matches!(
            slot.first_view(Duration::from_millis(50)).reading,
            Reading::Pending
        ));
        assert!(started.elapsed() >= Duration::from_millis(50));

        let writer = {
            let slot = Arc::clone(&slot);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                slot.set_reading(Reading::Failed("boom".into()));
            })
        };
        let view = slot.first_view(Duration::from_secs(5));
        writer.join().unwrap();
        assert!(matches!(view.reading, Reading::Failed(cause) if &*cause == "boom"));
        assert!(view.last_good.is_none());
    }

    #[test]
    fn idle_slots_are_removed_and_touched_ones_kept() {
        let store = Store::default();
        let (_, _) = store.get_or_insert(&key("old"), 2).unwrap();
        thread::sleep(Duration::from_millis(30));
        let (fresh, created) = store.get_or_insert(&key("new"), 2).unwrap();
        assert!(store.get_or_insert(&key("third"), 2).is_none(), "full at 2");
        assert!(created);
        fresh.touch();
        assert!(store.remove_if_idle(&key("old"), Duration::from_millis(25)));
        assert!(!store.remove_if_idle(&key("new"), Duration::from_millis(25)));
        assert_eq!(store.len(), 1);
        let (again, created) = store.get_or_insert(&key("new"), 2).unwrap();
        assert!(!created);
        assert_eq!(again.id, fresh.id);
        assert!(
            store.get_or_insert(&key("third"), 2).is_some(),
            "room again"
        );
    }

    #[test]
    fn triggers_are_remembered_once_each_updated_and_capped() {
        let store = Store::default();
        let (slot, _) = store.get_or_insert(&key("g"), 1).unwrap();
        let rules = crate::trigger::Trigger::parse(
            &HashMap::from([("consumerGroup".to_owned(), "g".to_owned())]),
            &crate::config::Config::default().cluster_set(),
        )
        .expect("a trigger")
        .rules;
        let mut stricter = rules.clone();
        stricter.activation_lag_threshold = 5;
        slot.note_trigger("ns/a", &rules);
        slot.note_trigger("ns/b", &rules);
        slot.note_trigger("ns/a", &stricter);
        let seen = slot.triggers(Duration::from_secs(60));
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].scaled_object, "ns/a");
        assert_eq!(seen[0].rules, stricter, "the latest rules win");
        assert_eq!(seen[1].rules, rules);

        thread::sleep(Duration::from_millis(20));
        assert!(slot.triggers(Duration::from_millis(10)).is_empty());
        for n in 0..MAX_TRIGGERS_PER_WATCH {
            slot.note_trigger(&format!("other/{n}"), &rules);
        }
        let seen = slot.triggers(Duration::from_secs(60));
        assert_eq!(seen.len(), MAX_TRIGGERS_PER_WATCH);
        assert!(
            seen.iter().all(|s| s.scaled_object.starts_with("other/")),
            "the two asked about longest ago were forgotten"
        );
    }
}
