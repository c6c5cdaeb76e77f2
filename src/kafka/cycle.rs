//! Reads shared by every watch within one poll cycle.
//!
//! Watches poll on a common schedule (every poll interval from one origin), and each poll
//! asks for data "fetched at or after my scheduled time". The first poll of a cycle to ask
//! for a key fetches it; the others of that cycle wait for that fetch and share its answer,
//! error included, so a topic's high watermarks are read once per cycle however many watches
//! read the topic, and a failing broker is not asked once per watch. A fetch is shown the
//! key's latest good answer, which it may carry parts of (see `KafkaClient::snapshot`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::KafkaError;

/// A fetch that failed is not tried again sooner than this, whatever the poll interval:
/// while no broker is up, librdkafka answers every request that needs one with a new
/// connection attempt, and polls every 200 ms would make a storm of them.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(1);

/// An entry nobody asked for in this long is dropped when a new key arrives.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// One fetch's answer and when the fetch started, with the latest good answer.
struct Fetched<V> {
    at: Instant,
    value: Result<Arc<V>, KafkaError>,
    /// The latest answer that was not an error, this one or an earlier one.
    good: Option<Arc<V>>,
}

impl<V> Fetched<V> {
    /// This answer, if a poll scheduled at `since` takes it: fetched since then, or failed
    /// (an error, or a value `failed` calls one) under [`RETRY_FAILED_AFTER`] ago.
    fn answers(
        &self,
        since: Instant,
        failed: fn(&V) -> bool,
    ) -> Option<Result<Arc<V>, KafkaError>> {
        let failure = self.value.as_ref().map_or(true, |value| failed(value));
        let failed_lately = failure && since < self.at + RETRY_FAILED_AFTER;
        (self.at >= since || failed_lately).then(|| self.value.clone())
    }
}

/// A key's answer, and whether a poll is fetching it now. The poll that fetches holds no
/// lock while it fetches; the others of the cycle wait on the entry's condition variable,
/// parked, and are woken together. (A read-write lock held across the fetch made the
/// thousands of polls of a cycle spin and yield for the lock first: at 10,000 watches that
/// was 40 % of the watchers' CPU, BENCHMARKS.md §2.)
struct Entry<V> {
    state: Mutex<EntryState<V>>,
    fetched: Condvar,
}

struct EntryState<V> {
    latest: Option<Fetched<V>>,
    fetching: bool,
}

impl<V> Default for Entry<V> {
    fn default() -> Self {
        Entry {
            state: Mutex::new(EntryState {
                latest: None,
                fetching: false,
            }),
            fetched: Condvar::new(),
        }
    }
}

/// Ends an entry's fetch when dropped: clears the flag and wakes the polls waiting for it.
struct Fetching<'a, V>(&'a Entry<V>);

impl<V> Drop for Fetching<'_, V> {
    fn drop(&mut self) {
        self.0.state.lock().fetching = false;
        self.0.fetched.notify_all();
    }
}

/// A cache of reads by key for one poll cycle at a time: a key is fetched at most once per
/// cycle however many polls ask for it (single flight: the first asker fetches, the others
/// wait for that fetch and share its answer).
pub(super) struct CycleCache<V> {
    entries: RwLock<HashMap<String, Arc<Entry<V>>>>,
    /// Whether a fetched value is a failure all the same (e.g. a batch of reads that all
    /// failed): shared for [`RETRY_FAILED_AFTER`] like an error, and never shown to a later
    /// fetch as the latest good answer.
    failed: fn(&V) -> bool,
}

impl<V> Default for CycleCache<V> {
    fn default() -> Self {
        CycleCache::failing_when(|_| false)
    }
}

impl<V> CycleCache<V> {
    /// A cache whose values `failed` calls failures (see the field).
    pub(super) fn failing_when(failed: fn(&V) -> bool) -> Self {
        CycleCache {
            entries: RwLock::new(HashMap::new()),
            failed,
        }
    }

