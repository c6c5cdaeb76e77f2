//! The cycle's topic reads, batched: every topic the cluster's watches read lately (at one
//! isolation level) is read together, once per cycle, with one DescribeTopics (one Metadata
//! request), then one ListOffsets per leader broker for all their partitions' ends and one
//! for their log starts. The cost per cycle is then the brokers', not the topics': at
//! W = 100 over 10 topics it was 10 Metadata and 20 ListOffsets requests per cycle, one per
//! topic and end (BENCHMARKS.md §10).
//!
//! The first poll of a cycle to need a topic reads the batch; the cycle's others wait for
//! it and share it (`cycle::CycleCache`). A topic no watch read before, or one first asked
//! after the cycle's batch began, is read alone in that cycle and joins the batch from the
//! next. A topic no poll asked about for the commit reader's idle time (3 poll intervals,
//! at least 10 s) leaves the batch.
//!
//! A batch waits for its slowest leader: a frozen broker delays every topic of the batch by
//! one request timeout, where per-topic reads delayed only the topics it leads. With a
//! topic's partitions spread over the brokers, as Kafka places them, every topic has one on
//! it, so the wait is the same; each partition it leads is then stood in for by its latest
//! good read (module `topic_read`), as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;
use parking_lot::Mutex;
use rdkafka::consumer::Consumer;

use super::admin::{self, TopicError};
use super::cycle::CycleCache;
use super::topic_read::{self, TopicRead};
use super::{KafkaClient, KafkaError, STOPPING};
use crate::lag::Isolation;

/// A topic's metadata is asked of any broker at most this often (`reconnect.backoff.max.ms`).
const ASK_ANY_BROKER_EVERY: Duration = Duration::from_secs(1);

/// A topic at an isolation level.
type TopicKey = (String, Isolation);

/// One topic's partition ends by number, each an offset or why there is none.
pub(super) type Ends = HashMap<i32, Result<i64, String>>;

/// One batch's reads, by topic.
type Batch = HashMap<String, Result<Arc<TopicRead>, KafkaError>>;

/// What the batched reads keep.
pub(super) struct TopicReads {
    /// The topics polls asked for, by isolation level, with when each was last asked.
    in_use: Mutex<HashMap<Isolation, HashMap<String, Instant>>>,
    /// The cycle's batch, by isolation level.
    batches: CycleCache<Batch>,
    /// Topics read alone (not in the cycle's batch), by key.
    alone: CycleCache<TopicRead>,
    /// The latest good read of each topic: what a read that misses some leaders keeps
    /// those partitions' offsets from.
    good: Mutex<HashMap<TopicKey, Arc<TopicRead>>>,
    /// When each topic's metadata was last asked of any broker (`ask_any_broker`).
    asked_any_broker: Mutex<HashMap<String, Instant>>,
    /// A topic no poll asked for in this long leaves the batch.
    unasked_after: Duration,
}

impl TopicReads {
    pub(super) fn new(unasked_after: Duration) -> TopicReads {
        TopicReads {
            in_use: Mutex::new(HashMap::new()),
            // A batch whose every topic failed is a failure: shared for a second, so that
            // polls under a second apart with no broker up do not each try again.
            batches: CycleCache::failing_when(|batch: &Batch| {
                !batch.is_empty() && batch.values().all(Result::is_err)
            }),
            alone: CycleCache::default(),
            good: Mutex::new(HashMap::new()),
            asked_any_broker: Mutex::new(HashMap::new()),
            unasked_after,
        }
    }

    /// Marks `topic` asked for now; whether it was in use before. A topic already in use
    /// costs a lookup, no allocation (every poll of every watch asks).
    fn ask(&self, topic: &str, isolation: Isolation) -> bool {
        let mut in_use = self.in_use.lock();
        let topics = in_use.entry(isolation).or_default();
        match topics.get_mut(topic) {
            Some(at) => {
                *at = Instant::now();
                true
            }
            None => {
                topics.insert(topic.to_owned(), Instant::now());
                false
            }
        }
    }

