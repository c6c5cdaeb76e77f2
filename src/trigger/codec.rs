//! A [`WatchKey`] as text and back, for fleet mode: the replicas name a watch in Redis by
//! this text, and a replica that owns a watch another one was asked about rebuilds its key
//! from it. The text is canonical (one text per key, fields in a fixed order), and reading
//! it back checks every field as a trigger's metadata is checked. Pure.

use serde_json::{json, Map, Value};

use super::values::{parse_group, parse_plugin_name, parse_topics};
use super::{PartitionSet, Source, TopicPattern, WatchKey};
use crate::config::ClusterSet;
use crate::lag::{Isolation, LagRule, OffsetResetPolicy};

/// Version of the text's layout; a replica refuses a text of another version.
const VERSION: u64 = 1;

/// The key as canonical text (compact JSON).
pub fn encode(key: &WatchKey) -> String {
    let mut fields = Map::new();
    fields.insert("v".into(), json!(VERSION));
    if let Some(cluster) = &key.cluster {
        fields.insert("cluster".into(), json!(cluster));
    }
    match &key.source {
        Source::Group(group) => {
            fields.insert("group".into(), json!(group));
        }
        Source::Plugin {
            name,
            include_historic,
        } => {
            fields.insert("plugin".into(), json!(name));
            fields.insert("historic".into(), json!(include_historic));
        }
    }
    if let Some(topic) = &key.topic {
        fields.insert("topic".into(), json!(topic));
    }
    if let Some(pattern) = &key.topic_pattern {
        fields.insert("pattern".into(), json!(pattern.as_str()));
    }
    if let Some(partitions) = &key.partitions {
        fields.insert("partitions".into(), json!(partitions.to_string()));
    }
    let rule = key.lag_rule;
    fields.insert("reset".into(), json!(rule.offset_reset.to_string()));
    fields.insert("zero".into(), json!(rule.zero_on_invalid_offset));
    fields.insert("isolation".into(), json!(rule.isolation.to_string()));
    // serde_json's map keeps keys sorted, so equal keys give equal texts.
    Value::Object(fields).to_string()
}

