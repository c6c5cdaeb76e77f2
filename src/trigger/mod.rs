//! Trigger metadata (a ScaledObject's `metadata` map) to a typed [`Trigger`]. Pure: no IO.
//!
//! Keys and meanings follow KEDA's own Kafka trigger, so a `kafka` trigger moves here by
//! changing `type:` and adding `scalerAddress`. Anything this version cannot honour is
//! refused with the key, the value and what is accepted: a typo or an unsupported option
//! never falls back to a default silently.

use std::collections::HashMap;
use std::fmt;

use crate::config::ClusterSet;
use crate::estimate::{MetricMode, Rules};
use crate::lag::LagRule;

pub mod codec;
mod group;
mod keys;
mod plugin;
mod rules;
mod values;

pub use keys::OWN_KEYS;

use keys::{check_entity, check_keys, resolve_from_env};
pub use values::{is_dns_label, is_dns_subdomain, PartitionSet, TopicPattern};

/// What one trigger asks for: which lag to watch and how to turn it into answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// What is polled; triggers with equal keys share one watch.
    pub watch: WatchKey,
    /// How the watch's estimates become this trigger's answers.
    pub rules: Rules,
    /// Azul's `targetSize`: the HPA target of a plugin's `backlog` (or `lag`) metric.
    pub target_size: Option<i64>,
}

/// Identity of a watch: everything that decides what a poll reads and how lag is counted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// The Kafka cluster: a named one of `SCALER_KAFKA_CLUSTERS_FILE`, or `None` for the
    /// default (`SCALER_KAFKA_*`) one.
    pub cluster: Option<String>,
    /// Whose lag: one consumer group, or an Azul plugin's groups.
    pub source: Source,
    /// One topic, or several as a sorted comma-separated list (`topic: a,b`), or `None` for
    /// every topic the group has committed offsets for (or, with `topic_pattern`, matches).
    pub topic: Option<String>,
    /// Every topic of the cluster or the group committed on whose name this matches whole
    /// (`topicPattern`); never with `topic`.
    pub topic_pattern: Option<TopicPattern>,
    /// Only these partitions of the topic count (`partitionLimitation`); `None` for all.
    pub partitions: Option<PartitionSet>,
    /// How a partition's lag is counted.
    pub lag_rule: LagRule,
}

/// Whose committed offsets a watch reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// One consumer group (`consumerGroup`).
    Group(String),
    /// An Azul plugin (`entityType=plugin`): the consumer groups the dispatcher made for it,
    /// found through its deployment key in Redis.
    Plugin {
        /// `pluginName`: the dispatcher's deployment key.
        name: String,
        /// Whether its `-historic` groups count (`includeHistoric`).
        include_historic: bool,
    },
}