    /// The topics in use at `isolation`, dropping those no poll asked for lately (and
    /// their latest good reads).
    fn batch_topics(&self, isolation: Isolation) -> Vec<String> {
        let mut in_use = self.in_use.lock();
        let Some(topics) = in_use.get_mut(&isolation) else {
            return Vec::new();
        };
        let before = topics.len();
        topics.retain(|_, at| at.elapsed() < self.unasked_after);
        if topics.len() < before {
            self.good
                .lock()
                .retain(|(topic, of), _| *of != isolation || topics.contains_key(topic));
        }
        let mut names: Vec<String> = topics.keys().cloned().collect();
        names.sort_unstable();
        names
    }
}

/// The cache key of a topic read alone.
fn alone_key(topic: &str, isolation: Isolation) -> String {
    // A space never appears in a topic name, so the two keys of a topic never meet
    // another topic's.
    match isolation {
        Isolation::ReadUncommitted => topic.to_owned(),
        Isolation::ReadCommitted => format!("{topic} read_committed"),
    }
}

impl KafkaClient {
    /// `topic`'s partitions with their log starts and high watermarks at `isolation`, read
    /// at or after `since`: from the cycle's batch, or alone when the batch does not hold
    /// it.
    pub(super) fn topic_read(
        &self,
        topic: &str,
        isolation: Isolation,
        since: Instant,
    ) -> Result<Arc<TopicRead>, KafkaError> {
        let reads = &self.topic_reads;
        if reads.ask(topic, isolation) {
            let batch = reads
                .batches
                .get(&alone_key("", isolation), since, |_| {
                    let topics = reads.batch_topics(isolation);
                    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                    Ok(self
                        .read_topics(&names, isolation)
                        .into_iter()
                        .map(|(topic, read)| (topic, read.map(Arc::new)))
                        .collect())
                })
                .ok();
            if let Some(read) = batch.as_ref().and_then(|batch| batch.get(topic)) {
                return read.clone();
            }
        }
        self.topic_read_alone(topic, isolation, since)
    }

    /// `topic` read alone at or after `since`, shared by the cycle's polls that read it
    /// alone too: not in a batch, nor added to one (e.g. `__consumer_offsets` when the
    /// commit reader starts).
    pub(super) fn topic_read_alone(
        &self,
        topic: &str,
        isolation: Isolation,
        since: Instant,
    ) -> Result<Arc<TopicRead>, KafkaError> {
        self.topic_reads
            .alone
            .get(&alone_key(topic, isolation), since, |_| {
                self.read_topics(&[topic], isolation)
                    .remove(topic)
                    .unwrap_or_else(|| {
                        Err(KafkaError::UnknownTopic {
                            topic: topic.to_owned(),
                        })
                    })
            })
    }

