//! One watcher: a named OS thread that polls Kafka for one watch and sends each result to
//! the registry's supervisor over a bounded channel.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::estimate::{Estimate, Eta, NotDraining, Window};
use crate::kafka::KafkaClient;
use crate::lag::PartitionOffsets;
use crate::store::Reading;
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
/// sender of `stop` is dropped or the supervisor's channel closes. Rates are estimated over
/// `rate_window`.
pub fn spawn(
    watch_id: u64,
    key: WatchKey,
    client: Arc<KafkaClient>,
    (interval, rate_window): (Duration, Duration),
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
        window: Window::new(rate_window),
        failing: false,
        members_failing: false,
        not_draining: None,
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
    /// The estimator's memory of this watch's samples.
    window: Window,
    /// Whether the previous poll failed, so that a failure and a recovery are each logged once.
    failing: bool,
    /// Whether describing the group failed last time, likewise.
    members_failing: bool,
    /// Why the lag was not draining at the previous sample, to log changes only.
    not_draining: Option<NotDraining>,
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
        #[cfg(feature = "test-hooks")]
        if crate::hooks::take_watcher_panic(&self.key.group) {
            panic!("panic injected by a test into the watcher of {}", self.key);
        }
        let started = Instant::now();
        match self.read() {
            Ok((offsets, members)) => {
                let estimate = self
                    .window
                    .record(started, offsets, members, self.key.lag_rule);
                debug!(
                    "poll {}: lag {} over {} partitions, rates {:?}, members {:?}, in {:?}",
                    self.key,
                    estimate.total_lag,
                    estimate.partitions.len(),
                    estimate.rates,
                    estimate.members,
                    started.elapsed()
                );
                if self.failing {
                    info!("watch recovered: {}", self.key);
                    self.failing = false;
                }
                self.log_drain_change(&estimate);
                Reading::Fresh(Arc::new(estimate))
            }
            Err(cause) => {
                self.window.record_failure(started);
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

    /// One sample's offsets (only the partitions the watch covers) and the group's active
    /// members, `None` when the group could not be described (only the replica target
    /// needs them, so that is not a failed poll).
    fn read(&mut self) -> Result<(Vec<PartitionOffsets>, Option<usize>), String> {
        let mut offsets = self
            .client
            .snapshot(&self.key.group, self.key.topic.as_deref())
            .map_err(|err| err.to_string())?;
        if let Some(set) = &self.key.partitions {
            let n_partitions = offsets.len();
            offsets.retain(|offsets| set.contains(offsets.partition));
            if offsets.is_empty() {
                return Err(format!(
                    "partitionLimitation {set} matches none of the {n_partitions} partitions \
                     of topic {}",
                    self.key.topic.as_deref().unwrap_or("*")
                ));
            }
        }
        let members = match self.client.group_members(&self.key.group) {
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
        };
        Ok((offsets, members))
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
