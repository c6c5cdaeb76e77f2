//! Agreement benchmark: do lagscaler's answers follow the commits of many groups, each
//! committing at random intervals? The real `lagscaler` binary (committed offsets from its
//! default source, `SCALER_COMMIT_SOURCE=auto`: the commit stream) watches G groups; an
//! independent client, Kafka's own Java Admin client (`benches/agreement/Offsets.java`),
//! commits for them and reads every group's committed offsets back once per poll interval
//! with one batched ListConsumerGroupOffsets. Every poll interval the benchmark asks
//! lagscaler for each group's lag (GetMetrics). The topics get no new records, so a lag is
//! the end minus the sum of the committed offsets.
//!
//! An answer is counted as agreeing at age A when the group's committed offsets stood at its
//! value at some moment within A before the answer (a commit counts from when it was sent to
//! when it was acknowledged). The report gives how many answers agree at age 0, how many
//! only at an age up to one poll interval, and how many beyond (mismatches), and checks the
//! independent client's own reads against the same commit log.
//!
//! `cargo bench --bench agreement` runs 1,000 groups for 5 minutes (AGREEMENT_GROUPS,
//! AGREEMENT_SECONDS and AGREEMENT_POLL override); `cargo test --bench agreement` a
//! seconds-long smoke run (debug, no thresholds) so that it keeps working.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Kafka, Process};

const TOPICS: usize = 10;
const PARTITIONS: usize = 4;
/// Records in each partition: the end every commit stays below.
const END: i64 = 2_000;

/// A watch of `group` on `topic`: its whole lag (`allowIdleConsumers`: not capped at the
/// partition count times the threshold).
fn watch<'a>(group: &'a str, topic: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("consumerGroup", group),
        ("topic", topic),
        ("allowIdleConsumers", "true"),
    ]
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{name}: a number")))
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// One acknowledged commit of one partition.
struct Commit {
    partition: usize,
    offset: i64,
    sent: i64,
    acked: i64,
}

/// A state a group's offsets were in: their sum, and the times it may have begun (the
/// earliest: its commit was sent) and ended (the latest: the next one was acknowledged).
struct State {
    sum: i64,
    from: i64,
    until: i64,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (groups, seconds, poll) = if full {
        (
            env_or("AGREEMENT_GROUPS", 1_000) as usize,
            env_or("AGREEMENT_SECONDS", 300),
            Duration::from_secs(env_or("AGREEMENT_POLL", 5)),
        )
    } else {
        (20, 8, Duration::from_secs(1))
    };
    // Each group commits about once per poll interval on average.
    let mean_commit_ms = poll.as_millis() as u64;

    let broker = Kafka::shared();
    let topics: Vec<String> = (0..TOPICS).map(|t| format!("agree-{t}")).collect();
    for topic in &topics {
        broker.create_topic(topic, PARTITIONS as u32);
        for partition in 0..PARTITIONS as i32 {
            broker.produce(topic, partition, END as usize);
        }
    }
    let names: Vec<(String, String)> = (0..groups)
        .map(|g| (format!("agree-g{g}"), topics[g % TOPICS].clone()))
        .collect();

    let dir = std::env::temp_dir().join(format!("lagscaler-agreement-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let groups_file = dir.join("groups.txt");
    let log_file = dir.join("offsets.log");
    let listing: String = names.iter().map(|(g, t)| format!("{g} {t}\n")).collect();
    std::fs::write(&groups_file, listing).expect("groups file");

    // The independent client: Kafka's Java Admin client, in Java's source-file mode.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut independent = Command::new(root.join("scripts/kafka-run"))
        .arg("4")
        .arg(root.join("benches/agreement/Offsets.java"))
        .arg(broker.bootstrap())
        .arg(&groups_file)
        .arg(&log_file)
        .arg(PARTITIONS.to_string())
        .arg(END.to_string())
        .arg(mean_commit_ms.to_string())
        .arg(poll.as_millis().to_string())
        // It commits for the whole run, which starts once lagscaler has every watch.
        .arg((seconds + 120).to_string())
        .arg("7")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Java client");
    let mut lines = BufReader::new(independent.stdout.take().expect("stdout")).lines();
    let ready = lines.next().and_then(Result::ok);
    assert_eq!(
        ready.as_deref(),
        Some("READY"),
        "the Java client did not start"
    );

    let interval = humantime::format_duration(poll).to_string();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_DEBUG", "false"),
            ("RUST_LOG", "info"),
            ("SCALER_POLL_INTERVAL", &interval),
            ("SCALER_WATCH_TTL", "1h"),
            ("SCALER_MAX_WATCHES", "100000"),
        ],
    );
    let started = Instant::now();
    {
        let client = process.client();
        for (group, topic) in &names {
            let metadata = watch(group, topic);
            client.metric_spec(&metadata).expect("GetMetricSpec");
        }
        for (group, topic) in &names {
            let metadata = watch(group, topic);
            let answered =
                support::wait_for(Duration::from_secs(120), || client.lag(&metadata).ok());
            assert!(answered.is_some(), "watch {group} never answered");
        }
    }
    println!(
        "agreement: {groups} groups on {TOPICS} topics x {PARTITIONS} partitions, poll {poll:?}, \
         each group committing every {mean_commit_ms} ms on average; every watch answered \
         {:.1?} after the first call; measuring {seconds} s",
        started.elapsed()
    );

