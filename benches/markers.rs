//! Marker-verdict benchmark: W watches whose lag is only aborted transactions (records a
//! `read_committed` consumer skips, and their abort markers), polled every 5 s by the real
//! `lagscaler` binary against Apache Kafka. Reports how long after the first call every watch
//! answers at all, and how long until every watch answers its true lag, 0 (each partition
//! judged by a read: `kafka::markers`), with the reads the daemon logged (positions read, per
//! batch and in all).
//!
//! Ten 16-partition topics, each written by 50 aborted transactions of one record per
//! partition (records at even offsets, abort markers at odd ones, ends at 100). Watch `i`
//! reads topic `i % 10` for its own group at `read_committed`, committed on every partition
//! at `2k` for `k = (i / 10) % SPREAD` (lag `100 - 2k` per partition, none of it readable).
//! With the default `MARKERS_SPREAD=50` ("spread") the groups are at 50 offsets per
//! partition: 8,000 positions to read in all, each shared by the groups there; with
//! `MARKERS_SPREAD=1` ("shared") every group is at 0, and all share 160 reads.
//!
//! `cargo bench --bench markers` runs W = 100, 1,000 and 10,000 (`MARKERS_WATCHES` narrows
//! it); `cargo test --bench markers` runs a seconds-long smoke version (debug).

use std::thread;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::bench::{commit_all_at, tail, watches_from_env};
use support::{GrpcClient, Kafka, Process};

const TRANSACTIONS: i64 = 50;

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (watches, topics, partitions, interval) = if full {
        (
            watches_from_env("MARKERS_WATCHES", &[100, 1_000, 10_000]),
            10,
            16,
            Duration::from_secs(5),
        )
    } else {
        (vec![20], 2, 4, Duration::from_secs(1))
    };
    let spread: i64 = std::env::var("MARKERS_SPREAD")
        .map(|n| n.trim().parse().expect("MARKERS_SPREAD: 1 to 50"))
        .unwrap_or(TRANSACTIONS);
    assert!(
        (1..=TRANSACTIONS).contains(&spread),
        "MARKERS_SPREAD: 1 to 50"
    );
    let broker = Kafka::shared();
    let run_id = std::process::id();
    let topics: Vec<String> = (0..topics)
        .map(|i| format!("markers-{run_id}-{i}"))
        .collect();
    for topic in &topics {
        broker.create_topic(topic, partitions);
    }
    let producer = broker.transactional_producer(&format!("lagscaler-bench-markers-{run_id}"));
    for _ in 0..TRANSACTIONS {
        producer.begin_transaction().expect("begin");
        for topic in &topics {
            for partition in 0..partitions as i32 {
                producer
                    .send(
                        BaseRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload("r"),
                    )
                    .expect("send");
            }
        }
        // Flushed first: an abort with records in flight fails.
        producer.flush(Duration::from_secs(30)).expect("flush");
        producer
            .abort_transaction(Duration::from_secs(30))
            .expect("abort");
    }
    let shape = if spread == 1 { "shared" } else { "spread" };
    println!(
        "markers benchmark ({shape}): {} topics x {partitions} partitions, ends at {}, groups at \
         {spread} offset(s) per partition, poll every {interval:?}",
        topics.len(),
        2 * TRANSACTIONS
    );
    for &w in &watches {
        run(broker, &topics, partitions, interval, w, spread, shape);
    }
}

