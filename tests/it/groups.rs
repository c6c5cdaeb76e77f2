//! Consumer groups on either rebalance protocol: the classic one and the new one of KIP-848
//! (`group.protocol=consumer`, GA in Kafka 4.0), whose members a classic DescribeGroups does
//! not show. Against Apache Kafka 4.x (3.9 has no GA new protocol).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lagscaler::estimate::NOT_DRAINING_ETA_SECONDS;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
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
    join_consuming(broker, group, topic, protocol, None)
}

/// [`join`], and with `Some(rate)` the member consumes: at most `rate` records per second,
/// committing its position every 200 ms.
fn join_consuming(
    broker: &Kafka,
    group: &str,
    topic: &str,
    protocol: &str,
    rate: Option<f64>,
) -> Background<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("client.id", "test-member")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = config.create().expect("create the member");
    consumer.subscribe(&[topic]).expect("subscribe");
    Background::spawn("test-member", move |stop| {
        let mut committed_at = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let Some(rate) = rate else { continue };
            std::thread::sleep(Duration::from_secs_f64(1.0 / rate));
            if committed_at.elapsed() >= Duration::from_millis(200) {
                // A failed commit is retried with the next one.
                let _ = consumer.commit_consumer_state(CommitMode::Async);
                committed_at = Instant::now();
            }
        }
        consumer.unsubscribe();
        // Dropping the consumer closes it: it leaves the group.
    })
}

/// The group and topic of each protocol's workload: `<prefix>-<protocol>-group` and
/// `<prefix>-<protocol>`.
fn group_and_topic_names(prefix: &str, protocols: &[&str]) -> Vec<(String, String)> {
    protocols
        .iter()
        .map(|protocol| {
            (
                format!("{prefix}-{protocol}-group"),
                format!("{prefix}-{protocol}"),
            )
        })
        .collect()
}

