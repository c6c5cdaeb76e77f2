//! More Kafka clusters by name, from the TOML file `SCALER_KAFKA_CLUSTERS_FILE` names, and
//! the set of clusters triggers may use.

use std::collections::BTreeMap;

use super::kafka::{check_plain_password, parse_bootstrap, parse_kafka_sasl, parse_kafka_tls};
use super::{ConfigError, KafkaConfig, Vars, BOOTSTRAP_RULE};

/// The clusters file's keys and the settings they stand for.
pub(super) const CLUSTER_KEYS: &[(&str, &str)] = &[
    ("bootstrap_servers", "SCALER_KAFKA_BOOTSTRAP_SERVERS"),
    ("sasl", "SCALER_KAFKA_SASL"),
    ("username", "SCALER_KAFKA_USERNAME"),
    ("password", "SCALER_KAFKA_PASSWORD"),
    ("password_file", "SCALER_KAFKA_PASSWORD_FILE"),
    (
        "allow_plaintext_password",
        "SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD",
    ),
    ("tls", "SCALER_KAFKA_TLS"),
    ("tls_ca_file", "SCALER_KAFKA_TLS_CA_FILE"),
    ("tls_cert_file", "SCALER_KAFKA_TLS_CERT_FILE"),
    ("tls_key_file", "SCALER_KAFKA_TLS_KEY_FILE"),
    ("tls_key_password", "SCALER_KAFKA_TLS_KEY_PASSWORD"),
    (
        "tls_key_password_file",
        "SCALER_KAFKA_TLS_KEY_PASSWORD_FILE",
    ),
    (
        "oauth_token_endpoint_uri",
        "SCALER_KAFKA_OAUTH_TOKEN_ENDPOINT_URI",
    ),
    ("oauth_scopes", "SCALER_KAFKA_OAUTH_SCOPES"),
    ("oauth_extensions", "SCALER_KAFKA_OAUTH_EXTENSIONS"),
    ("kerberos_keytab", "SCALER_KAFKA_KERBEROS_KEYTAB"),
    (
        "kerberos_service_name",
        "SCALER_KAFKA_KERBEROS_SERVICE_NAME",
    ),
    ("kerberos_realm", "SCALER_KAFKA_KERBEROS_REALM"),
];

/// Reads the named clusters: one TOML table per cluster, its keys read exactly as the
/// `SCALER_KAFKA_*` settings they stand for. Timeouts and statistics follow the default
/// cluster's.
pub(super) fn read_clusters(
    path: &str,
    default: &KafkaConfig,
) -> Result<BTreeMap<String, KafkaConfig>, ConfigError> {
    let failed = |cause: String| ConfigError::ClustersFile {
        path: path.to_owned(),
        cause,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|err| failed(format!("cannot read the clusters file: {err}")))?;
    parse_clusters(&text, default).map_err(failed)
}

pub(super) fn parse_clusters(
    text: &str,
    default: &KafkaConfig,
) -> Result<BTreeMap<String, KafkaConfig>, String> {
    // The parser's message can quote the offending line, which may hold a password.
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| match err.span() {
            Some(span) => format!("not valid TOML (at byte {})", span.start),
            None => "not valid TOML".to_owned(),
        })?;
    let mut clusters = BTreeMap::new();
    for (name, value) in table {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name || name == "default" {
            return Err(format!(
                "cluster name {name:?}: expected letters, digits, '-', '_' or '.', and not \
                 \"default\" (the SCALER_KAFKA_* cluster)"
            ));
        }
        let toml::Value::Table(settings) = value else {
            return Err(format!("{name}: expected a table ([{name}])"));
        };
        let mut known = BTreeMap::new();
        for (key, value) in settings {
            let Some((_, setting)) = CLUSTER_KEYS.iter().find(|(k, _)| *k == key) else {
                let keys: Vec<&str> = CLUSTER_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "[{name}] {key}: unknown key; expected one of {}",
                    keys.join(", ")
                ));
            };
            let value = match value {
                toml::Value::String(text) => text,
                toml::Value::Boolean(flag) => flag.to_string(),
                _ => return Err(format!("[{name}] {key}: expected a string or a boolean")),
            };
            known.insert(*setting, value);
        }
        let vars = Vars {
            known,
            unknown: Vec::new(),
        };
        // Errors name the settings; say the file's keys instead.
        let rename = |err: ConfigError| {
            let mut text = err.to_string();
            for (key, setting) in CLUSTER_KEYS.iter().rev() {
                text = text.replace(setting, key);
            }
            format!("[{name}] {text}")
        };
        let Some(servers) = vars.get("SCALER_KAFKA_BOOTSTRAP_SERVERS") else {
            return Err(format!(
                "[{name}] bootstrap_servers: missing; expected {BOOTSTRAP_RULE}"
            ));
        };
        let bootstrap_servers = parse_bootstrap(servers).ok_or_else(|| {
            format!("[{name}] bootstrap_servers={servers:?}: expected {BOOTSTRAP_RULE}")
        })?;
        let cluster = KafkaConfig {
            bootstrap_servers,
            sasl: parse_kafka_sasl(&vars).map_err(rename)?,
            tls: parse_kafka_tls(&vars).map_err(rename)?,
            ..default.clone()
        };
        check_plain_password(&vars, &cluster).map_err(rename)?;
        clusters.insert(name, cluster);
    }
    Ok(clusters)
}

/// The clusters triggers may use: the default one and the named ones.
#[derive(Clone, Debug)]
pub struct ClusterSet {
    /// The `SCALER_KAFKA_*` cluster.
    pub default: KafkaConfig,
    /// The clusters of `SCALER_KAFKA_CLUSTERS_FILE`, by name.
    pub named: BTreeMap<String, KafkaConfig>,
}

impl ClusterSet {
    /// The cluster called `name` (`None` is the default one).
    pub fn get(&self, name: Option<&str>) -> Option<&KafkaConfig> {
        match name {
            None => Some(&self.default),
            Some(name) => self.named.get(name),
        }
    }

    /// Every cluster's name, the default first.
    pub fn names(&self) -> Vec<&str> {
        std::iter::once("default")
            .chain(self.named.keys().map(String::as_str))
            .collect()
    }
}
