//! Thread `fleet`: the lease renewal every TTL/10 by Redis's clock, which also reads that
//! clock for the fleet's ticks ([`super::clock`]); the watches asked about here, told to
//! the fleet; and the fleet-wide watch list, read whenever its version changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::clock::Observed;
use super::{scripts, Fleet, REDIS_TIMEOUT};
use crate::trigger::codec;

/// The fleet-wide watch list is read at least this often, and whenever it changed.
const LIST_EVERY: Duration = Duration::from_secs(10);

fn unexpected() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(
        "an unexpected answer to the lease renewal",
    ))
}

/// Thread `fleet`: the lease, the watches asked about, and the fleet-wide watch list.
pub(super) struct Membership {
    fleet: Arc<Fleet>,
    connection: Option<redis::Connection>,
    renew: redis::Script,
    asked: redis::Script,
    list: redis::Script,
    epoch: Option<String>,
    version: Option<String>,
    listed_at: Option<Instant>,
    failing: bool,
    alone: bool,
    /// This replica's random epoch proposal, for a Redis that has none (new or emptied).
    proposal: String,
    undecodable: BTreeSet<String>,
}

impl Membership {
    pub(super) fn new(fleet: Arc<Fleet>) -> Membership {
        let proposal = format!(
            "{}-{}",
            fleet.clock().wall_us(Instant::now()),
            std::process::id()
        );
        Membership {
            fleet,
            connection: None,
            renew: redis::Script::new(scripts::RENEW),
            asked: redis::Script::new(scripts::ASKED),
            list: redis::Script::new(scripts::LIST),
            epoch: None,
            version: None,
            listed_at: None,
            failing: false,
            alone: true,
            proposal,
            undecodable: BTreeSet::new(),
        }
    }

    pub(super) fn run(mut self) {
        let every = self.fleet.settings.member_ttl / 10;
        loop {
            let started = Instant::now();
            if !self.fleet.pause(every.saturating_sub(started.elapsed())) {
                break;
            }
            self.round();
        }
        debug!("fleet stopped");
    }

