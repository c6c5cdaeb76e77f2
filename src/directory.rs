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
//! One connection is shared by every plugin watcher, behind a lock held only for the Redis
//! round trips of one lookup, each bounded by [`REDIS_TIMEOUT`].

use std::collections::HashMap;
use std::time::Duration;

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
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<redis::Connection>,
    /// Mappings known to this process: the dispatcher's or lagscaler's own remembered one.
    remembered: HashMap<String, String>,
    /// Whether the last Redis round trip failed, so that an outage is logged once.
    down: bool,
}

impl Directory {
    /// A directory over `config`'s Redis. Nothing connects until the first lookup.
    pub fn new(config: RedisConfig) -> Directory {
        Directory {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The topic prefix a plugin's groups start with.
    pub fn topic_prefix(&self) -> &str {
        &self.config.topic_prefix
    }

    /// The `kafka_prefix` of `plugin`: the dispatcher's, else the remembered one, else
    /// [`Lookup::Unknown`]. An error only when Redis cannot be read and this process knows no
    /// mapping for the plugin.
    pub fn lookup(&self, plugin: &str) -> Result<Lookup, String> {
        let mut state = self.state.lock();
        match self.read(&mut state, plugin) {
            Ok(found) => {
                if state.down {
                    info!("Redis {} is reachable again", self.config.describe());
                    state.down = false;
                }
                Ok(found)
            }
            Err(err) => {
                // The connection may be broken half-way through a reply: start afresh.
                state.connection = None;
                let cause = format!("reading Redis {}: {err}", self.config.describe());
                if !state.down {
                    warn!(
                        "{cause}; plugins keep their last known consumer groups until it is back"
                    );
                    state.down = true;
                } else {
                    debug!("{cause}");
                }
                match state.remembered.get(plugin) {
                    Some(prefix) => Ok(Lookup::Remembered(prefix.clone())),
                    None => Err(format!(
                        "{cause}, and plugin {plugin}'s kafka_prefix was never seen"
                    )),
                }
            }
        }
    }

    /// One lookup's Redis round trips. The connection is put back only after they all
    /// succeeded, so a failure always reconnects next time.
    fn read(&self, state: &mut State, plugin: &str) -> redis::RedisResult<Lookup> {
        let mut connection = match state.connection.take() {
            Some(connection) => connection,
            None => {
                let client = redis::Client::open(self.config.connection.clone())?;
                let connection = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
                connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
                connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
                connection
            }
        };
        let found = lookup_on(&mut connection, &mut state.remembered, plugin)?;
        state.connection = Some(connection);
        Ok(found)
    }
}

fn lookup_on(
    connection: &mut redis::Connection,
    remembered: &mut HashMap<String, String>,
    plugin: &str,
) -> redis::RedisResult<Lookup> {
    let value: Option<String> = connection.get(plugin)?;
    if let Some(value) = value {
        match plugin::kafka_prefix_of(&value) {
            Ok(prefix) => {
                if remembered.get(plugin) != Some(&prefix) {
                    let _: () = connection.hset(REMEMBERED_KEY, plugin, &prefix)?;
                    info!("plugin {plugin}: kafka_prefix {prefix} (remembered)");
                    remembered.insert(plugin.to_owned(), prefix.clone());
                }
                return Ok(Lookup::Dispatcher(prefix));
            }
            Err(why) => warn!("plugin {plugin}: {why}; using the remembered mapping"),
        }
    }
    if let Some(prefix) = remembered.get(plugin) {
        return Ok(Lookup::Remembered(prefix.clone()));
    }
    let stored: Option<String> = connection.hget(REMEMBERED_KEY, plugin)?;
    Ok(match stored {
        Some(prefix) => {
            remembered.insert(plugin.to_owned(), prefix.clone());
            Lookup::Remembered(prefix)
        }
        None => Lookup::Unknown,
    })
}
