//! Fleet benchmark: R replicas of the real `lagscaler` binary in fleet mode (one real Redis)
//! and one lagscaler alone, each with the same W watches over 16-partition topics of Apache
//! Kafka, every replica asked about every watch (as KEDA's round robin does over time).
//! Reports, side by side: per process RSS, threads and CPU (% of one core); Kafka requests
//! per poll cycle (librdkafka's statistics, summed over the fleet); Redis commands/s and
//! memory; and serving throughput, GetMetrics answered per second at saturation by C client
//! threads (spread over the replicas for the fleet).
//!
//! `cargo bench --bench fleet` runs it in full (release; `FLEET_WATCHES=1000,10000` picks
//! the W, default 1000); `cargo test --bench fleet` runs a seconds-long smoke version (debug,
//! no thresholds) so that it never rots.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::bench::{clock_ticks_per_second, commit_all, cpu_ticks, tail, watches_from_env};
use support::{Kafka, Process, Redis};

/// Shape of one run.
struct Plan {
    watches: Vec<usize>,
    replicas: usize,
    topics: usize,
    partitions: u32,
    interval: Duration,
    /// Poll cycles measured after the warm-up.
    cycles: usize,
    clients: usize,
    saturate_for: Duration,
}

/// What one process showed while measured.
struct Figures {
    cpu_percent: f64,
    rss_mb: u64,
    threads: usize,
    requests_per_cycle: f64,
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let watches = watches_from_env("FLEET_WATCHES", &[1_000]);
    let plan = if full {
        Plan {
            watches,
            replicas: 3,
            topics: 10,
            partitions: 16,
            interval: Duration::from_secs(5),
            cycles: 6,
            clients: 8,
            saturate_for: Duration::from_secs(5),
        }
    } else {
        Plan {
            watches: vec![10],
            replicas: 3,
            topics: 2,
            partitions: 4,
            interval: Duration::from_secs(1),
            cycles: 2,
            clients: 2,
            saturate_for: Duration::from_millis(300),
        }
    };
    let broker = Kafka::shared();
    let topics: Vec<String> = (0..plan.topics)
        .map(|i| format!("fleet-bench-{i}"))
        .collect();
    for topic in &topics {
        broker.create_topic(topic, plan.partitions);
        for partition in 0..plan.partitions as i32 {
            broker.produce(topic, partition, 3);
        }
    }
    println!(
        "fleet benchmark: {} replicas and 1 alone, one Kafka node, {} topics x {} partitions, \
         poll every {:?}, {} cycles measured, {} client threads",
        plan.replicas, plan.topics, plan.partitions, plan.interval, plan.cycles, plan.clients
    );
    for &w in &plan.watches {
        let groups: Vec<(String, String)> = (0..w)
            .map(|i| {
                (
                    format!("fleet-bench-w{w}-g{i}"),
                    topics[i % topics.len()].clone(),
                )
            })
            .collect();
        commit_all(broker, &groups, plan.partitions);
        let alone = run(broker, &plan, &groups, None);
        let redis = Redis::start();
        let fleet = run(broker, &plan, &groups, Some(&redis));
        report(w, &plan, &alone, &fleet);
    }
}

/// Both setups' figures: per process, the Redis's, and the serving throughput.
struct Run {
    processes: Vec<Figures>,
    redis: Option<(f64, f64, u64)>,
    calls_per_second: f64,
}

/// One setup: a replica alone (`redis` None) or `plan.replicas` replicas of a fleet on `redis`.
fn run(broker: &Kafka, plan: &Plan, groups: &[(String, String)], redis: Option<&Redis>) -> Run {
    let interval = humantime::format_duration(plan.interval).to_string();
    let url = redis.map(|redis| format!("redis://127.0.0.1:{}", redis.port()));
    let count = if redis.is_some() { plan.replicas } else { 1 };
    let processes: Vec<Process> = (0..count)
        .map(|index| {
            let member = format!("bench-{index}");
            let mut env = vec![
                ("SCALER_DEBUG", "false"),
                ("RUST_LOG", "info"),
                ("SCALER_POLL_INTERVAL", interval.as_str()),
                ("SCALER_KAFKA_STATS_INTERVAL", interval.as_str()),
                ("SCALER_WATCH_TTL", "1h"),
                ("SCALER_MAX_WATCHES", "100000"),
                ("SCALER_KAFKA_TIMEOUT", "10s"),
            ];
            if let Some(url) = &url {
                env.push(("SCALER_FLEET_REDIS_URL", url.as_str()));
                env.push(("SCALER_FLEET_MEMBER", member.as_str()));
            }
            Process::start(&broker.bootstrap(), &env)
        })
        .collect();
    let setup = if redis.is_some() { "fleet" } else { "alone" };
    // Every process asked about every watch, in parallel, then every lag right.
    let started = Instant::now();
    thread::scope(|scope| {
        for process in &processes {
            scope.spawn(|| {
                let client = process.client();
                for (group, topic) in groups {
                    let metadata = [
                        ("consumerGroup", group.as_str()),
                        ("topic", topic.as_str()),
                        ("lagThreshold", "10"),
                    ];
                    client.metric_spec(&metadata).expect("GetMetricSpec");
                }
                for (group, topic) in groups {
                    let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
                    let expected = 2 * i64::from(plan.partitions);
                    let lag = client.wait_for_lag(&metadata, expected, Duration::from_secs(300));
                    assert!(
                        lag.is_some(),
                        "{group}: no lag; log:\n{}",
                        tail(&process.log())
                    );
                }
            });
        }
    });
    println!(
        "W={} {setup}: every watch answered on every process {:.1?} after the first call",
        groups.len(),
        started.elapsed()
    );
    thread::sleep(2 * plan.interval);

    let pids: Vec<u32> = processes.iter().map(Process::pid).collect();
    let logs_start: Vec<usize> = processes.iter().map(|p| p.log().len()).collect();
    let cpu_before: Vec<u64> = pids.iter().map(|pid| cpu_ticks(*pid)).collect();
    let redis_before = redis.map(redis_commands);
    let wall_before = Instant::now();
    let mut samples: Vec<Vec<(u64, usize)>> = vec![Vec::new(); processes.len()];
    for _ in 0..plan.cycles {
        thread::sleep(plan.interval);
        for (index, process) in processes.iter().enumerate() {
            samples[index].push((support::rss_kb(process.pid()), process.threads_and_fds().0));
        }
    }
    let wall = wall_before.elapsed().as_secs_f64();
    let redis_figures = redis.map(|redis| {
        let commands = redis_commands(redis) - redis_before.unwrap_or(0);
        let (memory, keys) = redis_memory(redis);
        (commands as f64 / wall, memory, keys)
    });
    let figures: Vec<Figures> = processes
        .iter()
        .enumerate()
        .map(|(index, process)| {
            let cpu =
                (cpu_ticks(pids[index]) - cpu_before[index]) as f64 / clock_ticks_per_second();
            let log = process.log();
            let mut column = samples[index].clone();
            column.sort_unstable();
            Figures {
                cpu_percent: 100.0 * cpu / wall,
                rss_mb: column[column.len() / 2].0 / 1024,
                threads: column[column.len() / 2].1,
                requests_per_cycle: requests_per_report(&log[logs_start[index]..]),
            }
        })
        .collect();
    let calls_per_second = saturate(&processes, groups, plan);
    Run {
        processes: figures,
        redis: redis_figures,
        calls_per_second,
    }
}

