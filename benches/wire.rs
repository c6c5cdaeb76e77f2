//! Kafka requests on the wire: the real `lagscaler` binary at its defaults (the commit
//! stream where it can read it, 5 s polls) watching W consumer groups on 16-partition topics
//! of one Apache Kafka node whose listener is advertised through a counting proxy
//! (`tests/it/support/wire.rs`), so that every request of every client lagscaler opens is
//! counted from the protocol's framing, by client id and API. The groups do not commit
//! while measured: this is the floor a quiet cluster costs.
//!
//! `cargo bench --bench wire` runs W = 10 and 100 (`WIRE_WATCHES=10,100,1000` to choose);
//! `cargo test --bench wire` runs a seconds-long smoke version (debug, no figures kept) so
//! that it never rots.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::bench::{commit_all, tail, watches_from_env};
use support::{wire, Kafka, Process};

/// What KEDA's own `kafka` scaler sends per ScaledObject per minute, measured on the wire
/// (issue 41: KEDA v2.21.1's scaler code driven as its operator's scale loop does, at the
/// default 30 s polling interval: Metadata, ListOffsets and OffsetFetch per
/// GetMetricsAndActivity, twice a minute).
const KEDA_SCALE_LOOP_PER_MINUTE: f64 = 6.0;
/// The same with the HPA's own GetMetrics every 15 s while the workload is active (up to 12
/// more a minute; an upper bound, not measured here).
const KEDA_ACTIVE_BOUND_PER_MINUTE: f64 = 18.0;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (watches, topics, partitions, interval, measured) = if full {
        (
            watches_from_env("WIRE_WATCHES", &[10, 100]),
            10,
            16u32,
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
    } else {
        (
            vec![4],
            2,
            4,
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
    };
    let broker = Kafka::start_counted();
    let names: Vec<String> = (0..topics).map(|i| format!("wired-{i}")).collect();
    for topic in &names {
        broker.create_topic(topic, partitions);
        for partition in 0..partitions as i32 {
            broker.produce(topic, partition, 3);
        }
    }
    println!(
        "wire benchmark: one Kafka {} node behind a counting proxy, {topics} topics x \
         {partitions} partitions, poll every {interval:?}, {measured:?} measured",
        support::kafka_version()
    );
    for &w in &watches {
        run(&broker, &names, partitions, interval, measured, w);
    }
}

fn run(
    broker: &Kafka,
    topics: &[String],
    partitions: u32,
    interval: Duration,
    measured: Duration,
    watches: usize,
) {
    let groups: Vec<(String, String)> = (0..watches)
        .map(|i| {
            (
                format!("wire{watches}-g{i}"),
                topics[i % topics.len()].clone(),
            )
        })
        .collect();
    commit_all(broker, &groups, partitions);
    let poll = humantime::format_duration(interval).to_string();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_POLL_INTERVAL", &poll),
            ("SCALER_WATCH_TTL", "1h"),
            ("SCALER_MAX_WATCHES", "100000"),
        ],
    );
    let client = process.client();
    for (group, topic) in &groups {
        let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
        client.metric_spec(&metadata).expect("GetMetricSpec");
    }
    // 3 records and a commit at 1 on each partition.
    let expected = 2 * i64::from(partitions);
    for (group, topic) in &groups {
        let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
        let lag = client.wait_for_lag(&metadata, expected, Duration::from_secs(120));
        assert!(
            lag.is_some(),
            "watch {group} has no lag; log:\n{}",
            tail(&process.log())
        );
    }
    // Bootstraps done and every watch on the shared schedule.
    thread::sleep(3 * interval);
    let before = broker.requests();
    let started = Instant::now();
    thread::sleep(measured);
    let sent = wire::since(&broker.requests(), &before);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    drop(client);
    drop(process);

    let total = wire::total(&sent) as f64 / minutes;
    println!(
        "W={watches}: {total:.0} Kafka requests per minute on the wire, every client included \
         (KEDA's kafka scaler: {:.0}/min from its scale loop alone, ratio {:.3}; {:.0}/min \
         with an active workload's HPA calls, ratio {:.4})",
        KEDA_SCALE_LOOP_PER_MINUTE * watches as f64,
        total / (KEDA_SCALE_LOOP_PER_MINUTE * watches as f64),
        KEDA_ACTIVE_BOUND_PER_MINUTE * watches as f64,
        total / (KEDA_ACTIVE_BOUND_PER_MINUTE * watches as f64),
    );
    let mut by_api: BTreeMap<&str, u64> = BTreeMap::new();
    for (client_id, apis) in &sent {
        let shown: Vec<String> = apis
            .iter()
            .map(|(api, count)| format!("{api} {:.1}", *count as f64 / minutes))
            .collect();
        println!(
            "W={watches}:   client {client_id:?} per minute: {}",
            shown.join(", ")
        );
        for (api, count) in apis {
            *by_api.entry(api).or_default() += count;
        }
    }
    let shown: Vec<String> = by_api
        .iter()
        .map(|(api, count)| format!("{api} {:.1}", *count as f64 / minutes))
        .collect();
    println!("W={watches}:   by API per minute: {}", shown.join(", "));
}
