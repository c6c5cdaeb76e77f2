//! What the owner of a watch shares with the fleet after each poll, and how it travels as
//! text. Every replica, the owner included, records the sample as decoded from this text,
//! so that their windows hold the same numbers. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::lag::{PartitionOffsets, Unread};

/// One poll's outcome, as the fleet shares it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When the poll started (the sample's time in the window).
    pub taken_at: Instant,
    /// What it found.
    pub outcome: Outcome,
}

/// What a poll found.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Offsets (after the owner's checks: only the watch's partitions, time lag read where
    /// needed), the group's active members, and when the oldest offsets were read.
    Fresh {
        /// Per partition.
        offsets: Vec<PartitionOffsets>,
        /// Active members, `None` where unknown.
        members: Option<usize>,
        /// When the oldest offsets were read (earlier than `taken_at` where an earlier read
        /// stands in for a partition).
        oldest_read: Instant,
    },
    /// The poll failed; earlier samples are served until stale.
    Failed(String),
    /// What the watch measures no longer exists.
    Gone(String),
}

/// A mapping between this process's monotonic clock and wall time (µs since the Unix
/// epoch), fixed when made, so that the differences between two samples' times are the same
/// on every replica. The fleet's is Redis's wall clock ([`super::clock::FleetClock`]).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    wall_us: i64,
}

