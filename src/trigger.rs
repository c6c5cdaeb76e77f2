//! Trigger metadata (a ScaledObject's `metadata` map) to a typed [`Trigger`]. Pure: no IO.
//!
//! Keys and meanings follow KEDA's own Kafka trigger, so a `kafka` trigger moves here by
//! changing `type:` and adding `scalerAddress`. Anything this version cannot honour is
//! refused with the key, the value and what is accepted: a typo or an unsupported option
//! never falls back to a default silently.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::config::{self, KafkaConfig};
use crate::lag::OffsetResetPolicy;

/// What one trigger asks for: which lag to watch and how to turn it into answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// What is polled; triggers with equal keys share one watch.
    pub watch: WatchKey,
    /// HPA target per replica (`lagThreshold`).
    pub lag_threshold: i64,
    /// Active when the lag is above this (`activationLagThreshold`).
    pub activation_lag_threshold: i64,
}

/// Identity of a watch: everything that decides what a poll reads and how lag is counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// The consumer group.
    pub group: String,
    /// One topic, or `None` for every topic the group has committed offsets for.
    pub topic: Option<String>,
    /// How a partition without a committed offset counts.
    pub offset_reset: OffsetResetPolicy,
}

/// Metadata that cannot be used, with the key, the value and what the key accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// A required key is absent.
    #[error("metadata {key} is missing: expected {accepted}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What the key accepts.
        accepted: &'static str,
    },
    /// A key's value is not accepted.
    #[error("metadata {key}={value:?} is not valid: expected {accepted}")]
    Invalid {
        /// The key, as given.
        key: String,
        /// The value, shortened when long.
        value: String,
        /// What the key accepts.
        accepted: String,
    },
}

/// Keys KEDA itself puts in an external trigger's metadata; they are not lagscaler's.
const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// Keys of KEDA's Kafka trigger that this version does not implement yet.
const NOT_YET_KEYS: &[&str] = &[
    "partitionLimitation",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
];

/// Keys this version reads.
const OWN_KEYS: &[&str] = &[
    "entityType",
    "entityName",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "bootstrapServers",
];

/// Longest value quoted back in an error message.
const MAX_QUOTED: usize = 120;

impl Trigger {
    /// Parses a trigger's metadata. `cluster` is the Kafka cluster lagscaler is configured
    /// for: `bootstrapServers`, when given, must name that cluster and no other host.
    pub fn parse(
        metadata: &HashMap<String, String>,
        cluster: &KafkaConfig,
    ) -> Result<Trigger, TriggerError> {
        check_keys(metadata)?;
        check_entity(metadata)?;
        if let Some(value) = metadata.get("bootstrapServers") {
            check_bootstrap(value, cluster)?;
        }
        let group = match metadata.get("consumerGroup") {
            None => {
                return Err(TriggerError::Missing {
                    key: "consumerGroup",
                    accepted: "the name of the consumer group to measure",
                })
            }
            Some(group) => parse_group(group)?,
        };
        let topic = match metadata.get("topic").map(String::as_str) {
            None | Some("") => None,
            Some(topic) => Some(parse_topic(topic)?),
        };
        let lag_threshold = match metadata.get("lagThreshold") {
            None => 10,
            Some(value) => parse_integer("lagThreshold", value, 1, "an integer > 0")?,
        };
        let activation_lag_threshold = match metadata.get("activationLagThreshold") {
            None => 0,
            Some(value) => parse_integer("activationLagThreshold", value, 0, "an integer >= 0")?,
        };
        let offset_reset = match metadata.get("offsetResetPolicy").map(String::as_str) {
            None | Some("latest") => OffsetResetPolicy::Latest,
            Some("earliest") => OffsetResetPolicy::Earliest,
            Some(other) => return Err(invalid("offsetResetPolicy", other, "latest or earliest")),
        };
        Ok(Trigger {
            watch: WatchKey {
                group,
                topic,
                offset_reset,
            },
            lag_threshold,
            activation_lag_threshold,
        })
    }

    /// The metric's name: stable for a group and topic, and safe for an HPA metric name.
    pub fn metric_name(&self) -> String {
        let topic = self.watch.topic.as_deref().unwrap_or("all-topics");
        let raw = format!("kafka-lag-{}-{}", self.watch.group, topic);
        raw.chars()
            .map(|ch| {
                if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                    ch
                } else {
                    '-'
                }
            })
            .collect()
    }
}