/// The key `text` names, checked as a trigger's metadata would be; `clusters` are the
/// clusters this replica is configured for (a fleet's replicas share one configuration).
/// The error names the field, never its value.
pub fn decode(text: &str, clusters: &ClusterSet) -> Result<WatchKey, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| "a watch key that is not JSON".to_owned())?;
    let fields = value
        .as_object()
        .ok_or_else(|| "a watch key that is not a JSON object".to_owned())?;
    let text_of = |name: &str| -> Result<Option<&str>, String> {
        match fields.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("watch key field {name} is not a string")),
        }
    };
    let flag_of = |name: &str| -> Result<bool, String> {
        fields
            .get(name)
            .and_then(Value::as_bool)
            .ok_or_else(|| format!("watch key field {name} is not true or false"))
    };
    if fields.get("v").and_then(Value::as_u64) != Some(VERSION) {
        return Err(format!(
            "a watch key of another version (this one reads {VERSION})"
        ));
    }
    let known = [
        "v",
        "cluster",
        "group",
        "plugin",
        "historic",
        "topic",
        "pattern",
        "partitions",
        "reset",
        "zero",
        "isolation",
    ];
    if let Some(unknown) = fields.keys().find(|name| !known.contains(&name.as_str())) {
        return Err(format!("watch key field {unknown:?} is not known"));
    }
    let cluster = text_of("cluster")?.map(str::to_owned);
    if clusters.get(cluster.as_deref()).is_none() {
        return Err("a watch key naming a cluster this replica is not configured for".into());
    }
    let bad = |name: &str| format!("watch key field {name} is not valid");
    let source = match (text_of("group")?, text_of("plugin")?) {
        (Some(group), None) if !fields.contains_key("historic") => {
            Source::Group(parse_group(group).map_err(|_| bad("group"))?)
        }
        (None, Some(name)) => Source::Plugin {
            name: parse_plugin_name(name).map_err(|_| bad("plugin"))?,
            include_historic: flag_of("historic")?,
        },
        _ => return Err("a watch key with neither a group nor a plugin, or both".into()),
    };
    let topic = match text_of("topic")? {
        None => None,
        Some(topic) => {
            let parsed = parse_topics(topic).map_err(|_| bad("topic"))?;
            // Canonical: the sorted list as parsing makes it.
            if parsed != topic {
                return Err(bad("topic"));
            }
            Some(parsed)
        }
    };
    let topic_pattern = match text_of("pattern")? {
        None => None,
        Some(pattern) => Some(TopicPattern::parse(pattern).map_err(|_| bad("pattern"))?),
    };
    let partitions = match text_of("partitions")? {
        None => None,
        Some(text) => Some(PartitionSet::parse(text).ok_or_else(|| bad("partitions"))?),
    };
    if topic.is_some() && topic_pattern.is_some() {
        return Err("a watch key with both a topic and a pattern".into());
    }
    let offset_reset = match text_of("reset")? {
        Some("latest") => OffsetResetPolicy::Latest,
        Some("earliest") => OffsetResetPolicy::Earliest,
        _ => return Err(bad("reset")),
    };
    let isolation = match text_of("isolation")? {
        Some("read_uncommitted") => Isolation::ReadUncommitted,
        Some("read_committed") => Isolation::ReadCommitted,
        _ => return Err(bad("isolation")),
    };
    let key = WatchKey {
        cluster,
        source,
        topic,
        topic_pattern,
        partitions,
        lag_rule: LagRule {
            offset_reset,
            zero_on_invalid_offset: flag_of("zero")?,
            isolation,
        },
    };
    // Only canonical texts: a replica must name a watch as every other one does.
    if encode(&key) != text {
        return Err("a watch key that is not in canonical form".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn clusters() -> ClusterSet {
        Config::default().cluster_set()
    }

    fn parsed(pairs: &[(&str, &str)]) -> WatchKey {
        let metadata: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::trigger::Trigger::parse(&metadata, &clusters())
            .expect("valid metadata")
            .watch
    }

    #[test]
    fn every_kind_of_key_reads_back_equal() {
        let keys = [
            parsed(&[
                ("consumerGroup", "g"),
                ("topic", "b, a"),
                ("lagThreshold", "5"),
            ]),
            parsed(&[("consumerGroup", "orders é"), ("lagThreshold", "5")]),
            parsed(&[
                ("consumerGroup", "g"),
                ("topicPattern", "(eu|us)-.*"),
                ("lagThreshold", "5"),
                ("offsetResetPolicy", "earliest"),
                ("scaleToZeroOnInvalidOffset", "true"),
                ("isolationLevel", "read_committed"),
            ]),
            parsed(&[
                ("consumerGroup", "g"),
                ("topic", "t"),
                ("partitionLimitation", "1,3-5"),
                ("lagThreshold", "5"),
            ]),
            parsed(&[
                ("entityType", "plugin"),
                ("pluginName", "plugin-tika"),
                ("includeHistoric", "true"),
                ("targetSize", "3"),
            ]),
        ];
        for key in keys {
            let text = encode(&key);
            assert_eq!(decode(&text, &clusters()), Ok(key.clone()), "{text}");
            assert_eq!(encode(&key), text, "deterministic");
        }
    }

    #[test]
    fn unknown_clusters_other_versions_and_bad_fields_are_refused_without_the_value() {
        let key = parsed(&[
            ("consumerGroup", "g"),
            ("topic", "t"),
            ("lagThreshold", "5"),
        ]);
        let text = encode(&key);
        let cases = [
            (text.replace("\"v\":1", "\"v\":2"), "another version"),
            (
                text.replace("\"group\"", "\"cluster\":\"east\",\"group\""),
                "not configured",
            ),
            (text.replace("\"t\"", "\"no way\""), "topic is not valid"),
            (
                text.replace("\"latest\"", "\"sideways\""),
                "reset is not valid",
            ),
            (text.replace("\"v\":1", "\"v\":1,\"extra\":1"), "not known"),
            (
                text.replace("\"group\":\"g\"", "\"group\":\" g\""),
                "group is not valid",
            ),
            ("[1]".to_owned(), "not a JSON object"),
            ("{".to_owned(), "not JSON"),
        ];
        for (bad, expected) in cases {
            let err = decode(&bad, &clusters()).expect_err(&bad);
            assert!(err.contains(expected), "{bad}: {err}");
            assert!(
                !err.contains("no way") && !err.contains("sideways"),
                "{err}"
            );
        }
        // Not canonical: the topics unsorted.
        let two = parsed(&[
            ("consumerGroup", "g"),
            ("topic", "a,b"),
            ("lagThreshold", "5"),
        ]);
        let unsorted = encode(&two).replace("a,b", "b,a");
        assert!(decode(&unsorted, &clusters()).is_err());
    }
}
