//! Reading the first record at or after given offsets: what the marker probe (is there a
//! record at all?) and the time lag (when was it written?) need of a partition's records.
//!
//! Each read is one short-lived consumer, made from the cluster's client settings with the
//! probe's group id (`lagscaler-probe`: librdkafka assigns partitions only to a consumer with
//! a group id; it never joins the group nor commits), at the watch's isolation level,
//! assigned to the partitions asked at their offsets. It polls until each partition gave a
//! record or its end, or the caller's deadline passes (one for all the topics of a call).
//! Fetches return whole record batches, but only the first record of each partition is
//! looked at.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use log::debug;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::admin::{SLICE, STOPPING};
use super::{KafkaClient, KafkaError};
use crate::lag::Isolation;

/// The first record a consumer at the read's isolation level gets from an offset on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstRecord {
    /// Its offset: the one asked, or later past transaction markers, aborted records (read
    /// committed) and records removed by compaction.
    pub offset: i64,
    /// Its timestamp, milliseconds since the Unix epoch: when the producer made it
    /// (`CreateTime`) or the broker appended it (`LogAppendTime`), as the topic says; `None`
    /// when the record has none (message format v0).
    pub timestamp_ms: Option<i64>,
}

/// The client settings of a record read, from the cluster's.
pub fn reader_config(mut config: ClientConfig) -> ClientConfig {
    config
        .set("statistics.interval.ms", "0")
        .set("client.id", "lagscaler-probe")
        // librdkafka assigns partitions only to a consumer with a group id; this one never
        // joins the group nor commits.
        .set("group.id", "lagscaler-probe")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The cluster's client refreshes its metadata every 5 s (module `kafka`) and reads
        // every watched topic's each cycle; a reader learns of a moved leader from its
        // fetch's error (librdkafka then asks at once), so its own periodic refresh only
        // costs requests: once every 30 s (measured: 12 Metadata a minute per reader at
        // 5 s, `benches/wire.rs`).
        .set("topic.metadata.refresh.interval.ms", "30000");
    config
}

impl KafkaClient {
    /// The first record at or after each `(topic, partition, offset)` of `wanted`, read at
    /// `isolation`, by topic and partition (see [`FirstRecord`]); `None` where the end came
    /// before any record. A partition not settled within the request timeout, which all
    /// the topics share, is left out. For the time lag, where a watch's own history does
    /// not reach back to the group's position: one short-lived consumer per topic
    /// ([`first_records`]).
    pub fn first_records(
        &self,
        wanted: &[(&str, i32, i64)],
        isolation: Isolation,
    ) -> Result<HashMap<(String, i32), Option<FirstRecord>>, KafkaError> {
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for &(topic, partition, offset) in wanted {
            by_topic.entry(topic).or_default().push((partition, offset));
        }
        let mut found = HashMap::with_capacity(wanted.len());
        let deadline = Instant::now() + self.timeout;
        for (topic, partitions) in by_topic {
            #[cfg(feature = "test-hooks")]
            if crate::hooks::record_reads_fail(topic) {
                return Err(KafkaError::Records {
                    topic: topic.to_owned(),
                    cause: "refused (injected by a test)".to_owned(),
                });
            }
            let read = first_records(
                &self.reader,
                deadline,
                topic,
                &partitions,
                isolation,
                &self.stopping,
            )
            .map_err(|cause| KafkaError::Records {
                topic: topic.to_owned(),
                cause,
            })?;
            found.extend(
                read.into_iter()
                    .map(|(partition, first)| ((topic.to_owned(), partition), first)),
            );
        }
        Ok(found)
    }
}

/// Reads each `(partition, offset)` of `topic` in `wanted` from its offset: by partition, the
/// first record, or `None` when the end came first. A partition the read did not settle
/// before `deadline` is left out; past it, nothing is read. Reads of several topics share
/// one deadline, so that a frozen broker costs one Kafka timeout, not one per topic.
pub fn first_records(
    config: &ClientConfig,
    deadline: Instant,
    topic: &str,
    wanted: &[(i32, i64)],
    isolation: Isolation,
    stop: &AtomicBool,
) -> Result<HashMap<i32, Option<FirstRecord>>, String> {
    if Instant::now() >= deadline {
        debug!("reading topic {topic}: no time left before the deadline");
        return Ok(HashMap::new());
    }
    let consumer: BaseConsumer = config
        .clone()
        .set("isolation.level", isolation.to_string())
        .create()
        .map_err(|err| err.to_string())?;
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in wanted {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|err| err.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|err| err.to_string())?;
    let mut pending: Vec<i32> = wanted.iter().map(|(partition, _)| *partition).collect();
    let mut found = HashMap::with_capacity(pending.len());
    // The consumer is this read's own and assigned this one topic only, so every record and
    // end of partition it reports is one of `wanted`.
    while !pending.is_empty() && Instant::now() < deadline {
        if stop.load(Ordering::Acquire) {
            return Err(STOPPING.to_owned());
        }
        let slice = SLICE.min(deadline.saturating_duration_since(Instant::now()));
        let (partition, first) = match consumer.poll(slice) {
            Some(Ok(record)) => (
                record.partition(),
                Some(FirstRecord {
                    offset: record.offset(),
                    timestamp_ms: record.timestamp().to_millis(),
                }),
            ),
            Some(Err(RdKafkaError::PartitionEOF(partition))) => (partition, None),
            Some(Err(err)) => {
                debug!("reading topic {topic}: {err}");
                continue;
            }
            None => continue,
        };
        if let Some(at) = pending.iter().position(|asked| *asked == partition) {
            pending.swap_remove(at);
            found.insert(partition, first);
        }
    }
    Ok(found)
}