impl fmt::Display for WatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group={} topic={} offsetResetPolicy={}",
            self.group,
            self.topic.as_deref().unwrap_or("*"),
            self.offset_reset
        )
    }
}

fn check_keys(metadata: &HashMap<String, String>) -> Result<(), TriggerError> {
    // Sorted, so that the same bad map always names the same key first.
    let keys: BTreeSet<&str> = metadata.keys().map(String::as_str).collect();
    for key in keys {
        if OWN_KEYS.contains(&key) || KEDA_KEYS.contains(&key) {
            continue;
        }
        let value = &metadata[key];
        if NOT_YET_KEYS.contains(&key) {
            return Err(invalid(
                key,
                value,
                "nothing: this KEDA Kafka option is not supported by this lagscaler version",
            ));
        }
        return Err(TriggerError::Invalid {
            key: quote(key),
            value: quote(value),
            accepted: format!("no such key; accepted keys are {}", OWN_KEYS.join(", ")),
        });
    }
    Ok(())
}

fn check_entity(metadata: &HashMap<String, String>) -> Result<(), TriggerError> {
    // Azul's README spells the key entityName; KEDA's users write entityType.
    for key in ["entityType", "entityName"] {
        match metadata.get(key).map(|value| value.trim()) {
            None | Some("consumerGroup") => {}
            Some("plugin") => {
                return Err(invalid(
                    key,
                    "plugin",
                    "consumerGroup (Azul plugins are not supported by this version)",
                ))
            }
            Some(other) => return Err(invalid(key, other, "consumerGroup")),
        }
    }
    Ok(())
}

fn check_bootstrap(value: &str, cluster: &KafkaConfig) -> Result<(), TriggerError> {
    let wanted: Option<BTreeSet<String>> =
        config::parse_bootstrap(value).map(|servers| servers.into_iter().collect());
    let configured: BTreeSet<String> = cluster.bootstrap_servers.iter().cloned().collect();
    if wanted.as_ref() == Some(&configured) {
        return Ok(());
    }
    Err(TriggerError::Invalid {
        key: "bootstrapServers".to_owned(),
        value: quote(value),
        accepted: format!(
            "the configured cluster ({}) or no bootstrapServers at all; lagscaler only \
             connects to clusters configured on the scaler side",
            cluster.bootstrap_string()
        ),
    })
}

fn parse_group(value: &str) -> Result<String, TriggerError> {
    let accepted = "a consumer group name without control characters or leading/trailing spaces";
    if value.trim().is_empty()
        || value.trim() != value
        || value.chars().any(char::is_control)
        || value.len() > 255
    {
        return Err(invalid("consumerGroup", value, accepted));
    }
    Ok(value.to_owned())
}

fn parse_topic(value: &str) -> Result<String, TriggerError> {
    // Kafka's own rule for topic names.
    let valid = value.len() <= 249
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-');
    if !valid {
        return Err(invalid(
            "topic",
            value,
            "one Kafka topic name (letters, digits, '.', '_', '-'; at most 249) or empty for \
             every topic the group committed on",
        ));
    }
    Ok(value.to_owned())
}

fn parse_integer(
    key: &'static str,
    value: &str,
    min: i64,
    accepted: &'static str,
) -> Result<i64, TriggerError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|number| *number >= min)
        .ok_or_else(|| invalid(key, value, accepted))
}

fn invalid(key: &str, value: &str, accepted: &str) -> TriggerError {
    TriggerError::Invalid {
        key: quote(key),
        value: quote(value),
        accepted: accepted.to_owned(),
    }
}

