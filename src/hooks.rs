//! Fault injection for tests, compiled only with the `test-hooks` feature (which the
//! integration tests turn on through a dev-dependency on this crate). Release builds have no
//! such code.

use parking_lot::Mutex;

/// Groups whose watcher panics at its next poll, once per entry.
static WATCHER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes the watcher of `group` panic at the start of its next poll.
pub fn panic_watcher_once(group: &str) {
    WATCHER_PANICS.lock().push(group.to_owned());
}

/// Whether the watcher of `group` must panic now (consuming one injected panic).
pub(crate) fn take_watcher_panic(group: &str) -> bool {
    take(&WATCHER_PANICS, group)
}

/// The variable through which a test makes a thread of the real binary panic once: `push`
/// panics at its first sweep (a second after the start), `http` at its first request. (A
/// variable, not a call: every daemon of a process would see it, so only a process of its
/// own may have it.)
pub const PANIC_THREAD_VAR: &str = "LAGSCALER_TEST_PANIC_THREAD";

/// Whether the daemon thread `name` must panic now, as [`PANIC_THREAD_VAR`] asks (once).
pub(crate) fn take_thread_panic(name: &str) -> bool {
    static ASKED: Mutex<Option<Option<String>>> = Mutex::new(None);
    let mut asked = ASKED.lock();
    let pending = asked.get_or_insert_with(|| std::env::var(PANIC_THREAD_VAR).ok());
    if pending.as_deref() == Some(name) {
        *pending = None;
        return true;
    }
    false
}

/// Namespaces whose next stream makes the push thread panic as it takes the stream in.
static PUSH_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes the push thread of whichever daemon gets a stream from a ScaledObject in
/// `namespace` panic as it takes that stream in (once).
pub fn panic_push_on_stream_from(namespace: &str) {
    PUSH_PANICS.lock().push(format!("{namespace}/"));
}

/// Whether the push thread must panic on a stream from `caller` (`namespace/name`).
pub(crate) fn take_push_panic(caller: &str) -> bool {
    let mut queued = PUSH_PANICS.lock();
    match queued
        .iter()
        .position(|prefix| caller.starts_with(prefix.as_str()))
    {
        Some(idx) => {
            queued.remove(idx);
            true
        }
        None => false,
    }
}

/// Groups whose next watcher thread fails to start, once per entry.
static SPAWN_FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes the next start of the watcher thread of `group` fail, as a pids limit makes it.
pub fn fail_watcher_spawn_once(group: &str) {
    SPAWN_FAILURES.lock().push(group.to_owned());
}

/// Whether starting the watcher of `group` must fail now (consuming one injected failure).
pub(crate) fn take_spawn_failure(group: &str) -> bool {
    take(&SPAWN_FAILURES, group)
}

fn take(queue: &Mutex<Vec<String>>, group: &str) -> bool {
    let mut queued = queue.lock();
    match queued.iter().position(|entry| entry == group) {
        Some(idx) => {
            queued.remove(idx);
            true
        }
        None => false,
    }
}

/// Topics whose record reads (the time lag's timestamps) fail while listed.
static FAILING_RECORD_READS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes every record read of `topic` fail (`failing`) or work again.
pub fn fail_record_reads(topic: &str, failing: bool) {
    let mut topics = FAILING_RECORD_READS.lock();
    topics.retain(|listed| listed != topic);
    if failing {
        topics.push(topic.to_owned());
    }
}

/// Whether record reads of `topic` must fail now.
pub(crate) fn record_reads_fail(topic: &str) -> bool {
    FAILING_RECORD_READS
        .lock()
        .iter()
        .any(|listed| listed == topic)
}
