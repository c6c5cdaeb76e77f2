//! What Apache Kafka itself does to the numbers: batched, lz4-compressed produce and a real
//! consumer's commits give exactly the lag an independent reading gives (and Kafka's own
//! `kafka-consumer-groups`), and a three-node cluster keeps the answers honest through a
//! killed node and exact through a rolling restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{wait_for, Kafka, Process, Scaler};

const POLL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(600);

/// Lag as `kafka-consumer-groups` computes it, from a client of its own: for each partition
/// of `topic`, the high watermark minus the group's committed offset (read uncommitted, as
/// the tool does). `None` while a partition has no commit.
fn independent_lag(broker: &Kafka, group: &str, topic: &str, partitions: i32) -> Option<i64> {
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("create the independent reader");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = reader
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    let mut lag = 0;
    for element in committed.elements() {
        let Offset::Offset(offset) = element.offset() else {
            return None;
        };
        let (_, high) = reader
            .fetch_watermarks(topic, element.partition(), Duration::from_secs(10))
            .expect("watermarks");
        lag += high - offset;
    }
    Some(lag)
}

/// The total of the LAG column `kafka-consumer-groups --describe` prints for `topic`.
fn consumer_groups_tool_lag(broker: &Kafka, group: &str, topic: &str) -> i64 {
    let output = broker.run_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--describe", "--group", group],
    );
    let rows: Vec<i64> = output
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
            (columns.get(1) == Some(&topic)).then(|| columns.get(5)?.parse().ok())?
        })
        .collect();
    assert!(!rows.is_empty(), "no row for {topic}:\n{output}");
    rows.iter().sum()
}

#[test]
fn batched_lz4_records_and_real_commits_give_the_exact_lag_each_poll() {
    const TOPIC: &str = "exact-lz4";
    const GROUP: &str = "exact-readers";
    const PARTITIONS: i32 = 6;
    const BATCH: usize = 500;
    // 10,000 records, unevenly spread, each partition in batches of 500.
    const PER_PARTITION: [usize; 6] = [2000, 1500, 2500, 1000, 1500, 1500];
    let total: i64 = PER_PARTITION.iter().sum::<usize>() as i64;
    let broker = Kafka::shared();
    broker.create_topic(TOPIC, PARTITIONS as u32);
    for (partition, count) in PER_PARTITION.iter().enumerate() {
        for _ in 0..count / BATCH {
            broker.produce(TOPIC, partition as i32, BATCH);
        }
    }

    // A real member of the group: it subscribes, reads, and commits what it read; first 0
    // everywhere, so that every partition has a known commit.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create the group member");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let assigned = wait_for(Duration::from_secs(30), || {
        let _ = consumer.poll(Duration::from_millis(100));
        let count = consumer.assignment().map(|list| list.count()).ok()?;
        (count == PARTITIONS as usize).then_some(())
    });
    assert!(
        assigned.is_some(),
        "no assignment of all partitions in 30 s"
    );
    let mut next: HashMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let commit = |next: &HashMap<i32, i64>| {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            list.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))
                .expect("add offset");
        }
        consumer
            .commit(&list, CommitMode::Sync)
            .expect("commit what was read");
    };
    commit(&next);

    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    // Without the cap at partitions × lagThreshold, the metric is the whole lag.
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("allowIdleConsumers", "true"),
    ];
    let mut consumed = 0i64;
    let mut checked_polls = 0;
    for step in [0, 1700, 1700, 1700, 1700, 1700, 1500] {
        let until = consumed + step;
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumed < until {
            assert!(
                Instant::now() < deadline,
                "read {consumed} of {until} in 30 s"
            );
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("read a record");
            next.insert(message.partition(), message.offset() + 1);
            consumed += 1;
        }
        commit(&next);
        let expected = total - consumed;
        let independent = independent_lag(broker, GROUP, TOPIC, PARTITIONS);
        assert_eq!(independent, Some(expected), "after reading {consumed}");
        let seen = scaler.wait_for_lag(&metadata, expected, 4 * POLL + Duration::from_secs(2));
        assert!(
            seen.is_some(),
            "lag {expected} not seen after reading {consumed}: {:?}",
            scaler.lag(&metadata)
        );
        // Nothing moves now: every later poll gives the same exact number.
        for _ in 0..3 {
            std::thread::sleep(POLL);
            assert_eq!(scaler.lag(&metadata).expect("lag"), expected);
            checked_polls += 1;
        }
        if consumed == 8500 {
            // Kafka's own tool agrees, while 1,500 records are left.
            assert_eq!(consumer_groups_tool_lag(broker, GROUP, TOPIC), expected);
        }
    }
    println!(
        "Apache Kafka {}: exact lag over {checked_polls} polls, from {total} to 0",
        crate::support::kafka_version()
    );
    scaler.stop();
}

