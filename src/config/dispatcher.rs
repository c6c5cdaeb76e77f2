//! The Azul dispatcher's Redis (`SCALER_REDIS_*`): where it is, how its URL is parsed, and
//! how it is shown in logs without its password.

use std::fmt;

use super::ConfigError;

/// How to reach the Azul dispatcher's Redis, and how its plugins' groups are named. Its
/// `Debug` leaves the password out.
#[derive(Clone)]
pub struct RedisConfig {
    /// Address, database (2 unless the URL names one) and credentials.
    pub connection: redis::ConnectionInfo,
    /// `SCALER_TOPIC_PREFIX`: a plugin's groups are named `<prefix>-azul-<kafka_prefix>...`.
    pub topic_prefix: String,
}

impl RedisConfig {
    /// The Redis to use, without secrets: scheme, host, port, database and whether a user
    /// and a password are set.
    pub fn describe(&self) -> String {
        describe_connection(&self.connection)
    }
}

/// A Redis connection without secrets: scheme, host, port, database and whether a user and
/// a password are set.
pub fn describe_connection(connection: &redis::ConnectionInfo) -> String {
    let settings = connection.redis_settings();
    let (scheme, host, port) = match connection.addr() {
        redis::ConnectionAddr::Tcp(host, port) => ("redis", host.as_str(), *port),
        redis::ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.as_str(), *port),
        redis::ConnectionAddr::Unix(path) => {
            return format!("unix:{}?db={}", path.display(), settings.db())
        }
        other => return format!("{other}/{}", settings.db()),
    };
    let mut text = format!("{scheme}://{host}:{port}/{}", settings.db());
    if let Some(user) = settings.username() {
        text.push_str(&format!(" user={user}"));
    }
    if settings.password().is_some() {
        text.push_str(" password=(set)");
    }
    text
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("redis", &self.describe())
            .field("topic_prefix", &self.topic_prefix)
            .finish()
    }
}

impl Default for RedisConfig {
    /// Azul's default: `localhost:6379`, database 2, no credentials, no topic prefix.
    fn default() -> Self {
        RedisConfig {
            connection: redis_connection("localhost", 6379),
            topic_prefix: String::new(),
        }
    }
}

/// The database the Azul dispatcher keeps its plugin keys in.
pub const AZUL_REDIS_DB: i64 = 2;

/// Plain Redis at `host:port`, database [`AZUL_REDIS_DB`], no credentials.
pub fn redis_connection(host: &str, port: u16) -> redis::ConnectionInfo {
    use redis::IntoConnectionInfo;
    let info = redis::ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .expect("an address is always connection info");
    let settings = info.redis_settings().clone().set_db(AZUL_REDIS_DB);
    info.set_redis_settings(settings)
}

pub(super) const REDIS_URL_RULE: &str =
    "a Redis URL such as localhost:6379, redis://host:6379/2 or \
     rediss://user:password@host:6380 (the scheme is optional; database 2 unless one is named)";

/// Parses `SCALER_REDIS_URL` as the Azul scaler does (`redis://` added when there is no
/// scheme) and picks database 2 unless the URL names one. Errors quote the URL without its
/// password.
pub(super) fn parse_redis_url(value: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    let trimmed = value.trim();
    let url = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("redis://{trimmed}")
    };
    let refuse = || ConfigError::Invalid {
        name: "SCALER_REDIS_URL",
        value: redact_url(value),
        accepted: REDIS_URL_RULE,
    };
    let parsed = redis::parse_redis_url(&url).ok_or_else(refuse)?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none_or(str::is_empty)
    {
        return Err(refuse());
    }
    let names_db = !parsed.path().trim_matches('/').is_empty();
    let info: redis::ConnectionInfo = url.parse().map_err(|_| refuse())?;
    if names_db {
        return Ok(info);
    }
    let settings = info.redis_settings().clone().set_db(AZUL_REDIS_DB);
    Ok(info.set_redis_settings(settings))
}

/// `url` with the password of its user-info part replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        };
    };
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