    pub(super) fn round(&mut self) {
        let started = Instant::now();
        match self.try_round(started) {
            Ok(()) => {
                if self.failing {
                    info!("fleet: renewing the lease works again");
                    self.failing = false;
                }
            }
            Err(err) => {
                self.connection = None;
                self.fleet
                    .stats
                    .renew_failures
                    .fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    warn!(
                        "fleet Redis ({}): {err}; this replica leaves the fleet if that lasts {}",
                        self.fleet.redis.describe(),
                        humantime::format_duration(self.fleet.settings.member_ttl)
                    );
                    self.failing = true;
                }
            }
        }
        let alone = self.fleet.is_alone();
        if alone != self.alone {
            if alone {
                warn!(
                    "fleet: no lease for {}; polling every watch this replica is asked about \
                     itself until the fleet's Redis answers again",
                    humantime::format_duration(self.fleet.settings.member_ttl)
                );
            } else {
                info!(
                    "fleet: member {} of {} ({})",
                    self.fleet.member(),
                    self.fleet.members().len(),
                    self.fleet.members().join(", ")
                );
            }
            self.alone = alone;
            self.fleet.wake_all();
        }
    }

    fn try_round(&mut self, started: Instant) -> redis::RedisResult<()> {
        let fleet = Arc::clone(&self.fleet);
        let connection = match self.connection.as_mut() {
            Some(connection) => connection,
            None => self.connection.insert(fleet.connect(REDIS_TIMEOUT)?),
        };
        let ttl_ms = fleet.settings.member_ttl.as_millis() as u64;
        let watch_ttl_ms = fleet.settings.watch_ttl.as_millis() as u64;
        let sent = Instant::now();
        let reply: Vec<String> = self
            .renew
            .key(fleet.key("members"))
            .key(fleet.key("watches"))
            .key(fleet.key("timelag"))
            .key(fleet.key("version"))
            .key(fleet.key("epoch"))
            .arg(fleet.member())
            .arg(ttl_ms)
            .arg(&self.proposal)
            .arg(watch_ttl_ms)
            .invoke(connection)?;
        let received = Instant::now();
        let [now, epoch, version, members @ ..] = reply.as_slice() else {
            return Err(unexpected());
        };
        // Redis's clock first: the lease counts from here, and the ticks follow it.
        self.follow_redis_clock(sent, received, now.parse().map_err(|_| unexpected())?);
        let mut members = members.to_vec();
        members.sort();
        let changed = {
            let mut state = fleet.state.write();
            state.renewed_at = Some(started);
            let changed = state.members != members;
            state.members = members;
            changed
        };
        if changed {
            debug!("fleet members: {}", fleet.members().join(", "));
            fleet.wake_all();
        }
        if self.epoch.as_deref() != Some(epoch.as_str()) {
            if self.epoch.is_some() {
                warn!("fleet: its Redis lost the fleet's state (restarted or replaced); telling it again");
            }
            self.epoch = Some(epoch.clone());
            self.version = None;
            for asked in fleet.asked.lock().values_mut() {
                asked.told_at = None;
            }
        }
        self.tell_asked(started)?;
        let relist = self.version.as_deref() != Some(version.as_str())
            || self.listed_at.is_none_or(|at| at.elapsed() >= LIST_EVERY);
        if relist {
            self.read_list()?;
            self.version = Some(version.clone());
            self.listed_at = Some(started);
        }
        Ok(())
    }

    /// Moves the fleet's clock to Redis's, read at `redis_ms` in the round trip from `sent`
    /// to `received`: a warning when this host's clock and Redis's differ by a second or
    /// more, or when the difference moved that much (a host's clock stepped, or Redis
    /// failed over to a host whose clock differs).
    fn follow_redis_clock(&self, sent: Instant, received: Instant, redis_ms: u64) {
        if let Observed::Moved { skew_ms, by_ms } =
            self.fleet.time.observe(sent, received, redis_ms)
        {
            let said = if skew_ms >= 0 { "behind" } else { "ahead of" };
            let text = format!(
                "fleet: this host's clock is {:.1} s {said} the fleet Redis's (moved by {by_ms} \
                 ms); the fleet's ticks and sample times follow Redis's clock",
                skew_ms.unsigned_abs() as f64 / 1000.0
            );
            if skew_ms.unsigned_abs() >= 1000 || by_ms.unsigned_abs() >= 1000 {
                warn!("{text}");
            } else {
                debug!("{text}");
            }
        }
    }

    /// Tells the fleet of the watches asked about here: new ones at once, the others at
    /// most every quarter watch TTL; forgets those not asked about for the watch TTL.
    fn tell_asked(&mut self, now: Instant) -> redis::RedisResult<()> {
        let fleet = Arc::clone(&self.fleet);
        let again = (fleet.settings.watch_ttl / 4).max(Duration::from_secs(1));
        let due: Vec<(Arc<str>, bool)> = {
            let mut asked = fleet.asked.lock();
            asked.retain(|_, entry| entry.asked_at.elapsed() < fleet.settings.watch_ttl);
            asked
                .iter()
                .filter(|(_, entry)| {
                    entry.told_at.is_none()
                        || (entry.fresh
                            && entry
                                .told_at
                                .is_some_and(|at| now.duration_since(at) >= again))
                })
                .map(|(key, entry)| (Arc::clone(key), entry.time_lag))
                .collect()
        };
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        for chunk in due.chunks(500) {
            let mut invocation = self.asked.prepare_invoke();
            invocation
                .key(fleet.key("watches"))
                .key(fleet.key("timelag"))
                .key(fleet.key("version"));
            for (key, time_lag) in chunk {
                invocation
                    .arg(&**key)
                    .arg(if *time_lag { "1" } else { "0" });
            }
            let _: i64 = invocation.invoke(connection)?;
            let mut asked = fleet.asked.lock();
            for (key, _) in chunk {
                if let Some(entry) = asked.get_mut(key) {
                    entry.told_at = Some(now);
                    entry.fresh = false;
                }
            }
        }
        Ok(())
    }

    /// Reads the fleet-wide watch list into the state.
    fn read_list(&mut self) -> redis::RedisResult<()> {
        let fleet = Arc::clone(&self.fleet);
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let (watches, time_lag): (Vec<String>, Vec<String>) = self
            .list
            .key(fleet.key("watches"))
            .key(fleet.key("timelag"))
            .arg(fleet.settings.watch_ttl.as_millis() as u64)
            .invoke(connection)?;
        let time_lag: BTreeSet<String> = time_lag.into_iter().collect();
        let mut live = HashMap::with_capacity(watches.len());
        for text in watches {
            match codec::decode(&text, &fleet.clusters) {
                Ok(key) => {
                    let wanted = time_lag.contains(&text);
                    live.insert(Arc::from(text.as_str()), (key, wanted));
                }
                Err(err) => {
                    if self.undecodable.insert(text) {
                        warn!(
                            "fleet: a watch another replica was asked about cannot be read \
                             here ({err}); replicas of one fleet need the same clusters"
                        );
                    }
                }
            }
        }
        fleet.state.write().live = live;
        Ok(())
    }
}
