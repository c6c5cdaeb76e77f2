//! Kafka access: one blocking rdkafka client per cluster, shared by every watch.
//!
//! Each call is blocking and bounded by the cluster's request timeout. The client's event
//! queue (errors, statistics) is drained by one named thread, `kafka-events`, so events never
//! pile up while the broker is unreachable.
//!
//! What several watches read alike is read once per poll cycle ([`cycle`]): a topic's
//! partitions, high watermarks and log start offsets, and the cluster's group list with
//! member counts. Only a group's committed offsets are read per watch.

mod admin;
mod cycle;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::config::{ClusterSet, KafkaConfig};
use crate::lag::PartitionOffsets;

pub use admin::CommittedOffset;
pub use cycle::{current_tick, next_tick};

use cycle::Cycled;

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

/// One client per configured cluster.
pub struct Clients {
    /// The default (`SCALER_KAFKA_*`) cluster's.
    pub default: Arc<KafkaClient>,
    /// The named clusters', by name.
    pub named: BTreeMap<String, Arc<KafkaClient>>,
}

impl Clients {
    /// A client for every cluster of `clusters` (connecting is lazy).
    pub fn connect(clusters: &ClusterSet) -> Result<Clients, KafkaError> {
        let default = Arc::new(KafkaClient::connect(&clusters.default)?);
        let mut named = BTreeMap::new();
        for (name, config) in &clusters.named {
            named.insert(name.clone(), Arc::new(KafkaClient::connect(config)?));
        }
        Ok(Clients { default, named })
    }

    /// The client of cluster `name` (`None`: the default one).
    pub fn get(&self, name: Option<&str>) -> Option<&Arc<KafkaClient>> {
        match name {
            None => Some(&self.default),
            Some(name) => self.named.get(name),
        }
    }

    /// Stops every client's event thread; `Err` if any of them panicked.
    pub fn shutdown(&self) -> thread::Result<()> {
        let mut result = self.default.shutdown();
        for client in self.named.values() {
            let stopped = client.shutdown();
            if result.is_ok() {
                result = stopped;
            }
        }
        result
    }
}

/// A blocking client for one Kafka cluster.
pub struct KafkaClient {
    consumer: Arc<BaseConsumer<Context>>,
    timeout: Duration,
    /// Partitions with their log start and high watermark, by topic, read once per cycle.
    topics: Cycled<Vec<TopicPartitionOffsets>>,
    /// The cluster's groups with their member counts, read once per cycle.
    groups: Cycled<Vec<(String, usize)>>,
    stop_events: Arc<AtomicBool>,
    events_thread: Mutex<Option<JoinHandle<()>>>,
}

/// One partition of a topic as read in a cycle.
#[derive(Clone, Copy, Debug)]
struct TopicPartitionOffsets {
    partition: i32,
    log_start: i64,
    high_watermark: i64,
}

/// Requests sent to the brokers since the client started, by Kafka API name (`Metadata`,
/// `ListOffsets`, `OffsetFetch`...), summed over brokers, from librdkafka's statistics.
pub type RequestCounts = BTreeMap<String, i64>;

/// The client's context: keeps the request counts of the latest statistics report.
#[derive(Default)]
struct Context {
    requests: Mutex<Option<RequestCounts>>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut counts = RequestCounts::new();
        for broker in statistics.brokers.values() {
            for (api, count) in &broker.req {
                if *count > 0 {
                    *counts.entry(api.clone()).or_default() += count;
                }
            }
        }
        let total: i64 = counts.values().sum();
        let by_api: Vec<String> = counts.iter().map(|(api, n)| format!("{api}={n}")).collect();
        info!("kafka requests since start: {total} ({})", by_api.join(" "));
        *self.requests.lock() = Some(counts);
    }
}

impl ConsumerContext for Context {}

