//! One parser per kind of value a trigger's metadata holds (names, numbers, targets,
//! durations, flags, partition lists), each refusing with the key and what is accepted.

use std::fmt;
use std::time::Duration;

use super::TriggerError;
use crate::estimate::MAX_IDLE_WINDOW;
use crate::spelling::{parse_bool, BoolSpelling};

/// A set of partition numbers, as KEDA's `partitionLimitation` writes it: `1,2,10-20`.
/// Kept as sorted, merged, inclusive ranges, so equal sets compare equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionSet {
    ranges: Vec<(i32, i32)>,
}

impl PartitionSet {
    /// Parses `1,2,10-20` (spaces allowed around items); `None` if anything is malformed.
    pub fn parse(text: &str) -> Option<PartitionSet> {
        let mut ranges = Vec::new();
        for item in text.splitn(MAX_PARTITION_ITEMS + 1, ',') {
            if ranges.len() == MAX_PARTITION_ITEMS {
                return None;
            }
            let item = item.trim();
            let (low, high) = match item.split_once('-') {
                Some((low, high)) => (low.trim(), high.trim()),
                None => (item, item),
            };
            let low: i32 = low.parse().ok().filter(|n| *n >= 0)?;
            let high: i32 = high.parse().ok().filter(|n| *n >= low)?;
            ranges.push((low, high));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(i32, i32)> = Vec::with_capacity(ranges.len());
        for (low, high) in ranges {
            match merged.last_mut() {
                Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        Some(PartitionSet { ranges: merged })
    }

    /// Whether `partition` is in the set.
    pub fn contains(&self, partition: i32) -> bool {
        self.ranges
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&partition))
    }
}

impl fmt::Display for PartitionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (low, high)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if low == high {
                write!(f, "{low}")?;
            } else {
                write!(f, "{low}-{high}")?;
            }
        }
        Ok(())
    }
}

/// Most items (numbers or ranges) in a `partitionLimitation`.
pub(super) const MAX_PARTITION_ITEMS: usize = 1000;

/// Longest value quoted back in an error message.
pub(super) const MAX_QUOTED: usize = 120;

/// What KEDA's booleans accept (Go's `strconv.ParseBool`).
pub(super) const BOOL_RULE: &str = "true or false (also 1/0, t/f, TRUE/FALSE, True/False)";

/// Shortest `targetEtaSeconds`: a millisecond (less would round to no time at all).
pub(super) const MIN_TARGET_ETA_SECONDS: f64 = 0.001;

/// Longest `targetEtaSeconds`: a week.
pub(super) const MAX_TARGET_ETA_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

pub(super) fn parse_plugin_name(value: &str) -> Result<String, TriggerError> {
    if value.trim().is_empty()
        || value.trim() != value
        || value.chars().any(char::is_control)
        || value.len() > 512
    {
        return Err(invalid(
            "pluginName",
            value,
            "the plugin's deployment key: not empty, no control characters or surrounding \
             spaces, at most 512 bytes",
        ));
    }
    Ok(value.to_owned())
}

/// Whether `text` is a Kafka version as KEDA's client parses it: `1.2.3` or `0.10.2.0`.
pub(super) fn is_kafka_version(text: &str) -> bool {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let numbers = parts
        .iter()
        .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()));
    numbers && (parts.len() == 3 || (parts.len() == 4 && parts[0] == "0"))
}

/// Whether `text` is a Kubernetes DNS-1123 label (a namespace name): 1 to 63 of `a-z`,
/// `0-9` and `-`, starting and ending with a letter or digit.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// Whether `text` is a Kubernetes DNS-1123 subdomain (most objects' names): at most 253
/// bytes of dot-separated labels.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