/// Shortens a user-supplied string for an error message.
fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_QUOTED).collect();
    format!("{head}...")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cluster() -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: vec!["k1:9092".to_owned(), "k2:9092".to_owned()],
            request_timeout: Duration::from_secs(5),
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Trigger, TriggerError> {
        let metadata = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Trigger::parse(&metadata, &cluster())
    }

    #[test]
    fn defaults_follow_keda() {
        let trigger = parse(&[("consumerGroup", "orders"), ("scalerAddress", "x:8090")]).unwrap();
        assert_eq!(trigger.watch.group, "orders");
        assert_eq!(trigger.watch.topic, None);
        assert_eq!(trigger.watch.offset_reset, OffsetResetPolicy::Latest);
        assert_eq!(trigger.lag_threshold, 10);
        assert_eq!(trigger.activation_lag_threshold, 0);
    }

    #[test]
    fn every_key_is_read() {
        let trigger = parse(&[
            ("entityType", "consumerGroup"),
            ("consumerGroup", "orders"),
            ("topic", "orders.v1"),
            ("lagThreshold", "50"),
            ("activationLagThreshold", "5"),
            ("offsetResetPolicy", "earliest"),
            ("bootstrapServers", "k2:9092,k1:9092"),
        ])
        .unwrap();
        assert_eq!(trigger.watch.topic.as_deref(), Some("orders.v1"));
        assert_eq!(trigger.lag_threshold, 50);
        assert_eq!(trigger.activation_lag_threshold, 5);
        assert_eq!(trigger.watch.offset_reset, OffsetResetPolicy::Earliest);
        assert_eq!(trigger.metric_name(), "kafka-lag-orders-orders-v1");
    }

    #[test]
    fn empty_topic_means_every_topic() {
        let trigger = parse(&[("consumerGroup", "g"), ("topic", "")]).unwrap();
        assert_eq!(trigger.watch.topic, None);
        assert_eq!(trigger.metric_name(), "kafka-lag-g-all-topics");
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "consumerGroup"),
            (&[("consumerGroup", "")], "consumerGroup"),
            (&[("consumerGroup", " g")], "consumerGroup"),
            (&[("consumerGroup", "g\n")], "consumerGroup"),
            (
                &[("consumerGroup", "g"), ("lagThreshold", "abc")],
                "lagThreshold",
            ),
            (
                &[("consumerGroup", "g"), ("lagThreshold", "0")],
                "lagThreshold",
            ),
            (
                &[("consumerGroup", "g"), ("lagThreshold", "-3")],
                "lagThreshold",
            ),
            (
                &[("consumerGroup", "g"), ("lagThreshold", "1.5")],
                "lagThreshold",
            ),
            (
                &[
                    ("consumerGroup", "g"),
                    ("lagThreshold", "99999999999999999999"),
                ],
                "lagThreshold",
            ),
            (
                &[("consumerGroup", "g"), ("activationLagThreshold", "-1")],
                "activationLagThreshold",
            ),
            (
                &[("consumerGroup", "g"), ("offsetResetPolicy", "sideways")],
                "offsetResetPolicy",
            ),
            (
                &[("consumerGroup", "g"), ("offsetResetPolicy", "Latest")],
                "offsetResetPolicy",
            ),
            (&[("consumerGroup", "g"), ("topic", "a,b")], "topic"),
            (&[("consumerGroup", "g"), ("topic", "..")], "topic"),
            (
                &[("consumerGroup", "g"), ("entityType", "plugin")],
                "entityType",
            ),
            (
                &[("consumerGroup", "g"), ("entityName", "queue")],
                "entityName",
            ),
            (
                &[("consumerGroup", "g"), ("bootstrapServers", "evil:9092")],
                "bootstrapServers",
            ),
            (
                &[("consumerGroup", "g"), ("bootstrapServers", "k1:9092")],
                "bootstrapServers",
            ),
            (
                &[("consumerGroup", "g"), ("lagTreshold", "5")],
                "lagTreshold",
            ),
            (
                &[("consumerGroup", "g"), ("allowIdleConsumers", "true")],
                "allowIdleConsumers",
            ),
        ];
        for (pairs, key) in cases {
            let message = parse(pairs).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("metadata {key}")),
                "{pairs:?}: {message}"
            );
            assert!(message.contains("expected"), "{pairs:?}: {message}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let huge = "9".repeat(10_000);
        let message = parse(&[("consumerGroup", "g"), ("lagThreshold", &huge)])
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
    }

    #[test]
    fn metric_name_is_stable_and_sanitised() {
        let trigger = parse(&[("consumerGroup", "team/a.b"), ("topic", "t_1")]).unwrap();
        assert_eq!(trigger.metric_name(), "kafka-lag-team-a-b-t_1");
        assert_eq!(trigger.metric_name(), trigger.clone().metric_name());
    }
}
