//! Settings, read once from the environment into a validated [`Config`].
//!
//! Every setting is listed in [`SETTINGS`], which is also what `lagscaler --help` prints, so
//! the help text and the parser cannot drift apart. Names are matched case-insensitively, as
//! the Azul scaler (pydantic settings) does, so an Azul deployment's variables keep working.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::spelling::{self, BoolSpelling};

mod clusters;
mod dispatcher;
mod fleet;
mod kafka;
mod settings;
mod tls;

pub use clusters::ClusterSet;
pub use dispatcher::{
    describe_connection, redact_url, redis_connection, RedisConfig, AZUL_REDIS_DB,
};
pub use fleet::{is_fleet_name, FleetConfig, FleetRedis, DEFAULT_MEMBER_TTL};
pub(crate) use kafka::parse_bootstrap;
pub use kafka::{
    CommitSource, KafkaConfig, KafkaSasl, KafkaTls, KerberosLogin, SaslMechanism, Secret,
};
pub use settings::{help_text, Setting, SETTINGS};
pub use tls::TlsConfig;

use clusters::read_clusters;
use dispatcher::parse_redis_url;
use kafka::{check_plain_password, parse_kafka_sasl, parse_kafka_tls, secret};
use tls::parse_tls;

/// The validated settings of one daemon.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address and port the gRPC server binds; port 0 takes a free port (tests).
    pub listen: SocketAddr,
    /// gRPC over TLS, or plaintext when `None`.
    pub tls: Option<TlsConfig>,
    /// Each gRPC connection is closed (GOAWAY) after this long; `None` is never.
    pub max_connection_age: Option<Duration>,
    /// Where the HTTP listener binds; `None` is off.
    pub http: Option<SocketAddr>,
    /// The default Kafka cluster.
    pub kafka: KafkaConfig,
    /// More clusters by name, from `SCALER_KAFKA_CLUSTERS_FILE`.
    pub clusters: BTreeMap<String, KafkaConfig>,
    /// Time between the starts of two polls of one watch.
    pub poll_interval: Duration,
    /// Rates are estimated over this much of each watch's latest samples.
    pub rate_window: Duration,
    /// While polls fail, the last good sample is served until it is this old.
    pub stale_after: Duration,
    /// A watch not asked about for this long is stopped.
    pub watch_ttl: Duration,
    /// Most watches at once.
    pub max_watches: usize,
    /// The Azul dispatcher's Redis, read for plugin triggers only.
    pub redis: RedisConfig,
    /// Fleet mode: the Redis the replicas share, `None` to run alone.
    pub fleet: Option<FleetConfig>,
    /// Whether `SCALER_DEBUG` asked for debug logging.
    pub debug: bool,
    /// Variables with the `SCALER_` prefix that no setting reads, to warn about at start.
    pub unknown_vars: Vec<String>,
}

/// A setting that cannot be used, named with what it accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable's value does not parse or is out of range.
    #[error("{name}={value:?} is not valid: expected {accepted}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// The value given.
        value: String,
        /// What the variable accepts.
        accepted: &'static str,
    },
    /// A variable's value is not UTF-8.
    #[error("{name} is not valid UTF-8")]
    NotUtf8 {
        /// The variable, as spelled in the environment.
        name: String,
    },
    /// The same setting is given twice with different spellings and values.
    #[error("{name} is set twice with different values (names are case-insensitive)")]
    Ambiguous {
        /// The setting.
        name: &'static str,
    },
    /// The clusters file cannot be read or is wrong.
    #[error("SCALER_KAFKA_CLUSTERS_FILE={path:?}: {cause}")]
    ClustersFile {
        /// The path given.
        path: String,
        /// What is wrong, naming the cluster and key.
        cause: String,
    },
    /// A secret is given both directly and as a file.
    #[error("{name} and {file_name} are both set: give the secret one way")]
    SecretTwice {
        /// The direct setting.
        name: &'static str,
        /// The file setting.
        file_name: &'static str,
    },
    /// A secret file cannot be read (the error never holds its content).
    #[error("{file_name}={path:?}: cannot read the secret file: {cause}")]
    SecretFile {
        /// The file setting.
        file_name: &'static str,
        /// The path given.
        path: String,
        /// Why.
        cause: String,
    },
}