    // Every poll interval, every group's lag, asked by 4 threads.
    let measure_from = now_ms();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let answers: Vec<(String, i64, Result<i64, String>)> = thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(names.len().div_ceil(4))
            .map(|chunk| {
                let process = &process;
                scope.spawn(move || {
                    let client = process.client();
                    let mut answers = Vec::new();
                    let mut next = Instant::now();
                    while next < deadline {
                        for (group, topic) in chunk {
                            let metadata = watch(group, topic);
                            let answer = client.lag(&metadata).map_err(|status| {
                                format!("{:?}: {}", status.code(), status.message())
                            });
                            answers.push((group.clone(), now_ms(), answer));
                        }
                        next += poll;
                        thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    answers
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker"))
            .collect()
    });
    // Closing its standard input stops the Java client with every line written.
    drop(independent.stdin.take());
    let done = lines.next().and_then(Result::ok);
    let _ = independent.wait();
    assert_eq!(
        done.as_deref(),
        Some("DONE"),
        "the Java client did not finish"
    );
    // Where lagscaler's committed offsets came from.
    let daemon_log = process.log();
    println!(
        "agreement: lagscaler's log: commit reader started {} time(s); fell behind (OffsetFetch \
         meanwhile) {} time(s); stream refused {} time(s)",
        daemon_log.matches("commit reader started").count(),
        daemon_log.matches("records behind after").count(),
        daemon_log.matches("cannot be read").count()
    );
    drop(process);

    let log = std::fs::read_to_string(&log_file).expect("the Java client's log");
    let _ = std::fs::remove_dir_all(&dir);
    let mut commits: HashMap<&str, Vec<Commit>> = HashMap::new();
    let mut reads: Vec<(&str, i64, i64, i64)> = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.first() {
            Some(&"C") if fields.len() == 6 => commits.entry(fields[1]).or_default().push(Commit {
                partition: fields[2].parse().expect("partition"),
                offset: fields[3].parse().expect("offset"),
                sent: fields[4].parse().expect("sent"),
                acked: fields[5].parse().expect("acked"),
            }),
            Some(&"R") if fields.len() == 4 + PARTITIONS => {
                let sum = fields[4..]
                    .iter()
                    .map(|offset| offset.parse::<i64>().expect("offset"))
                    .sum();
                reads.push((
                    fields[1],
                    fields[2].parse().expect("sent"),
                    fields[3].parse().expect("acked"),
                    sum,
                ));
            }
            _ => {}
        }
    }
    // Each group's states, in order: its commits are one at a time.
    let states: HashMap<&str, Vec<State>> = names
        .iter()
        .map(|(group, _)| {
            let mut offsets = [0i64; PARTITIONS];
            let mut list = vec![State {
                sum: 0,
                from: i64::MIN,
                until: i64::MAX,
            }];
            for commit in commits.get(group.as_str()).map_or(&[][..], Vec::as_slice) {
                list.last_mut().expect("a state").until = commit.acked;
                offsets[commit.partition] = commit.offset;
                list.push(State {
                    sum: offsets.iter().sum(),
                    from: commit.sent,
                    until: i64::MAX,
                });
            }
            (group.as_str(), list)
        })
        .collect();
    // The youngest age at which `sum` was a state of `group` before `at` (0: possibly at
    // `at` itself), or `None` if never.
    let age_of = |group: &str, sum: i64, at: i64| -> Option<i64> {
        states[group]
            .iter()
            .filter(|state| state.sum == sum && state.from <= at)
            .map(|state| (at - state.until).max(0))
            .min()
    };

    let total_end = END * PARTITIONS as i64;
    let poll_ms = poll.as_millis() as i64;
    let (mut current, mut within, mut beyond, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut oldest = 0i64;
    let mut examples = Vec::new();
    for (group, at, answer) in &answers {
        if *at < measure_from {
            continue;
        }
        let lag = match answer {
            Ok(lag) => *lag,
            Err(status) => {
                failed += 1;
                if examples.len() < 5 {
                    examples.push(format!("{group} at {at}: {status}"));
                }
                continue;
            }
        };
        match age_of(group, total_end - lag, *at) {
            Some(0) => current += 1,
            Some(age) if age <= poll_ms => {
                within += 1;
                oldest = oldest.max(age);
            }
            age => {
                beyond += 1;
                if examples.len() < 5 {
                    examples.push(format!(
                        "{group} at {at}: lag {lag} (committed {}), matching a state {age:?} ms old",
                        total_end - lag
                    ));
                }
            }
        }
    }
    let mut independent_wrong = 0usize;
    for (group, sent, acked, sum) in &reads {
        // Read between `sent` and `acked`: it must match a state of that span.
        let matched = states[group]
            .iter()
            .any(|state| state.sum == *sum && state.from <= *acked && state.until >= *sent);
        if !matched {
            independent_wrong += 1;
        }
    }
    let commit_count: usize = commits.values().map(Vec::len).sum();
    println!(
        "agreement: {commit_count} commits acknowledged; {} answers from lagscaler: {current} \
         agree with the offsets as they stood when answered, {within} only with offsets at most \
         one poll interval older (the oldest {oldest} ms), {beyond} beyond that (mismatches), \
         {failed} errors",
        current + within + beyond + failed
    );
    println!(
        "agreement: the independent client's {} reads ({} per group): {independent_wrong} not \
         matching the commit log",
        reads.len(),
        reads.len() / groups.max(1)
    );
    for example in examples {
        println!("  {example}");
    }
}
