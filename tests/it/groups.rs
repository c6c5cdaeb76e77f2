//! Consumer groups on either rebalance protocol: the classic one and the new one of KIP-848
//! (`group.protocol=consumer`, GA in Kafka 4.0), whose members a classic DescribeGroups does
//! not show. Against Apache Kafka 4.x (3.9 has no GA new protocol).

use std::sync::atomic::Ordering;
use std::time::Duration;

use lagscaler::estimate::NOT_DRAINING_ETA_SECONDS;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::support::{wait_for, Background, Kafka, Scaler};

const POLL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(600);
/// Joining or leaving, rebalance included, and the next poll, on a loaded machine.
const SETTLES_WITHIN: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 4;
const BACKLOG_PER_PARTITION: usize = 100;

/// A member of a group: a consumer on its own thread, subscribed and polling (it commits
/// nothing), until dropped, when it leaves the group.
fn join(broker: &Kafka, group: &str, topic: &str, protocol: &str) -> Background<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create().expect("create the member");
    consumer.subscribe(&[topic]).expect("subscribe");
    Background::spawn("test-member", move |stop| {
        while !stop.load(Ordering::Relaxed) {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        consumer.unsubscribe();
        // Dropping the consumer closes it: it leaves the group.
    })
}

/// Waits until both groups' replica targets are `expected`; fails naming what was seen.
fn expect_replicas(scaler: &Scaler, watches: &[Vec<(&str, &str)>], expected: i64) {
    let seen = wait_for(SETTLES_WITHIN, || {
        let answers: Vec<i64> = watches
            .iter()
            .map(|metadata| scaler.get_metrics(metadata).map_or(-1, |(value, _)| value))
            .collect();
        answers.iter().all(|value| *value == expected).then_some(())
    });
    let answers: Vec<_> = watches
        .iter()
        .map(|metadata| scaler.get_metrics(metadata))
        .collect();
    assert!(
        seen.is_some(),
        "replica targets {answers:?}, expected {expected} for classic and consumer groups"
    );
}

/// The same workload, a backlog nobody consumes, read by a classic group and by a
/// `consumer`-protocol group as members join and leave. With nothing consumed the replica
/// target is the members there are, so it shows the members lagscaler sees: 2, then 3,
/// then 1 for both protocols. (Before, the new-protocol group read 0 members: target 1.)
#[test]
fn a_new_protocol_group_reads_the_same_members_as_a_classic_one() {
    let broker = Kafka::shared();
    let protocols = ["classic", "consumer"];
    for protocol in protocols {
        let topic = format!("protocol-{protocol}");
        broker.create_topic(&topic, PARTITIONS as u32);
        for partition in 0..PARTITIONS {
            broker.produce(&topic, partition, BACKLOG_PER_PARTITION);
        }
    }
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let names: Vec<(String, String)> = protocols
        .iter()
        .map(|protocol| {
            (
                format!("protocol-{protocol}-group"),
                format!("protocol-{protocol}"),
            )
        })
        .collect();
    let watch = |metric: &'static str| -> Vec<Vec<(&str, &str)>> {
        names
            .iter()
            .map(|(group, topic)| {
                vec![
                    ("consumerGroup", group.as_str()),
                    ("topic", topic.as_str()),
                    ("offsetResetPolicy", "earliest"),
                    ("allowIdleConsumers", "true"),
                    ("metric", metric),
                    ("targetEtaSeconds", "10"),
                ]
            })
            .collect()
    };
    let replicas = watch("replicas");
    let eta = watch("eta");
    let lag = watch("lag");

    let mut members: Vec<Vec<Background<()>>> = vec![Vec::new(), Vec::new()];
    let resize = |members: &mut Vec<Vec<Background<()>>>, count: usize| {
        for ((protocol, (group, topic)), held) in protocols.iter().zip(&names).zip(members) {
            held.truncate(count);
            while held.len() < count {
                held.push(join(broker, group, topic, protocol));
            }
        }
    };
    for count in [2, 3, 1] {
        resize(&mut members, count);
        expect_replicas(&scaler, &replicas, count as i64);
        // Nothing is consumed: both read the whole backlog, and as not draining.
        for (lag, eta) in lag.iter().zip(&eta) {
            assert_eq!(
                scaler.lag(lag).expect("lag"),
                PARTITIONS as i64 * BACKLOG_PER_PARTITION as i64
            );
            assert_eq!(
                scaler.get_metrics(eta).expect("eta").1,
                NOT_DRAINING_ETA_SECONDS
            );
        }
    }
    drop(members);
    scaler.stop();
}
