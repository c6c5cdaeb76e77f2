//! Fleet mode (`SCALER_FLEET_*`): several replicas sharing the polling and the history
//! through one Redis. Off unless `SCALER_FLEET_REDIS_URL` is set.

use std::fmt;
use std::time::Duration;

use super::dispatcher::{describe_connection, redact_url};
use super::kafka::secret;
use super::{invalid, parse_duration, ConfigError, Vars};

/// Where the fleet's Redis is.
#[derive(Clone)]
pub enum FleetRedis {
    /// One server (database 0 unless the URL names one).
    Direct(redis::ConnectionInfo),
    /// The master Redis Sentinel names: asked of the sentinels at each connection, so that
    /// a failover is followed.
    Sentinel {
        /// The sentinels' addresses.
        sentinels: Vec<(String, u16)>,
        /// The master's name in the sentinels' configuration.
        master: String,
        /// Database, user and password on the master.
        settings: redis::RedisConnectionInfo,
    },
}

/// How this replica joins its fleet. Its `Debug` leaves the Redis password out.
#[derive(Clone)]
pub struct FleetConfig {
    /// The fleet's Redis.
    pub redis: FleetRedis,
    /// `SCALER_FLEET_NAME`: the fleet's keys are `lagscaler:fleet:<name>:...`, so fleets
    /// (say, staging and production) can share one Redis.
    pub name: String,
    /// `SCALER_FLEET_MEMBER`: this replica's name in the fleet; `None` for
    /// `<host name>:<gRPC port>` (a pod's name in Kubernetes), chosen at start.
    pub member: Option<String>,
    /// `SCALER_FLEET_MEMBER_TTL`: a replica that has not renewed its membership for this
    /// long is out of the fleet, and its watches move to the others.
    pub member_ttl: Duration,
}

impl FleetRedis {
    /// Where it is, without secrets.
    pub fn describe(&self) -> String {
        match self {
            FleetRedis::Direct(connection) => describe_connection(connection),
            FleetRedis::Sentinel {
                sentinels,
                master,
                settings,
            } => {
                let hosts: Vec<String> = sentinels
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect();
                let mut text = format!(
                    "redis+sentinel://{}/{master}/{}",
                    hosts.join(","),
                    settings.db()
                );
                if let Some(user) = settings.username() {
                    text.push_str(&format!(" user={user}"));
                }
                if settings.password().is_some() {
                    text.push_str(" password=(set)");
                }
                text
            }
        }
    }
}

impl FleetConfig {
    /// The Redis, without secrets.
    pub fn describe(&self) -> String {
        self.redis.describe()
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis", &self.describe())
            .field("name", &self.name)
            .field("member", &self.member)
            .field("member_ttl", &self.member_ttl)
            .finish()
    }
}

pub(super) const FLEET_URL_RULE: &str =
    "a Redis URL such as redis://host:6379 or rediss://user:password@host:6380/1 \
     (database 0 unless one is named), or Redis Sentinel's \
     redis+sentinel://[user:password@]host:26379[,host:26379...]/<master name>[/<db>]";

const NAME_RULE: &str = "1 to 64 letters, digits, '.', '_' or '-'";

/// `SCALER_FLEET_MEMBER_TTL` when unset.
pub const DEFAULT_MEMBER_TTL: Duration = Duration::from_secs(10);

/// Whether `text` is a fleet or member name: 1 to 64 of letters, digits, `.`, `_`, `-`
/// (and `:` for a member, as in the default `<host>:<port>`).
pub fn is_fleet_name(text: &str, colon: bool) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|ch| {
            ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-') || (colon && ch == ':')
        })
}

/// The fleet settings, `None` when `SCALER_FLEET_REDIS_URL` is unset; the other
/// `SCALER_FLEET_*` settings without it are refused, since they would do nothing.
pub(super) fn parse_fleet(vars: &Vars) -> Result<Option<FleetConfig>, ConfigError> {
    let Some(url) = vars.set("SCALER_FLEET_REDIS_URL") else {
        for name in [
            "SCALER_FLEET_NAME",
            "SCALER_FLEET_MEMBER",
            "SCALER_FLEET_MEMBER_TTL",
            "SCALER_FLEET_REDIS_PASSWORD_FILE",
        ] {
            if let Some(value) = vars.set(name) {
                return Err(ConfigError::Invalid {
                    name: "SCALER_FLEET_REDIS_URL",
                    value: String::new(),
                    accepted: only_with(name, value),
                });
            }
        }
        return Ok(None);
    };
    let refuse = || ConfigError::Invalid {
        name: "SCALER_FLEET_REDIS_URL",
        value: redact_url(url),
        accepted: FLEET_URL_RULE,
    };
    let password = secret(vars, "", "SCALER_FLEET_REDIS_PASSWORD_FILE")?;
    let redis = match url.strip_prefix("redis+sentinel://") {
        Some(rest) => parse_sentinel(rest, password).ok_or_else(refuse)?,
        None => {
            let parsed = redis::parse_redis_url(url).ok_or_else(refuse)?;
            if !matches!(parsed.scheme(), "redis" | "rediss")
                || parsed.host_str().is_none_or(str::is_empty)
            {
                return Err(refuse());
            }
            let mut connection: redis::ConnectionInfo = url.parse().map_err(|_| refuse())?;
            if let Some(password) = password {
                let settings = connection.redis_settings().clone().set_password(password);
                connection = connection.set_redis_settings(settings);
            }
            FleetRedis::Direct(connection)
        }
    };
    let name = match vars.set("SCALER_FLEET_NAME") {
        None => "lagscaler".to_owned(),
        Some(name) if is_fleet_name(name, false) => name.to_owned(),
        Some(name) => return Err(invalid("SCALER_FLEET_NAME", name, NAME_RULE)),
    };
    let member = match vars.set("SCALER_FLEET_MEMBER") {
        None => None,
        Some(member) if is_fleet_name(member, true) => Some(member.to_owned()),
        Some(member) => {
            return Err(invalid(
                "SCALER_FLEET_MEMBER",
                member,
                "1 to 64 letters, digits, '.', '_', '-' or ':', unique in the fleet",
            ))
        }
    };
    let member_ttl = match vars.get("SCALER_FLEET_MEMBER_TTL") {
        None => DEFAULT_MEMBER_TTL,
        Some(value) => parse_duration(
            "SCALER_FLEET_MEMBER_TTL",
            value,
            Duration::from_secs(3),
            Duration::from_secs(300),
            "a duration from 3s to 5m, e.g. 10s",
        )?,
    };
    Ok(Some(FleetConfig {
        redis,
        name,
        member,
        member_ttl,
    }))
}