impl Source {
    /// The group or plugin name, e.g. for a thread name.
    pub fn name(&self) -> &str {
        match self {
            Source::Group(group) => group,
            Source::Plugin { name, .. } => name,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Group(group) => write!(f, "group={group}"),
            Source::Plugin {
                name,
                include_historic,
            } => write!(f, "plugin={name} includeHistoric={include_historic}"),
        }
    }
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
    /// A key this trigger does not read. Its value is not repeated: a mistyped key may carry
    /// a secret.
    #[error("metadata {key} is not a key this trigger reads: expected {accepted}")]
    UnknownKey {
        /// The key, shortened when long.
        key: String,
        /// What is accepted instead.
        accepted: String,
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

impl Trigger {
    /// Parses a trigger's metadata. `clusters` are the Kafka clusters lagscaler is
    /// configured for: `cluster` picks one by name, and `bootstrapServers`, when given, must
    /// be one of them (the picked one, if `cluster` is given too) and no other host.
    pub fn parse(
        metadata: &HashMap<String, String>,
        clusters: &ClusterSet,
    ) -> Result<Trigger, TriggerError> {
        let resolved = resolve_from_env(metadata);
        let metadata: &HashMap<String, String> = &resolved;
        check_keys(metadata)?;
        match check_entity(metadata)? {
            Entity::Plugin => plugin::parse(metadata),
            Entity::ConsumerGroup => group::parse(metadata, clusters),
        }
    }

    /// The metric's name: stable for a mode and watch, and safe for an HPA metric name. A
    /// plugin's default metric keeps Azul's name, `backlog`.
    pub fn metric_name(&self) -> String {
        metric_name(&self.watch, self.rules.metric)
    }

    /// The HPA target of the metric: `lagThreshold` (a plugin's `targetSize`) per replica for
    /// `lag`, the ETA aimed at for `eta` (meant for `metricType: Value`), 1 per replica for
    /// `replicas`, `targetSize` minutes per replica for `backlog`, and the time lag aimed at
    /// for `timeLag` (meant for `metricType: Value`).
    pub fn target(&self) -> f64 {
        match self.rules.metric {
            MetricMode::Lag => self.rules.lag_threshold as f64,
            MetricMode::Eta => self.rules.target_eta.map_or(0.0, |eta| eta.as_secs_f64()),
            MetricMode::Replicas => 1.0,
            MetricMode::Backlog => self.target_size.unwrap_or(1) as f64,
            MetricMode::TimeLag => self
                .rules
                .time_lag_threshold
                .map_or(0.0, |threshold| threshold.as_secs_f64()),
        }
    }
}

/// The name of the metric in `mode` of the triggers on `watch` (see [`Trigger::metric_name`]).
pub fn metric_name(watch: &WatchKey, mode: MetricMode) -> String {
    let raw = match &watch.source {
        Source::Group(group) => match &watch.topic_pattern {
            Some(pattern) => format!("kafka-{mode}-{group}-pattern-{}", pattern.as_str()),
            None => {
                let topic = watch.topic.as_deref().unwrap_or("all-topics");
                format!("kafka-{mode}-{group}-{topic}")
            }
        },
        Source::Plugin { .. } if mode == MetricMode::Backlog => "backlog".to_owned(),
        Source::Plugin { name, .. } => format!("plugin-{mode}-{name}"),
    };
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

/// What a trigger's `entityType` (or `entityName`) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entity {
    ConsumerGroup,
    Plugin,
}

impl fmt::Display for WatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(cluster) = &self.cluster {
            write!(f, "cluster={cluster} ")?;
        }
        write!(f, "{}", self.source)?;
        if let Source::Plugin { .. } = self.source {
            return Ok(());
        }
        match &self.topic_pattern {
            Some(pattern) => write!(f, " topicPattern={}", pattern.as_str())?,
            None => write!(f, " topic={}", self.topic.as_deref().unwrap_or("*"))?,
        }
        if let Some(partitions) = &self.partitions {
            write!(f, " partitions={partitions}")?;
        }
        write!(f, " {}", self.lag_rule)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::keys::*;
    use super::values::*;
    use super::*;
    use crate::config::KafkaConfig;
    use crate::estimate::MAX_IDLE_WINDOW;
    use crate::lag::{Isolation, OffsetResetPolicy};

    fn cluster() -> ClusterSet {
        let default = KafkaConfig {
            bootstrap_servers: vec!["k1:9092".to_owned(), "k2:9092".to_owned()],
            request_timeout: Duration::from_secs(5),
            stats_interval: None,
            sasl: None,
            tls: None,
            commit_source: crate::config::CommitSource::Fetch,
            commit_reader_idle: Duration::from_secs(15),
        };
        let analytics = KafkaConfig {
            bootstrap_servers: vec!["a1:9093".to_owned()],
            ..default.clone()
        };
        ClusterSet {
            default,
            named: [("analytics".to_owned(), analytics)].into(),
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
        assert_eq!(trigger.watch.source, Source::Group("orders".to_owned()));
        assert_eq!(trigger.watch.topic, None);
        assert_eq!(trigger.watch.partitions, None);
        assert_eq!(trigger.watch.lag_rule, LagRule::DEFAULT);
        assert_eq!(trigger.rules, Rules::default());
        assert_eq!(trigger.rules.lag_threshold, 10);
        assert_eq!(trigger.rules.activation_lag_threshold, 0);
        assert_eq!(trigger.target(), 10.0);
    }

    #[test]
    fn topic_lists_several_topics_comma_separated_as_keda_does() {
        let g = ("consumerGroup", "orders");
        let trigger = parse(&[g, ("topic", " payments, orders ,payments")]).unwrap();
        assert_eq!(trigger.watch.topic.as_deref(), Some("orders,payments"));
        // The same list in any order and spacing is the same watch.
        let same = parse(&[g, ("topic", "payments,orders")]).unwrap();
        assert_eq!(same.watch, trigger.watch);
        assert_eq!(trigger.metric_name(), "kafka-lag-orders-orders-payments");
        // Keys that count partitions count those of every topic listed; partition numbers
        // name one topic's, so they are refused with several.
        for key in [
            "limitToPartitionsWithLag",
            "ensureEvenDistributionOfPartitions",
        ] {
            assert!(
                parse(&[g, ("topic", "a,b"), (key, "true")]).is_ok(),
                "{key}"
            );
        }
        let err = parse(&[g, ("topic", "a,b"), ("partitionLimitation", "1,2")]).unwrap_err();
        assert!(
            err.to_string().contains("partitionLimitation")
                && err
                    .to_string()
                    .contains("partition numbers name the partitions of one"),
            "{err}"
        );
        assert!(parse(&[g, ("topic", "a"), ("partitionLimitation", "1,2")]).is_ok());
        let many: Vec<String> = (0..=MAX_TOPICS).map(|n| format!("t{n}")).collect();
        let err = parse(&[g, ("topic", &many.join(","))]).unwrap_err();
        assert!(err.to_string().contains("at most 100"), "{err}");
    }

    fn plugin(pairs: &[(&str, &str)]) -> Result<Trigger, TriggerError> {
        let mut all = vec![("entityType", "plugin"), ("pluginName", "plugin-tika")];
        all.extend_from_slice(pairs);
        parse(&all)
    }

    /// KEDA's external scalers read these from the metadata they forward (v2.13 to v2.21:
    /// `tlsCertFile` up to 2.16, `enableTLS` from 2.17); the TLS material of its
    /// TriggerAuthentication may stand there too.
    #[test]
    fn every_key_kedas_external_scaler_reads_is_accepted_with_either_entity() {
        let keda = [
            ("scalerAddress", "lagscaler:8090"),
            ("unsafeSsl", "true"),
            ("tlsCertFile", "/certs/ca.crt"),
            ("enableTLS", "true"),
            ("caCert", "pem"),
            ("tlsClientCert", "pem"),
            ("tlsClientKey", "pem"),
        ];
        for key in keda {
            let group = parse(&[("consumerGroup", "orders"), key]);
            assert!(group.is_ok(), "{}: {group:?}", key.0);
            let plugin = plugin(&[("targetSize", "5"), key]);
            assert!(plugin.is_ok(), "{}: {plugin:?}", key.0);
        }
    }

    #[test]
    fn azul_plugin_metadata_is_read_as_azul_does() {
        let trigger = plugin(&[("targetSize", "5"), ("scalerAddress", "x:8090")]).unwrap();
        assert_eq!(
            trigger.watch.source,
            Source::Plugin {
                name: "plugin-tika".to_owned(),
                include_historic: false
            }
        );
        assert_eq!(trigger.rules.metric, MetricMode::Backlog);
        assert_eq!(trigger.metric_name(), "backlog");
        assert_eq!(trigger.target(), 5.0);
        assert!(
            trigger.rules.allow_idle_consumers,
            "no partition cap for plugins"
        );
        // Azul's README spells the key entityName; includeHistoric is trimmed, any case.
        for value in ["true", " TRUE ", "True"] {
            let trigger = parse(&[
                ("entityName", "plugin"),
                ("pluginName", "plugin-tika"),
                ("targetSize", "5"),
                ("includeHistoric", value),
            ])
            .unwrap();
            assert!(matches!(
                trigger.watch.source,
                Source::Plugin {
                    include_historic: true,
                    ..
                }
            ));
        }
        let other_mode = plugin(&[("metric", "eta"), ("targetEtaSeconds", "60")]).unwrap();
        assert_eq!(other_mode.metric_name(), "plugin-eta-plugin-tika");
        assert_eq!(other_mode.target(), 60.0);
        let lag = plugin(&[("metric", "lag"), ("targetSize", "100")]).unwrap();
        assert_eq!(lag.target(), 100.0);
        assert_ne!(
            plugin(&[("targetSize", "5")]).unwrap().watch,
            plugin(&[("targetSize", "5"), ("includeHistoric", "true")])
                .unwrap()
                .watch,
            "includeHistoric is part of the watch"
        );
    }

    #[test]
    fn bad_plugin_metadata_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("targetSize", "5"), ("includeHistoric", "yes")],
                "includeHistoric",
            ),
            (
                &[("targetSize", "5"), ("includeHistoric", "1")],
                "includeHistoric",
            ),
            (
                &[("targetSize", "5"), ("includeHistoric", "")],
                "includeHistoric",
            ),
            (&[], "targetSize"),
            (&[("targetSize", "0")], "targetSize"),
            (&[("targetSize", "9000000000000001")], "targetSize"),
            (&[("targetSize", "2.5")], "targetSize"),
            (&[("targetSize", "5"), ("metric", "minutes")], "metric"),
            (&[("metric", "eta")], "targetEtaSeconds"),
            (
                &[
                    ("metric", "eta"),
                    ("targetEtaSeconds", "60"),
                    ("targetSize", "5"),
                ],
                "targetSize",
            ),
            (
                &[("targetSize", "5"), ("consumerGroup", "g")],
                "consumerGroup",
            ),
            (&[("targetSize", "5"), ("topic", "t")], "topic"),
            (
                &[("targetSize", "5"), ("lagThreshold", "5")],
                "lagThreshold",
            ),
            (
                &[("targetSize", "5"), ("entityName", "consumerGroup")],
                "entityName",
            ),
        ];
        for (pairs, key) in cases {
            let err = plugin(pairs).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("metadata {key}")),
                "{pairs:?}: {message}"
            );
            assert!(message.contains("expected"), "{message}");
        }
        for name in ["", " p", "p\n"] {
            let err = parse(&[
                ("entityType", "plugin"),
                ("pluginName", name),
                ("targetSize", "5"),
            ])
            .unwrap_err();
            assert!(err.to_string().starts_with("metadata pluginName"), "{err}");
        }
        let err = parse(&[("entityType", "plugin"), ("targetSize", "5")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("metadata pluginName is missing"),
            "{err}"
        );
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
            ("isolationLevel", "read_committed"),
            ("bootstrapServers", "k2:9092,k1:9092"),
            ("partitionLimitation", "3, 0-1"),
            ("allowIdleConsumers", "false"),
            ("excludePersistentLag", "true"),
            ("scaleToZeroOnInvalidOffset", "True"),
            ("limitToPartitionsWithLag", "1"),
            ("ensureEvenDistributionOfPartitions", "t"),
            ("metric", "eta"),
            ("targetEtaSeconds", "90"),
            ("idleWindow", "2m"),
        ])
        .unwrap();
        let watch = &trigger.watch;
        assert_eq!(watch.topic.as_deref(), Some("orders.v1"));
        assert_eq!(watch.partitions.as_ref().unwrap().to_string(), "0-1,3");
        assert_eq!(
            watch.lag_rule,
            LagRule {
                offset_reset: OffsetResetPolicy::Earliest,
                zero_on_invalid_offset: true,
                isolation: Isolation::ReadCommitted,
            }
        );
        let expected = Rules {
            metric: MetricMode::Eta,
            lag_threshold: 50,
            activation_lag_threshold: 5,
            activation_time_lag: None,
            time_lag_threshold: None,
            target_eta: Some(Duration::from_secs(90)),
            idle_window: Duration::from_secs(120),
            allow_idle_consumers: false,
            exclude_persistent_lag: true,
            limit_to_partitions_with_lag: true,
            ensure_even_distribution: true,
        };
        assert_eq!(trigger.rules, expected);
        assert_eq!(trigger.metric_name(), "kafka-eta-orders-orders-v1");
        assert_eq!(trigger.target(), 90.0);
    }

    #[test]
    fn time_lag_takes_its_threshold_in_seconds_and_activation_on_age() {
        let g = ("consumerGroup", "g");
        let trigger = parse(&[
            g,
            ("topic", "t"),
            ("metric", "timeLag"),
            ("timeLagThreshold", "90"),
            ("activationTimeLagThreshold", "2.5"),
        ])
        .unwrap();
        assert_eq!(trigger.rules.metric, MetricMode::TimeLag);
        assert_eq!(
            trigger.rules.time_lag_threshold,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            trigger.rules.activation_time_lag,
            Some(Duration::from_millis(2500))
        );
        assert!(trigger.rules.needs_time_lag());
        assert_eq!(trigger.metric_name(), "kafka-timeLag-g-t");
        assert_eq!(trigger.target(), 90.0);
        // Activation on age with another metric.
        let trigger = parse(&[g, ("activationTimeLagThreshold", "0")]).unwrap();
        assert_eq!(trigger.rules.activation_time_lag, Some(Duration::ZERO));
        assert!(trigger.rules.needs_time_lag());
        assert!(!parse(&[g]).unwrap().rules.needs_time_lag());
        let on_plugin = plugin(&[("metric", "timeLag"), ("timeLagThreshold", "30")]).unwrap();
        assert_eq!(on_plugin.metric_name(), "plugin-timeLag-plugin-tika");
        assert_eq!(on_plugin.target(), 30.0);
        let shortest = parse(&[g, ("metric", "timeLag"), ("timeLagThreshold", "0.001")]).unwrap();
        assert_eq!(shortest.target(), 0.001);

        // Each refusal names the key, never echoing a bad value back unquoted.
        for (metadata, key) in [
            (&[g, ("metric", "timeLag")][..], "timeLagThreshold"),
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "0")],
                "timeLagThreshold",
            ),
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "-3")],
                "timeLagThreshold",
            ),
            // Below a millisecond, KEDA's target (in milli-units) would be 0, which the HPA
            // refuses.
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "0.0009")],
                "timeLagThreshold",
            ),
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "1e-7")],
                "timeLagThreshold",
            ),
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "NaN")],
                "timeLagThreshold",
            ),
            (
                &[g, ("metric", "timeLag"), ("timeLagThreshold", "1e9")],
                "timeLagThreshold",
            ),
            (&[g, ("timeLagThreshold", "60")], "timeLagThreshold"),
            (
                &[g, ("activationTimeLagThreshold", "-1")],
                "activationTimeLagThreshold",
            ),
            (
                &[g, ("activationTimeLagThreshold", "soon")],
                "activationTimeLagThreshold",
            ),
            (&[g, ("metric", "timelag")], "metric"),
        ] {
            let err = parse(metadata).unwrap_err().to_string();
            assert!(err.contains(key), "{metadata:?}: {err}");
        }
        let err = plugin(&[
            ("metric", "timeLag"),
            ("timeLagThreshold", "30"),
            ("targetSize", "5"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("targetSize"), "{err}");
    }

    #[test]
    fn topic_pattern_matches_whole_names_and_refuses_what_has_no_meaning() {
        let g = ("consumerGroup", "g");
        let trigger = parse(&[g, ("topicPattern", " orders-(eu|us) ")]).unwrap();
        let pattern = trigger.watch.topic_pattern.clone().expect("a pattern");
        assert_eq!(pattern.as_str(), "orders-(eu|us)");
        assert!(pattern.regex().is_match("orders-eu"));
        assert!(
            !pattern.regex().is_match("orders-eu-old"),
            "whole names only"
        );
        assert!(!pattern.regex().is_match("x-orders-us"), "whole names only");
        assert_eq!(trigger.watch.topic, None);
        assert_eq!(trigger.metric_name(), "kafka-lag-g-pattern-orders--eu-us-");
        assert_eq!(
            trigger.watch.to_string(),
            "group=g topicPattern=orders-(eu|us) offsetResetPolicy=latest"
        );
        // Equal patterns share a watch; an empty one means every committed topic.
        let again = parse(&[g, ("topicPattern", "orders-(eu|us)")]).unwrap();
        assert_eq!(again.watch, trigger.watch);
        assert_eq!(
            parse(&[g, ("topicPattern", "")])
                .unwrap()
                .watch
                .topic_pattern,
            None
        );
        // The caps and even distribution count every partition of every topic matched.
        for key in [
            "limitToPartitionsWithLag",
            "ensureEvenDistributionOfPartitions",
        ] {
            assert!(
                parse(&[g, ("topicPattern", "a.*"), (key, "true")]).is_ok(),
                "{key}"
            );
        }

        let long = "a".repeat(MAX_TOPIC_PATTERN_LEN + 1);
        for (metadata, key) in [
            (&[g, ("topicPattern", "orders-(")][..], "topicPattern"),
            (&[g, ("topicPattern", "(?<=a)b")], "topicPattern"),
            // Invalid alone, it would close the anchoring group around it and match
            // orders-archive and eu-payments.
            (&[g, ("topicPattern", "orders)|(payments")], "topicPattern"),
            (&[g, ("topicPattern", "a)|(?:b")], "topicPattern"),
            (&[g, ("topicPattern", long.as_str())], "topicPattern"),
            (&[g, ("topicPattern", "a{1000}{1000}")], "topicPattern"),
            (
                &[g, ("topic", "t"), ("topicPattern", "t.*")],
                "topicPattern",
            ),
            (
                &[g, ("topicPattern", "t.*"), ("partitionLimitation", "1")],
                "partitionLimitation",
            ),
        ] {
            let err = parse(metadata).unwrap_err().to_string();
            assert!(err.contains(key), "{metadata:?}: {err}");
        }
        let err = plugin(&[("targetSize", "5"), ("topicPattern", "a.*")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topicPattern"), "{err}");
    }

    #[test]
    fn empty_topic_means_every_topic() {
        let trigger = parse(&[("consumerGroup", "g"), ("topic", "")]).unwrap();
        assert_eq!(trigger.watch.topic, None);
        assert_eq!(trigger.metric_name(), "kafka-lag-g-all-topics");
    }

    /// Every KEDA key, and lagscaler's own, with values that must be accepted.
    #[test]
    fn valid_values_of_every_key_are_accepted() {
        let base = [("consumerGroup", "g"), ("topic", "t")];
        let cases: &[(&str, &str)] = &[
            ("bootstrapServers", "k1:9092,k2:9092"),
            ("bootstrapServers", " k2:9092 , k1:9092 "),
            ("lagThreshold", "1"),
            ("lagThreshold", " 9000000000000000 "),
            ("activationLagThreshold", "0"),
            ("activationLagThreshold", "100"),
            ("offsetResetPolicy", "latest"),
            ("offsetResetPolicy", "earliest"),
            ("isolationLevel", "read_uncommitted"),
            ("isolationLevel", " read_committed "),
            ("partitionLimitation", "0"),
            ("partitionLimitation", "1,2,10-20"),
            ("partitionLimitation", ""),
            ("allowIdleConsumers", "true"),
            ("allowIdleConsumers", "F"),
            ("excludePersistentLag", "TRUE"),
            ("excludePersistentLag", "0"),
            ("scaleToZeroOnInvalidOffset", "true"),
            ("limitToPartitionsWithLag", "true"),
            ("ensureEvenDistributionOfPartitions", "true"),
            ("metric", "lag"),
            ("targetEtaSeconds", "60"),
            ("targetEtaSeconds", "0.5"),
            ("idleWindow", "0"),
            ("idleWindow", "90s"),
            ("idleWindow", "120"),
            ("idleWindow", "1h"),
            ("entityType", "consumerGroup"),
            ("entityName", "consumerGroup"),
            ("scalerAddress", "lagscaler:8090"),
            ("enableTLS", "false"),
            ("unsafeSsl", "true"),
        ];
        for (key, value) in cases {
            let mut pairs = base.to_vec();
            pairs.push((key, value));
            if let Err(err) = parse(&pairs) {
                panic!("{key}={value:?} refused: {err}");
            }
        }
        for metric in ["eta", "replicas"] {
            let trigger = parse(&[
                ("consumerGroup", "g"),
                ("metric", metric),
                ("targetEtaSeconds", "30"),
            ])
            .unwrap();
            assert_eq!(trigger.rules.metric.as_str(), metric);
        }
    }

    /// Invalid values and combinations, each refused naming the key.
    #[test]
    fn a_trigger_reaches_only_configured_clusters() {
        let g = ("consumerGroup", "orders");
        let watch = |pairs: &[(&str, &str)]| parse(pairs).map(|trigger| trigger.watch.cluster);
        assert_eq!(watch(&[g]).unwrap(), None);
        assert_eq!(watch(&[g, ("cluster", "default")]).unwrap(), None);
        assert_eq!(
            watch(&[g, ("cluster", "analytics")]).unwrap().as_deref(),
            Some("analytics")
        );
        // bootstrapServers picks the configured cluster with those servers.
        assert_eq!(
            watch(&[g, ("bootstrapServers", "a1:9093")])
                .unwrap()
                .as_deref(),
            Some("analytics")
        );
        assert_eq!(
            watch(&[g, ("bootstrapServers", "k2:9092,k1:9092")]).unwrap(),
            None
        );
        let refused = |pairs: &[(&str, &str)], key: &str, says: &str| {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("metadata {key}")),
                "{pairs:?}: {err}"
            );
            assert!(err.contains(says), "{pairs:?}: {err}");
        };
        refused(&[g, ("cluster", "prod")], "cluster", "default, analytics");
        refused(
            &[g, ("bootstrapServers", "evil:9092")],
            "bootstrapServers",
            "a configured cluster's (default, analytics)",
        );
        refused(
            &[
                g,
                ("cluster", "analytics"),
                ("bootstrapServers", "k1:9092,k2:9092"),
            ],
            "bootstrapServers",
            "cluster analytics's",
        );
        refused(
            &[g, ("cluster", "default"), ("bootstrapServers", "a1:9093")],
            "bootstrapServers",
            "the default cluster's",
        );
        // The refusal never lists a cluster's brokers: a ScaledObject in any namespace
        // learns no broker address from it.
        for pairs in [
            &[g, ("bootstrapServers", "evil:9092")][..],
            &[g, ("cluster", "analytics"), ("bootstrapServers", "k1:9092")],
            &[g, ("cluster", "default"), ("bootstrapServers", "a1:9093")],
        ] {
            let err = parse(pairs).unwrap_err().to_string();
            for broker in ["k1:9092", "k2:9092", "a1:9093"] {
                let given = pairs.iter().any(|(_, value)| value.contains(broker));
                assert!(given || !err.contains(broker), "{pairs:?}: {err}");
            }
        }
        // A different cluster is a different watch, shown in its name.
        let trigger = parse(&[g, ("cluster", "analytics")]).unwrap();
        assert!(trigger.watch.to_string().starts_with("cluster=analytics "));
        assert_ne!(trigger.watch, parse(&[g]).unwrap().watch);
        // Plugins read the default cluster.
        refused(
            &[
                ("entityType", "plugin"),
                ("pluginName", "p"),
                ("targetSize", "1"),
                ("cluster", "analytics"),
            ],
            "cluster",
            "",
        );
    }

    #[test]
    fn targets_at_the_edges_of_what_keda_holds_are_accepted() {
        let g = ("consumerGroup", "g");
        let trigger = parse(&[g, ("lagThreshold", "9000000000000000")]).unwrap();
        assert_eq!(trigger.target(), 9e15);
        let trigger = parse(&[g, ("metric", "eta"), ("targetEtaSeconds", "0.001")]).unwrap();
        assert_eq!(trigger.target(), 0.001);
        let trigger = plugin(&[("targetSize", "9000000000000000")]).unwrap();
        assert_eq!(trigger.target(), 9e15);
    }

    #[test]
    fn an_unknown_key_is_named_without_its_value() {
        // A mistyped key may carry a secret (a password put where no key takes it).
        let secret = "pw-never-echoed-5f1c";
        for pairs in [
            &[("consumerGroup", "g"), ("saslPassword", secret)][..],
            &[
                ("entityType", "plugin"),
                ("pluginName", "p"),
                ("targetSize", "1"),
                ("saslPassword", secret),
            ],
        ] {
            let err = parse(pairs).unwrap_err().to_string();
            assert!(err.contains("saslPassword"), "{err}");
            assert!(err.contains("expected"), "{err}");
            assert!(!err.contains(secret), "the value is echoed: {err}");
        }
    }

    #[test]
    fn from_env_keys_carry_the_value_keda_resolved() {
        // KEDA resolves `<key>FromEnv` from the workload's environment and forwards the
        // value under that key.
        let resolved = parse(&[
            ("consumerGroupFromEnv", "orders"),
            ("topicFromEnv", "payments"),
            ("lagThresholdFromEnv", "50"),
            ("bootstrapServersFromEnv", "k2:9092,k1:9092"),
        ])
        .unwrap();
        let plain = parse(&[
            ("consumerGroup", "orders"),
            ("topic", "payments"),
            ("lagThreshold", "50"),
        ])
        .unwrap();
        assert_eq!(resolved, plain);
        // The plain key wins over the resolved one, as in KEDA.
        let both = parse(&[
            ("consumerGroup", "orders"),
            ("consumerGroupFromEnv", "other"),
        ])
        .unwrap();
        assert_eq!(both.watch.source, Source::Group("orders".to_owned()));
        // A resolved value is checked like a plain one, and named by its own key.
        let err = parse(&[("consumerGroup", "g"), ("lagThresholdFromEnv", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lagThreshold=\"many\""), "{err}");
        // Plugins too.
        let plugin = parse(&[
            ("entityType", "plugin"),
            ("pluginNameFromEnv", "plugin-tika"),
            ("targetSize", "1"),
        ])
        .unwrap();
        assert!(plugin.watch.to_string().contains("plugin-tika"));
        // A FromEnv key of no key this trigger reads is unknown, and named without its value.
        let err = parse(&[("consumerGroup", "g"), ("passwordFromEnv", "pw-5f1c")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwordFromEnv"), "{err}");
        assert!(!err.contains("pw-5f1c"), "{err}");
    }

    #[test]
    fn kedas_version_key_is_checked_and_changes_nothing() {
        let g = ("consumerGroup", "g");
        for version in ["1.0.0", "3.9.0", " 2.8.1 ", "0.10.2.0"] {
            let trigger = parse(&[g, ("version", version)]).unwrap();
            assert_eq!(trigger, parse(&[g]).unwrap(), "{version}");
        }
        for version in ["", "latest", "3", "3.9", "1.2.3.4", "3.9.x", "1.0.0-rc1"] {
            let err = parse(&[g, ("version", version)]).unwrap_err().to_string();
            assert!(err.contains("metadata version="), "{version}: {err}");
        }
    }

    #[test]
    fn kubernetes_names_are_checked() {
        for ok in ["default", "keda", "a", "team-1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "ä",
            &"a".repeat(64),
            "a\n",
        ] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        for ok in ["orders.v1", "my-app.team-1"] {
            assert!(is_dns_subdomain(ok), "{ok}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        for bad in ["", "a..b", ".a", "a.", "a/b", "Orders", long.as_str()] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
    }

    #[test]
    fn partition_limitation_is_bounded() {
        let g = ("consumerGroup", "g");
        let t = ("topic", "t");
        let items = |n: usize| {
            (0..n)
                .map(|i| (2 * i).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(parse(&[g, t, ("partitionLimitation", &items(1000))]).is_ok());
        let err = parse(&[g, t, ("partitionLimitation", &items(1001))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1000"), "{err}");
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let g = ("consumerGroup", "g");
        let t = ("topic", "t");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "consumerGroup"),
            (&[("consumerGroup", "")], "consumerGroup"),
            (&[("consumerGroup", " g")], "consumerGroup"),
            (&[("consumerGroup", "g\n")], "consumerGroup"),
            (&[g, ("lagThreshold", "abc")], "lagThreshold"),
            (&[g, ("lagThreshold", "0")], "lagThreshold"),
            (&[g, ("lagThreshold", "-3")], "lagThreshold"),
            (&[g, ("lagThreshold", "1.5")], "lagThreshold"),
            (
                &[g, ("lagThreshold", "99999999999999999999")],
                "lagThreshold",
            ),
            // KEDA holds a target × 1000 in an int64: 9e15 is the most it takes.
            (&[g, ("lagThreshold", "9000000000000001")], "lagThreshold"),
            // A target that rounds to no time at all.
            (&[g, ("targetEtaSeconds", "1e-10")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "0.0009")], "targetEtaSeconds"),
            (
                &[g, ("activationLagThreshold", "-1")],
                "activationLagThreshold",
            ),
            (&[g, ("offsetResetPolicy", "sideways")], "offsetResetPolicy"),
            (&[g, ("isolationLevel", "READ_COMMITTED")], "isolationLevel"),
            (&[g, ("offsetResetPolicy", "Latest")], "offsetResetPolicy"),
            (&[g, ("topic", "a,,b")], "topic"),
            (&[g, ("topic", "a,")], "topic"),
            (&[g, ("topic", "a,b c")], "topic"),
            (&[g, ("topic", "..")], "topic"),
            (&[g, ("entityType", "plugin")], "consumerGroup"),
            (&[g, ("pluginName", "p")], "pluginName"),
            (&[g, ("metric", "backlog")], "metric"),
            (&[g, ("entityName", "queue")], "entityName"),
            (&[g, ("bootstrapServers", "evil:9092")], "bootstrapServers"),
            (&[g, ("bootstrapServers", "k1:9092")], "bootstrapServers"),
            (&[g, ("lagTreshold", "5")], "lagTreshold"),
            (
                &[g, t, ("partitionLimitation", "1,x")],
                "partitionLimitation",
            ),
            (
                &[g, t, ("partitionLimitation", "5-2")],
                "partitionLimitation",
            ),
            (
                &[g, t, ("partitionLimitation", "-1")],
                "partitionLimitation",
            ),
            (
                &[g, t, ("partitionLimitation", "1,,2")],
                "partitionLimitation",
            ),
            (&[g, ("partitionLimitation", "1,2")], "partitionLimitation"),
            (&[g, t, ("allowIdleConsumers", "yes")], "allowIdleConsumers"),
            (
                &[g, t, ("excludePersistentLag", "on")],
                "excludePersistentLag",
            ),
            (
                &[g, t, ("scaleToZeroOnInvalidOffset", "tRUE")],
                "scaleToZeroOnInvalidOffset",
            ),
            (
                &[g, t, ("limitToPartitionsWithLag", "2")],
                "limitToPartitionsWithLag",
            ),
            (
                &[g, ("limitToPartitionsWithLag", "true")],
                "limitToPartitionsWithLag",
            ),
            (
                &[
                    g,
                    t,
                    ("allowIdleConsumers", "true"),
                    ("limitToPartitionsWithLag", "true"),
                ],
                "limitToPartitionsWithLag",
            ),
            (
                &[g, t, ("ensureEvenDistributionOfPartitions", "nope")],
                "ensureEvenDistributionOfPartitions",
            ),
            (
                &[g, ("ensureEvenDistributionOfPartitions", "true")],
                "ensureEvenDistributionOfPartitions",
            ),
            (&[g, ("metric", "lagg")], "metric"),
            (&[g, ("metric", "eta")], "targetEtaSeconds"),
            (&[g, ("metric", "replicas")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "0")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "-5")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "NaN")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "inf")], "targetEtaSeconds"),
            (&[g, ("targetEtaSeconds", "1m")], "targetEtaSeconds"),
            (&[g, ("idleWindow", "2 fortnights")], "idleWindow"),
            (&[g, ("idleWindow", "-5")], "idleWindow"),
            (&[g, ("idleWindow", "2h")], "idleWindow"),
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
    fn partition_sets_are_normalised() {
        let set = PartitionSet::parse("10-20, 2,1, 3-4,21").unwrap();
        assert_eq!(set.to_string(), "1-4,10-21");
        assert_eq!(set, PartitionSet::parse("1-4,10-21").unwrap());
        assert!(set.contains(3) && set.contains(21) && !set.contains(5));
        assert_eq!(PartitionSet::parse("7").unwrap().to_string(), "7");
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

    mod fuzz {
        use proptest::collection::hash_map;
        use proptest::prelude::*;

        use super::*;

        /// Values that exercise every parser: numbers in and out of range, KEDA booleans and
        /// near misses, durations, partition lists, control characters and huge strings.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<i128>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| n.to_string()),
                prop::sample::select(vec![
                    "",
                    " ",
                    "0",
                    "1",
                    "-1",
                    "true",
                    "True",
                    "TRUE",
                    "t",
                    "yes",
                    "false",
                    "F",
                    "lag",
                    "eta",
                    "replicas",
                    "latest",
                    "earliest",
                    "2m",
                    "1h",
                    "90",
                    "0s",
                    "3601s",
                    "1,2,10-20",
                    "5-2",
                    "-",
                    ",",
                    "NaN",
                    "inf",
                    "1e309",
                    "consumerGroup",
                    "plugin",
                    "backlog",
                    " True ",
                    "plugin-tika",
                    "k1:9092,k2:9092",
                    "evil:1",
                ])
                .prop_map(str::to_owned),
                "[0-9,\\- ]{0,20}",
                "[\\x00-\\x1f\\u{7f}-\\u{10ffff}]{0,8}",
                (1usize..20_000).prop_map(|n| "9".repeat(n)),
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            let known: Vec<&'static str> = OWN_KEYS.iter().chain(KEDA_KEYS).copied().collect();
            prop_oneof![
                4 => prop::sample::select(known).prop_map(str::to_owned),
                1 => any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            /// Any metadata map: never a panic; either a consistent trigger or an error that
            /// names a key and says what it accepts.
            #[test]
            fn any_metadata_parses_or_names_the_key(
                mut metadata in hash_map(key(), value(), 0..12),
                group in prop_oneof![Just(None), value().prop_map(Some)],
            ) {
                if let Some(group) = group {
                    metadata.insert("consumerGroup".to_owned(), group);
                }
                match Trigger::parse(&metadata, &cluster()) {
                    Ok(trigger) => {
                        let rules = &trigger.rules;
                        prop_assert!(rules.lag_threshold >= 1);
                        prop_assert!(rules.activation_lag_threshold >= 0);
                        prop_assert!(rules.idle_window <= MAX_IDLE_WINDOW);
                        prop_assert!(trigger.target().is_finite() && trigger.target() > 0.0);
                        prop_assert!(!(rules.allow_idle_consumers
                            && rules.limit_to_partitions_with_lag));
                        prop_assert!(trigger
                            .metric_name()
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
                    }
                    Err(err) => {
                        let message = err.to_string();
                        prop_assert!(message.starts_with("metadata "), "{}", message);
                        prop_assert!(message.contains("expected"), "{}", message);
                        prop_assert!(message.len() < 2_000, "{} bytes", message.len());
                    }
                }
            }

            #[test]
            fn any_partition_list_parses_or_is_refused(text in "[0-9, \\-]{0,40}") {
                if let Some(set) = PartitionSet::parse(&text) {
                    let again = PartitionSet::parse(&set.to_string());
                    prop_assert_eq!(again, Some(set));
                }
            }

            #[test]
            fn numbers_out_of_range_are_refused(n in any::<i128>()) {
                let text = n.to_string();
                let metadata = HashMap::from([
                    ("consumerGroup".to_owned(), "g".to_owned()),
                    ("lagThreshold".to_owned(), text),
                ]);
                let parsed = Trigger::parse(&metadata, &cluster());
                prop_assert_eq!(parsed.is_ok(), (1..=i128::from(i64::MAX)).contains(&n));
            }
        }

        #[test]
        fn many_keys_at_once_are_fine() {
            let metadata: HashMap<String, String> = (0..10_000)
                .map(|i| (format!("k{i}"), "v".repeat(i % 50)))
                .collect();
            assert!(Trigger::parse(&metadata, &cluster()).is_err());
        }
    }
}
