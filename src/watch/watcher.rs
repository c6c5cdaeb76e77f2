//! One watcher: a named OS thread that polls Kafka for one watch and sends each result to
//! the registry's supervisor over a bounded channel.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::kafka::KafkaClient;
use crate::lag::total_lag;
use crate::store::{Reading, Sample};
use crate::trigger::WatchKey;

/// A poll's result, addressed to the watch that made it.
pub struct PollResult {
    /// The watch's slot id.
    pub watch_id: u64,
    /// What the poll found.
    pub reading: Reading,
}

/// Never sent: a watcher stops when its stop channel disconnects.
pub enum Never {}

/// Starts the watcher thread for `key`. It polls at once, then every `interval`, until the
/// sender of `stop` is dropped or the supervisor's channel closes.
pub fn spawn(
    watch_id: u64,
    key: WatchKey,
    client: Arc<KafkaClient>,
    interval: Duration,
    results: Sender<PollResult>,
    stop: Receiver<Never>,
) -> std::io::Result<JoinHandle<()>> {
    let watcher = Watcher {
        watch_id,
        key,
        client,
        interval,
        results,
        stop,
        failing: false,
    };
    thread::Builder::new()
        .name(thread_name(&watcher.key))
        .spawn(move || watcher.run())
}

/// `watch-<group>`; Linux keeps the first 15 bytes of a thread's name.
fn thread_name(key: &WatchKey) -> String {
    format!("watch-{}", key.group)
}

struct Watcher {
    watch_id: u64,
    key: WatchKey,
    client: Arc<KafkaClient>,
    interval: Duration,
    results: Sender<PollResult>,
    stop: Receiver<Never>,
    /// Whether the previous poll failed, so that a failure and a recovery are each logged once.
    failing: bool,
}

impl Watcher {
    fn run(mut self) {
        debug!("watcher started: {}", self.key);
        let mut next_poll = Instant::now();
        loop {
            let reading = self.poll();
            let result = PollResult {
                watch_id: self.watch_id,
                reading,
            };
            // A full channel must not keep the watcher from seeing its stop signal.
            select! {
                send(self.results, result) -> sent => if sent.is_err() { break },
                recv(self.stop) -> _ => break,
            }
            // Fixed rate: the next poll starts one interval after this one started, or at
            // once if this one overran.
            next_poll = (next_poll + self.interval).max(Instant::now());
            match self.stop.recv_deadline(next_poll) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(never) => match never {},
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        debug!("watcher stopped: {}", self.key);
    }

    fn poll(&mut self) -> Reading {
        let started = Instant::now();
        let snapshot = self
            .client
            .snapshot(&self.key.group, self.key.topic.as_deref());
        match snapshot {
            Ok(partitions) => {
                let total_lag = total_lag(&partitions, self.key.offset_reset);
                debug!(
                    "poll {}: lag {} over {} partitions in {:?}",
                    self.key,
                    total_lag,
                    partitions.len(),
                    started.elapsed()
                );
                if self.failing {
                    info!("watch recovered: {}", self.key);
                    self.failing = false;
                }
                Reading::Fresh(Arc::new(Sample {
                    taken_at: started,
                    partitions,
                    total_lag,
                }))
            }
            Err(err) => {
                let cause = err.to_string();
                if !self.failing {
                    warn!("watch failing: {}: {cause}", self.key);
                    self.failing = true;
                } else {
                    debug!("poll {} failed again: {cause}", self.key);
                }
                Reading::Failed(cause.into())
            }
        }
    }
}
