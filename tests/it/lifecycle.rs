//! What a record's life in Kafka does to the lag: transactions and the isolation level,
//! transaction markers, records deleted below a group's commit (retention, DeleteRecords),
//! partitions added to a topic at runtime, and a topic deleted and created again. All on the
//! shared broker, with topics and groups of their own.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{Kafka, Scaler};

const POLL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(600);
/// Long enough for a change to reach a poll on a loaded machine.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

fn admin(broker: &Kafka) -> AdminClient<DefaultClientContext> {
    broker.client_config().create().expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Expects `metadata`'s lag to become `lag` within [`SEEN_WITHIN`].
fn expect_lag(scaler: &Scaler, metadata: &[(&str, &str)], lag: i64) {
    let seen = scaler.wait_for_lag(metadata, lag, SEEN_WITHIN);
    assert!(
        seen.is_some(),
        "{metadata:?}: lag {lag} not seen; it is {:?}",
        scaler.lag(metadata)
    );
}

/// Begins a transaction and sends `count` records to partition 0 of `txn-open` in it,
/// flushed; the transaction stays open.
fn send_in_transaction(producer: &BaseProducer, count: usize, label: &str) {
    producer.begin_transaction().expect("begin");
    for n in 0..count {
        let payload = format!("{label} {n}");
        producer
            .send(
                BaseRecord::<(), _>::to("txn-open")
                    .partition(0)
                    .payload(&payload),
            )
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn transactions_count_by_isolation_level_and_their_markers_never_do() {
    let broker = Kafka::shared();
    broker.create_topic("txn-open", 1);
    broker.produce("txn-open", 0, 4);
    broker.commit("txn-readers", &[("txn-open", 0, 4)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let uncommitted = [("consumerGroup", "txn-readers"), ("topic", "txn-open")];
    let committed = [
        ("consumerGroup", "txn-readers"),
        ("topic", "txn-open"),
        ("isolationLevel", "read_committed"),
    ];
    assert_eq!(scaler.lag(&uncommitted).expect("lag"), 0);

    // A transaction writes 5 records and stays open.
    let producer = broker.transactional_producer("lagscaler-test-txn-open");
    send_in_transaction(&producer, 5, "in transaction");

    // Read uncommitted (the default, KEDA's meaning): the high watermark counts them.
    expect_lag(&scaler, &uncommitted, 5);
    // Read committed: the last stable offset stops before the open transaction.
    assert_eq!(scaler.lag(&committed).expect("read_committed lag"), 0);
    assert_eq!(
        scaler.daemon().watch_count(),
        2,
        "one watch per isolation level"
    );

    // Committed: both count the 5 records and the commit marker's offset (offsets 4 to 9).
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");
    expect_lag(&scaler, &committed, 6);
    expect_lag(&scaler, &uncommitted, 6);

    // The group consumed the 5 records: what is left (offset 9) is the commit marker, which
    // no consumer ever reads. Not lag (KEDA counts it: #5675).
    broker.commit("txn-readers", &[("txn-open", 0, 9)]);
    expect_lag(&scaler, &committed, 0);
    expect_lag(&scaler, &uncommitted, 0);

    // An aborted transaction: 3 records (10 to 12) and the abort marker (13). A read
    // committed consumer skips them all; a read uncommitted one reads the 3 records.
    send_in_transaction(&producer, 3, "aborted");
    producer
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");
    broker.commit("txn-readers", &[("txn-open", 0, 10)]);
    expect_lag(&scaler, &committed, 0);
    expect_lag(&scaler, &uncommitted, 4);
    // And a record after them counts for both, once.
    broker.produce("txn-open", 0, 1);
    expect_lag(&scaler, &committed, 5);
    expect_lag(&scaler, &uncommitted, 5);
    scaler.stop();
}

/// Many groups whose lag is only commit markers, and as many one transaction behind, on
/// the same partitions: every watch has its true lag within a few polls. Until issue 41 the
/// probe read one watch's partitions a second, at most, so W watches took W seconds (and
/// W x 5 s at 5 s polls): here 60 watches, at least a minute.
#[test]
fn the_marker_verdicts_of_many_groups_come_within_a_few_polls() {
    const TOPIC: &str = "txn-many";
    const PARTITIONS: i32 = 4;
    const GROUPS: usize = 60;
    let broker = Kafka::shared();
    broker.create_topic(TOPIC, PARTITIONS as u32);
    // Five transactions of one record on each partition: records at even offsets, their
    // commit markers at odd ones, the ends at 10.
    let producer = broker.transactional_producer("lagscaler-test-txn-many");
    for transaction in 0..5 {
        producer.begin_transaction().expect("begin");
        for partition in 0..PARTITIONS {
            let payload = format!("transaction {transaction}");
            producer
                .send(
                    BaseRecord::<(), _>::to(TOPIC)
                        .partition(partition)
                        .payload(&payload),
                )
                .expect("send");
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit");
    }
    // Even groups consumed everything (at 9, only the last marker is left); odd ones are a
    // transaction behind (at 7: the record at 8 waits, 3 offsets of lag on each partition).
    let groups: Vec<(String, i64)> = (0..GROUPS)
        .map(|n| (format!("txn-many-{n}"), if n % 2 == 0 { 0 } else { 12 }))
        .collect();
    for (group, lag) in &groups {
        let at = if *lag == 0 { 9 } else { 7 };
        let offsets: Vec<(&str, i32, i64)> = (0..PARTITIONS)
            .map(|partition| (TOPIC, partition, at))
            .collect();
        broker.commit(group, &offsets);
    }
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = |group: &str| [("consumerGroup", group.to_owned()), ("topic", TOPIC.into())];
    let first_call = Instant::now();
    let mut wrong: Vec<(String, Option<i64>)> = Vec::new();
    // Within 20 s of the first call (about 65 polls, on a loaded machine).
    while first_call.elapsed() < Duration::from_secs(20) {
        wrong.clear();
        for (group, lag) in &groups {
            let asked = metadata(group);
            let asked: Vec<(&str, &str)> = asked.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let seen = scaler.lag(&asked).ok();
            if seen != Some(*lag) {
                wrong.push((group.clone(), seen));
            }
        }
        if wrong.is_empty() {
            break;
        }
        std::thread::sleep(POLL);
    }
    assert!(
        wrong.is_empty(),
        "after {:?}, {} of {GROUPS} watches without their true lag (0 even, 12 odd): {wrong:?}",
        first_call.elapsed(),
        wrong.len()
    );
    println!(
        "every verdict {:?} after the first call",
        first_call.elapsed()
    );
    scaler.stop();
}

#[test]
fn records_deleted_below_a_commit_are_never_counted() {
    let broker = Kafka::shared();
    broker.create_topic("retention-cut", 1);
    broker.produce("retention-cut", 0, 10);
    broker.commit("retention-behind", &[("retention-cut", 0, 2)]);
    broker.commit("retention-ahead", &[("retention-cut", 0, 7)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let behind = |extra: &[(&'static str, &'static str)]| {
        let mut metadata = vec![
            ("consumerGroup", "retention-behind"),
            ("topic", "retention-cut"),
        ];
        metadata.extend_from_slice(extra);
        metadata
    };
    let earliest = behind(&[("offsetResetPolicy", "earliest")]);
    let latest = behind(&[]);
    let zero = behind(&[("scaleToZeroOnInvalidOffset", "true")]);
    let ahead = [
        ("consumerGroup", "retention-ahead"),
        ("topic", "retention-cut"),
    ];
    assert_eq!(scaler.lag(&latest).expect("lag"), 8);
    assert_eq!(scaler.lag(&ahead).expect("lag"), 3);

    // Records 0..6 are deleted (as retention would): the group behind committed at 2.
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset("retention-cut", 0, Offset::Offset(6))
        .expect("offset");
    let deleted = futures::executor::block_on(admin(broker).delete_records(&cut, &options()))
        .expect("DeleteRecords");
    assert_eq!(
        deleted.elements()[0].offset(),
        Offset::Offset(6),
        "log start"
    );

    // Its commit is below the log start, where no consumer can resume: it counts as no
    // commit. Earliest: the 4 records still there (KEDA: 8, deleted ones included).
    expect_lag(&scaler, &earliest, 4);
    // Latest: KEDA's 1 for a partition without a valid commit, or 0 if asked.
    expect_lag(&scaler, &latest, 1);
    expect_lag(&scaler, &zero, 0);
    // A commit at or above the log start is unchanged.
    assert_eq!(scaler.lag(&ahead).expect("lag"), 3);
    scaler.stop();
}

#[test]
fn partitions_added_at_runtime_count_from_the_next_poll() {
    let broker = Kafka::shared();
    broker.create_topic("grows", 1);
    broker.produce("grows", 0, 3);
    broker.commit("growers", &[("grows", 0, 1)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let latest = [("consumerGroup", "growers"), ("topic", "grows")];
    let earliest = [
        ("consumerGroup", "growers"),
        ("topic", "grows"),
        ("offsetResetPolicy", "earliest"),
    ];
    assert_eq!(scaler.lag(&latest).expect("lag"), 2);

    let grown = futures::executor::block_on(
        admin(broker).create_partitions([&NewPartitions::new("grows", 3)], &options()),
    )
    .expect("CreatePartitions");
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    // Records on a new partition the group has no commit on yet, once it has a leader.
    let metadata: BaseConsumer = broker.client_config().create().expect("metadata client");
    let led = crate::support::wait_for(Duration::from_secs(30), || {
        let found = metadata
            .fetch_metadata(Some("grows"), Duration::from_secs(2))
            .ok()?;
        let partitions = found.topics().first()?.partitions();
        (partitions.len() == 3 && partitions.iter().all(|p| p.leader() >= 0)).then_some(())
    });
    assert!(led.is_some(), "no leader for the new partitions");
    broker.produce("grows", 2, 4);

    // Earliest: 2 + 0 (partition 1, empty) + 4; latest: KEDA's 1 for each partition
    // without a commit.
    expect_lag(&scaler, &earliest, 6);
    expect_lag(&scaler, &latest, 4);
    scaler.stop();
}

#[test]
fn a_deleted_topic_fails_only_its_own_watch_and_comes_back_with_a_fresh_history() {
    let broker = Kafka::shared();
    broker.create_topic("recreated", 2);
    broker.create_topic("stays", 1);
    for partition in 0..2 {
        broker.produce("recreated", partition, 50);
    }
    broker.produce("stays", 0, 10);
    broker.commit(
        "recreators",
        &[("recreated", 0, 50), ("recreated", 1, 40), ("stays", 0, 4)],
    );
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let one = [("consumerGroup", "recreators"), ("topic", "recreated")];
    let every = [("consumerGroup", "recreators")];
    assert_eq!(scaler.lag(&one).expect("lag"), 10);
    assert_eq!(scaler.lag(&every).expect("lag"), 16);

    let deleted =
        futures::executor::block_on(admin(broker).delete_topics(&["recreated"], &options()))
            .expect("DeleteTopics");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");

    // The watch of the deleted topic fails, naming it: KEDA applies its fallback.
    let named = crate::support::wait_for(SEEN_WITHIN, || {
        let status = scaler.lag(&one).err()?;
        (status.code() == grpcio::RpcStatusCode::UNAVAILABLE
            && status.message().contains("topic recreated does not exist"))
        .then_some(())
    });
    assert!(named.is_some(), "{:?}", scaler.lag(&one));
    // The watch of every topic the group committed on measures the one left.
    expect_lag(&scaler, &every, 6);

    // Created again under the same name: offsets start from 0 in a new topic.
    broker.create_topic("recreated", 2);
    broker.produce("recreated", 0, 30);
    broker.commit("recreators", &[("recreated", 0, 10), ("recreated", 1, 0)]);
    expect_lag(&scaler, &one, 20);
    expect_lag(&scaler, &every, 26);
    scaler.stop();
}
