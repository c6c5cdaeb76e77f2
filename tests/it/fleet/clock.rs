//! Fleet mode with a replica whose wall clock is off: the real binary under libfaketime
//! (Debian's `faketime`), its monotonic clock left alone, beside a replica on the right time.

use std::thread;
use std::time::{Duration, Instant};

use super::{
    fleet_redis, metadata_on, owner_of, stream, wait_for_fleet_of, watch_value, Scene, POLL,
};
use crate::support::{wait_for, Redis};

/// How far the fast replica's wall clock runs ahead: 3 poll intervals.
const AHEAD_S: u64 = 3;

/// The environment that runs the binary `AHEAD_S` seconds ahead (wall clock only).
fn clock_ahead_env() -> Vec<(&'static str, String)> {
    let library = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1"))
        .find(|path| std::path::Path::new(path).exists())
        .expect("libfaketime (Debian's faketime; scripts/install-deps installs it)");
    vec![
        ("LD_PRELOAD", library),
        ("FAKETIME", format!("+{AHEAD_S}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

/// Redis's clock now, ms since the epoch.
fn redis_now_ms(connection: &mut redis::Connection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(connection).expect("TIME");
    seconds * 1000 + micros / 1000
}

#[test]
fn a_replica_whose_clock_runs_3_polls_ahead_takes_no_future_tick_and_every_watch_stays_fresh() {
    let scene = Scene::new("fleet-clock", 4, 2000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let redis = Redis::start();
    let members = ["k0", "k1"];
    let owners: Vec<&str> = groups
        .iter()
        .map(|group| owner_of(&metadata_on(topic, group, &[]), &members))
        .collect();
    assert!(
        members.iter().all(|m| owners.contains(m)),
        "each replica must own a watch here: {owners:?}"
    );
    // The fast replica starts first and alone in the fleet: it owns every watch, then the
    // replica on the right time joins and takes over those it wins.
    let ahead = clock_ahead_env();
    let ahead_env: Vec<(&str, &str)> = ahead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fast = scene.replica_with("k1", &redis, &ahead_env);
    let fast_client = fast.process.client();
    let first = wait_for(Duration::from_secs(30), || {
        groups
            .iter()
            .all(|g| fast_client.lag(&metadata_on(topic, g, &[])).is_ok())
            .then_some(())
    });
    assert!(first.is_some(), "the fast replica did not answer in 30 s");
    thread::sleep(2 * POLL);
    let right = scene.replica("k0", &redis);
    let replicas = [right, fast];
    wait_for_fleet_of(&replicas);
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    let answered = wait_for(Duration::from_secs(30), || {
        groups
            .iter()
            .all(|g| {
                clients
                    .iter()
                    .all(|c| c.lag(&metadata_on(topic, g, &[])).is_ok())
            })
            .then_some(())
    });
    assert!(answered.is_some(), "not every replica answered in 30 s");

    // 10 s of KEDA's calls on both replicas, from 2 polls after the fleet formed.
    thread::sleep(2 * POLL);
    let errors = |replica: &super::Replica| -> Vec<f64> {
        let metrics = replica.metrics();
        groups
            .iter()
            .map(|g| watch_value(&metrics, "lagscaler_watch_poll_errors_total", g).unwrap_or(0.0))
            .collect()
    };
    let errors_before: Vec<Vec<f64>> = replicas.iter().map(errors).collect();
    let mut failed: Vec<String> = Vec::new();
    let mut oldest_sample = [0.0f64; 2];
    let mut connection = fleet_redis(&redis);
    let mut future_slots: Vec<String> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        for (index, (replica, client)) in replicas.iter().zip(&clients).enumerate() {
            for group in &groups {
                if let Err(err) = client.lag(&metadata_on(topic, group, &[])) {
                    failed.push(format!("{}: {group}: {err:?}", members[index]));
                }
            }
            let metrics = replica.metrics();
            for group in &groups {
                let age = watch_value(&metrics, "lagscaler_watch_sample_age_seconds", group)
                    .unwrap_or(f64::INFINITY);
                oldest_sample[index] = oldest_sample[index].max(age);
            }
        }
        for group in &groups {
            let name = super::watch_name(&metadata_on(topic, group, &[]));
            let last = stream(&mut connection, &name).last().map(|(slot, _)| *slot);
            let now = redis_now_ms(&mut connection);
            if let Some(slot) = last.filter(|slot| *slot > now + POLL.as_millis() as u64 / 2) {
                future_slots.push(format!(
                    "{group}: tick {slot}, {} ms after Redis's now",
                    slot - now
                ));
            }
        }
        thread::sleep(Duration::from_millis(250));
    }
    let errors_after: Vec<Vec<f64>> = replicas.iter().map(errors).collect();
    scene.mover.finish();

    let new_errors: Vec<String> = (0..2)
        .flat_map(|r| {
            let (before, after) = (&errors_before[r], &errors_after[r]);
            groups
                .iter()
                .enumerate()
                .filter(move |(g, _)| after[*g] > before[*g])
                .map(move |(g, group)| {
                    format!(
                        "{}: {group}: {} failed polls",
                        members[r],
                        after[g] - before[g]
                    )
                })
        })
        .collect();
    println!(
        "clock {AHEAD_S} s ahead on k1: owners {owners:?}; oldest sample served {:.2} s (k0) and \
         {:.2} s (k1); {} failed calls; {} failed polls; {} ticks in Redis's future",
        oldest_sample[0],
        oldest_sample[1],
        failed.len(),
        new_errors.len(),
        future_slots.len()
    );
    assert!(
        future_slots.is_empty(),
        "ticks written ahead of Redis's clock: {:?}",
        &future_slots[..future_slots.len().min(5)]
    );
    assert!(
        new_errors.is_empty(),
        "polls failed meanwhile: {new_errors:?}"
    );
    assert!(
        failed.is_empty(),
        "calls failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    // The fast replica says what is off, once, for whoever reads its log.
    let log = replicas[1].process.log();
    assert!(
        log.contains("this host's clock is 3.0 s ahead of the fleet Redis's"),
        "k1 did not say its clock is ahead"
    );
    // A sample is at most one poll and its read old when served (plus the scrape's time).
    for (index, age) in oldest_sample.iter().enumerate() {
        assert!(
            *age <= 2.5,
            "{}: a sample {age:.2} s old was served",
            members[index]
        );
    }
}