/// Every GSSAPI cluster logs in as one principal: librdkafka's kinit fills the process's
/// one credential cache, which every client's GSSAPI then reads, so a second principal
/// would take the first one's place.
fn check_one_kerberos_principal(path: &str, config: &Config) -> Result<(), ConfigError> {
    let principals: BTreeSet<&str> = std::iter::once(&config.kafka)
        .chain(config.clusters.values())
        .filter_map(|cluster| cluster.sasl.as_ref())
        .filter(|sasl| sasl.mechanism == SaslMechanism::Gssapi)
        .map(|sasl| sasl.username.as_str())
        .collect();
    if principals.len() > 1 {
        return Err(ConfigError::ClustersFile {
            path: path.to_owned(),
            cause: format!(
                "clusters log in with GSSAPI as {} principals ({}); lagscaler supports one \
                 Kerberos principal per process (librdkafka's kinit fills one credential \
                 cache): use the same principal and keytab for every cluster, or run one \
                 lagscaler per principal",
                principals.len(),
                principals.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}

/// A GSSAPI login needs Cyrus SASL's GSSAPI plugin besides kinit (which parsing checks):
/// without it every broker connection fails, so the settings are refused instead.
fn check_gssapi_plugin(config: &Config) -> Result<(), ConfigError> {
    let gssapi = std::iter::once(&config.kafka)
        .chain(config.clusters.values())
        .filter_map(|cluster| cluster.sasl.as_ref())
        .any(|sasl| sasl.mechanism == SaslMechanism::Gssapi);
    if !gssapi {
        return Ok(());
    }
    let found = crate::kafka::sasl_plugins::cyrus_mechanisms()
        .is_ok_and(|names| names.iter().any(|name| name == "GSSAPI"));
    if found {
        return Ok(());
    }
    Err(invalid(
        "SCALER_KAFKA_SASL",
        "gssapi",
        "a mechanism whose parts are installed: gssapi needs Cyrus SASL's GSSAPI plugin \
         (libgssapiv2.so, Debian's libsasl2-modules-gssapi-mit), which Cyrus SASL did not \
         find in its plugin directory (SASL_PATH if set, else its built-in one)",
    ))
}

/// `SCALER_POLL_INTERVAL` when unset.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// `SCALER_KAFKA_TIMEOUT` when unset.
const DEFAULT_KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a cluster's commit reader runs with no poll using it: 3 poll intervals, at
/// least 10 s. Then it stops (its consumer and thread), and the next poll of the cluster
/// starts a new one. In a fleet, a replica reads a cluster it does not own only for a
/// watch's first answer, and a cluster that moved to another replica is not read any more:
/// their readers would otherwise fetch from `__consumer_offsets` on every replica.
fn commit_reader_idle(poll_interval: Duration) -> Duration {
    (3 * poll_interval).max(Duration::from_secs(10))
}

/// `SCALER_STALE_AFTER` when unset: three missed polls, plus the time the last poll may
/// legitimately take.
fn default_stale_after(poll_interval: Duration, kafka_timeout: Duration) -> Duration {
    3 * poll_interval + kafka_timeout
}

impl Default for Config {
    /// The documented defaults, with no variable set.
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 8090),
            tls: None,
            max_connection_age: None,
            http: None,
            clusters: BTreeMap::new(),
            kafka: KafkaConfig {
                bootstrap_servers: vec!["localhost:9092".to_owned()],
                request_timeout: DEFAULT_KAFKA_TIMEOUT,
                stats_interval: None,
                sasl: None,
                tls: None,
                commit_source: CommitSource::Auto,
                commit_reader_idle: commit_reader_idle(DEFAULT_POLL_INTERVAL),
            },
            poll_interval: DEFAULT_POLL_INTERVAL,
            rate_window: Duration::from_secs(300),
            stale_after: default_stale_after(DEFAULT_POLL_INTERVAL, DEFAULT_KAFKA_TIMEOUT),
            watch_ttl: Duration::from_secs(600),
            max_watches: 10_000,
            redis: RedisConfig::default(),
            fleet: None,
            debug: false,
            unknown_vars: Vec::new(),
        }
    }
}

impl Config {
    /// Reads the process environment, and checks that this machine has the parts the
    /// settings need that only it can tell: Cyrus SASL's GSSAPI plugin for a GSSAPI login
    /// (which `SASL_PATH` in the same environment may move). Call it before any Kafka
    /// client is created (see `kafka::sasl_plugins`).
    pub fn from_env() -> Result<Config, ConfigError> {
        let config = Config::from_vars(std::env::vars_os())?;
        check_gssapi_plugin(&config)?;
        Ok(config)
    }

    /// Reads settings from `(name, value)` pairs, as `std::env::vars_os` yields them.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let vars = Vars::collect(vars)?;
        let mut config = Config::default();
        if let Some(value) = vars.get("SCALER_PORT") {
            let port = value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| invalid("SCALER_PORT", value, "an integer from 1 to 65535"))?;
            config.listen.set_port(port);
        }
        if let Some(value) = vars.get("SCALER_LISTEN_ADDR") {
            let ip = value.trim().parse::<IpAddr>().map_err(|_| {
                invalid(
                    "SCALER_LISTEN_ADDR",
                    value,
                    "an IPv4 or IPv6 address such as 0.0.0.0, :: or 127.0.0.1",
                )
            })?;
            config.listen.set_ip(ip);
        }
        if let Some(value) = vars.get("SCALER_GRPC_MAX_CONNECTION_AGE") {
            let age = parse_duration(
                "SCALER_GRPC_MAX_CONNECTION_AGE",
                value,
                Duration::ZERO,
                Duration::from_secs(24 * 3600),
                "a duration from 1s to 24h, or 0s for never",
            )?;
            if !age.is_zero() && age < Duration::from_secs(1) {
                return Err(invalid(
                    "SCALER_GRPC_MAX_CONNECTION_AGE",
                    value,
                    "a duration from 1s to 24h, or 0s for never",
                ));
            }
            config.max_connection_age = (!age.is_zero()).then_some(age);
        }
        if let Some(value) = vars.get("SCALER_KAFKA_BOOTSTRAP_SERVERS") {
            config.kafka.bootstrap_servers = parse_bootstrap(value)
                .ok_or_else(|| invalid("SCALER_KAFKA_BOOTSTRAP_SERVERS", value, BOOTSTRAP_RULE))?;
        }
        if let Some(value) = vars.get("SCALER_POLL_INTERVAL") {
            config.poll_interval = parse_duration(
                "SCALER_POLL_INTERVAL",
                value,
                Duration::from_millis(100),
                Duration::from_secs(3600),
                "a duration from 100ms to 1h, e.g. 5s",
            )?;
        }
        if let Some(value) = vars.get("SCALER_RATE_WINDOW") {
            config.rate_window = parse_duration(
                "SCALER_RATE_WINDOW",
                value,
                Duration::from_millis(200),
                Duration::from_secs(3600),
                RATE_WINDOW_RULE,
            )?;
        }
        // Checked once both are known: a window shorter than two polls never holds two
        // samples, so rates would never be known.
        if config.rate_window < 2 * config.poll_interval {
            let value = vars
                .get("SCALER_RATE_WINDOW")
                .map_or_else(|| "5m (default)".to_owned(), str::to_owned);
            return Err(invalid("SCALER_RATE_WINDOW", &value, RATE_WINDOW_RULE));
        }
        if let Some(value) = vars.get("SCALER_WATCH_TTL") {
            config.watch_ttl = parse_duration(
                "SCALER_WATCH_TTL",
                value,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
                "a duration from 1s to 7d, e.g. 10m",
            )?;
        }
        if let Some(value) = vars.get("SCALER_KAFKA_TIMEOUT") {
            config.kafka.request_timeout = parse_duration(
                "SCALER_KAFKA_TIMEOUT",
                value,
                Duration::from_millis(100),
                Duration::from_secs(60),
                "a duration from 100ms to 60s, e.g. 5s",
            )?;
        }
        if let Some(value) = vars.get("SCALER_COMMIT_SOURCE") {
            config.kafka.commit_source = match value.trim() {
                "auto" => CommitSource::Auto,
                "stream" => CommitSource::Stream,
                "fetch" => CommitSource::Fetch,
                _ => {
                    return Err(invalid(
                        "SCALER_COMMIT_SOURCE",
                        value,
                        "auto (the commit stream where __consumer_offsets can be read, else \
                         OffsetFetch), stream or fetch",
                    ))
                }
            };
        }
        if let Some(value) = vars.get("SCALER_KAFKA_STATS_INTERVAL") {
            let rule = "0s (off) or a duration from 1s to 1h, e.g. 60s";
            config.kafka.stats_interval =
                match humantime::parse_duration(value.trim()).map_err(|_| ()) {
                    Ok(zero) if zero.is_zero() => None,
                    _ => Some(parse_duration(
                        "SCALER_KAFKA_STATS_INTERVAL",
                        value,
                        Duration::from_secs(1),
                        Duration::from_secs(3600),
                        rule,
                    )?),
                };
        }
        config.tls = parse_tls(&vars)?;
        if let Some(value) = vars
            .get("SCALER_HTTP_PORT")
            .filter(|v| !v.trim().is_empty())
        {
            let port = value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| invalid("SCALER_HTTP_PORT", value, "an integer from 1 to 65535"))?;
            if port == config.listen.port() {
                return Err(invalid(
                    "SCALER_HTTP_PORT",
                    value,
                    "a port other than SCALER_PORT's",
                ));
            }
            config.http = Some(SocketAddr::new(config.listen.ip(), port));
        }
        config.kafka.sasl = parse_kafka_sasl(&vars)?;
        config.kafka.tls = parse_kafka_tls(&vars)?;
        check_plain_password(&vars, &config.kafka)?;
        config.kafka.commit_reader_idle = commit_reader_idle(config.poll_interval);
        if let Some(path) = vars.set("SCALER_KAFKA_CLUSTERS_FILE") {
            config.clusters = read_clusters(path, &config.kafka)?;
            check_one_kerberos_principal(path, &config)?;
        }
        config.stale_after = match vars.get("SCALER_STALE_AFTER") {
            None => default_stale_after(config.poll_interval, config.kafka.request_timeout),
            Some(value) => parse_duration(
                "SCALER_STALE_AFTER",
                value,
                Duration::from_millis(100),
                Duration::from_secs(3600),
                STALE_AFTER_RULE,
            )?,
        };
        // A limit under one poll interval would refuse healthy samples between two polls.
        if config.stale_after < config.poll_interval {
            let value = vars.get("SCALER_STALE_AFTER").unwrap_or_default();
            return Err(invalid("SCALER_STALE_AFTER", value, STALE_AFTER_RULE));
        }
        if let Some(value) = vars.get("SCALER_MAX_WATCHES") {
            config.max_watches = value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|max| (1..=1_000_000).contains(max))
                .ok_or_else(|| {
                    invalid("SCALER_MAX_WATCHES", value, "an integer from 1 to 1000000")
                })?;
        }
        if let Some(value) = vars.get("SCALER_REDIS_URL") {
            config.redis.connection = parse_redis_url(value)?;
        }
        let mut settings = config.redis.connection.redis_settings().clone();
        if let Some(user) = vars.get("SCALER_REDIS_USERNAME").filter(|u| !u.is_empty()) {
            settings = settings.set_username(user);
        }
        if let Some(password) =
            secret(&vars, "SCALER_REDIS_PASSWORD", "SCALER_REDIS_PASSWORD_FILE")?
        {
            settings = settings.set_password(password);
        }
        config.redis.connection = config.redis.connection.clone().set_redis_settings(settings);
        if let Some(prefix) = vars.get("SCALER_TOPIC_PREFIX") {
            config.redis.topic_prefix = prefix.trim().to_owned();
        }
        config.fleet = fleet::parse_fleet(&vars)?;
        if let Some(value) = vars.get("SCALER_DEBUG") {
            config.debug = parse_bool(value).ok_or_else(|| {
                invalid("SCALER_DEBUG", value, "true or false (also 1/0, yes/no)")
            })?;
        }
        config.unknown_vars = vars.unknown;
        Ok(config)
    }

    /// One line describing the effective settings, for the start-up log; secrets (the Redis
    /// password) are left out.
    pub fn summary(&self) -> String {
        format!(
            "listen={} grpc={} grpc.max_connection_age={} kafka.bootstrap={} kafka.security={:?} kafka.timeout={} \
             kafka.stats_interval={} kafka.commit_source={} \
             poll_interval={} rate_window={} \
             stale_after={} watch_ttl={} max_watches={} redis={} topic_prefix={:?} fleet={} \
             debug={}",
            self.listen,
            TlsConfig::describe(self.tls.as_ref()),
            humantime::format_duration(self.max_connection_age.unwrap_or_default()),
            self.kafka.bootstrap_string(),
            self.kafka.describe_security(),
            humantime::format_duration(self.kafka.request_timeout),
            humantime::format_duration(self.kafka.stats_interval.unwrap_or_default()),
            self.kafka.commit_source.as_str(),
            humantime::format_duration(self.poll_interval),
            humantime::format_duration(self.rate_window),
            humantime::format_duration(self.stale_after),
            humantime::format_duration(self.watch_ttl),
            self.max_watches,
            self.redis.describe(),
            self.redis.topic_prefix,
            self.fleet.as_ref().map_or_else(
                || "off".to_owned(),
                |fleet| format!(
                    "{} name={} member={} member_ttl={}",
                    fleet.describe(),
                    fleet.name,
                    fleet.member.as_deref().unwrap_or("(host:port)"),
                    humantime::format_duration(fleet.member_ttl)
                )
            ),
            self.debug,
        )
    }
}

