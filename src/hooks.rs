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
    let mut panics = WATCHER_PANICS.lock();
    match panics.iter().position(|queued| queued == group) {
        Some(idx) => {
            panics.remove(idx);
            true
        }
        None => false,
    }
}