    /// The answer for `key` fetched at or after `since`: the one already there, the one being
    /// fetched (waiting for it), or a new `fetch(latest good answer)`. Nothing is locked
    /// across `fetch` but this key's entry.
    pub(super) fn get(
        &self,
        key: &str,
        since: Instant,
        fetch: impl FnOnce(Option<&V>) -> Result<V, KafkaError>,
    ) -> Result<Arc<V>, KafkaError> {
        let known = self.entries.read().get(key).map(Arc::clone);
        let entry = known.unwrap_or_else(|| {
            let mut entries = self.entries.write();
            match entries.get(key) {
                Some(entry) => Arc::clone(entry),
                None => {
                    forget_old(&mut entries, Instant::now());
                    let entry: Arc<Entry<V>> = Arc::default();
                    entries.insert(key.to_owned(), Arc::clone(&entry));
                    entry
                }
            }
        });
        let mut state = entry.state.lock();
        loop {
            // Another poll may have fetched it while this one waited.
            let answer = state
                .latest
                .as_ref()
                .and_then(|fetched| fetched.answers(since, self.failed));
            if let Some(answer) = answer {
                return answer;
            }
            if !state.fetching {
                break;
            }
            entry.fetched.wait(&mut state);
        }
        state.fetching = true;
        let previous = state
            .latest
            .as_ref()
            .and_then(|fetched| fetched.good.clone());
        drop(state);
        let at = Instant::now();
        // The flag is cleared and the waiters woken even if `fetch` panics.
        let fetching = Fetching(&entry);
        let value = fetch(previous.as_deref()).map(Arc::new);
        let good = value
            .as_ref()
            .ok()
            .filter(|value| !(self.failed)(value))
            .cloned()
            .or(previous);
        fetching.0.state.lock().latest = Some(Fetched {
            at,
            value: value.clone(),
            good,
        });
        drop(fetching);
        value
    }

    /// Number of keys held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().len()
    }
}

/// Drops entries last fetched over [`FORGET_AFTER`] ago that nobody is using.
fn forget_old<V>(entries: &mut HashMap<String, Arc<Entry<V>>>, now: Instant) {
    entries.retain(|_, entry| {
        if Arc::strong_count(entry) > 1 {
            return true;
        }
        match entry.state.try_lock() {
            Some(state) => state
                .latest
                .as_ref()
                .is_some_and(|fetched| now.duration_since(fetched.at) < FORGET_AFTER),
            None => true,
        }
    });
}

/// The cycle tick a poll that starts after `after` is scheduled for: the first
/// `origin + k × interval` at least half an interval after `after` (so that two samples are
/// never closer than that).
pub fn next_tick(origin: Instant, interval: Duration, after: Instant) -> Instant {
    let interval_ns = interval.as_nanos().max(1);
    let earliest = after + interval / 2;
    let elapsed = earliest.saturating_duration_since(origin).as_nanos();
    let ticks = elapsed.div_ceil(interval_ns);
    let offset = u64::try_from(ticks * interval_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset)
}