const STALE_AFTER_RULE: &str =
    "a duration of at least SCALER_POLL_INTERVAL and at most 1h, e.g. 20s";

const RATE_WINDOW_RULE: &str =
    "a duration of at least twice SCALER_POLL_INTERVAL and at most 1h, e.g. 5m";

const BOOTSTRAP_RULE: &str =
    "a comma-separated list of host:port, e.g. kafka-0:9092,kafka-1:9092 (ports 1-65535)";

/// The variables the daemon knows, keyed by their upper-case names.
struct Vars {
    known: BTreeMap<&'static str, String>,
    unknown: Vec<String>,
}

impl Vars {
    fn collect<I>(vars: I) -> Result<Vars, ConfigError>
    where
        I: IntoIterator<Item = (OsString, OsString)>,
    {
        let mut known: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (name, value) in vars {
            let name = name.to_string_lossy().into_owned();
            let upper = name.to_ascii_uppercase();
            let Some(setting) = SETTINGS.iter().find(|s| s.name == upper) else {
                if upper.starts_with("SCALER_") {
                    unknown.push(name);
                }
                continue;
            };
            // RUST_LOG is env_logger's to read; only our own variables are validated here.
            if setting.name == "RUST_LOG" {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::NotUtf8 { name: name.clone() })?;
            if let Some(previous) = known.insert(setting.name, value.clone()) {
                if previous != value {
                    return Err(ConfigError::Ambiguous { name: setting.name });
                }
            }
        }
        unknown.sort();
        Ok(Vars { known, unknown })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.known.get(name).map(String::as_str)
    }

