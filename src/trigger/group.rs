//! A consumer-group trigger: KEDA's own Kafka keys (the group, the topic, the lag options,
//! KEDA's combination rules) and lagscaler's.

use std::collections::HashMap;

use super::keys::pick_cluster;
use super::rules::{check_target_eta, parse_common, CommonRules};
use super::values::{
    invalid, is_kafka_version, parse_go_bool, parse_group, parse_target, parse_topics,
    TopicPattern, BOOL_RULE,
};
use super::{Entity, PartitionSet, Source, Trigger, TriggerError, WatchKey};
use crate::config::ClusterSet;
use crate::estimate::Rules;
use crate::lag::{Isolation, LagRule, OffsetResetPolicy};

/// The trigger of a consumer group (see [`Trigger::parse`]).
pub(super) fn parse(
    metadata: &HashMap<String, String>,
    clusters: &ClusterSet,
) -> Result<Trigger, TriggerError> {
    for key in ["pluginName", "targetSize", "includeHistoric"] {
        if let Some(value) = metadata.get(key) {
            return Err(invalid(
                key,
                value,
                "nothing for a consumerGroup trigger: this key belongs to entityType=plugin",
            ));
        }
    }
    let cluster = pick_cluster(metadata, clusters)?;
    let get = |key: &str| metadata.get(key).map(String::as_str);
    let group = match get("consumerGroup") {
        None => {
            return Err(TriggerError::Missing {
                key: "consumerGroup",
                accepted: "the name of the consumer group to measure",
            })
        }
        Some(group) => parse_group(group)?,
    };
    let topic = match get("topic") {
        None | Some("") => None,
        Some(topic) => Some(parse_topics(topic)?),
    };
    let topic_pattern = match get("topicPattern") {
        None => None,
        Some(pattern) if pattern.trim().is_empty() => None,
        Some(pattern) => Some(TopicPattern::parse(pattern)?),
    };
    if topic.is_some() && topic_pattern.is_some() {
        return Err(invalid(
            "topicPattern",
            get("topicPattern").unwrap_or_default(),
            "nothing while topic is set: give the topics by name (topic) or by a pattern \
             (topicPattern), not both",
        ));
    }
    let offset_reset = match get("offsetResetPolicy") {
        None | Some("latest") => OffsetResetPolicy::Latest,
        Some("earliest") => OffsetResetPolicy::Earliest,
        Some(other) => return Err(invalid("offsetResetPolicy", other, "latest or earliest")),
    };
    let flag = |key: &'static str| match get(key) {
        None => Ok(false),
        Some(value) => parse_go_bool(value).ok_or_else(|| invalid(key, value, BOOL_RULE)),
    };
    let isolation = match get("isolationLevel").map(str::trim) {
        None | Some("read_uncommitted") => Isolation::ReadUncommitted,
        Some("read_committed") => Isolation::ReadCommitted,
        Some(_) => {
            return Err(invalid(
                "isolationLevel",
                get("isolationLevel").unwrap_or_default(),
                "read_uncommitted (lag to the high watermark, as KEDA) or read_committed \
                 (lag to the last stable offset, for consumers that read committed data)",
            ))
        }
    };
    let lag_rule = LagRule {
        offset_reset,
        zero_on_invalid_offset: flag("scaleToZeroOnInvalidOffset")?,
        isolation,
    };
    let partitions = match get("partitionLimitation") {
        None => None,
        Some(value) if value.trim().is_empty() => None,
        Some(value) => Some(PartitionSet::parse(value).ok_or_else(|| {
            invalid(
                "partitionLimitation",
                value,
                "a comma-separated list of at most 1000 partition numbers and ranges, \
                 e.g. 1,2,10-20",
            )
        })?),
    };
    if let Some(version) = get("version") {
        // KEDA's Kafka client needs the protocol version; librdkafka negotiates it with
        // each broker, so a valid one is accepted and changes nothing.
        if !is_kafka_version(version) {
            return Err(invalid(
                "version",
                version,
                "a Kafka version as KEDA writes it, e.g. 3.9.0 or 0.10.2.0 (librdkafka \
                 negotiates the protocol with each broker, so it changes nothing)",
            ));
        }
    }

    let lag_threshold = match get("lagThreshold") {
        None => 10,
        Some(value) => parse_target(
            "lagThreshold",
            value,
            "an integer from 1 to 9000000000000000 (KEDA holds a target × 1000 in an \
             int64)",
        )?,
    };
    let CommonRules {
        metric,
        activation_lag_threshold,
        activation_time_lag,
        time_lag_threshold,
        target_eta,
        idle_window,
    } = parse_common(get, Entity::ConsumerGroup)?;
    let rules = Rules {
        metric,
        lag_threshold,
        activation_lag_threshold,
        activation_time_lag,
        time_lag_threshold,
        target_eta,
        idle_window,
        allow_idle_consumers: flag("allowIdleConsumers")?,
        exclude_persistent_lag: flag("excludePersistentLag")?,
        limit_to_partitions_with_lag: flag("limitToPartitionsWithLag")?,
        ensure_even_distribution: flag("ensureEvenDistributionOfPartitions")?,
    };

    // KEDA's combination rules; partitionLimitation without a topic is refused rather than
    // ignored as KEDA does.
    if rules.allow_idle_consumers && rules.limit_to_partitions_with_lag {
        return Err(invalid(
            "limitToPartitionsWithLag",
            "true",
            "false while allowIdleConsumers is true: the two cannot be set together",
        ));
    }
    if topic_pattern.is_some() && partitions.is_some() {
        return Err(invalid(
            "partitionLimitation",
            get("partitionLimitation").unwrap_or_default(),
            "nothing with topicPattern: partition numbers name the partitions of one topic \
             (use a trigger with topic for that topic)",
        ));
    }
    if topic.is_none() && topic_pattern.is_none() {
        let needs_topic = [
            (
                "limitToPartitionsWithLag",
                rules.limit_to_partitions_with_lag,
            ),
            (
                "ensureEvenDistributionOfPartitions",
                rules.ensure_even_distribution,
            ),
            ("partitionLimitation", partitions.is_some()),
        ];
        if let Some((key, _)) = needs_topic.iter().find(|(_, set)| *set) {
            return Err(invalid(
                key,
                get(key).unwrap_or_default(),
                "a topic to apply to: set topic (or topicPattern) as well",
            ));
        }
    }
    // Partition numbers name the partitions of one topic: with several, which is meant is
    // unknown. The partition cap and even distribution count every partition of every topic
    // listed (a consumer can own one partition of each).
    if topic.as_deref().is_some_and(|topics| topics.contains(',')) && partitions.is_some() {
        return Err(invalid(
            "partitionLimitation",
            get("partitionLimitation").unwrap_or_default(),
            "nothing while topic lists several topics: partition numbers name the partitions \
             of one topic (use one trigger per topic to limit partitions)",
        ));
    }
    check_target_eta(metric, target_eta)?;
    Ok(Trigger {
        watch: WatchKey {
            cluster,
            source: Source::Group(group),
            topic,
            topic_pattern,
            partitions,
            lag_rule,
        },
        rules,
        target_size: None,
    })
}
