//! What lagscaler sends Kafka, counted on the wire: a broker whose listener is advertised
//! through a counting proxy (`support/wire.rs`) sees every request of every client the real
//! binary opens.

use std::time::{Duration, Instant};

use crate::support::{wire, Kafka, Process};

const TOPICS: usize = 6;
const PARTITIONS: u32 = 2;
const POLL: Duration = Duration::from_secs(1);

/// The topics of a cycle are read together: one DescribeTopics (a Metadata request) for all
/// of them, one ListOffsets per leader for their ends and one for their log starts, plus
/// the two of `__consumer_offsets`' ends, whatever the number of topics. Read topic by topic,
/// as before, a cycle of six topics sent 6 Metadata and 14 ListOffsets.
#[test]
fn a_cycle_reads_every_watched_topic_in_one_request_per_api_and_broker() {
    let broker = Kafka::start_counted();
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("wire-topic-{i}")).collect();
    for topic in &topics {
        broker.create_topic(topic, PARTITIONS);
        for partition in 0..PARTITIONS as i32 {
            broker.produce(topic, partition, 2);
        }
    }
    for (i, topic) in topics.iter().enumerate() {
        let offsets: Vec<(&str, i32, i64)> = (0..PARTITIONS as i32)
            .map(|partition| (topic.as_str(), partition, 1))
            .collect();
        broker.commit(&format!("wire-group-{i}"), &offsets);
    }
    let process = Process::start(&broker.bootstrap(), &[("SCALER_POLL_INTERVAL", "1s")]);
    let client = process.client();
    let groups: Vec<String> = (0..TOPICS).map(|i| format!("wire-group-{i}")).collect();
    for (group, topic) in groups.iter().zip(&topics) {
        let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
        let lag = client.wait_for_lag(&metadata, i64::from(PARTITIONS), Duration::from_secs(60));
        assert!(lag.is_some(), "{group} has no lag:\n{}", process.log());
    }
    // Every topic has been read in a cycle before, so the next cycles batch them.
    std::thread::sleep(3 * POLL);
    let before = broker.requests();
    let started = Instant::now();
    // Keep the watches asked about while counting.
    while started.elapsed() < Duration::from_secs(6) {
        for (group, topic) in groups.iter().zip(&topics) {
            let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
            client.get_metrics(&metadata).expect("GetMetrics");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = wire::since(&broker.requests(), &before);
    // At most this many cycles began while counting (fewer on a loaded machine).
    let cycles = (started.elapsed().as_secs_f64() / POLL.as_secs_f64()).ceil() as u64 + 1;
    let main = sent.get("lagscaler").cloned().unwrap_or_default();
    let count = |api: &str| main.get(api).copied().unwrap_or(0);
    println!(
        "{} requests over at most {cycles} cycles: {sent:?}",
        wire::total(&sent)
    );
    // Two ends of the topics, two of `__consumer_offsets` (its high watermark and last
    // stable offset).
    assert!(
        count("ListOffsets") <= 4 * cycles,
        "{} ListOffsets over at most {cycles} cycles of {TOPICS} topics: {main:?}",
        count("ListOffsets")
    );
    // DescribeTopics, and librdkafka's own refresh every 5 s; `__consumer_offsets`'s
    // layout once a minute.
    assert!(
        count("Metadata") <= 2 * cycles,
        "{} Metadata over at most {cycles} cycles of {TOPICS} topics: {main:?}",
        count("Metadata")
    );
    assert!(
        count("ListOffsets") > 0,
        "no ListOffsets counted: is the proxy in the path? {sent:?}"
    );
}
