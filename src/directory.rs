//! The plugin directory: which `kafka_prefix` an Azul plugin has, read from the dispatcher's
//! Redis (database 2, key = the plugin's deployment key) with a blocking client.
//!
//! The dispatcher's key expires 24 h after the plugin last fetched events, so a plugin scaled
//! to zero for a day would lose its groups and never wake again (the Azul scaler's flaw). The
//! last mapping seen is therefore remembered, in memory and in Redis under lagscaler's own hash
//! [`REMEMBERED_KEY`] (no expiry), and used whenever the dispatcher's key is gone. While Redis
//! is unreachable the in-memory mapping is used; the outage is logged once, and the next
//! lookup after it ends reconnects by itself.
//!
//! Lookups never wait on each other: no lock is held across a Redis round trip. Idle
//! connections wait in a small pool; a lookup takes one (or connects) and puts it back only
//! after its round trips succeeded. Every step has a deadline of [`REDIS_TIMEOUT`]: each
//! command through the socket's timeouts, and connecting (DNS, TCP, TLS handshake, AUTH,
//! SELECT), which the Redis client cannot bound by itself, on a short-lived `redis-connect`
//! thread that the lookup stops waiting for. After a failed round trip, lookups answer from
//! memory for [`RETRY_AFTER`] before one of them tries Redis again, so an unreachable Redis
//! costs one deadline per second, not one per plugin watcher.
//!
//! Lagscaler only needs to read: writing the remembered mapping is best effort (a read-only
//! ACL user, as the Azul scaler's, is refused the write), the mapping is kept in memory
//! first, and a refused write is logged once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;
use redis::Commands;

use crate::config::RedisConfig;
use crate::plugin;

/// The hash (field = plugin name, value = `kafka_prefix`) where lagscaler remembers the last
/// mapping of every plugin it watched. It never expires.
pub const REMEMBERED_KEY: &str = "lagscaler:plugin-kafka-prefix";

/// Bound on connecting to Redis and on each command.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// After a failed round trip, lookups answer from memory this long before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Idle connections kept for later lookups.
const POOL_SIZE: usize = 4;

/// Connection attempts past their deadline that may still hang (a TLS handshake the server
/// never finishes has no timeout of its own) before no new attempt is started.
const MAX_HANGING_CONNECTS: usize = 4;

/// Where a plugin's `kafka_prefix` came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The dispatcher's key.
    Dispatcher(String),
    /// A mapping remembered after the dispatcher's key expired or while Redis is down.
    Remembered(String),
    /// Neither the dispatcher nor lagscaler ever knew the plugin.
    Unknown,
}

impl Lookup {
    /// The `kafka_prefix`, if known.
    pub fn kafka_prefix(&self) -> Option<&str> {
        match self {
            Lookup::Dispatcher(prefix) | Lookup::Remembered(prefix) => Some(prefix),
            Lookup::Unknown => None,
        }
    }
}

/// The dispatcher's Redis, with lagscaler's memory of plugin mappings.
pub struct Directory {
    config: RedisConfig,
    /// Idle connections, each last used by a lookup whose round trips all succeeded.
    pool: Mutex<Vec<redis::Connection>>,
    memory: Mutex<Memory>,
    /// Connection attempts that missed their deadline and may still be running.
    hanging: Mutex<Vec<JoinHandle<()>>>,
    /// Set while one lookup tries a Redis that failed: the others answer from memory.
    probing: AtomicBool,
}

#[derive(Default)]
struct Memory {
    /// Mappings known to this process: the dispatcher's or lagscaler's own remembered one.
    remembered: HashMap<String, String>,
    /// Since when Redis failed, and when to try again; `None` while it answers.
    down: Option<Instant>,
    /// Whether writing the remembered mapping was refused, so that it is logged once.
    write_refused: bool,
}

impl Directory {
    /// A directory over `config`'s Redis. Nothing connects until the first lookup.
    pub fn new(config: RedisConfig) -> Directory {
        Directory {
            config,
            pool: Mutex::new(Vec::new()),
            memory: Mutex::new(Memory::default()),
            hanging: Mutex::new(Vec::new()),
            probing: AtomicBool::new(false),
        }
    }

    /// The topic prefix a plugin's groups start with.
    pub fn topic_prefix(&self) -> &str {
        &self.config.topic_prefix
    }

    /// The `kafka_prefix` of `plugin`: the dispatcher's, else the remembered one, else
    /// [`Lookup::Unknown`]. An error only when Redis cannot be read and this process knows no
    /// mapping for the plugin. Takes at most about two [`REDIS_TIMEOUT`]s (connecting, then
    /// the commands), however many lookups run at once.
    pub fn lookup(&self, plugin: &str) -> Result<Lookup, String> {
        let retry_at = self.memory.lock().down.map(|since| since + RETRY_AFTER);
        // While Redis is down, one lookup a second tries it; the others answer from memory.
        let probe = match retry_at {
            None => None,
            Some(at) if Instant::now() >= at && self.start_probe() => Some(Probe(&self.probing)),
            Some(_) => {
                return self.remembered_or(
                    plugin,
                    format!(
                        "reading Redis {}: it failed within the last {}",
                        self.config.describe(),
                        humantime::format_duration(RETRY_AFTER)
                    ),
                )
            }
        };
        let result = self.read(plugin).map_err(|err| {
            let cause = format!("reading Redis {}: {err}", self.config.describe());
            let mut memory = self.memory.lock();
            if memory.down.is_none() {
                warn!("{cause}; plugins keep their last known consumer groups until it is back");
            } else {
                debug!("{cause}");
            }
            memory.down = Some(Instant::now());
            cause
        });
        drop(probe);
        match result {
            Ok(found) => {
                let mut memory = self.memory.lock();
                if memory.down.take().is_some() {
                    info!("Redis {} is reachable again", self.config.describe());
                }
                Ok(found)
            }
            Err(cause) => self.remembered_or(plugin, cause),
        }
    }