/// The rule a fleet setting given without `SCALER_FLEET_REDIS_URL` breaks.
fn only_with(name: &str, _value: &str) -> &'static str {
    match name {
        "SCALER_FLEET_NAME" => "a Redis URL when SCALER_FLEET_NAME is set (fleet mode)",
        "SCALER_FLEET_MEMBER" => "a Redis URL when SCALER_FLEET_MEMBER is set (fleet mode)",
        "SCALER_FLEET_MEMBER_TTL" => "a Redis URL when SCALER_FLEET_MEMBER_TTL is set (fleet mode)",
        _ => "a Redis URL when SCALER_FLEET_REDIS_PASSWORD_FILE is set (fleet mode)",
    }
}

/// `[user:password@]host:port[,host:port...]/<master>[/<db>]` after `redis+sentinel://`;
/// a port defaults to 26379. `password` (from a file) overrides one in the URL.
fn parse_sentinel(rest: &str, password: Option<String>) -> Option<FleetRedis> {
    let (user_info, rest) = match rest.rsplit_once('@') {
        Some((user_info, rest)) => (Some(user_info), rest),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/')?;
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().ok().filter(|p| *p > 0)?),
            None => (host, 26379),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() || name.contains(['/', '@', ' ']) {
            return None;
        }
        sentinels.push((name.to_owned(), port));
    }
    let mut parts = path.trim_end_matches('/').split('/');
    let master = parts.next().filter(|m| is_fleet_name(m, false))?.to_owned();
    let db = match parts.next() {
        None => 0,
        Some(db) => db.parse::<i64>().ok().filter(|db| *db >= 0)?,
    };
    if parts.next().is_some() {
        return None;
    }
    let mut settings = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(user_info) = user_info {
        let (user, url_password) = match user_info.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (user_info, None),
        };
        if !user.is_empty() {
            settings = settings.set_username(user);
        }
        if let Some(url_password) = url_password.filter(|p| !p.is_empty()) {
            settings = settings.set_password(url_password);
        }
    }
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    Some(FleetRedis::Sentinel {
        sentinels,
        master,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn fleet(pairs: &[(&str, &str)]) -> Result<Option<FleetConfig>, ConfigError> {
        let vars: Vec<(OsString, OsString)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        super::super::Config::from_vars(vars).map(|config| config.fleet)
    }

    #[test]
    fn fleet_mode_is_off_without_a_url_and_its_other_settings_need_one() {
        assert!(fleet(&[]).unwrap().is_none());
        let err = fleet(&[("SCALER_FLEET_NAME", "prod")]).unwrap_err();
        assert!(err.to_string().contains("SCALER_FLEET_REDIS_URL"), "{err}");
        assert!(err.to_string().contains("SCALER_FLEET_NAME"), "{err}");
    }

    #[test]
    fn direct_and_sentinel_urls_are_read_and_described_without_the_password() {
        let config = fleet(&[
            ("SCALER_FLEET_REDIS_URL", "redis://u:s3cret@r:6380/4"),
            ("SCALER_FLEET_MEMBER", "pod-a:8090"),
            ("SCALER_FLEET_MEMBER_TTL", "20s"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.describe(), "redis://r:6380/4 user=u password=(set)");
        assert_eq!(config.name, "lagscaler");
        assert_eq!(config.member.as_deref(), Some("pod-a:8090"));
        assert_eq!(config.member_ttl, Duration::from_secs(20));
        let sentinel = fleet(&[(
            "SCALER_FLEET_REDIS_URL",
            "redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/2",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(
            sentinel.describe(),
            "redis+sentinel://s1:26380,s2:26379,::1:26381/mymaster/2 password=(set)"
        );
        assert!(!format!("{sentinel:?}").contains("pw"));
    }

    #[test]
    fn bad_fleet_settings_are_refused_naming_the_setting_and_not_the_password() {
        for (name, value) in [
            ("SCALER_FLEET_REDIS_URL", "http://u:s3cret@r:1"),
            (
                "SCALER_FLEET_REDIS_URL",
                "redis+sentinel://u:s3cret@s1:26379",
            ),
            ("SCALER_FLEET_REDIS_URL", "redis+sentinel://u:s3cret@s1:0/m"),
            ("SCALER_FLEET_REDIS_URL", "redis+sentinel://u:s3cret@s1/m/x"),
        ] {
            let err = fleet(&[(name, value)]).unwrap_err().to_string();
            assert!(
                err.contains(name) && !err.contains("s3cret"),
                "{value}: {err}"
            );
        }
        let url = ("SCALER_FLEET_REDIS_URL", "redis://r");
        for (name, value) in [
            ("SCALER_FLEET_NAME", "a b"),
            ("SCALER_FLEET_MEMBER", "x/y"),
            ("SCALER_FLEET_MEMBER_TTL", "1s"),
        ] {
            let err = fleet(&[url, (name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
