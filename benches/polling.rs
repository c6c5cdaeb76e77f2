//! Polling-cost benchmark: W watches, each on its own consumer group over 16-partition
//! topics, polled every 5 s by the real `lagscaler` binary against Apache Kafka. Reports the Kafka
//! requests per poll cycle (librdkafka's statistics, logged by the daemon), the daemon's CPU
//! (% of one core), RSS, threads and poll-cycle duration, and compares the requests with
//! what KEDA's Kafka scaler sends for the same W. Each W runs twice, side by side: committed
//! offsets from OffsetFetch per watch (`SCALER_COMMIT_SOURCE=fetch`), then from the commit
//! stream (`stream`). `POLLING_NODES=3` runs it against the tests' three-node cluster.
//!
//! `cargo bench --bench polling` runs it in full (release); `cargo test --bench polling`
//! runs a seconds-long smoke version (debug, no thresholds) so that it never rots.

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::bench::{
    clock_ticks_per_second, commit_all, cpu_ticks, parse_stat, tail, watches_from_env,
};
use support::{Kafka, Process};

/// Shape of one run.
struct Plan {
    watches: Vec<usize>,
    topics: usize,
    partitions: u32,
    interval: Duration,
    /// Cycles measured after the warm-up.
    cycles: usize,
}

/// Requests KEDA's Kafka scaler sends per ScaledObject per poll: Metadata, OffsetFetch and
/// one ListOffsets per broker leading the topic's partitions, on each of ~3 call rounds
/// (GetMetricSpec, GetMetrics and IsActive each query Kafka;
/// reference/keda-kafka-scaler.md): 9 with one broker, 15 with three.
fn keda_requests_per_watch(brokers: usize) -> f64 {
    3.0 * (2.0 + brokers as f64)
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    // POLLING_WATCHES=10000 (comma-separated) and POLLING_SOURCES=stream narrow a full run.
    let watches = watches_from_env("POLLING_WATCHES", &[100, 1_000]);
    let plan = if full {
        Plan {
            watches,
            topics: 10,
            partitions: 16,
            interval: Duration::from_secs(5),
            cycles: 12,
        }
    } else {
        Plan {
            watches: vec![10],
            topics: 2,
            partitions: 4,
            interval: Duration::from_secs(1),
            cycles: 2,
        }
    };
    // POLLING_NODES=3 runs against the three-node cluster instead of one node.
    let nodes: usize = std::env::var("POLLING_NODES")
        .map(|n| n.trim().parse().expect("POLLING_NODES: 1 or 3"))
        .unwrap_or(1);
    let cluster;
    let broker = match nodes {
        1 => Kafka::shared(),
        3 => {
            cluster = Kafka::start_cluster();
            &cluster
        }
        _ => panic!("POLLING_NODES: 1 or 3"),
    };
    let topics: Vec<String> = (0..plan.topics).map(|i| format!("polled-{i}")).collect();
    for topic in &topics {
        broker.create_topic(topic, plan.partitions);
        for partition in 0..plan.partitions as i32 {
            broker.produce(topic, partition, 3);
        }
    }
    println!(
        "polling benchmark: {nodes} Kafka node(s), {} topics x {} partitions, poll every {:?}, \
         {} cycles measured",
        plan.topics, plan.partitions, plan.interval, plan.cycles
    );
    for &watches in &plan.watches {
        let sources = std::env::var("POLLING_SOURCES").unwrap_or_else(|_| "fetch,stream".into());
        for source in sources.split(',').map(str::trim) {
            run(broker, &topics, &plan, watches, source, nodes);
        }
    }
}