impl KafkaClient {
    /// Creates the client and starts its `kafka-events` thread. Connecting is lazy: an
    /// unreachable cluster shows up as errors of the first reads, not here.
    pub fn connect(config: &KafkaConfig) -> Result<KafkaClient, KafkaError> {
        let bootstrap = config.bootstrap_string();
        let stats_ms = config.stats_interval.map_or(0, |every| every.as_millis());
        let mut client_config = ClientConfig::new();
        client_config.set("security.protocol", config.security_protocol());
        if let Some(sasl) = &config.sasl {
            client_config
                .set("sasl.mechanism", sasl.mechanism.name())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password.0);
        }
        if let Some(tls) = &config.tls {
            if let Some(ca) = &tls.ca_file {
                client_config.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some((cert, key)) = &tls.client {
                client_config
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
        }
        let consumer: BaseConsumer<Context> = client_config
            .set("bootstrap.servers", &bootstrap)
            .set("statistics.interval.ms", stats_ms.to_string())
            .set("client.id", "lagscaler")
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            // No client telemetry (KIP-714): one request fewer per interval, nothing gained.
            .set("enable.metrics.push", "false")
            // One connection per broker for every watch, retried with exponential backoff
            // from 100 ms to 1 s while a broker is down: quick recovery, no connection storm.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set(
                "socket.timeout.ms",
                config.request_timeout.as_millis().to_string(),
            )
            .create_with_context(Context::default())
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
            topics: Cycled::default(),
            groups: Cycled::default(),
            stop_events,
            events_thread: Mutex::new(Some(events_thread)),
        })
    }

    /// Requests sent so far by API, as of librdkafka's latest statistics report; `None`
    /// until the first report, or ever when `SCALER_KAFKA_STATS_INTERVAL` is off.
    pub fn request_counts(&self) -> Option<RequestCounts> {
        self.consumer.context().requests.lock().clone()
    }

    /// Reads what lag is computed from: for `group` and either one topic or every topic the
    /// group has committed on, each partition's log start, high watermark and committed
    /// offset. Partitions come sorted by topic and number. The group's committed offsets are
    /// read now; each topic's offsets come from a read made at or after `since` (this poll's
    /// scheduled time), shared with every watch of the cycle.
    pub fn snapshot(
        &self,
        group: &str,
        topic: Option<&str>,
        since: Instant,
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
        let committed: HashMap<(&str, i32), i64> = committed
            .iter()
            .filter(|offset| offset.offset >= 0)
            .map(|offset| ((offset.topic.as_str(), offset.partition), offset.offset))
            .collect();
        let mut snapshot = Vec::new();
        for topic in topics {
            let partitions = self
                .topics
                .get(topic, since, || self.topic_offsets(topic))?;
            snapshot.extend(partitions.iter().map(|read| PartitionOffsets {
                group: group.to_owned(),
                log_start: read.log_start,
                high_watermark: read.high_watermark,
                committed: committed.get(&(topic, read.partition)).copied(),
                topic: topic.to_owned(),
                partition: read.partition,
            }));
        }
        Ok(snapshot)
    }

    /// A topic's partitions, sorted, with their high watermarks and log start offsets:
    /// Metadata, then one ListOffsets per partition leader for each end.
    fn topic_offsets(&self, topic: &str) -> Result<Vec<TopicPartitionOffsets>, KafkaError> {
        let partitions: Vec<(String, i32)> = self
            .partition_ids(topic)?
            .into_iter()
            .map(|partition| (topic.to_owned(), partition))
            .collect();
        let latest = self.list_offsets(&partitions, Offset::End, "latest")?;
        let earliest = self.list_offsets(&partitions, Offset::Beginning, "earliest")?;
        // `list_offsets` answered for every partition or failed, so the lookups hit.
        Ok(partitions
            .iter()
            .map(|(topic, partition)| {
                let key = (topic.as_str(), *partition);
                TopicPartitionOffsets {
                    partition: *partition,
                    log_start: earliest.get(&key).copied().unwrap_or(0),
                    high_watermark: latest.get(&key).copied().unwrap_or(0),
                }
            })
            .collect())
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

    /// Active members of `group`; 0 for a group that is empty or unknown. From the group
    /// list of a read made at or after `since`.
    pub fn group_members(&self, group: &str, since: Instant) -> Result<usize, KafkaError> {
        let groups = self.list_groups(since)?;
        Ok(groups
            .binary_search_by(|(name, _)| name.as_str().cmp(group))
            .map_or(0, |found| groups[found].1))
    }

    /// Every consumer group of the cluster with its active member count, sorted by name,
    /// from a read made at or after `since` (ListGroups and one DescribeGroups per broker,
    /// shared with every watch of the cycle).
    pub fn list_groups(&self, since: Instant) -> Result<Arc<Vec<(String, usize)>>, KafkaError> {
        self.groups.get("", since, || {
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
        })
    }

    /// Ok when a broker answers a metadata request within `timeout` (for `/readyz`).
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), KafkaError> {
        // A topic nobody creates: the answer lists the brokers without every topic's
        // metadata, which on a large cluster is big.
        const PROBE: &str = "__lagscaler-readiness-probe";
        let metadata = self
            .consumer
            .fetch_metadata(Some(PROBE), timeout)
            .map_err(|err| KafkaError::Metadata {
                topic: PROBE.to_owned(),
                cause: err.to_string(),
            })?;
        if metadata.brokers().is_empty() {
            return Err(KafkaError::Metadata {
                topic: PROBE.to_owned(),
                cause: "the cluster lists no broker".to_owned(),
            });
        }
        Ok(())
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
fn drain_events(consumer: &BaseConsumer<Context>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)) {
            None | Some(Ok(_)) => {}
            Some(Err(RdKafkaError::PartitionEOF(_))) => {}
            Some(Err(err)) => warn!("kafka client: {err}"),
        }
    }
    debug!("kafka-events thread stopped");
}