    /// The value of `name`, trimmed, when it is set and not blank.
    fn set(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }
}

fn invalid(name: &'static str, value: &str, accepted: &'static str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        accepted,
    }
}

fn parse_duration(
    name: &'static str,
    value: &str,
    min: Duration,
    max: Duration,
    accepted: &'static str,
) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim())
        .ok()
        .filter(|duration| (min..=max).contains(duration))
        .ok_or_else(|| invalid(name, value, accepted))
}

/// A boolean setting (see [`BoolSpelling::Setting`]); `None` for anything else.
fn parse_bool(value: &str) -> Option<bool> {
    spelling::parse_bool(value, BoolSpelling::Setting)
}

impl Config {
    /// The clusters triggers may use.
    pub fn cluster_set(&self) -> ClusterSet {
        ClusterSet {
            default: self.kafka.clone(),
            named: self.clusters.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clusters::parse_clusters;
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value)))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "[::]:8090");
        assert_eq!(config.kafka.bootstrap_servers, ["localhost:9092"]);
        assert_eq!(config.poll_interval, Duration::from_secs(5));
        assert_eq!(config.watch_ttl, Duration::from_secs(600));
        assert_eq!(config.rate_window, Duration::from_secs(300));
        assert_eq!(config.stale_after, Duration::from_secs(20));
        assert_eq!(config.max_watches, 10_000);
        assert_eq!(config.kafka.request_timeout, Duration::from_secs(5));
        assert!(!config.debug);
        assert_eq!(config.tls, None);
        assert!(config.summary().contains("grpc=plaintext"));
    }

    #[test]
    fn redis_settings_follow_azul_with_database_2_by_default() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.redis.describe(), "redis://localhost:6379/2");
        let cases = [
            ("localhost:6379", "redis://localhost:6379/2"),
            ("redis://r.example:6380", "redis://r.example:6380/2"),
            ("redis://r.example:6380/", "redis://r.example:6380/2"),
            ("redis://r.example:6380/5", "redis://r.example:6380/5"),
            ("rediss://r.example:6380", "rediss://r.example:6380/2"),
            (
                "redis://u:hunter2@r.example:1/0",
                "redis://r.example:1/0 user=u password=(set)",
            ),
        ];
        for (url, described) in cases {
            let config = Config::from_vars(vars(&[("SCALER_REDIS_URL", url)])).unwrap();
            assert_eq!(config.redis.describe(), described, "{url}");
        }
        let config = Config::from_vars(vars(&[
            ("SCALER_REDIS_URL", "redis://a:b@r:1"),
            ("SCALER_REDIS_USERNAME", "scaler"),
            ("SCALER_REDIS_PASSWORD", "s3cret-pw"),
            ("SCALER_TOPIC_PREFIX", "qa01"),
        ]))
        .unwrap();
        let redis = config.redis.connection.redis_settings();
        assert_eq!(redis.username(), Some("scaler"));
        assert_eq!(redis.password(), Some("s3cret-pw"));
        assert_eq!(config.redis.topic_prefix, "qa01");
        for text in [config.summary(), format!("{config:?}")] {
            assert!(!text.contains("s3cret-pw"), "{text}");
        }
    }

    #[test]
    fn named_clusters_come_from_a_toml_file_read_like_the_settings() {
        let default = Config::default().kafka;
        let text = r#"
            [analytics]
            bootstrap_servers = "a1:9093, a2:9093"
            sasl = "scram_sha256"
            username = "lagscaler"
            password = "cluster-pw-never-shown"
            tls = true
            tls_ca_file = "/etc/kafka/analytics-ca.pem"

            [edge-1]
            bootstrap_servers = "edge:9092"
        "#;
        let clusters = parse_clusters(text, &default).unwrap();
        let analytics = &clusters["analytics"];
        assert_eq!(analytics.bootstrap_servers, ["a1:9093", "a2:9093"]);
        assert_eq!(analytics.security_protocol(), "sasl_ssl");
        assert_eq!(analytics.request_timeout, default.request_timeout);
        assert_eq!(clusters["edge-1"].security_protocol(), "plaintext");
        assert!(!format!("{clusters:?}").contains("cluster-pw-never-shown"));

        for (text, named) in [
            ("[a]\nbootstrap = \"x:1\"", "[a] bootstrap: unknown key"),
            (
                "[a]\nsasl = \"plaintext\"",
                "[a] bootstrap_servers: missing",
            ),
            (
                "[a]\nbootstrap_servers = \"x:1\"\nsasl = \"plaintext\"",
                "[a] username=",
            ),
            (
                "[a]\nbootstrap_servers = \"x\"",
                "[a] bootstrap_servers=\"x\"",
            ),
            (
                "[default]\nbootstrap_servers = \"x:1\"",
                "cluster name \"default\"",
            ),
            ("a = 1", "a: expected a table"),
            (
                "[a\npassword = \"cluster-pw-never-shown\"",
                "not valid TOML",
            ),
        ] {
            let err = parse_clusters(text, &default).unwrap_err();
            assert!(err.starts_with(named), "{text:?}: {err}");
            assert!(!err.contains("cluster-pw-never-shown"), "{err}");
        }
    }

    /// `base` with `changes` (an empty value removes the setting) is refused with an error
    /// that starts with `named` and shows none of `hidden`.
    fn refused_with(base: &[(&str, &str)], changes: &[(&str, &str)], named: &str, hidden: &[&str]) {
        let mut pairs: Vec<(&str, &str)> = base
            .iter()
            .filter(|(name, _)| changes.iter().all(|(changed, _)| changed != name))
            .copied()
            .collect();
        pairs.extend(changes.iter().filter(|(_, value)| !value.is_empty()));
        let err = Config::from_vars(vars(&pairs)).unwrap_err().to_string();
        assert!(err.starts_with(named), "{pairs:?}: {err}");
        for hidden in hidden {
            assert!(!err.contains(hidden), "{err}");
        }
    }

    #[test]
    fn gssapi_takes_a_principal_and_a_keytab_and_refuses_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let keytab = dir.path().join("lagscaler.keytab");
        std::fs::write(&keytab, b"\x05\x02").unwrap();
        let keytab = keytab.display().to_string();
        let gssapi = [
            ("SCALER_KAFKA_SASL", "gssapi"),
            ("SCALER_KAFKA_USERNAME", "lagscaler"),
            ("SCALER_KAFKA_KERBEROS_REALM", "EXAMPLE.COM"),
            ("SCALER_KAFKA_KERBEROS_KEYTAB", keytab.as_str()),
        ];
        let config = Config::from_vars(vars(&gssapi)).unwrap();
        let sasl = config.kafka.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Gssapi);
        assert_eq!(sasl.username, "lagscaler@EXAMPLE.COM");
        let kerberos = sasl.kerberos.as_ref().unwrap();
        assert_eq!(kerberos.service_name, "kafka");
        assert_eq!(config.kafka.security_protocol(), "sasl_plaintext");
        assert!(
            config
                .summary()
                .contains("GSSAPI principal=lagscaler@EXAMPLE.COM"),
            "{}",
            config.summary()
        );
        // A principal with its own realm keeps it.
        let mut own = gssapi.to_vec();
        own[1] = ("SCALER_KAFKA_USERNAME", "svc/host@OTHER.ORG");
        let config = Config::from_vars(vars(&own)).unwrap();
        assert_eq!(config.kafka.sasl.unwrap().username, "svc/host@OTHER.ORG");

        let refused = |changes: &[(&str, &str)], named: &str| {
            refused_with(&gssapi, changes, named, &["pw-never-shown"]);
        };
        refused(
            &[("SCALER_KAFKA_KERBEROS_KEYTAB", "")],
            "SCALER_KAFKA_KERBEROS_KEYTAB",
        );
        refused(
            &[("SCALER_KAFKA_KERBEROS_KEYTAB", "/nonexistent/keytab")],
            "SCALER_KAFKA_KERBEROS_KEYTAB",
        );
        refused(
            &[("SCALER_KAFKA_KERBEROS_KEYTAB", "/tmp/$(reboot)")],
            "SCALER_KAFKA_KERBEROS_KEYTAB",
        );
        refused(&[("SCALER_KAFKA_USERNAME", "")], "SCALER_KAFKA_USERNAME");
        refused(
            &[("SCALER_KAFKA_USERNAME", "lag scaler; reboot")],
            "SCALER_KAFKA_USERNAME",
        );
        refused(
            &[("SCALER_KAFKA_PASSWORD", "pw-never-shown")],
            "SCALER_KAFKA_PASSWORD",
        );
        refused(
            &[("SCALER_KAFKA_KERBEROS_SERVICE_NAME", "kafka service")],
            "SCALER_KAFKA_KERBEROS_SERVICE_NAME",
        );
        // Kerberos settings without gssapi.
        refused(
            &[
                ("SCALER_KAFKA_SASL", "scram_sha512"),
                ("SCALER_KAFKA_PASSWORD", "pw-never-shown"),
            ],
            "SCALER_KAFKA_KERBEROS",
        );

        // Two clusters logging in as two principals: one credential cache cannot hold both.
        let clusters = dir.path().join("clusters.toml");
        let table = |principal: &str| {
            format!(
                "[analytics]\nbootstrap_servers = \"a:9092\"\nsasl = \"gssapi\"\n\
                 username = \"{principal}\"\nkerberos_keytab = \"{keytab}\"\n"
            )
        };
        let mut with_file = gssapi.to_vec();
        let clusters_path = clusters.display().to_string();
        with_file.push(("SCALER_KAFKA_CLUSTERS_FILE", clusters_path.as_str()));
        std::fs::write(&clusters, table("lagscaler@EXAMPLE.COM")).unwrap();
        assert!(Config::from_vars(vars(&with_file)).is_ok());
        std::fs::write(&clusters, table("analytics@EXAMPLE.COM")).unwrap();
        let err = Config::from_vars(vars(&with_file)).unwrap_err().to_string();
        assert!(err.contains("one Kerberos principal per process"), "{err}");
    }

    #[test]
    fn oauthbearer_takes_keda_s_settings_and_refuses_what_would_leak_a_secret() {
        const SECRET: &str = "client-secret-never-shown";
        let oauth = [
            ("SCALER_KAFKA_SASL", "oauthbearer"),
            ("SCALER_KAFKA_USERNAME", "lagscaler"),
            ("SCALER_KAFKA_PASSWORD", SECRET),
            ("SCALER_KAFKA_TLS", "true"),
            (
                "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
                "https://idp.example.com/oauth2/token",
            ),
            ("SCALER_KAFKA_OAUTH_SCOPES", "kafka, lag.read"),
            (
                "SCALER_KAFKA_OAUTH_EXTENSIONS",
                "logicalCluster=lkc-1,identityPoolId=pool-2",
            ),
        ];
        let config = Config::from_vars(vars(&oauth)).unwrap();
        let sasl = config.kafka.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::OAuthBearer);
        let client = sasl.oauth.as_ref().unwrap();
        assert_eq!(client.scopes, ["kafka", "lag.read"]);
        assert_eq!(
            client.extensions,
            [
                ("logicalCluster".to_owned(), "lkc-1".to_owned()),
                ("identityPoolId".to_owned(), "pool-2".to_owned())
            ]
        );
        let shown = format!("{config:?} {}", config.summary());
        assert!(shown.contains("OAUTHBEARER client_id=lagscaler"), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            !shown.contains("pool-2"),
            "extension values are not shown: {shown}"
        );

        let refused = |changes: &[(&str, &str)], named: &str| {
            refused_with(
                &oauth,
                changes,
                named,
                &[SECRET, "idp.example", "pool-2", "x y"],
            );
        };
        // No token endpoint, or not a URL.
        refused(
            &[("SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI", "")],
            "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
        );
        refused(
            &[(
                "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
                "idp.example.com/token",
            )],
            "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
        );
        // The client secret over http://, or the token over a plaintext listener.
        refused(
            &[(
                "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
                "http://idp.example.com/token",
            )],
            "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
        );
        refused(&[("SCALER_KAFKA_TLS", "false")], "SCALER_KAFKA_SASL");
        // Malformed extensions; OAuth settings without oauthbearer.
        refused(
            &[("SCALER_KAFKA_OAUTH_EXTENSIONS", "auth=x y")],
            "SCALER_KAFKA_OAUTH_EXTENSIONS",
        );
        refused(
            &[("SCALER_KAFKA_OAUTH_EXTENSIONS", "pool-2")],
            "SCALER_KAFKA_OAUTH_EXTENSIONS",
        );
        refused(
            &[("SCALER_KAFKA_SASL", "scram_sha512")],
            "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
        );
        // Both allowed on purpose (the tests' loopback provider and listener).
        let mut allowed = oauth.to_vec();
        allowed.retain(|(name, _)| {
            *name != "SCALER_KAFKA_TLS" && *name != "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI"
        });
        allowed.extend([
            (
                "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
                "http://127.0.0.1:8080/token",
            ),
            ("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD", "true"),
        ]);
        let config = Config::from_vars(vars(&allowed)).unwrap();
        assert_eq!(config.kafka.security_protocol(), "sasl_plaintext");
    }

    #[test]
    fn an_encrypted_client_key_takes_its_password_which_is_never_shown() {
        let config = Config::from_vars(vars(&[
            ("SCALER_KAFKA_TLS", "true"),
            ("SCALER_KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem"),
            ("SCALER_KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key"),
            ("SCALER_KAFKA_TLS_KEY_PASSWORD", "key-pw-never-shown"),
        ]))
        .unwrap();
        let tls = config.kafka.tls.as_ref().unwrap();
        assert_eq!(
            tls.key_password.as_ref().map(|secret| secret.0.as_str()),
            Some("key-pw-never-shown")
        );
        let shown = format!("{config:?} {}", config.summary());
        assert!(shown.contains("encrypted key"), "{shown}");
        assert!(!shown.contains("key-pw-never-shown"), "{shown}");
        let err = Config::from_vars(vars(&[
            ("SCALER_KAFKA_TLS", "true"),
            ("SCALER_KAFKA_TLS_KEY_PASSWORD", "key-pw-never-shown"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("SCALER_KAFKA_TLS_KEY_PASSWORD"), "{err}");
        assert!(!err.contains("key-pw-never-shown"), "{err}");
    }

    #[test]
    fn kafka_sasl_and_tls_settings_go_together_and_hide_the_password() {
        let config = Config::from_vars(vars(&[
            ("SCALER_KAFKA_SASL", "SCRAM_SHA512"),
            ("SCALER_KAFKA_USERNAME", "alice"),
            ("SCALER_KAFKA_PASSWORD", "kafka-pw-never-shown"),
            ("SCALER_KAFKA_TLS", "enable"),
            ("SCALER_KAFKA_TLS_CA_FILE", "/etc/kafka/ca.pem"),
            ("SCALER_KAFKA_TLS_CERT_FILE", "/etc/kafka/client.pem"),
            ("SCALER_KAFKA_TLS_KEY_FILE", "/etc/kafka/client.key"),
        ]))
        .unwrap();
        let sasl = config.kafka.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.username, "alice");
        assert_eq!(config.kafka.security_protocol(), "sasl_ssl");
        assert_eq!(
            config.kafka.tls.as_ref().unwrap().ca_file.as_deref(),
            Some(std::path::Path::new("/etc/kafka/ca.pem"))
        );
        let shown = format!("{config:?} {}", config.summary());
        assert!(shown.contains("SCRAM-SHA-512 user=alice"), "{shown}");
        assert!(!shown.contains("kafka-pw-never-shown"), "{shown}");

        let refused = |pairs: &[(&str, &str)], named: &str| {
            let err = Config::from_vars(vars(pairs)).unwrap_err().to_string();
            assert!(err.starts_with(named), "{pairs:?}: {err}");
            assert!(!err.contains("kafka-pw-never-shown"), "{err}");
        };
        refused(&[("SCALER_KAFKA_SASL", "kerberos")], "SCALER_KAFKA_SASL");
        refused(
            &[("SCALER_KAFKA_SASL", "plaintext")],
            "SCALER_KAFKA_USERNAME",
        );
        refused(
            &[
                ("SCALER_KAFKA_SASL", "plaintext"),
                ("SCALER_KAFKA_USERNAME", "a"),
            ],
            "SCALER_KAFKA_PASSWORD",
        );
        refused(
            &[("SCALER_KAFKA_PASSWORD", "kafka-pw-never-shown")],
            "SCALER_KAFKA_PASSWORD",
        );
        refused(
            &[("SCALER_KAFKA_USERNAME", "alice")],
            "SCALER_KAFKA_USERNAME",
        );
        refused(&[("SCALER_KAFKA_TLS", "maybe")], "SCALER_KAFKA_TLS");
        refused(
            &[("SCALER_KAFKA_TLS_CA_FILE", "/ca.pem")],
            "SCALER_KAFKA_TLS_CA_FILE",
        );
        refused(
            &[
                ("SCALER_KAFKA_TLS", "true"),
                ("SCALER_KAFKA_TLS_KEY_FILE", "/k"),
            ],
            "SCALER_KAFKA_TLS_KEY_FILE",
        );
        let plain = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(plain.kafka.security_protocol(), "plaintext");
    }

    #[test]
    fn sasl_plain_without_tls_needs_an_explicit_allowance() {
        let plain = [
            ("SCALER_KAFKA_SASL", "plaintext"),
            ("SCALER_KAFKA_USERNAME", "alice"),
            ("SCALER_KAFKA_PASSWORD", "kafka-pw-never-shown"),
        ];
        let err = Config::from_vars(vars(&plain)).unwrap_err().to_string();
        assert!(err.starts_with("SCALER_KAFKA_SASL"), "{err}");
        assert!(
            err.contains("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true"),
            "{err}"
        );
        assert!(!err.contains("kafka-pw-never-shown"), "{err}");

        let mut allowed = plain.to_vec();
        allowed.push(("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD", "true"));
        let config = Config::from_vars(vars(&allowed)).unwrap();
        assert_eq!(config.kafka.security_protocol(), "sasl_plaintext");
        let mut over_tls = plain.to_vec();
        over_tls.push(("SCALER_KAFKA_TLS", "true"));
        let config = Config::from_vars(vars(&over_tls)).unwrap();
        assert_eq!(config.kafka.security_protocol(), "sasl_ssl");
        // SCRAM never sends the password itself: no allowance needed.
        let scram = [
            ("SCALER_KAFKA_SASL", "scram_sha512"),
            ("SCALER_KAFKA_USERNAME", "alice"),
            ("SCALER_KAFKA_PASSWORD", "pw"),
        ];
        assert!(Config::from_vars(vars(&scram)).is_ok());
        let mut bad = allowed.clone();
        bad[3].1 = "perhaps";
        let err = Config::from_vars(vars(&bad)).unwrap_err().to_string();
        assert!(
            err.starts_with("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD"),
            "{err}"
        );

        // The clusters file has the same rule, under its own key names.
        let default = Config::from_vars(vars(&[])).unwrap().kafka;
        let table = "[a]\nbootstrap_servers = \"x:1\"\nsasl = \"plaintext\"\n\
                     username = \"u\"\npassword = \"cluster-pw\"\n";
        let err = parse_clusters(table, &default).unwrap_err();
        assert!(err.contains("[a] sasl"), "{err}");
        assert!(err.contains("allow_plaintext_password=true"), "{err}");
        assert!(!err.contains("cluster-pw"), "{err}");
        let allowed = format!("{table}allow_plaintext_password = true\n");
        assert!(parse_clusters(&allowed, &default).is_ok());
    }

    #[test]
    fn the_redis_password_can_come_from_a_file_and_never_shows_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = file.to_str().unwrap();
        let config = Config::from_vars(vars(&[("SCALER_REDIS_PASSWORD_FILE", path)])).unwrap();
        assert_eq!(
            config.redis.connection.redis_settings().password(),
            Some("from-a-file")
        );
        assert!(!format!("{config:?} {}", config.summary()).contains("from-a-file"));

        let both = Config::from_vars(vars(&[
            ("SCALER_REDIS_PASSWORD", "direct"),
            ("SCALER_REDIS_PASSWORD_FILE", path),
        ]))
        .unwrap_err()
        .to_string();
        assert!(both.contains("SCALER_REDIS_PASSWORD_FILE"), "{both}");
        assert!(
            !both.contains("direct") && !both.contains("from-a-file"),
            "{both}"
        );

        let missing = dir.path().join("nothing").display().to_string();
        let err = Config::from_vars(vars(&[("SCALER_REDIS_PASSWORD_FILE", &missing)]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("SCALER_REDIS_PASSWORD_FILE="), "{err}");
        assert!(err.contains(&missing), "{err}");
    }

    #[test]
    fn a_bad_redis_url_is_refused_without_its_password() {
        for url in [
            "http://r:6379",
            "redis://",
            "redis://u:hunter2@:6379",
            "redis://r:99999",
            "redis://u:hunter2@r:6379/x",
        ] {
            let err = Config::from_vars(vars(&[("SCALER_REDIS_URL", url)])).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("SCALER_REDIS_URL="), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn every_setting_parses_and_names_are_case_insensitive() {
        let config = Config::from_vars(vars(&[
            ("scaler_port", "9000"),
            ("SCALER_LISTEN_ADDR", "127.0.0.1"),
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "a:9092, b.example:9093"),
            ("SCALER_POLL_INTERVAL", "250ms"),
            ("SCALER_WATCH_TTL", "2m"),
            ("SCALER_RATE_WINDOW", "500ms"),
            ("SCALER_STALE_AFTER", "4s"),
            ("SCALER_MAX_WATCHES", "50"),
            ("SCALER_KAFKA_TIMEOUT", "3s"),
            ("SCALER_KAFKA_STATS_INTERVAL", "30s"),
            ("SCALER_TLS_CERT_FILE", "/etc/lagscaler/tls.crt"),
            ("SCALER_TLS_KEY_FILE", " /etc/lagscaler/tls.key "),
            ("SCALER_TLS_CLIENT_CA_FILE", "/etc/lagscaler/ca.crt"),
            ("Scaler_Debug", "TRUE"),
            ("SCALER_BURROW_URL", "http://burrow:8000"),
        ]))
        .unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.kafka.bootstrap_servers, ["a:9092", "b.example:9093"]);
        assert_eq!(config.poll_interval, Duration::from_millis(250));
        assert_eq!(config.watch_ttl, Duration::from_secs(120));
        assert_eq!(config.rate_window, Duration::from_millis(500));
        assert_eq!(config.stale_after, Duration::from_secs(4));
        assert_eq!(config.max_watches, 50);
        assert_eq!(config.kafka.request_timeout, Duration::from_secs(3));
        assert_eq!(config.kafka.stats_interval, Some(Duration::from_secs(30)));
        assert_eq!(
            config.tls,
            Some(TlsConfig {
                cert_file: "/etc/lagscaler/tls.crt".into(),
                key_file: "/etc/lagscaler/tls.key".into(),
                client_ca_file: Some("/etc/lagscaler/ca.crt".into()),
            })
        );
        assert!(config.summary().contains("grpc=mutual-tls"));
        assert!(config.debug);
        assert_eq!(config.unknown_vars, ["SCALER_BURROW_URL"]);
        let off = Config::from_vars(vars(&[("SCALER_KAFKA_STATS_INTERVAL", "0s")])).unwrap();
        assert_eq!(off.kafka.stats_interval, None);
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        let cases = [
            ("SCALER_PORT", "0"),
            ("SCALER_PORT", "70000"),
            ("SCALER_PORT", "http"),
            ("SCALER_LISTEN_ADDR", "localhost"),
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", ""),
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "kafka"),
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092,,b:1"),
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "kafka:0"),
            ("SCALER_POLL_INTERVAL", "5"),
            ("SCALER_POLL_INTERVAL", "10ms"),
            ("SCALER_POLL_INTERVAL", "2h"),
            ("SCALER_WATCH_TTL", "-1s"),
            ("SCALER_KAFKA_TIMEOUT", "0s"),
            ("SCALER_KAFKA_STATS_INTERVAL", "500ms"),
            ("SCALER_KAFKA_STATS_INTERVAL", "often"),
            ("SCALER_TLS_CERT_FILE", "/etc/lagscaler/tls.crt"),
            ("SCALER_TLS_KEY_FILE", "/etc/lagscaler/tls.key"),
            ("SCALER_TLS_CLIENT_CA_FILE", "/etc/lagscaler/ca.crt"),
            ("SCALER_DEBUG", "maybe"),
            ("SCALER_RATE_WINDOW", "2h"),
            ("SCALER_RATE_WINDOW", "9s"),
            ("SCALER_STALE_AFTER", "4s"),
            ("SCALER_STALE_AFTER", "2h"),
            ("SCALER_MAX_WATCHES", "0"),
            ("SCALER_MAX_WATCHES", "lots"),
        ];
        for (name, value) in cases {
            let err = Config::from_vars(vars(&[(name, value)])).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with(name), "{name}={value}: {message}");
            assert!(message.contains("expected"), "{name}={value}: {message}");
        }
    }

    #[test]
    fn rate_window_must_hold_two_polls() {
        let err = Config::from_vars(vars(&[("SCALER_POLL_INTERVAL", "10m")])).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("SCALER_RATE_WINDOW=\"5m (default)\""),
            "{message}"
        );
        let config = Config::from_vars(vars(&[
            ("SCALER_POLL_INTERVAL", "10m"),
            ("SCALER_RATE_WINDOW", "20m"),
        ]))
        .unwrap();
        assert_eq!(config.rate_window, Duration::from_secs(1200));
    }

    #[test]
    fn conflicting_spellings_are_refused() {
        let err =
            Config::from_vars(vars(&[("SCALER_PORT", "1"), ("scaler_port", "2")])).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Ambiguous {
                name: "SCALER_PORT"
            }
        );
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = help_text();
        for setting in SETTINGS {
            let line = help
                .lines()
                .find(|line| line.trim_start().starts_with(setting.name))
                .unwrap_or_else(|| panic!("{} missing from help", setting.name));
            if !setting.default.is_empty() {
                assert!(line.contains(&format!("(default: {})", setting.default)));
            }
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn name() -> impl Strategy<Value = String> {
            let names: Vec<&'static str> = SETTINGS.iter().map(|s| s.name).collect();
            (prop::sample::select(names), any::<u64>()).prop_map(|(name, case)| {
                // Any mix of upper and lower case: names are case-insensitive.
                name.chars()
                    .enumerate()
                    .map(|(i, ch)| {
                        if case >> (i % 64) & 1 == 1 {
                            ch.to_ascii_lowercase()
                        } else {
                            ch
                        }
                    })
                    .collect()
            })
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<i128>().prop_map(|n| n.to_string()),
                "[0-9]{1,6}(ns|us|ms|s|m|h|d|w|y)?",
                "[a-z0-9.:,\\[\\] ]{0,30}",
                (1usize..10_000).prop_map(|n| "5".repeat(n)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Any values of any settings: a valid config or an error naming the setting.
            #[test]
            fn any_environment_starts_or_names_the_setting(
                vars in prop::collection::vec((name(), value()), 0..6),
            ) {
                let pairs: Vec<(OsString, OsString)> = vars
                    .iter()
                    .map(|(name, value)| (OsString::from(name), OsString::from(value)))
                    .collect();
                match Config::from_vars(pairs) {
                    Ok(config) => {
                        prop_assert!(config.rate_window >= 2 * config.poll_interval);
                        prop_assert!(config.stale_after >= config.poll_interval);
                        prop_assert!(config.max_watches >= 1);
                        prop_assert!(config.listen.port() > 0);
                    }
                    Err(err) => {
                        let message = err.to_string();
                        let named = SETTINGS.iter().any(|s| message.starts_with(s.name));
                        prop_assert!(named, "{}", message);
                        prop_assert!(
                            message.contains("expected")
                                || message.contains("set twice")
                                || message.contains("both set")
                                || message.contains("cannot read the secret file")
                                || message.contains("cannot read the clusters file")
                                || message.contains("UTF-8"),
                            "{}",
                            message
                        );
                    }
                }
            }
        }
    }
}