/// One measurement with `watches` watches, committed offsets from `source`
/// (`SCALER_COMMIT_SOURCE`).
fn run(broker: &Kafka, topics: &[String], plan: &Plan, watches: usize, source: &str, nodes: usize) {
    let groups: Vec<(String, String)> = (0..watches)
        .map(|i| {
            (
                format!("w{watches}-{source}-g{i}"),
                topics[i % topics.len()].clone(),
            )
        })
        .collect();
    commit_all(broker, &groups, plan.partitions);

    let interval = humantime::format_duration(plan.interval).to_string();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_DEBUG", "false"),
            ("RUST_LOG", "info,lagscaler::cycle=debug"),
            ("SCALER_POLL_INTERVAL", &interval),
            ("SCALER_KAFKA_STATS_INTERVAL", &interval),
            ("SCALER_WATCH_TTL", "1h"),
            ("SCALER_MAX_WATCHES", "100000"),
            ("SCALER_KAFKA_TIMEOUT", "10s"),
            ("SCALER_COMMIT_SOURCE", source),
        ],
    );
    let client = process.client();
    let started = Instant::now();
    for (group, topic) in &groups {
        let metadata = [
            ("consumerGroup", group.as_str()),
            ("topic", topic.as_str()),
            ("lagThreshold", "10"),
        ];
        client.metric_spec(&metadata).expect("GetMetricSpec");
    }
    for (group, topic) in &groups {
        let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
        // 3 records and a commit at 1 on each partition.
        let expected = 2 * i64::from(plan.partitions);
        let lag = client.wait_for_lag(&metadata, expected, Duration::from_secs(60));
        assert!(
            lag.is_some(),
            "watch {group} has no lag; log:\n{}",
            tail(&process.log())
        );
    }
    println!(
        "W={watches} {source}: every watch answered {:.1?} after the first call",
        started.elapsed()
    );
    // Two cycles so that every watch is on the shared schedule.
    thread::sleep(2 * plan.interval);

    let pid = process.pid();
    let log_start = process.log().len();
    let cpu_before = cpu_ticks(pid);
    let threads_before = thread_ticks(pid);
    let wall_before = Instant::now();
    let mut rss_kb = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..plan.cycles {
        thread::sleep(plan.interval);
        rss_kb.push(support::rss_kb(pid));
        threads.push(process.threads_and_fds().0);
    }
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / clock_ticks_per_second();
    let by_thread = cpu_by_thread_kind(&threads_before, &thread_ticks(pid));
    let wall = wall_before.elapsed().as_secs_f64();
    let log = process.log();
    let window = &log[log_start..];

    let reports: Vec<(i64, String)> = window
        .lines()
        .filter_map(|line| {
            let rest = line.split("kafka requests since start: ").nth(1)?;
            let (total, by_api) = rest.split_once(' ')?;
            Some((total.parse().ok()?, by_api.to_owned()))
        })
        .collect();
    assert!(
        reports.len() >= 2,
        "fewer than two statistics reports:\n{}",
        tail(window)
    );
    let (first, last) = (&reports[0], &reports[reports.len() - 1]);
    let per_cycle = (last.0 - first.0) as f64 / (reports.len() - 1) as f64;
    let keda = keda_requests_per_watch(nodes) * watches as f64;

    let mut cycles: Vec<f64> = window
        .lines()
        .filter_map(|line| {
            let rest = line.split("poll cycle: ").nth(1)?;
            let (polls, rest) = rest.split_once(" polls, the last done ")?;
            let ms = rest.strip_suffix(" ms after the tick")?;
            (polls.parse::<usize>().ok()? == watches).then(|| ms.parse::<f64>().ok())?
        })
        .collect();
    cycles.sort_by(f64::total_cmp);
    rss_kb.sort_unstable();
    threads.sort_unstable();

    println!(
        "W={watches} {source}: Kafka requests per cycle {per_cycle:.1} (KEDA's scaler: {keda:.0}; ratio \
         {:.3}); by API, cumulative at the first and last report: [{}] -> [{}]",
        per_cycle / keda,
        first.1,
        last.1
    );
    println!(
        "W={watches} {source}: daemon CPU {:.2} % of one core over {wall:.0} s; RSS min/median/max \
         {}/{}/{} MB; threads {}/{}/{}",
        100.0 * cpu / wall,
        rss_kb[0] / 1024,
        rss_kb[rss_kb.len() / 2] / 1024,
        rss_kb[rss_kb.len() - 1] / 1024,
        threads[0],
        threads[threads.len() / 2],
        threads[threads.len() - 1]
    );
    let total: u64 = by_thread.iter().map(|(_, ticks)| ticks).sum::<u64>().max(1);
    let shares: Vec<String> = by_thread
        .iter()
        .map(|(kind, ticks)| format!("{kind} {:.0} %", 100.0 * *ticks as f64 / total as f64))
        .collect();
    println!("W={watches} {source}: CPU by thread: {}", shares.join(", "));
    if cycles.is_empty() {
        println!("W={watches} {source}: no complete poll cycle logged");
    } else {
        println!(
            "W={watches} {source}: poll cycle duration (tick to last poll done) min/median/max \
             {:.1}/{:.1}/{:.1} ms over {} cycles",
            cycles[0],
            cycles[cycles.len() / 2],
            cycles[cycles.len() - 1],
            cycles.len()
        );
    }
    drop(client);
    drop(process);
}

/// Every thread of `pid`: id → (name, clock ticks).
fn thread_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            Some((
                task.file_name().to_string_lossy().into_owned(),
                parse_stat(&stat),
            ))
        })
        .collect()
}

/// CPU ticks spent between two readings, by kind of thread (watchers, librdkafka's broker
/// threads, grpc's, the rest by name), largest first.
fn cpu_by_thread_kind(
    before: &HashMap<String, (String, u64)>,
    after: &HashMap<String, (String, u64)>,
) -> Vec<(String, u64)> {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let spent = ticks - before.get(tid).map_or(0, |(_, ticks)| *ticks).min(*ticks);
        let kind = if name.starts_with("watch-") {
            "watch-*".to_owned()
        } else if name.starts_with("rdk:broker") {
            "rdk:broker*".to_owned()
        } else if name.starts_with("grpc") {
            "grpc*".to_owned()
        } else {
            name.clone()
        };
        *kinds.entry(kind).or_default() += spent;
    }
    let mut kinds: Vec<(String, u64)> = kinds.into_iter().filter(|(_, t)| *t > 0).collect();
    kinds.sort_by_key(|kind| std::cmp::Reverse(kind.1));
    kinds
}
