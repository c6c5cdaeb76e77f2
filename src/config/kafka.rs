//! How to reach one Kafka cluster: bootstrap servers, timeouts, SASL and TLS
//! (`SCALER_KAFKA_*`), and the client settings librdkafka gets from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, parse_bool, ConfigError, Vars};

/// How to reach one Kafka cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Seed brokers, `host:port` each, in the order given.
    pub bootstrap_servers: Vec<String>,
    /// Timeout of each request made to the cluster.
    pub request_timeout: Duration,
    /// How often librdkafka reports statistics, whose request counts are logged; `None` is
    /// off.
    pub stats_interval: Option<Duration>,
    /// SASL authentication, if any.
    pub sasl: Option<KafkaSasl>,
    /// TLS to the brokers, if on.
    pub tls: Option<KafkaTls>,
    /// Where committed offsets come from (`SCALER_COMMIT_SOURCE`).
    pub commit_source: CommitSource,
}

/// Where committed offsets come from (`SCALER_COMMIT_SOURCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitSource {
    /// The commit stream where `__consumer_offsets` can be read, else OffsetFetch per watch.
    Auto,
    /// The commit stream only: a cluster where it cannot be read fails the polls.
    Stream,
    /// OffsetFetch per watch and poll.
    Fetch,
}

impl CommitSource {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitSource::Auto => "auto",
            CommitSource::Stream => "stream",
            CommitSource::Fetch => "fetch",
        }
    }
}

/// A secret value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

/// SASL mechanisms lagscaler can use with Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (KEDA: `plaintext`).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name of it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials for Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// TLS to the brokers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// CA bundle to check the brokers against; the system's when `None`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl KafkaConfig {
    /// The bootstrap list as librdkafka takes it.
    pub fn bootstrap_string(&self) -> String {
        self.bootstrap_servers.join(",")
    }
}

/// A secret given directly (`name`) or as a file (`file_name`): the file's content without
/// one trailing newline. Empty is unset.
pub(super) fn secret(
    vars: &Vars,
    name: &'static str,
    file_name: &'static str,
) -> Result<Option<String>, ConfigError> {
    let direct = vars.get(name).filter(|value| !value.is_empty());
    let file = vars
        .get(file_name)
        .map(str::trim)
        .filter(|path| !path.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(ConfigError::SecretTwice { name, file_name }),
        (Some(value), None) => Ok(Some(value.to_owned())),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(path).map_err(|err| ConfigError::SecretFile {
                file_name,
                path: path.to_owned(),
                cause: err.to_string(),
            })?;
            let value = content
                .strip_suffix("\r\n")
                .or_else(|| content.strip_suffix('\n'))
                .unwrap_or(&content);
            Ok((!value.is_empty()).then(|| value.to_owned()))
        }
    }
}

/// SASL for Kafka: a mechanism with a user name and a password, or none.
pub(super) fn parse_kafka_sasl(vars: &Vars) -> Result<Option<KafkaSasl>, ConfigError> {
    let mechanism = match vars.get("SCALER_KAFKA_SASL") {
        None => None,
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => None,
            "plaintext" | "plain" => Some(SaslMechanism::Plain),
            "scram_sha256" | "scram-sha-256" => Some(SaslMechanism::ScramSha256),
            "scram_sha512" | "scram-sha-512" => Some(SaslMechanism::ScramSha512),
            _ => {
                return Err(invalid(
                    "SCALER_KAFKA_SASL",
                    value,
                    "none, plaintext, scram_sha256 or scram_sha512 (oauthbearer and gssapi \
                     are not supported)",
                ))
            }
        },
    };
    let username = vars
        .get("SCALER_KAFKA_USERNAME")
        .map(str::trim)
        .filter(|user| !user.is_empty());
    let password = secret(vars, "SCALER_KAFKA_PASSWORD", "SCALER_KAFKA_PASSWORD_FILE")?;
    let Some(mechanism) = mechanism else {
        if let Some(user) = username {
            return Err(invalid(
                "SCALER_KAFKA_USERNAME",
                user,
                "to be set only with SCALER_KAFKA_SASL (plaintext, scram_sha256 or scram_sha512)",
            ));
        }
        if password.is_some() {
            return Err(invalid(
                "SCALER_KAFKA_PASSWORD",
                "(hidden)",
                "to be set only with SCALER_KAFKA_SASL (plaintext, scram_sha256 or scram_sha512)",
            ));
        }
        return Ok(None);
    };
    let Some(username) = username else {
        return Err(invalid(
            "SCALER_KAFKA_USERNAME",
            "",
            "a user name: SCALER_KAFKA_SASL needs one",
        ));
    };
    let Some(password) = password else {
        return Err(invalid(
            "SCALER_KAFKA_PASSWORD",
            "",
            "a password (or SCALER_KAFKA_PASSWORD_FILE): SCALER_KAFKA_SASL needs one",
        ));
    };
    Ok(Some(KafkaSasl {
        mechanism,
        username: username.to_owned(),
        password: Secret(password),
    }))
}