/// One trigger's metadata per workload of `names`: its group and topic, with
/// `offsetResetPolicy=earliest` (nothing is committed before the members consume), `metric`
/// and `extra`.
fn watches<'a>(
    names: &'a [(String, String)],
    metric: &'static str,
    extra: &[(&'static str, &'static str)],
) -> Vec<Vec<(&'static str, &'a str)>> {
    names
        .iter()
        .map(|(group, topic)| {
            let mut metadata = vec![
                ("consumerGroup", group.as_str()),
                ("topic", topic.as_str()),
                ("offsetResetPolicy", "earliest"),
                ("metric", metric),
            ];
            metadata.extend_from_slice(extra);
            metadata
        })
        .collect()
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
/// target is the members there are, so it shows the members lagscaler sees: 1, then 3,
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
    let names = group_and_topic_names("protocol", &protocols);
    let watch = |metric| {
        watches(
            &names,
            metric,
            &[("allowIdleConsumers", "true"), ("targetEtaSeconds", "10")],
        )
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
    for count in [1, 3, 1] {
        resize(&mut members, count);
        expect_replicas(&scaler, &replicas, count as i64);
        // Nothing is consumed: both read the whole backlog, and as not draining.
        for (lag, eta) in lag.iter().zip(&eta) {
            assert_eq!(
                scaler.lag(lag).expect("lag"),
                PARTITIONS as i64 * BACKLOG_PER_PARTITION as i64
            );
            // A single member's target (1) can be answered from the first sample (a
            // group with lag and no member seen yet gets one to wake up), before the ETA,
            // which needs two, is known.
            let eta = wait_for(SETTLES_WITHIN, || scaler.get_metrics(eta).ok());
            assert_eq!(
                eta.expect("the ETA became known").1,
                NOT_DRAINING_ETA_SECONDS
            );
        }
    }
    drop(members);
    scaler.stop();
}

/// The same draining workload for a classic group and a `consumer`-protocol group: two
/// members each, consuming at most 25 records/s apiece, a backlog of 1,600 records produced
/// once both groups have their members. Once the rate window (8 s) holds only draining
/// samples, the two groups' lag, the consume rate their ETA implies, and their replica
/// targets agree, and each replica target is what two members draining at that rate need.
#[test]
fn a_draining_new_protocol_group_has_the_rates_eta_and_replicas_of_a_classic_one() {
    const PER_MEMBER: f64 = 25.0;
    const BACKLOG: usize = 400;
    let broker = Kafka::shared();
    let protocols = ["classic", "consumer"];
    let names = group_and_topic_names("draining", &protocols);
    for (_, topic) in &names {
        broker.create_topic(topic, PARTITIONS as u32);
    }
    let mut config = Scaler::config(&broker.bootstrap(), POLL, TTL);
    config.rate_window = Duration::from_secs(8);
    let scaler = Scaler::start_with(config);
    let target = [("targetEtaSeconds", "20")];
    let (replicas, eta) = (
        watches(&names, "replicas", &target),
        watches(&names, "eta", &target),
    );
    // The whole lag, not capped at partitions × lagThreshold as KEDA's metric is.
    let lag = watches(&names, "lag", &[("allowIdleConsumers", "true")]);

    let members: Vec<Background<()>> = protocols
        .iter()
        .zip(&names)
        .flat_map(|(protocol, (group, topic))| {
            (0..2).map(move |_| join_consuming(broker, group, topic, protocol, Some(PER_MEMBER)))
        })
        .collect();
    // Nothing to consume yet: the replica target is 0 until the members are seen.
    let joined = wait_for(SETTLES_WITHIN, || {
        let counted = names.iter().all(|(group, _)| {
            let described = broker.run_tool(
                "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                &["--describe", "--members", "--group", group],
            );
            described
                .lines()
                .filter(|line| line.contains("test-member"))
                .count()
                >= 2
        });
        counted.then_some(())
    });
    assert!(joined.is_some(), "the members did not join both groups");
    // The watches start now, so that their windows hold the whole drain.
    for metadata in &lag {
        assert_eq!(scaler.lag(metadata).expect("lag before the backlog"), 0);
    }
    // Both backlogs at once (a producer per partition, in parallel), so that the groups
    // start draining together.
    std::thread::scope(|scope| {
        for (_, topic) in &names {
            for partition in 0..PARTITIONS {
                scope.spawn(move || broker.produce(topic, partition, BACKLOG));
            }
        }
    });
    let produced = Instant::now();
    let total = PARTITIONS as i64 * BACKLOG as i64;

    // Draining for longer than the rate window, with lag left: both groups at one moment.
    std::thread::sleep(Duration::from_secs(13));
    let mut seen = Vec::new();
    for ((lag, eta), replicas) in lag.iter().zip(&eta).zip(&replicas) {
        let lag = scaler.lag(lag).expect("lag");
        let eta = scaler.get_metrics(eta).expect("eta").1;
        let replicas = scaler.get_metrics(replicas).expect("replicas").0;
        seen.push((lag, eta, replicas));
    }
    println!(
        "after {:?} of draining, (lag, eta, replicas) classic {:?}, consumer {:?}",
        produced.elapsed(),
        seen[0],
        seen[1]
    );
    let rates: Vec<f64> = seen.iter().map(|(lag, eta, _)| *lag as f64 / eta).collect();
    for ((lag, eta, replicas), rate) in seen.iter().zip(&rates) {
        assert!(
            (1..total).contains(lag) && *eta < 120.0,
            "lag {lag} of {total}, eta {eta}: not a drain in progress"
        );
        // Two members at most 25/s each; a loaded machine may slow them.
        assert!(
            (10.0..=2.0 * PER_MEMBER * 1.2).contains(rate),
            "implied consume rate {rate:.1}/s (lag {lag}, eta {eta:.1} s)"
        );
        // Two members drain at `rate`: to drain `lag` in 20 s takes lag / 20 / (rate / 2)
        // = eta / 10 of them, rounded up (give or take a poll between the calls). A group
        // whose members are not seen would get 1.
        let exact = eta * 2.0 / 20.0;
        let (fewest, most) = ((exact - 0.15).ceil() as i64, (exact + 0.15).ceil() as i64);
        assert!(
            (fewest..=most).contains(replicas),
            "replicas {replicas} for lag {lag} draining in {eta:.1} s with 2 members"
        );
    }
    let (low, high) = (rates[0].min(rates[1]), rates[0].max(rates[1]));
    assert!(
        high <= low * 1.4,
        "consume rates differ: classic {:.1}/s, consumer {:.1}/s",
        rates[0],
        rates[1]
    );
    assert!(
        (seen[0].0 - seen[1].0).abs() as f64 <= 0.2 * total as f64,
        "lags differ: {seen:?}"
    );
    assert!(
        (seen[0].2 - seen[1].2).abs() <= 1,
        "replica targets differ: {seen:?}"
    );
    drop(members);
    scaler.stop();
}