impl Clock {
    /// The mapping as of now.
    pub fn now() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            instant: Instant::now(),
            wall_us: i64::try_from(wall.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// A clock with the given anchor (tests).
    pub fn at(instant: Instant, wall_us: i64) -> Clock {
        Clock { instant, wall_us }
    }

    /// This clock moved by `by_us` (another clock's view of the same instants).
    pub fn shifted(&self, by_us: i64) -> Clock {
        Clock {
            instant: self.instant,
            wall_us: self.wall_us.saturating_add(by_us),
        }
    }

    /// `at` in µs since the Unix epoch.
    pub fn wall_us(&self, at: Instant) -> i64 {
        if at >= self.instant {
            let after = i64::try_from(at.duration_since(self.instant).as_micros()).unwrap_or(0);
            self.wall_us.saturating_add(after)
        } else {
            let before = i64::try_from(self.instant.duration_since(at).as_micros()).unwrap_or(0);
            self.wall_us.saturating_sub(before)
        }
    }

    /// The instant of `wall_us`; a time before this process could represent it is taken as
    /// the earliest it can.
    pub fn instant(&self, wall_us: i64) -> Instant {
        let delta = Duration::from_micros(self.wall_us.abs_diff(wall_us));
        if wall_us >= self.wall_us {
            self.instant + delta
        } else {
            self.instant.checked_sub(delta).unwrap_or(self.instant)
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The sample as compact JSON (`v` 1). Groups and topics are listed once and referred to by
/// index.
pub fn encode(sample: &Sample, clock: &Clock) -> String {
    let taken = clock.wall_us(sample.taken_at);
    let value = match &sample.outcome {
        Outcome::Failed(cause) => json!({"v": 1, "t": taken, "failed": cause}),
        Outcome::Gone(cause) => json!({"v": 1, "t": taken, "gone": cause}),
        Outcome::Fresh {
            offsets,
            members,
            oldest_read,
        } => {
            let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
            let mut topics: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for partition in offsets {
                let n = groups.len();
                groups.entry(&partition.group).or_insert(n);
                let n = topics.len();
                topics
                    .entry((&partition.topic, &partition.topic_id))
                    .or_insert(n);
            }
            let mut group_list = vec![""; groups.len()];
            for (name, index) in &groups {
                group_list[*index] = name;
            }
            let mut topic_list = vec![json!(null); topics.len()];
            for ((name, id), index) in &topics {
                topic_list[*index] = json!([name, id]);
            }
            let partitions: Vec<Value> = offsets
                .iter()
                .map(|p| {
                    json!([
                        groups[&*p.group],
                        topics[&(&*p.topic, &*p.topic_id)],
                        p.partition,
                        p.log_start,
                        p.high_watermark,
                        p.committed,
                        p.nothing_to_read,
                        p.waited.map(micros),
                        p.unread.as_ref().map(|u| clock.wall_us(u.read_at)),
                        p.unread.as_ref().map(|u| u.cause.to_string()),
                    ])
                })
                .collect();
            json!({
                "v": 1,
                "t": taken,
                "ok": {
                    "m": members,
                    "o": clock.wall_us(*oldest_read),
                    "g": group_list,
                    "tp": topic_list,
                    "p": partitions,
                }
            })
        }
    };
    value.to_string()
}

/// The sample `text` holds; an error says what is wrong with it.
pub fn decode(text: &str, clock: &Clock) -> Result<Sample, String> {
    let value: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    if value.get("v").and_then(Value::as_u64) != Some(1) {
        return Err("a sample of another version (this one reads 1)".into());
    }
    let taken = value
        .get("t")
        .and_then(Value::as_i64)
        .ok_or("a sample without its time")?;
    let taken_at = clock.instant(taken);
    let text_field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(cause) = text_field("failed") {
        return Ok(Sample {
            taken_at,
            outcome: Outcome::Failed(cause),
        });
    }
    if let Some(cause) = text_field("gone") {
        return Ok(Sample {
            taken_at,
            outcome: Outcome::Gone(cause),
        });
    }
    let ok = value.get("ok").ok_or("a sample with no outcome")?;
    let bad = |what: &str| format!("a sample with a malformed {what}");
    let members = match ok.get("m") {
        Some(Value::Null) | None => None,
        Some(count) => Some(
            count
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("member count"))?,
        ),
    };
    let oldest_read = clock.instant(
        ok.get("o")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("read time"))?,
    );
    let groups: Vec<Arc<str>> = ok
        .get("g")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("group list"))?
        .iter()
        .map(|g| g.as_str().map(Arc::from).ok_or_else(|| bad("group")))
        .collect::<Result<_, _>>()?;
    let topics: Vec<(Arc<str>, Arc<str>)> = ok
        .get("tp")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("topic list"))?
        .iter()
        .map(|t| match t.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(id)]) => {
                Ok((name.as_str().into(), id.as_str().into()))
            }
            _ => Err(bad("topic")),
        })
        .collect::<Result<_, _>>()?;
    let mut offsets = Vec::new();
    for entry in ok
        .get("p")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("partition list"))?
    {
        let fields = entry.as_array().ok_or_else(|| bad("partition"))?;
        let [group, topic, partition, log_start, high, committed, nothing, waited, unread_at, unread_cause] =
            fields.as_slice()
        else {
            return Err(bad("partition"));
        };
        let index = |v: &Value, len: usize| {
            v.as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < len)
        };
        let group = &groups[index(group, groups.len()).ok_or_else(|| bad("group index"))?];
        let (topic, topic_id) =
            &topics[index(topic, topics.len()).ok_or_else(|| bad("topic index"))?];
        let optional_i64 = |v: &Value, what: &str| match v {
            Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| bad(what)),
        };
        let unread = match (optional_i64(unread_at, "stand-in time")?, unread_cause) {
            (None, Value::Null) => None,
            (Some(at), Value::String(cause)) => Some(Unread {
                read_at: clock.instant(at),
                cause: cause.as_str().into(),
            }),
            _ => return Err(bad("stand-in")),
        };
        offsets.push(PartitionOffsets {
            group: Arc::clone(group),
            topic: Arc::clone(topic),
            topic_id: Arc::clone(topic_id),
            partition: partition
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| bad("partition number"))?,
            log_start: log_start.as_i64().ok_or_else(|| bad("log start"))?,
            high_watermark: high.as_i64().ok_or_else(|| bad("end offset"))?,
            committed: optional_i64(committed, "committed offset")?,
            nothing_to_read: nothing.as_bool().ok_or_else(|| bad("marker flag"))?,
            waited: optional_i64(waited, "wait")?
                .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0))),
            unread,
        });
    }
    Ok(Sample {
        taken_at,
        outcome: Outcome::Fresh {
            offsets,
            members,
            oldest_read,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(group: &str, topic: &str, partition: i32) -> PartitionOffsets {
        PartitionOffsets {
            group: group.into(),
            topic: topic.into(),
            topic_id: format!("id-{topic}").as_str().into(),
            partition,
            log_start: 3,
            high_watermark: 1_000_000_007,
            committed: Some(999),
            nothing_to_read: false,
            unread: None,
            waited: None,
        }
    }

    #[test]
    fn samples_read_back_equal_on_another_clock() {
        let start = Instant::now();
        let mine = Clock::at(start, 1_764_000_000_000_000);
        let theirs = Clock::at(start + Duration::from_secs(50), 1_764_000_000_000_000);
        let mut stood_in = offsets("g", "b", 1);
        stood_in.unread = Some(Unread {
            read_at: start + Duration::from_millis(1500),
            cause: "broker 2 is down".into(),
        });
        stood_in.committed = None;
        let mut waited = offsets("g2", "a", 0);
        waited.waited = Some(Duration::from_micros(4_250_001));
        waited.nothing_to_read = true;
        let samples = [
            Sample {
                taken_at: start + Duration::from_secs(5),
                outcome: Outcome::Fresh {
                    offsets: vec![offsets("g", "a", 0), stood_in, waited],
                    members: Some(3),
                    oldest_read: start + Duration::from_millis(1500),
                },
            },
            Sample {
                taken_at: start + Duration::from_secs(10),
                outcome: Outcome::Fresh {
                    offsets: Vec::new(),
                    members: None,
                    oldest_read: start + Duration::from_secs(10),
                },
            },
            Sample {
                taken_at: start + Duration::from_secs(15),
                outcome: Outcome::Failed("Local: Timed out \"quoted\"".into()),
            },
            Sample {
                taken_at: start + Duration::from_secs(20),
                outcome: Outcome::Gone("topic t was deleted".into()),
            },
        ];
        for sample in samples {
            let text = encode(&sample, &mine);
            let back = decode(&text, &mine).unwrap();
            assert_eq!(back, sample, "{text}");
            // On a clock anchored 50 s later with the same wall time, everything is 50 s
            // later in its monotonic time: the same moments.
            let there = decode(&text, &theirs).unwrap();
            assert_eq!(there.taken_at, sample.taken_at + Duration::from_secs(50));
            assert_eq!(encode(&there, &theirs), text);
        }
    }

    #[test]
    fn malformed_samples_are_errors_not_panics() {
        let clock = Clock::now();
        for text in [
            "",
            "[]",
            "{\"v\":2,\"t\":1}",
            "{\"v\":1}",
            "{\"v\":1,\"t\":1}",
            "{\"v\":1,\"t\":1,\"ok\":{\"o\":1,\"g\":[],\"tp\":[],\"p\":[[0,0,0,0,0,null,false,null,null,null]]}}",
            "{\"v\":1,\"t\":1,\"ok\":{\"o\":1,\"g\":[\"g\"],\"tp\":[[\"t\",\"i\"]],\"p\":[[0,0,0]]}}",
            "{\"v\":1,\"t\":1,\"ok\":{\"m\":-1,\"o\":1,\"g\":[],\"tp\":[],\"p\":[]}}",
        ] {
            assert!(decode(text, &clock).is_err(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = decode(&text, &Clock::now());
        }
    }
}