pub(super) fn parse_group(value: &str) -> Result<String, TriggerError> {
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

/// Most topics one trigger's `topic` may list.
pub(super) const MAX_TOPICS: usize = 100;

/// `topic`: one Kafka topic name or a comma-separated list of them (spaces around names
/// allowed, as KEDA's `apache-kafka` trigger reads it), as the sorted list without
/// duplicates, comma-joined (a topic name never holds a comma).
pub(super) fn parse_topics(value: &str) -> Result<String, TriggerError> {
    let refuse = || {
        invalid(
            "topic",
            value,
            "one Kafka topic name or a comma-separated list of at most 100 (letters, digits, \
             '.', '_', '-'; at most 249 each), or empty for every topic the group committed on",
        )
    };
    let mut topics = Vec::new();
    for name in value.split(',').map(str::trim) {
        // Kafka's own rule for topic names.
        let valid = !name.is_empty()
            && name.len() <= 249
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_' || ch == '-');
        if !valid || topics.len() == MAX_TOPICS {
            return Err(refuse());
        }
        topics.push(name);
    }
    topics.sort_unstable();
    topics.dedup();
    Ok(topics.join(","))
}

pub(super) fn parse_integer(
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

/// An HPA target: an integer from 1 to what KEDA's quantities hold.
pub(super) fn parse_target(
    key: &'static str,
    value: &str,
    accepted: &'static str,
) -> Result<i64, TriggerError> {
    let target = parse_integer(key, value, 1, accepted)?;
    if target > crate::estimate::MAX_REPORTED_INT {
        return Err(invalid(key, value, accepted));
    }
    Ok(target)
}

/// A KEDA flag, spelled as Go's `strconv.ParseBool` reads it ([`BoolSpelling::Go`]).
pub(super) fn parse_go_bool(value: &str) -> Option<bool> {
    parse_bool(value, BoolSpelling::Go)
}

pub(super) fn parse_target_eta(value: &str) -> Result<Duration, TriggerError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= MIN_TARGET_ETA_SECONDS)
        .filter(|seconds| *seconds <= MAX_TARGET_ETA_SECONDS)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            invalid(
                "targetEtaSeconds",
                value,
                "a number of seconds from 0.001 to 604800 (a week), e.g. 60",
            )
        })
}

/// A time lag in seconds, at most a week, as a number; `key` names it in the error. A
/// target (`timeLagThreshold`, `zero_allowed` false) is at least a millisecond, as
/// `targetEtaSeconds`: KEDA sends targets in milli-units, and a smaller one would reach the
/// HPA as 0, which it refuses. A threshold (`activationTimeLagThreshold`) may be 0.
pub(super) fn parse_time_lag(
    key: &str,
    value: &str,
    zero_allowed: bool,
) -> Result<Duration, TriggerError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds <= MAX_TARGET_ETA_SECONDS)
        .filter(|seconds| *seconds >= MIN_TARGET_ETA_SECONDS || (zero_allowed && *seconds >= 0.0))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            let accepted = if zero_allowed {
                "a number of seconds from 0 to 604800 (a week), e.g. 30"
            } else {
                "a number of seconds from 0.001 to 604800 (a week), e.g. 60"
            };
            invalid(key, value, accepted)
        })
}

/// Longest `topicPattern` accepted, in bytes.
pub const MAX_TOPIC_PATTERN_LEN: usize = 1000;

/// Most memory a compiled `topicPattern` may take.
const TOPIC_PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// `topicPattern`: a regular expression a topic name must match whole (as a Kafka consumer's
/// pattern subscription matches). Compared and hashed by its text.
#[derive(Clone, Debug)]
pub struct TopicPattern {
    text: String,
    regex: regex::Regex,
}

impl TopicPattern {
    /// Parses `value`: Rust `regex` syntax (linear-time matching, no look-around nor
    /// back-references), at most [`MAX_TOPIC_PATTERN_LEN`] bytes and 1 MiB compiled.
    pub(super) fn parse(value: &str) -> Result<TopicPattern, TriggerError> {
        let text = value.trim();
        let refuse = || {
            invalid(
                "topicPattern",
                value,
                "a regular expression matched against whole topic names (Rust regex syntax, \
                 e.g. orders-.* or (eu|us)-payments), at most 1000 characters",
            )
        };
        if text.is_empty() || text.len() > MAX_TOPIC_PATTERN_LEN {
            return Err(refuse());
        }
        // The text alone first: one that is not a whole expression by itself could close the
        // anchoring group around it (`orders)|(payments` would match any name starting with
        // orders or ending with payments).
        regex::RegexBuilder::new(text)
            .size_limit(TOPIC_PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|_| refuse())?;
        let regex = regex::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(TOPIC_PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|_| refuse())?;
        Ok(TopicPattern {
            text: text.to_owned(),
            regex,
        })
    }

    /// The expression as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compiled expression, anchored at both ends.
    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }
}

impl PartialEq for TopicPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for TopicPattern {}

impl std::hash::Hash for TopicPattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialOrd for TopicPattern {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicPattern {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

pub(super) fn parse_idle_window(value: &str) -> Result<Duration, TriggerError> {
    let text = value.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).ok(),
    };
    parsed
        .filter(|window| *window <= MAX_IDLE_WINDOW)
        .ok_or_else(|| {
            invalid(
                "idleWindow",
                value,
                "a duration from 0 to 1h such as 2m or 90s (a bare number is seconds)",
            )
        })
}

pub(super) fn invalid(key: &str, value: &str, accepted: &str) -> TriggerError {
    TriggerError::Invalid {
        key: quote(key),
        value: quote(value),
        accepted: accepted.to_owned(),
    }
}

/// Shortens a user-supplied string for an error message.
pub(super) fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let head: String = text.chars().take(MAX_QUOTED).collect();
    format!("{head}...")
}