/// The latest tick `origin + k × interval` at or before `now` (`origin` if `now` is before it).
pub fn current_tick(origin: Instant, interval: Duration, now: Instant) -> Instant {
    let interval_ns = interval.as_nanos().max(1);
    let elapsed = now.saturating_duration_since(origin).as_nanos();
    let offset = u64::try_from(elapsed / interval_ns * interval_ns).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::*;

    #[test]
    fn one_fetch_per_cycle_however_many_ask() {
        let cycled = CycleCache::<u32>::default();
        let fetches = AtomicUsize::new(0);
        let cycle = Instant::now();
        thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    let value = cycled.get("orders", cycle, |_| {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(20));
                        Ok(7)
                    });
                    assert_eq!(*value.unwrap(), 7);
                });
            }
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // The next cycle fetches again; another key is its own entry.
        let next = Instant::now();
        assert_eq!(*cycled.get("orders", next, |_| Ok(8)).unwrap(), 8);
        assert_eq!(*cycled.get("payments", next, |_| Ok(9)).unwrap(), 9);
        assert_eq!(cycled.len(), 2);
    }

    #[test]
    fn an_error_is_shared_within_the_cycle_and_retried_in_the_next() {
        let cycled = CycleCache::<u32>::default();
        let cycle = Instant::now();
        let failed = |_: Option<&u32>| {
            Err(KafkaError::UnknownTopic {
                topic: "orders".to_owned(),
            })
        };
        assert!(cycled.get("orders", cycle, failed).is_err());
        let again = cycled.get("orders", cycle, |_| panic!("fetched twice in one cycle"));
        assert!(matches!(again, Err(KafkaError::UnknownTopic { .. })));
        // The next cycle's polls share it too while it is under a second old.
        let next_cycle = cycle + Duration::from_millis(200);
        let again = cycled.get("orders", next_cycle, |_| panic!("retried within a second"));
        assert!(matches!(again, Err(KafkaError::UnknownTopic { .. })));
        let a_second_later = Instant::now() + RETRY_FAILED_AFTER;
        assert_eq!(*cycled.get("orders", a_second_later, |_| Ok(1)).unwrap(), 1);
        // A good answer is not kept past its cycle.
        let after_that = Instant::now() + Duration::from_millis(1);
        assert_eq!(*cycled.get("orders", after_that, |_| Ok(2)).unwrap(), 2);
    }

    #[test]
    fn a_fetch_is_shown_the_latest_good_answer_through_failures() {
        let cycled = CycleCache::<u32>::default();
        // Cycles two seconds apart: a failure is retried in each.
        let base = Instant::now();
        let cycle = |k: u32| base + Duration::from_secs(2) * k;
        let failed = |_: Option<&u32>| {
            Err(KafkaError::ListGroups {
                cause: "down".to_owned(),
            })
        };
        let first = cycled.get("orders", cycle(0), |previous| {
            assert_eq!(previous, None);
            Ok(1)
        });
        assert_eq!(*first.unwrap(), 1);
        assert!(cycled.get("orders", cycle(1), failed).is_err());
        assert!(cycled.get("orders", cycle(2), failed).is_err());
        let next = cycled.get("orders", cycle(3), |previous| {
            assert_eq!(previous, Some(&1));
            Ok(2)
        });
        assert_eq!(*next.unwrap(), 2);
        let after = cycled.get("orders", cycle(4), |previous| {
            assert_eq!(previous, Some(&2));
            Ok(3)
        });
        assert_eq!(*after.unwrap(), 3);
    }

    #[test]
    fn a_value_called_a_failure_is_shared_like_an_error_and_never_shown_as_good() {
        // A batch of reads that all failed (here: 0) is held for a second like an error,
        // and a later fetch is shown the last value that was not one.
        let cycled = CycleCache::<u32>::failing_when(|value| *value == 0);
        let cycle = Instant::now();
        assert_eq!(*cycled.get("batch", cycle, |_| Ok(5)).unwrap(), 5);
        let next = Instant::now();
        assert_eq!(*cycled.get("batch", next, |_| Ok(0)).unwrap(), 0);
        let within_a_second = next + Duration::from_millis(200);
        let again = cycled.get("batch", within_a_second, |_| {
            panic!("retried within a second")
        });
        assert_eq!(*again.unwrap(), 0);
        let later = Instant::now() + RETRY_FAILED_AFTER;
        let shown = cycled.get("batch", later, |previous| {
            assert_eq!(previous, Some(&5));
            Ok(6)
        });
        assert_eq!(*shown.unwrap(), 6);
        // A good value is not held past its cycle.
        let after = Instant::now() + RETRY_FAILED_AFTER + Duration::from_millis(1);
        assert_eq!(*cycled.get("batch", after, |_| Ok(7)).unwrap(), 7);
    }

    #[test]
    fn unused_entries_are_forgotten_after_an_hour() {
        let cycled = CycleCache::<u32>::default();
        let _ = cycled.get("old", Instant::now(), |_| Ok(1));
        let later = Instant::now() + FORGET_AFTER + Duration::from_secs(1);
        forget_old(&mut cycled.entries.write(), later);
        assert_eq!(cycled.len(), 0);
    }

    #[test]
    fn ticks_are_on_the_shared_grid_and_at_least_half_an_interval_away() {
        let origin = Instant::now();
        let interval = Duration::from_secs(5);
        let at = |ms: u64| origin + Duration::from_millis(ms);
        assert_eq!(next_tick(origin, interval, at(0)), at(5_000));
        assert_eq!(next_tick(origin, interval, at(1_000)), at(5_000));
        // 2.6 s before a tick is more than half an interval: that tick.
        assert_eq!(next_tick(origin, interval, at(2_400)), at(5_000));
        // 2.4 s before it is less: the one after.
        assert_eq!(next_tick(origin, interval, at(2_600)), at(10_000));
        // A poll that overran skips the ticks it missed.
        assert_eq!(next_tick(origin, interval, at(17_000)), at(20_000));
        assert_eq!(next_tick(origin, interval, at(18_000)), at(25_000));
        assert_eq!(current_tick(origin, interval, at(18_000)), at(15_000));
        assert_eq!(current_tick(origin, interval, at(20_000)), at(20_000));
    }
}