fn run(
    broker: &Kafka,
    topics: &[String],
    partitions: u32,
    interval: Duration,
    watches: usize,
    spread: i64,
    shape: &str,
) {
    // (group, topic, committed offset, true lag).
    let groups: Vec<(String, String, i64, i64)> = (0..watches)
        .map(|i| {
            let k = (i / topics.len()) as i64 % spread;
            (
                format!("markers-{}-w{watches}-g{i}", std::process::id()),
                topics[i % topics.len()].clone(),
                2 * k,
                0,
            )
        })
        .collect();
    let commits: Vec<(String, String, i64)> = groups
        .iter()
        .map(|(group, topic, at, _)| (group.clone(), topic.clone(), *at))
        .collect();
    commit_all_at(broker, &commits, partitions);
    let interval_text = humantime::format_duration(interval).to_string();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_DEBUG", "false"),
            ("RUST_LOG", "info,lagscaler::kafka::marker_reads=debug"),
            ("SCALER_POLL_INTERVAL", &interval_text),
            ("SCALER_WATCH_TTL", "1h"),
            ("SCALER_MAX_WATCHES", "100000"),
            ("SCALER_KAFKA_TIMEOUT", "10s"),
            ("SCALER_COMMIT_SOURCE", "stream"),
        ],
    );
    let client = process.client();
    let started = Instant::now();
    for (group, topic, _, _) in &groups {
        client
            .metric_spec(&metadata(group, topic))
            .expect("GetMetricSpec");
    }
    let asked_all = started.elapsed();
    let mut answered_all: Option<Duration> = None;
    let limit = Duration::from_secs(if watches <= 100 { 60 } else { 600 });
    let judged = loop {
        let (answered, right) = sweep(&client, &groups);
        if answered == groups.len() && answered_all.is_none() {
            answered_all = Some(started.elapsed());
        }
        if right == groups.len() {
            break Some(started.elapsed());
        }
        if started.elapsed() > limit {
            println!(
                "W={watches} {shape}: {right} of {} watches with their true lag after {:?}",
                groups.len(),
                started.elapsed()
            );
            break None;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let log = process.log();
    // "marker reads: R of A positions read in D" (D as Rust prints a Duration).
    let batches: Vec<(usize, usize, f64)> = log
        .lines()
        .filter_map(|line| {
            let rest = line.split("marker reads: ").nth(1)?;
            let (read, rest) = rest.split_once(" of ")?;
            let (asked, rest) = rest.split_once(" positions read in ")?;
            Some((
                read.parse().ok()?,
                asked.parse().ok()?,
                seconds(rest.trim())?,
            ))
        })
        .collect();
    let read: usize = batches.iter().map(|(read, _, _)| read).sum();
    let reading: f64 = batches.iter().map(|(_, _, took)| took).sum();
    let Some(judged) = judged else {
        panic!(
            "W={watches} {shape}: not every verdict within {limit:?}; log:\n{}",
            tail(&log)
        );
    };
    println!(
        "W={watches} {shape}: GetMetricSpec for every watch (one client, one call after another) \
         took {asked_all:.1?}; every watch answered {:.1?} after the first call, every watch its \
         true lag {judged:.1?} after it; {read} positions read in {} batches (largest {}), \
         {reading:.2} s of reading in all",
        answered_all.unwrap_or(judged),
        batches.len(),
        batches
            .iter()
            .map(|(_, asked, _)| *asked)
            .max()
            .unwrap_or(0)
    );
    drop(client);
    drop(process);
}

/// GetMetrics for every watch: (how many answered, how many with their true lag).
fn sweep(client: &GrpcClient, groups: &[(String, String, i64, i64)]) -> (usize, usize) {
    let mut answered = 0;
    let mut right = 0;
    for (group, topic, _, lag) in groups {
        if let Ok(seen) = client.lag(&metadata(group, topic)) {
            answered += 1;
            right += usize::from(seen == *lag);
        }
    }
    (answered, right)
}

/// A watch's metadata, read committed: a threshold high enough that KEDA's cap on the lag
/// (the threshold times the partitions) never applies.
fn metadata<'a>(group: &'a str, topic: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("consumerGroup", group),
        ("topic", topic),
        ("lagThreshold", "1000"),
        ("isolationLevel", "read_committed"),
    ]
}

/// Seconds in a `Duration` as its `Debug` prints it (`261.4ms`, `1.2s`, `950µs`).
fn seconds(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(us) = text.strip_suffix("µs") {
        (us, 1e-6)
    } else if let Some(ns) = text.strip_suffix("ns") {
        (ns, 1e-9)
    } else {
        (text.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}
