//! Kafka access: one blocking rdkafka client per cluster, shared by every watch.
//!
//! Each call is blocking and bounded by the cluster's request timeout, and gives up within
//! 100 ms (the group list 500 ms) once the daemon stops ([`KafkaClient::stop_calls`]). The
//! client's event queue (errors, statistics) is drained by one named thread, `kafka-events`,
//! so events never pile up while the broker is unreachable. [`Clients`] replaces a cluster's
//! client when its TLS files change.
//!
//! What several watches read alike is read once per poll cycle (module `cycle`): a topic's
//! partitions, high watermarks and log start offsets, and the cluster's group list with
//! member counts. Committed offsets come from the cluster's commit stream (modules
//! `commit_reader`, `committed`), or where it cannot be read from one OffsetFetch per watch.

mod admin;
mod clients;
mod commit_reader;
mod committed;
mod cycle;
mod groups;
mod marker_reads;
mod markers;
mod records;
pub mod sasl_plugins;
mod topic_read;
mod topics;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::{CommitSource, KafkaConfig};
use crate::lag::{Isolation, PartitionOffsets};

pub use admin::{CommittedOffset, STOPPING};
pub use clients::Clients;
pub use commit_reader::{CATCH_UP_WAIT, OFFSETS_TOPIC};
pub use committed::{CommitsFrom, RETRY_STREAM_AFTER};
pub use cycle::{current_tick, next_tick};
pub use groups::ListedGroup;
pub use records::FirstRecord;