    /// Each of `topics` with its partitions, sorted, their high watermarks and log starts:
    /// one DescribeTopics for them all, then one ListOffsets per partition leader for each
    /// end.
    ///
    /// A leader that cannot be reached (dead and not replaced yet, or just replaced) must not
    /// fail the read of every watch of the topic: when the read reaches some partitions but
    /// not others, those others keep the offsets of the topic's latest good read (same id),
    /// marked `Unread` with the time they were read, and a failed DescribeTopics keeps that
    /// read's partitions. Nothing is carried when no partition of the topic was read now:
    /// then the cluster is not answering and the topic's read fails. (A partition with no
    /// leader takes no records and serves no consumer, so its end stays where it was last
    /// read; how long an earlier read may stand in is the watcher's to judge.)
    fn read_topics(
        &self,
        topics: &[&str],
        isolation: Isolation,
    ) -> HashMap<String, Result<TopicRead, KafkaError>> {
        let read_at = Instant::now();
        let previous: HashMap<&str, Arc<TopicRead>> = {
            let good = self.topic_reads.good.lock();
            topics
                .iter()
                .filter_map(|topic| {
                    let read = good.get(&((*topic).to_owned(), isolation))?;
                    Some((*topic, Arc::clone(read)))
                })
                .collect()
        };
        let mut reads: HashMap<String, Result<TopicRead, KafkaError>> = HashMap::new();
        let mut layouts: Vec<(&str, Arc<str>, Vec<i32>)> = Vec::new();
        let described: Result<HashMap<String, Result<admin::TopicLayout, TopicError>>, String> =
            admin::describe_topics(&self.call(), topics)
                .map(|described| described.into_iter().collect());
        let mut undescribed = Vec::new();
        for &topic in topics {
            let layout = match &described {
                Ok(described) => described
                    .get(topic)
                    .map_or(Err(TopicError::Unknown), Clone::clone),
                Err(cause) => Err(TopicError::Other(cause.clone())),
            };
            match (layout, previous.get(topic)) {
                (Ok(layout), _) => layouts.push((topic, layout.id.into(), layout.partitions)),
                (Err(TopicError::Unknown), _) => {
                    reads.insert(
                        topic.to_owned(),
                        Err(KafkaError::UnknownTopic {
                            topic: topic.to_owned(),
                        }),
                    );
                }
                (Err(TopicError::Other(cause)), previous) => {
                    if cause != STOPPING {
                        undescribed.push((topic, cause.clone()));
                    }
                    match previous {
                        Some(previous) if cause != STOPPING => {
                            debug!(
                                "topic {topic}: the partitions of the previous read are read again"
                            );
                            let numbers = previous.partitions.iter().map(|p| p.partition).collect();
                            layouts.push((topic, Arc::clone(&previous.id), numbers));
                        }
                        _ => {
                            reads.insert(
                                topic.to_owned(),
                                Err(KafkaError::Metadata {
                                    topic: topic.to_owned(),
                                    cause,
                                }),
                            );
                        }
                    }
                }
            }
        }
        if let Some((topic, cause)) = undescribed.first() {
            // librdkafka sends DescribeTopics to the broker the latest metadata named
            // controller (with KRaft, any broker the answering one thought alive) and waits
            // for that broker however long it is down, so after a failure a plain Metadata
            // request goes to any broker that is up: its answer names a controller again and
            // carries every broker's current address (a broker moved to another port, KEDA
            // #4098).
            let many = (undescribed.len() > 1).then_some(());
            self.ask_any_broker(
                many.map_or(Some(*topic), |()| None),
                &format!("describing it failed ({cause})"),
            );
        }
        let partitions: Vec<(&str, i32)> = layouts
            .iter()
            .flat_map(|(topic, _, numbers)| numbers.iter().map(move |number| (*topic, *number)))
            .collect();
        let latest = match self.list_ends(&partitions, admin::End::Latest, isolation) {
            Ok(latest) => latest,
            Err(err) => {
                for (topic, _, _) in &layouts {
                    reads.insert((*topic).to_owned(), Err(err.clone()));
                }
                return reads;
            }
        };
        let no_answers = HashMap::new();
        let unanswered: Vec<&str> = layouts
            .iter()
            .filter(|(topic, _, numbers)| {
                let answers = latest.get(*topic).unwrap_or(&no_answers);
                answers.len() < numbers.len() || answers.values().any(Result::is_err)
            })
            .map(|(topic, _, _)| *topic)
            .collect();
        if let Some(topic) = unanswered.first() {
            // librdkafka forgets a topic's leaders after a ListOffsets error, but not when a
            // leader's request timed out (those partitions come back with no error and no
            // offset), so it would keep asking a broker that is gone or moved until its
            // periodic refresh: the topic's metadata is asked of any broker now, and its
            // answer updates the leaders for the next cycle.
            let one = (unanswered.len() == 1).then_some(*topic);
            self.ask_any_broker(one, "some leaders did not answer");
        }
        // The log starts of the partitions whose leader answered: a leader that did not is
        // not waited for twice.
        let answered: Vec<(&str, i32)> = partitions
            .iter()
            .filter(|(topic, number)| {
                latest
                    .get(*topic)
                    .and_then(|answers| answers.get(number))
                    .is_some_and(Result::is_ok)
            })
            .copied()
            .collect();
        let earliest = if answered.is_empty() {
            HashMap::new()
        } else {
            match self.list_ends(&answered, admin::End::Earliest, isolation) {
                Ok(earliest) => earliest,
                Err(err) => {
                    for (topic, _, _) in &layouts {
                        reads.insert((*topic).to_owned(), Err(err.clone()));
                    }
                    return reads;
                }
            }
        };
        let mut good = Vec::new();
        for (topic, id, numbers) in layouts {
            let read = topic_read::merge(
                topic_read::Answers {
                    topic,
                    id,
                    numbers: &numbers,
                    latest: latest.get(topic).unwrap_or(&no_answers),
                    earliest: earliest.get(topic).unwrap_or(&no_answers),
                    read_at,
                },
                previous.get(topic).map(Arc::as_ref),
            )
            .map_err(|cause| KafkaError::Watermarks {
                which: "latest and earliest",
                cause,
            });
            if let Ok(read) = &read {
                good.push(((topic.to_owned(), isolation), Arc::new(read.clone())));
            }
            reads.insert(topic.to_owned(), read);
        }
        self.topic_reads.good.lock().extend(good);
        reads
    }

