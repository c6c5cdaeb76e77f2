//! Kafka access: one blocking rdkafka client per cluster, shared by every watch.
//!
//! Each call is blocking and bounded by the cluster's request timeout. The client's event
//! queue (errors, statistics) is drained by one named thread, `kafka-events`, so events never
//! pile up while the broker is unreachable.

mod admin;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::lag::PartitionOffsets;

pub use admin::CommittedOffset;

/// Why a read from Kafka failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused the client configuration.
    #[error("cannot create a Kafka client for {bootstrap}: {cause}")]
    Client {
        /// The cluster's bootstrap list.
        bootstrap: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// The topic named by the trigger does not exist.
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// A metadata request failed.
    #[error("reading metadata of topic {topic}: {cause}")]
    Metadata {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// Listing a group's committed offsets failed.
    #[error("reading committed offsets of group {group}: {cause}")]
    GroupOffsets {
        /// The group.
        group: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// Reading high watermarks or log start offsets failed.
    #[error("reading {which} offsets: {cause}")]
    Watermarks {
        /// `latest` or `earliest`.
        which: &'static str,
        /// librdkafka's reason.
        cause: String,
    },
    /// Describing the group (DescribeGroups) failed.
    #[error("describing group {group}: {cause}")]
    DescribeGroup {
        /// The group.
        group: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// Listing the cluster's consumer groups failed.
    #[error("listing consumer groups: {cause}")]
    ListGroups {
        /// librdkafka's reason.
        cause: String,
    },
    /// The trigger names no topic and the group has no committed offset anywhere.
    #[error(
        "group {group} has no committed offsets and the trigger names no topic, so there is \
         nothing to measure (set topic to count a group that has not committed yet)"
    )]
    NoTopics {
        /// The group.
        group: String,
    },
}

/// A blocking client for one Kafka cluster.
pub struct KafkaClient {
    consumer: Arc<BaseConsumer>,
    timeout: Duration,
    stop_events: Arc<AtomicBool>,
    events_thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl KafkaClient {
    /// Creates the client and starts its `kafka-events` thread. Connecting is lazy: an
    /// unreachable cluster shows up as errors of the first reads, not here.
    pub fn connect(config: &KafkaConfig) -> Result<KafkaClient, KafkaError> {
        let bootstrap = config.bootstrap_string();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("client.id", "lagscaler")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            // One connection per broker for every watch, retried with exponential backoff
            // from 100 ms to 1 s while a broker is down: quick recovery, no connection storm.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set(
                "socket.timeout.ms",
                config.request_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(|err| KafkaError::Client {
                bootstrap: bootstrap.clone(),
                cause: err.to_string(),
            })?;
        let consumer = Arc::new(consumer);
        let stop_events = Arc::new(AtomicBool::new(false));
        let events_thread = {
            let consumer = Arc::clone(&consumer);
            let stop = Arc::clone(&stop_events);
            thread::Builder::new()
                .name("kafka-events".to_owned())
                .spawn(move || drain_events(&consumer, &stop))
                .map_err(|err| KafkaError::Client {
                    bootstrap,
                    cause: format!("cannot start the kafka-events thread: {err}"),
                })?
        };
        Ok(KafkaClient {
            consumer,
            timeout: config.request_timeout,
            stop_events,
            events_thread: parking_lot::Mutex::new(Some(events_thread)),
        })
    }

    /// Reads what lag is computed from: for `group` and either one topic or every topic the
    /// group has committed on, each partition's log start, high watermark and committed
    /// offset. Partitions come sorted by topic and number.
    pub fn snapshot(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let committed = self.group_offsets(group)?;
        let topics: BTreeSet<&str> = match topic {
            Some(topic) => BTreeSet::from([topic]),
            None => committed
                .iter()
                .filter(|offset| offset.offset >= 0)
                .map(|offset| offset.topic.as_str())
                .collect(),
        };
        if topics.is_empty() {
            return Err(KafkaError::NoTopics {
                group: group.to_owned(),
            });
        }
        let mut partitions = Vec::new();
        for topic in topics {
            for partition in self.partition_ids(topic)? {
                partitions.push((topic.to_owned(), partition));
            }
        }
        let latest = self.list_offsets(&partitions, Offset::End, "latest")?;
        let earliest = self.list_offsets(&partitions, Offset::Beginning, "earliest")?;
        let committed: HashMap<(&str, i32), i64> = committed
            .iter()
            .filter(|offset| offset.offset >= 0)
            .map(|offset| ((offset.topic.as_str(), offset.partition), offset.offset))
            .collect();
        // `list_offsets` answered for every partition or failed, so the lookups below hit.
        let snapshot = partitions
            .iter()
            .map(|(topic, partition)| {
                let key = (topic.as_str(), *partition);
                PartitionOffsets {
                    group: group.to_owned(),
                    log_start: earliest.get(&key).copied().unwrap_or(0),
                    high_watermark: latest.get(&key).copied().unwrap_or(0),
                    committed: committed.get(&key).copied(),
                    topic: topic.clone(),
                    partition: *partition,
                }
            })
            .collect();
        Ok(snapshot)
    }

    /// Every committed offset of `group`.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, KafkaError> {
        admin::list_group_offsets(self.consumer.client(), group, self.timeout).map_err(|cause| {
            KafkaError::GroupOffsets {
                group: group.to_owned(),
                cause,
            }
        })
    }

    /// Active members of `group` (DescribeGroups); 0 for a group that is empty or unknown.
    pub fn group_members(&self, group: &str) -> Result<usize, KafkaError> {
        let list = self
            .consumer
            .fetch_group_list(Some(group), self.timeout)
            .map_err(|err| KafkaError::DescribeGroup {
                group: group.to_owned(),
                cause: err.to_string(),
            })?;
        Ok(list
            .groups()
            .iter()
            .filter(|info| info.name() == group)
            .map(|info| info.members().len())
            .sum())
    }

    /// Every consumer group of the cluster with its active member count (ListGroups and
    /// DescribeGroups), sorted by name.
    pub fn list_groups(&self) -> Result<Vec<(String, usize)>, KafkaError> {
        let list = self
            .consumer
            .fetch_group_list(None, self.timeout)
            .map_err(|err| KafkaError::ListGroups {
                cause: err.to_string(),
            })?;
        let mut groups: Vec<(String, usize)> = list
            .groups()
            .iter()
            .map(|info| (info.name().to_owned(), info.members().len()))
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// The partition numbers of `topic`, sorted.
    pub fn partition_ids(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.timeout)
            .map_err(|err| KafkaError::Metadata {
                topic: topic.to_owned(),
                cause: err.to_string(),
            })?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(KafkaError::UnknownTopic {
                topic: topic.to_owned(),
            });
        };
        if let Some(err) = found.error() {
            let err = rdkafka::types::RDKafkaErrorCode::from(err);
            if err == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                return Err(KafkaError::UnknownTopic {
                    topic: topic.to_owned(),
                });
            }
            return Err(KafkaError::Metadata {
                topic: topic.to_owned(),
                cause: err.to_string(),
            });
        }
        let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        if ids.is_empty() {
            return Err(KafkaError::UnknownTopic {
                topic: topic.to_owned(),
            });
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Latest or earliest offsets of `partitions`, one ListOffsets request per leader.
    fn list_offsets<'p>(
        &self,
        partitions: &'p [(String, i32)],
        position: Offset,
        which: &'static str,
    ) -> Result<HashMap<(&'p str, i32), i64>, KafkaError> {
        let failed = |cause: String| KafkaError::Watermarks { which, cause };
        let mut request = TopicPartitionList::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            request
                .add_partition_offset(topic, *partition, position)
                .map_err(|err| failed(err.to_string()))?;
        }
        let answer = self
            .consumer
            .offsets_for_times(request, self.timeout)
            .map_err(|err| failed(err.to_string()))?;
        let mut offsets = HashMap::with_capacity(partitions.len());
        for elem in answer.elements() {
            if let Err(err) = elem.error() {
                return Err(failed(format!(
                    "{}[{}]: {err}",
                    elem.topic(),
                    elem.partition()
                )));
            }
            let Offset::Offset(offset) = elem.offset() else {
                return Err(failed(format!(
                    "{}[{}]: broker answered {:?}",
                    elem.topic(),
                    elem.partition(),
                    elem.offset()
                )));
            };
            let Some((topic, _)) = partitions
                .iter()
                .find(|(topic, partition)| topic == elem.topic() && *partition == elem.partition())
            else {
                continue;
            };
            offsets.insert((topic.as_str(), elem.partition()), offset);
        }
        if offsets.len() != partitions.len() {
            return Err(failed(format!(
                "the broker answered for {} of {} partitions",
                offsets.len(),
                partitions.len()
            )));
        }
        Ok(offsets)
    }

    /// Stops and joins the `kafka-events` thread. Idempotent.
    pub fn shutdown(&self) -> thread::Result<()> {
        self.stop_events.store(true, Ordering::Release);
        match self.events_thread.lock().take() {
            Some(handle) => handle.join(),
            None => Ok(()),
        }
    }
}

/// Serves the client's queue so that errors are logged and never accumulate.
fn drain_events(consumer: &BaseConsumer, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)) {
            None | Some(Ok(_)) => {}
            Some(Err(RdKafkaError::PartitionEOF(_))) => {}
            Some(Err(err)) => warn!("kafka client: {err}"),
        }
    }
    debug!("kafka-events thread stopped");
}