use cycle::CycleCache;

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
        /// `latest`, `earliest`, or both.
        which: &'static str,
        /// librdkafka's reason.
        cause: String,
    },
    /// Describing a group failed.
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
    /// The commit stream cannot be read and `SCALER_COMMIT_SOURCE=stream`.
    #[error("committed offsets: the commit stream cannot be read: {cause}")]
    CommitStream {
        /// Why.
        cause: String,
    },
    /// Reading records of a topic (their timestamps) failed.
    #[error("reading records of topic {topic}: {cause}")]
    Records {
        /// The topic.
        topic: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// Listing the cluster's topics failed.
    #[error("listing the cluster's topics: {cause}")]
    ListTopics {
        /// librdkafka's reason.
        cause: String,
    },
    /// No topic of the cluster, nor any the group committed on, matches `topicPattern`.
    #[error(
        "topicPattern {pattern} matches no topic of the cluster and none group {group} \
         committed on"
    )]
    NoTopicMatches {
        /// The group.
        group: String,
        /// The pattern.
        pattern: String,
    },
    /// The trigger names no topic and every topic the group committed on is deleted.
    #[error(
        "group {group} has committed offsets only on topics that no longer exist ({topics}), \
         so there is nothing to measure"
    )]
    OnlyDeletedTopics {
        /// The group.
        group: String,
        /// The deleted topics, comma-separated.
        topics: String,
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

/// Which topics a snapshot reads.
#[derive(Clone, Copy, Debug)]
pub enum Topics<'a> {
    /// Every topic the group has committed on (topics deleted since are left out).
    Committed,
    /// One topic, or several comma-separated; one that does not exist fails the read.
    Listed(&'a str),
    /// Every topic of the cluster, or that the group committed on, whose name `regex`
    /// matches (Kafka's internal topics left out, as a consumer's pattern subscription does);
    /// `pattern` is the expression as the trigger gave it, for messages.
    Matching {
        /// The expression as given.
        pattern: &'a str,
        /// The expression compiled, anchored at both ends.
        regex: &'a regex::Regex,
    },
}

/// Kafka's internal topics, never matched by a `topicPattern`.
const INTERNAL_TOPICS: &[&str] = &[
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
    "__cluster_metadata",
];

/// A blocking client for one Kafka cluster.
pub struct KafkaClient {
    consumer: Arc<BaseConsumer<Context>>,
    timeout: Duration,
    /// The topics' ids and partitions with their log starts and high watermarks, read once
    /// per cycle, together (module `topics`).
    topic_reads: topics::TopicReads,
    /// The cluster's groups as the classic group list shows them, read once per cycle.
    groups: CycleCache<Vec<ListedGroup>>,
    /// The names of the cluster's topics, read once per cycle when a watch has a pattern.
    topic_names: CycleCache<Vec<String>>,
    /// Groups the classic list cannot describe, by name, each described once per cycle.
    described: CycleCache<admin::GroupDescription>,
    /// `__consumer_offsets`'s partitions and their leaders, described once a minute (and at
    /// the next cycle when a watched group's partition has no leader; see `committed`).
    offsets_layout: CycleCache<admin::TopicLayout>,
    /// The ends of the partitions of `__consumer_offsets` one broker leads, by leader and
    /// isolation, read once per cycle (see `committed`).
    offsets_ends: CycleCache<HashMap<i32, Result<i64, String>>>,
    /// Finds lag that is only transaction markers.
    markers: markers::MarkerProbe,
    /// The settings of a record read (module `records`), the commit reader's too.
    reader: ClientConfig,
    /// Where committed offsets come from (`SCALER_COMMIT_SOURCE`).
    commit_source: CommitSource,
    /// How often librdkafka reports statistics (`SCALER_KAFKA_STATS_INTERVAL`).
    stats_interval: Option<Duration>,
    /// A commit reader no poll used for this long stops.
    reader_idle: Duration,
    /// The cluster's commit stream (module `committed`).
    stream: Mutex<committed::StreamState>,
    /// Whether the stream's reader was found behind, so that it is logged once.
    stream_behind: AtomicBool,
    /// The groups being bootstrapped for the stream now.
    bootstraps: committed::Bootstraps,
    /// Held by the poll starting the commit reader (`committed`), across local work only.
    reader_start: Mutex<()>,
    /// Set when the daemon stops: waits on Kafka give up.
    stopping: AtomicBool,
    stop_events: Arc<AtomicBool>,
    events_thread: Mutex<Option<JoinHandle<()>>>,
}

/// Requests sent to the brokers since the client started, by Kafka API name (`Metadata`,
/// `ListOffsets`, `OffsetFetch`...), summed over brokers, from librdkafka's statistics.
pub type RequestCounts = BTreeMap<String, i64>;

/// The client's context: keeps the request counts of the latest statistics report, the
/// commit reader's included.
#[derive(Default)]
struct Context {
    requests: Mutex<Option<RequestCounts>>,
    /// The same, by broker node id (brokers learned from metadata; not the bootstrap
    /// connections, which have none).
    by_broker: Mutex<BTreeMap<i32, RequestCounts>>,
    /// The commit readers' own counts (their librdkafka instances), added to these.
    readers: Arc<ReaderRequests>,
    /// The latest refused login (librdkafka's authentication error: a token or ticket it
    /// could not get, or the brokers' refusal) since the last good read, and when.
    login_refused: Mutex<Option<(Instant, String)>>,
}

/// Requests sent by a cluster's commit readers, by broker node id: the running one's
/// latest statistics, plus what readers stopped before it had sent.
#[derive(Default)]
pub(crate) struct ReaderRequests {
    current: Mutex<BTreeMap<i32, RequestCounts>>,
    retired: Mutex<BTreeMap<i32, RequestCounts>>,
}

impl ReaderRequests {
    /// Records a running reader's statistics.
    pub(crate) fn report(&self, statistics: &Statistics) {
        *self.current.lock() = requests_by_broker(statistics);
    }

    /// A reader stopped: its last counts stay counted.
    pub(crate) fn retire(&self) {
        let current = std::mem::take(&mut *self.current.lock());
        add_counts(&mut self.retired.lock(), &current);
    }

    fn total(&self) -> BTreeMap<i32, RequestCounts> {
        let mut total = self.retired.lock().clone();
        add_counts(&mut total, &self.current.lock());
        total
    }
}

/// Requests by broker node id in a statistics report (node id -1 for the bootstrap
/// connections).
fn requests_by_broker(statistics: &Statistics) -> BTreeMap<i32, RequestCounts> {
    let mut by_broker: BTreeMap<i32, RequestCounts> = BTreeMap::new();
    for broker in statistics.brokers.values() {
        for (api, count) in broker.req.iter().filter(|(_, count)| **count > 0) {
            *by_broker
                .entry(broker.nodeid.max(-1))
                .or_default()
                .entry(api.clone())
                .or_default() += count;
        }
    }
    by_broker
}

fn add_counts(into: &mut BTreeMap<i32, RequestCounts>, from: &BTreeMap<i32, RequestCounts>) {
    for (broker, counts) in from {
        let own = into.entry(*broker).or_default();
        for (api, count) in counts {
            *own.entry(api.clone()).or_default() += count;
        }
    }
}

impl ClientContext for Context {
    /// Logs librdkafka's errors as rdkafka does, and keeps the latest authentication error
    /// for the failures it causes ([`KafkaClient::with_login_refusal`]).
    fn error(&self, error: RdKafkaError, reason: &str) {
        log::error!("librdkafka: {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            *self.login_refused.lock() = Some((Instant::now(), reason.to_owned()));
        }
    }

    fn stats(&self, statistics: Statistics) {
        let mut all = requests_by_broker(&statistics);
        add_counts(&mut all, &self.readers.total());
        let mut counts = RequestCounts::new();
        for broker_counts in all.values() {
            for (api, count) in broker_counts {
                *counts.entry(api.clone()).or_default() += count;
            }
        }
        // Brokers learned from metadata; not the bootstrap connections, which have none.
        all.remove(&-1);
        *self.by_broker.lock() = all;
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
            client_config.set("sasl.mechanism", sasl.mechanism.name());
            if let Some(kerberos) = &sasl.kerberos {
                // librdkafka runs kinit with the keytab for the principal (its default
                // sasl.kerberos.kinit.cmd) at start and every minute; Cyrus SASL's GSSAPI
                // then uses the ticket of the process's credential cache.
                client_config
                    .set("sasl.kerberos.principal", &sasl.username)
                    .set(
                        "sasl.kerberos.keytab",
                        kerberos.keytab.display().to_string(),
                    )
                    .set("sasl.kerberos.service.name", &kerberos.service_name);
            }
            match &sasl.oauth {
                None if sasl.kerberos.is_some() => {}
                None => {
                    client_config
                        .set("sasl.username", &sasl.username)
                        .set("sasl.password", &sasl.password.0);
                }
                // librdkafka's own OpenID Connect client: it asks the token endpoint with
                // the client credentials grant, and again at 80 % of the token's lifetime.
                Some(oauth) => {
                    client_config
                        .set("sasl.oauthbearer.method", "oidc")
                        .set("sasl.oauthbearer.client.id", &sasl.username)
                        .set("sasl.oauthbearer.client.secret", &sasl.password.0)
                        .set("sasl.oauthbearer.token.endpoint.url", &oauth.token_endpoint);
                    if !oauth.scopes.is_empty() {
                        client_config.set("sasl.oauthbearer.scope", oauth.scopes.join(" "));
                    }
                    if !oauth.extensions.is_empty() {
                        let pairs: Vec<String> = oauth
                            .extensions
                            .iter()
                            .map(|(key, value)| format!("{key}={value}"))
                            .collect();
                        client_config.set("sasl.oauthbearer.extensions", pairs.join(","));
                    }
                }
            }
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
            if let Some(password) = &tls.key_password {
                client_config.set("ssl.key.password", &password.0);
            }
        }
        client_config
            .set("bootstrap.servers", &bootstrap)
            .set("enable.auto.commit", "false")
            .set("allow.auto.create.topics", "false")
            // No client telemetry (KIP-714): one request fewer per interval, nothing gained.
            .set("enable.metrics.push", "false")
            // One connection per broker for every watch, retried with exponential backoff
            // from 100 ms to 1 s while a broker is down: quick recovery, no connection storm.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            // The broker list is refreshed every 10 s (librdkafka's floor for a client that
            // references no topic; 5 min by default), so that a broker back on another
            // address (KEDA #4098) is found even while no read fails.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set(
                "socket.timeout.ms",
                config.request_timeout.as_millis().to_string(),
            );
        let reader = records::reader_config(client_config.clone());
        let markers = markers::MarkerProbe::new(reader.clone(), config.request_timeout);
        let consumer: BaseConsumer<Context> = client_config
            .set("statistics.interval.ms", stats_ms.to_string())
            .set("client.id", "lagscaler")
            // Set, though lagscaler consumes nothing with this client: ListOffsets names its
            // isolation level per request (`isolationLevel`).
            .set("isolation.level", "read_uncommitted")
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
            topic_reads: topics::TopicReads::new(config.commit_reader_idle),
            groups: CycleCache::default(),
            topic_names: CycleCache::default(),
            described: CycleCache::default(),
            offsets_layout: CycleCache::default(),
            offsets_ends: CycleCache::default(),
            markers,
            reader,
            commit_source: config.commit_source,
            stats_interval: config.stats_interval,
            reader_idle: config.commit_reader_idle,
            stream: Mutex::new(committed::StreamState::default()),
            stream_behind: AtomicBool::new(false),
            bootstraps: committed::Bootstraps::default(),
            reader_start: Mutex::new(()),
            stopping: AtomicBool::new(false),
            stop_events,
            events_thread: Mutex::new(Some(events_thread)),
        })
    }

    /// Requests sent so far by API, as of librdkafka's latest statistics report; `None`
    /// until the first report, or ever when `SCALER_KAFKA_STATS_INTERVAL` is off.
    pub fn request_counts(&self) -> Option<RequestCounts> {
        self.consumer.context().requests.lock().clone()
    }

    /// [`KafkaClient::request_counts`] by broker node id; empty until the first report.
    pub fn request_counts_by_broker(&self) -> BTreeMap<i32, RequestCounts> {
        self.consumer.context().by_broker.lock().clone()
    }

    /// Reads what lag is computed from: for `group` and the `topics` selected (see
    /// [`Topics`]), each partition's log start, end (high watermark, or last stable offset
    /// under `read_committed`) and committed offset. Partitions come sorted by topic and
    /// number. The group's committed offsets are read now; each topic's offsets (and the
    /// cluster's topic names, for a pattern) come from a read made at or after `since` (this
    /// poll's scheduled time), shared with every watch of the cycle that reads the same.
    pub fn snapshot(
        &self,
        group: &str,
        topics: Topics<'_>,
        since: Instant,
        isolation: Isolation,
    ) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let read = self.read_snapshot(group, topics, since, isolation);
        if read.is_ok() {
            *self.consumer.context().login_refused.lock() = None;
        }
        read
    }

    /// `cause`, a failed read's, with the latest refused login since the last good read:
    /// a refusal shows to librdkafka's callers only as a timeout, and KEDA's message and
    /// `lagscaler check` should say why.
    pub fn with_login_refusal(&self, cause: String) -> String {
        match &*self.consumer.context().login_refused.lock() {
            Some((when, reason)) => format!(
                "{cause} (the login was refused {:.0} s ago: {reason})",
                when.elapsed().as_secs_f64()
            ),
            None => cause,
        }
    }

    fn read_snapshot(
        &self,
        group: &str,
        topics: Topics<'_>,
        since: Instant,
        isolation: Isolation,
    ) -> Result<Vec<PartitionOffsets>, KafkaError> {
        let committed = self.committed_offsets(group, since)?;
        let committed_topics = committed
            .iter()
            .filter(|offset| offset.offset >= 0)
            .map(|offset| &*offset.topic);
        let cluster_topics;
        let selected: BTreeSet<&str> = match topics {
            // One topic, or several comma-separated (a topic name never holds a comma).
            Topics::Listed(topics) => topics.split(',').collect(),
            Topics::Committed => committed_topics.collect(),
            Topics::Matching { regex, .. } => {
                cluster_topics = self.topic_names(since)?;
                committed_topics
                    .chain(cluster_topics.iter().map(String::as_str))
                    .filter(|topic| !INTERNAL_TOPICS.contains(topic))
                    .filter(|topic| regex.is_match(topic))
                    .collect()
            }
        };
        if selected.is_empty() {
            return Err(match topics {
                Topics::Matching { pattern, .. } => KafkaError::NoTopicMatches {
                    group: group.to_owned(),
                    pattern: pattern.to_owned(),
                },
                Topics::Committed | Topics::Listed(_) => KafkaError::NoTopics {
                    group: group.to_owned(),
                },
            });
        }
        // Sorted by topic and partition (the commit stream's already are), for a binary
        // search per partition.
        let mut committed: Vec<(&str, i32, i64)> = committed
            .iter()
            .filter(|offset| offset.offset >= 0)
            .map(|offset| (&*offset.topic, offset.partition, offset.offset))
            .collect();
        committed.sort_unstable();
        let committed_at = |topic: &str, partition: i32| {
            committed
                .binary_search_by(|(t, p, _)| (*t, *p).cmp(&(topic, partition)))
                .ok()
                .map(|index| committed[index].2)
        };
        let group_name: Arc<str> = group.into();
        let mut snapshot = Vec::new();
        let mut deleted = Vec::new();
        for topic in selected {
            let read = match self.topic_read(topic, isolation, since) {
                Ok(read) => read,
                // The group committed on a topic deleted since: nothing there to consume.
                // A watch of that one topic fails, naming it; one of every topic the group
                // committed on measures the others.
                Err(KafkaError::UnknownTopic { .. }) if !matches!(topics, Topics::Listed(_)) => {
                    deleted.push(topic);
                    continue;
                }
                Err(err) => return Err(err),
            };
            snapshot.extend(read.partitions.iter().map(|partition| PartitionOffsets {
                group: Arc::clone(&group_name),
                log_start: partition.log_start,
                high_watermark: partition.high_watermark,
                committed: committed_at(topic, partition.partition),
                topic: Arc::clone(&read.name),
                topic_id: Arc::clone(&read.id),
                partition: partition.partition,
                nothing_to_read: false,
                unread: partition.unread.clone(),
                waited: None,
            }));
        }
        if snapshot.is_empty() && !deleted.is_empty() {
            return Err(KafkaError::OnlyDeletedTopics {
                group: group.to_owned(),
                topics: deleted.join(", "),
            });
        }
        self.markers.mark(&mut snapshot, isolation, since);
        if !deleted.is_empty() {
            debug!(
                "group {group} has commits on deleted topics, not counted: {}",
                deleted.join(", ")
            );
        }
        Ok(snapshot)
    }

    /// The admin calls' common arguments: this client, its timeout and its stop flag.
    fn call(&self) -> admin::Call<'_, Context> {
        admin::Call {
            client: self.consumer.client(),
            timeout: self.timeout,
            stop: &self.stopping,
        }
    }

    /// Makes every Kafka call of this client in progress or to come give up within 100 ms
    /// (the group list, librdkafka's own blocking call, within 500 ms).
    pub fn stop_calls(&self) {
        self.stopping.store(true, Ordering::Release);
        if let committed::StreamState::Running(reader) = &*self.stream.lock() {
            reader.stop_waits();
        }
    }

    /// The names of the cluster's topics, sorted, read at or after `since` (one Metadata
    /// request for every topic, shared by the cycle's polls).
    pub fn topic_names(&self, since: Instant) -> Result<Arc<Vec<String>>, KafkaError> {
        self.topic_names
            .get("", since, |_| self.fetch_topic_names())
    }

    /// One Metadata request for every topic. librdkafka's call waits for its own answer
    /// only, so the waits grow from 100 ms (a new request each, at most 7 within the 5 s
    /// default timeout), checking the stop flag between them.
    fn fetch_topic_names(&self) -> Result<Vec<String>, KafkaError> {
        let deadline = Instant::now() + self.timeout;
        let mut wait = admin::SLICE;
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return Err(KafkaError::ListTopics {
                    cause: STOPPING.to_owned(),
                });
            }
            match self.consumer.fetch_metadata(None, wait) {
                Ok(metadata) => {
                    let mut names: Vec<String> = metadata
                        .topics()
                        .iter()
                        .filter(|topic| topic.error().is_none())
                        .map(|topic| topic.name().to_owned())
                        .collect();
                    names.sort();
                    return Ok(names);
                }
                Err(err) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let timed_out = err.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::OperationTimedOut);
                    if !timed_out || left.is_zero() {
                        return Err(KafkaError::ListTopics {
                            cause: err.to_string(),
                        });
                    }
                    wait = (wait * 2).min(left);
                }
            }
        }
    }

    /// Every committed offset of `group`.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<CommittedOffset>, KafkaError> {
        admin::list_group_offsets(&self.call(), group).map_err(|cause| KafkaError::GroupOffsets {
            group: group.to_owned(),
            cause,
        })
    }

    /// Stops and joins the `kafka-events` thread. Idempotent.
    pub fn shutdown(&self) -> thread::Result<()> {
        let stream = std::mem::take(&mut *self.stream.lock());
        if let committed::StreamState::Running(reader) = stream {
            reader.shutdown()?;
        }
        self.markers.shutdown()?;
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