    /// The id and partition numbers of `topic` (DescribeTopics); after a failure its
    /// metadata is asked of any broker (see [`KafkaClient::read_topics`]).
    pub(super) fn describe_topic(&self, topic: &str) -> Result<admin::TopicLayout, KafkaError> {
        admin::describe_topic(&self.call(), topic).map_err(|err| match err {
            TopicError::Unknown => KafkaError::UnknownTopic {
                topic: topic.to_owned(),
            },
            TopicError::Other(cause) => {
                if cause != STOPPING {
                    self.ask_any_broker(Some(topic), &format!("describing it failed ({cause})"));
                }
                KafkaError::Metadata {
                    topic: topic.to_owned(),
                    cause,
                }
            }
        })
    }

    /// Asks the metadata of `topic` (or of every topic, for `None`) of any broker that is
    /// up, waiting at most 100 ms, at most once per [`ASK_ANY_BROKER_EVERY`] per topic: with
    /// no broker up, librdkafka answers each such request with a new connection attempt,
    /// which polls asking every cycle would make a storm of (a dead broker's port was
    /// connected to about 20 times a second). Its answer updates the partitions' leaders
    /// and leader epochs for the next reads, and comes, waited for or not.
    pub(super) fn ask_any_broker(&self, topic: Option<&str>, why: &str) {
        {
            let mut asked = self.topic_reads.asked_any_broker.lock();
            asked.retain(|_, at| at.elapsed() < ASK_ANY_BROKER_EVERY);
            let key = topic.unwrap_or("");
            if asked.contains_key(key) {
                return;
            }
            asked.insert(key.to_owned(), Instant::now());
        }
        let refreshed = self.consumer.fetch_metadata(topic, admin::SLICE);
        debug!(
            "topic {}: {why}; metadata asked of any broker: {}",
            topic.unwrap_or("(every topic)"),
            refreshed.map_or_else(|err| err.to_string(), |_| "answered".to_owned())
        );
    }

    /// Latest or earliest offsets of `partitions`, by topic and partition, each its own
    /// answer (see [`admin::list_offsets`]): one ListOffsets request per leader. A
    /// partition the brokers did not answer for is missing.
    pub(super) fn list_ends(
        &self,
        partitions: &[(&str, i32)],
        end: admin::End,
        isolation: Isolation,
    ) -> Result<HashMap<String, Ends>, KafkaError> {
        let which = match end {
            admin::End::Earliest => "earliest",
            admin::End::Latest => "latest",
        };
        let answer = admin::list_offsets(&self.call(), partitions, end, isolation)
            .map_err(|cause| KafkaError::Watermarks { which, cause })?;
        let asked: HashSet<(&str, i32)> = partitions.iter().copied().collect();
        let mut ends: HashMap<String, Ends> = HashMap::new();
        for answer in answer {
            // Only what was asked.
            if asked.contains(&(answer.topic.as_str(), answer.partition)) {
                ends.entry(answer.topic)
                    .or_default()
                    .insert(answer.partition, answer.offset);
            }
        }
        Ok(ends)
    }
}