/// SASL PLAIN sends the password as it is: without TLS anyone on the path reads it, so that
/// takes an explicit `SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true`.
pub(super) fn check_plain_password(vars: &Vars, kafka: &KafkaConfig) -> Result<(), ConfigError> {
    const NAME: &str = "SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD";
    let allowed = match vars.get(NAME) {
        None => false,
        Some(value) => parse_bool(value).ok_or_else(|| invalid(NAME, value, "true or false"))?,
    };
    let plain = kafka
        .sasl
        .as_ref()
        .is_some_and(|sasl| sasl.mechanism == SaslMechanism::Plain);
    if plain && kafka.tls.is_none() && !allowed {
        return Err(invalid(
            "SCALER_KAFKA_SASL",
            "plaintext",
            "TLS as well (SCALER_KAFKA_TLS=true): SASL PLAIN without TLS sends the password \
             readable to anyone on the network; set SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true \
             to accept that, or use scram_sha256/scram_sha512",
        ));
    }
    Ok(())
}

/// TLS to Kafka: on or off, with an optional CA and client certificate.
pub(super) fn parse_kafka_tls(vars: &Vars) -> Result<Option<KafkaTls>, ConfigError> {
    let on = match vars.get("SCALER_KAFKA_TLS") {
        None => false,
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "enable" => true,
            "disable" => false,
            _ => parse_bool(value).ok_or_else(|| {
                invalid(
                    "SCALER_KAFKA_TLS",
                    value,
                    "true or false (also enable/disable)",
                )
            })?,
        },
    };
    let path = |name: &str| {
        vars.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    let ca_file = path("SCALER_KAFKA_TLS_CA_FILE");
    let cert = path("SCALER_KAFKA_TLS_CERT_FILE");
    let key = path("SCALER_KAFKA_TLS_KEY_FILE");
    if !on {
        for (name, value) in [
            ("SCALER_KAFKA_TLS_CA_FILE", &ca_file),
            ("SCALER_KAFKA_TLS_CERT_FILE", &cert),
            ("SCALER_KAFKA_TLS_KEY_FILE", &key),
        ] {
            if let Some(value) = value {
                return Err(invalid(
                    name,
                    &value.display().to_string(),
                    "to be set only with SCALER_KAFKA_TLS=true",
                ));
            }
        }
        return Ok(None);
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(invalid(
                "SCALER_KAFKA_TLS_CERT_FILE",
                &cert.display().to_string(),
                "to be set together with SCALER_KAFKA_TLS_KEY_FILE",
            ))
        }
        (None, Some(key)) => {
            return Err(invalid(
                "SCALER_KAFKA_TLS_KEY_FILE",
                &key.display().to_string(),
                "to be set together with SCALER_KAFKA_TLS_CERT_FILE",
            ))
        }
    };
    Ok(Some(KafkaTls { ca_file, client }))
}

/// Parses `host:port[,host:port...]`; `None` when any entry is malformed.
pub(crate) fn parse_bootstrap(value: &str) -> Option<Vec<String>> {
    let servers: Vec<String> = value
        .split(',')
        .map(|server| server.trim().to_owned())
        .collect();
    let valid = servers.iter().all(|server| {
        let Some((host, port)) = server.rsplit_once(':') else {
            return false;
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._[]:".contains(ch));
        host_ok && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    valid.then_some(servers)
}

impl KafkaConfig {
    /// librdkafka's `security.protocol` for these settings.
    pub fn security_protocol(&self) -> &'static str {
        match (&self.sasl, &self.tls) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }

    /// How lagscaler authenticates to the cluster, without secrets, for the start-up log.
    pub fn describe_security(&self) -> String {
        let mut text = self.security_protocol().to_owned();
        if let Some(sasl) = &self.sasl {
            text.push_str(&format!(
                " {} user={}",
                sasl.mechanism.name(),
                sasl.username
            ));
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                text.push_str(&format!(" ca={}", ca.display()));
            }
            if tls.client.is_some() {
                text.push_str(" client-certificate");
            }
        }
        text
    }
}

impl fmt::Display for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bootstrap_string())
    }
}