    /// Whether this lookup is the one to try Redis again (no other is trying).
    fn start_probe(&self) -> bool {
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The remembered mapping of `plugin`, or `cause` when there is none.
    fn remembered_or(&self, plugin: &str, cause: String) -> Result<Lookup, String> {
        match self.memory.lock().remembered.get(plugin) {
            Some(prefix) => Ok(Lookup::Remembered(prefix.clone())),
            None => Err(format!(
                "{cause}, and plugin {plugin}'s kafka_prefix was never seen"
            )),
        }
    }

    /// One lookup's Redis round trips on a pooled or new connection, put back only after
    /// they all succeeded, so that a failure always reconnects next time.
    fn read(&self, plugin: &str) -> redis::RedisResult<Lookup> {
        let pooled = self.pool.lock().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let (found, reusable) = self.lookup_on(&mut connection, plugin)?;
        let mut pool = self.pool.lock();
        if reusable && pool.len() < POOL_SIZE {
            pool.push(connection);
        }
        Ok(found)
    }

    /// A new connection with command timeouts, within [`REDIS_TIMEOUT`] from DNS to the
    /// last setup command. The attempt runs on a `redis-connect` thread; one that misses the
    /// deadline is left to finish on its own (and joined later).
    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let mut hanging = self.hanging.lock();
        let (finished, running): (Vec<_>, Vec<_>) =
            hanging.drain(..).partition(|thread| thread.is_finished());
        *hanging = running;
        drop(hanging);
        for thread in finished {
            let _ = thread.join();
        }
        if self.hanging.lock().len() >= MAX_HANGING_CONNECTS {
            return Err(timed_out(format!(
                "{MAX_HANGING_CONNECTS} earlier connection attempts still hang; not starting \
                 another"
            )));
        }
        let info = self.config.connection.clone();
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let thread = thread::Builder::new()
            .name("redis-connect".to_owned())
            .spawn(move || {
                let connected = redis::Client::open(info).and_then(|client| {
                    let connection = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
                    connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
                    connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
                    Ok(connection)
                });
                // The lookup may have stopped waiting; then the connection is dropped.
                let _ = sender.send(connected);
            })
            .map_err(|err| redis::RedisError::from(std::io::Error::other(err)))?;
        match receiver.recv_timeout(REDIS_TIMEOUT) {
            Ok(connected) => {
                let _ = thread.join();
                connected
            }
            Err(_) => {
                self.hanging.lock().push(thread);
                Err(timed_out(format!(
                    "no connection within {} (name lookup, TCP connect or TLS handshake)",
                    humantime::format_duration(REDIS_TIMEOUT)
                )))
            }
        }
    }

    /// The lookup, and whether the connection may be used again.
    fn lookup_on(
        &self,
        connection: &mut redis::Connection,
        plugin: &str,
    ) -> redis::RedisResult<(Lookup, bool)> {
        let value: Option<String> = connection.get(plugin)?;
        if let Some(value) = value {
            match plugin::kafka_prefix_of(&value) {
                Ok(prefix) => {
                    let known = self.memory.lock().remembered.get(plugin) == Some(&prefix);
                    let reusable = known || self.remember(connection, plugin, &prefix);
                    return Ok((Lookup::Dispatcher(prefix), reusable));
                }
                Err(why) => warn!("plugin {plugin}: {why}; using the remembered mapping"),
            }
        }
        if let Some(prefix) = self.memory.lock().remembered.get(plugin) {
            return Ok((Lookup::Remembered(prefix.clone()), true));
        }
        let stored: Option<String> = connection.hget(REMEMBERED_KEY, plugin)?;
        let found = match stored {
            Some(prefix) => {
                self.memory
                    .lock()
                    .remembered
                    .insert(plugin.to_owned(), prefix.clone());
                Lookup::Remembered(prefix)
            }
            None => Lookup::Unknown,
        };
        Ok((found, true))
    }

    /// Keeps `plugin`'s mapping in memory, then in Redis for a restarted lagscaler, best
    /// effort: a refused write (a read-only user) is logged once and changes nothing else.
    /// Whether the connection may be used again (not after an IO error: a reply may be
    /// pending on it).
    fn remember(&self, connection: &mut redis::Connection, plugin: &str, prefix: &str) -> bool {
        self.memory
            .lock()
            .remembered
            .insert(plugin.to_owned(), prefix.to_owned());
        info!("plugin {plugin}: kafka_prefix {prefix} (remembered)");
        let written: redis::RedisResult<()> = connection.hset(REMEMBERED_KEY, plugin, prefix);
        match written {
            Ok(()) => true,
            Err(err) => {
                let mut memory = self.memory.lock();
                if !memory.write_refused {
                    warn!(
                        "cannot write {REMEMBERED_KEY} to Redis {} ({err}): plugin mappings \
                         are remembered in memory only, and a restarted lagscaler forgets \
                         those the dispatcher no longer has",
                        self.config.describe()
                    );
                    memory.write_refused = true;
                } else {
                    debug!("writing {REMEMBERED_KEY} for plugin {plugin}: {err}");
                }
                !err.is_io_error() && !err.is_unrecoverable_error()
            }
        }
    }
}

/// The right to try a Redis that failed, given back when dropped.
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn timed_out(detail: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, detail))
}