#[test]
fn a_three_node_cluster_answers_honestly_through_a_killed_node_and_a_rolling_restart() {
    const TOPIC: &str = "replicated";
    const GROUP: &str = "replicated-readers";
    let mut cluster = Kafka::start_cluster();
    assert_eq!(cluster.node_count(), 3);
    cluster.create_topic(TOPIC, 6);
    let mut committed = Vec::new();
    for partition in 0..6 {
        cluster.produce(TOPIC, partition, 100);
        committed.push((TOPIC, partition, 40));
    }
    cluster.commit(GROUP, &committed);
    // The real binary: if librdkafka fails in the daemon, the child's exit says so.
    let mut process = Process::start(
        &cluster.bootstrap(),
        &[("SCALER_POLL_INTERVAL", "300ms"), ("SCALER_DEBUG", "false")],
    );
    let scaler = process.client();
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("allowIdleConsumers", "true"),
    ];
    assert_eq!(scaler.lag(&metadata).expect("lag"), 6 * 60);

    // Ten more records, then a node crashes. Until it is back an answer is the last good
    // lag, the new exact lag, or UNAVAILABLE: never another number. (The test's own clients
    // stay off the cluster while a node is down.)
    cluster.produce(TOPIC, 0, 10);
    let mut expected = 6 * 60 + 10;
    assert!(scaler
        .wait_for_lag(&metadata, expected, Duration::from_secs(10))
        .is_some());
    cluster.kill_node(0);
    let killed = Instant::now();
    let mut answers = Vec::new();
    while killed.elapsed() < Duration::from_secs(15) {
        let answer = scaler.lag(&metadata).map_err(|status| status.code());
        assert!(
            matches!(answer, Ok(370) | Err(grpcio::RpcStatusCode::UNAVAILABLE)),
            "{answer:?} with node 1 down; log:\n{}",
            process.log()
        );
        if answers.last() != Some(&answer) {
            answers.push(answer);
        }
        std::thread::sleep(POLL);
    }
    println!("node 1 down for 15 s: answers {answers:?}");
    cluster.restart_node(0);
    let seen = scaler.wait_for_lag(&metadata, expected, Duration::from_secs(30));
    assert!(
        seen.is_some(),
        "lag {expected} not seen once node 1 was back: {:?}\n{}\n{}",
        scaler.lag(&metadata),
        process.log(),
        cluster.log()
    );
    println!(
        "node 1 back: exact lag after {:?}",
        seen.unwrap_or_default()
    );

    // Every node restarted in turn: after each, a new record is counted.
    let mut took = Vec::new();
    cluster.restart_all_in_turn(|cluster, node| {
        let restarted = Instant::now();
        cluster.produce(TOPIC, node as i32, 1);
        expected += 1;
        let seen = scaler.wait_for_lag(&metadata, expected, Duration::from_secs(30));
        assert!(
            seen.is_some(),
            "lag {expected} not seen after restarting node {}: {:?}\n{}",
            node + 1,
            scaler.lag(&metadata),
            process.log()
        );
        took.push(restarted.elapsed());
    });
    println!("rolling restart: the new record counted after {took:?}");
    drop(scaler);
    let status = process.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|status| status.success()),
        "lagscaler {status:?} after the cluster's incidents; log:\n{}",
        process.log()
    );
}
