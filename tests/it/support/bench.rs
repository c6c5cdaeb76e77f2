//! What the benchmarks share: committing many groups' offsets, a process's CPU time from
//! `/proc`, the end of a log.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Kafka;

/// Commits offset 1 on every partition for each (group, topic), from 16 threads (each commit is a
/// consumer of its own, mostly waiting for the broker).
pub fn commit_all(broker: &Kafka, groups: &[(String, String)], partitions: u32) {
    let at: Vec<(String, String, i64)> = groups
        .iter()
        .map(|(group, topic)| (group.clone(), topic.clone(), 1))
        .collect();
    commit_all_at(broker, &at, partitions);
}

/// Commits, for each (group, topic, offset), that offset on every partition of the topic, from
/// 16 threads.
pub fn commit_all_at(broker: &Kafka, groups: &[(String, String, i64)], partitions: u32) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((group, topic, offset)) = groups.get(i) else {
                    break;
                };
                let offsets: Vec<(&str, i32, i64)> = (0..partitions as i32)
                    .map(|partition| (topic.as_str(), partition, *offset))
                    .collect();
                broker.commit(group, &offsets);
            });
        }
    });
}

/// The watch counts a benchmark runs: the comma-separated numbers of the environment variable
/// `name` (e.g. `POLLING_WATCHES=10000`), or `default`. Panics naming the variable when one
/// is not a number.
pub fn watches_from_env(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(list) => list
            .split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: numbers"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    parse_stat(&stat).1
}

/// (name, utime + stime) from a /proc stat line.
pub fn parse_stat(stat: &str) -> (String, u64) {
    let open = stat.find('(').unwrap_or(0);
    let close = stat.rfind(')').expect("comm");
    let name = stat[open + 1..close].to_owned();
    // Fields after the command name; utime and stime are fields 14 and 15 of the whole
    // line, 12 and 13 after the name.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    (name, ticks)
}

/// Clock ticks per second (`getconf CLK_TCK`), for `/proc` CPU times.
pub fn clock_ticks_per_second() -> f64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// The end of a log, for failure messages.
pub fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4_000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    &log[start..]
}