/// Kafka requests per statistics report (one per poll interval) in a log excerpt.
fn requests_per_report(log: &str) -> f64 {
    let totals: Vec<i64> = log
        .lines()
        .filter_map(|line| {
            let rest = line.split("kafka requests since start: ").nth(1)?;
            rest.split_once(' ')?.0.parse().ok()
        })
        .collect();
    match (totals.first(), totals.last()) {
        (Some(first), Some(last)) if totals.len() >= 2 => {
            (last - first) as f64 / (totals.len() - 1) as f64
        }
        _ => f64::NAN,
    }
}

/// GetMetrics answered per second by `processes` at saturation: `plan.clients` threads,
/// thread c on process c % R, each asking about the watches in turn.
fn saturate(processes: &[Process], groups: &[(String, String)], plan: &Plan) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    thread::scope(|scope| {
        for c in 0..plan.clients {
            let client = processes[c % processes.len()].client();
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            scope.spawn(move || {
                let mut next = c;
                while !stop.load(Ordering::Relaxed) {
                    let (group, topic) = &groups[next % groups.len()];
                    next += plan.clients;
                    let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
                    if client.get_metrics(&metadata).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        thread::sleep(plan.saturate_for);
        stop.store(true, Ordering::Relaxed);
    });
    answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn info(redis: &Redis, section: &str) -> String {
    let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port()))
        .and_then(|client| client.get_connection())
        .expect("connect to Redis");
    redis::cmd("INFO")
        .arg(section)
        .query(&mut connection)
        .expect("INFO")
}

fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|value| value.trim().parse().ok())
}

/// Commands Redis has processed since it started.
fn redis_commands(redis: &Redis) -> u64 {
    field(&info(redis, "stats"), "total_commands_processed").expect("total_commands_processed")
}

/// Redis's used memory (MB) and key count.
fn redis_memory(redis: &Redis) -> (f64, u64) {
    let memory = field(&info(redis, "memory"), "used_memory").expect("used_memory");
    let keys = info(redis, "keyspace")
        .lines()
        .find_map(|line| line.strip_prefix("db0:keys="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|keys| keys.parse().ok())
        .unwrap_or(0);
    (memory as f64 / 1e6, keys)
}

fn report(w: usize, plan: &Plan, alone: &Run, fleet: &Run) {
    let one = &alone.processes[0];
    println!(
        "W={w} alone: CPU {:.1} % of one core, RSS {} MB, {} threads, {:.1} Kafka requests per \
         cycle, serving {:.0} GetMetrics/s",
        one.cpu_percent, one.rss_mb, one.threads, one.requests_per_cycle, alone.calls_per_second
    );
    for (index, replica) in fleet.processes.iter().enumerate() {
        println!(
            "W={w} fleet replica {index}: CPU {:.1} % of one core, RSS {} MB, {} threads, {:.1} \
             Kafka requests per cycle",
            replica.cpu_percent, replica.rss_mb, replica.threads, replica.requests_per_cycle
        );
    }
    let summed: f64 = fleet.processes.iter().map(|p| p.requests_per_cycle).sum();
    let cpu: f64 = fleet.processes.iter().map(|p| p.cpu_percent).sum();
    if let Some((ops, memory, keys)) = fleet.redis {
        println!(
            "W={w} fleet of {}: CPU {cpu:.1} % of one core summed, {summed:.1} Kafka requests \
             per cycle summed ({:.2} x alone), Redis {ops:.0} commands/s, {memory:.1} MB in \
             {keys} keys, serving {:.0} GetMetrics/s ({:.2} x alone)",
            plan.replicas,
            summed / one.requests_per_cycle,
            fleet.calls_per_second,
            fleet.calls_per_second / alone.calls_per_second
        );
    }
}
