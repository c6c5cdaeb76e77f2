//! Push-stream uptime benchmark: a StreamIsActive client that reconnects exactly as KEDA's
//! `externalPushScaler` does (kedacore/keda `pkg/scalers/external_scaler.go`,
//! `runStreamIsActive`: 2 s after a stream ends, doubling to a minute, back to 2 s only
//! after a stream that ended with status OK), against the real `lagscaler` binary with
//! `SCALER_GRPC_MAX_CONNECTION_AGE` at the recommended 5 minutes, while a unary client calls
//! every second as KEDA's polling does. Reports the share of the run with a stream open, the
//! streams opened and how each ended, and the connections the unary calls used.
//!
//! `cargo bench --bench push_uptime` runs it in full (20 minutes, release;
//! `PUSH_UPTIME_MINUTES` and `PUSH_UPTIME_AGE` change the length and the age); `cargo test
//! --bench push_uptime` runs a seconds-long smoke version (debug, no thresholds) so that it
//! never rots.

use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Kafka, Process, StreamEvent};

const TOPIC: &str = "push-uptime";
const GROUP: &str = "push-uptime-consumers";

/// KEDA's first wait before reopening a stream, and its longest.
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let env_duration = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|text| humantime::parse_duration(&text).expect("a duration such as 5m"))
    };
    let (run, age) = if full {
        let minutes: u64 = std::env::var("PUSH_UPTIME_MINUTES")
            .ok()
            .map_or(20, |text| {
                text.parse().expect("PUSH_UPTIME_MINUTES: minutes")
            });
        let age = env_duration("PUSH_UPTIME_AGE").unwrap_or(Duration::from_secs(300));
        (Duration::from_secs(60 * minutes), age)
    } else {
        (Duration::from_secs(8), Duration::from_secs(1))
    };

    let broker = Kafka::shared();
    broker.create_topic(TOPIC, 1);
    broker.produce(TOPIC, 0, 3);
    broker.commit(GROUP, &[(TOPIC, 0, 1)]);
    let age_text = humantime::format_duration(age).to_string();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_DEBUG", "false"),
            ("SCALER_GRPC_MAX_CONNECTION_AGE", &age_text),
        ],
    );
    let metadata = [("consumerGroup", GROUP), ("topic", TOPIC)];

    // KEDA's polling: a unary call every second on the same kind of channel.
    let poller = {
        let client = process.client();
        thread::spawn(move || {
            let started = Instant::now();
            let (mut calls, mut failed) = (0u64, 0u64);
            while started.elapsed() < run {
                calls += 1;
                if client
                    .lag(&[("consumerGroup", GROUP), ("topic", TOPIC)])
                    .is_err()
                {
                    failed += 1;
                }
                thread::sleep(Duration::from_secs(1));
            }
            (calls, failed)
        })
    };

    let client = process.client();
    let started = Instant::now();
    let mut open_for = Duration::ZERO;
    let mut endings: Vec<(Duration, String)> = Vec::new();
    let mut retry = FIRST_RETRY;
    let mut first = true;
    while started.elapsed() < run {
        if !first {
            // KEDA waits, then doubles the next wait, whatever the last stream did.
            thread::sleep(retry.min(run.saturating_sub(started.elapsed())));
            retry = (retry * 2).min(MAX_RETRY);
            if started.elapsed() >= run {
                break;
            }
        }
        first = false;
        let opened = Instant::now();
        let stream = client.stream_is_active(&metadata);
        let ending = loop {
            let left = run.saturating_sub(started.elapsed());
            if left.is_zero() {
                break None;
            }
            match stream.next(left) {
                Some(StreamEvent::Message(..)) => continue,
                Some(other) => break Some(other),
                None => break None,
            }
        };
        open_for += opened.elapsed();
        match ending {
            None => {}
            Some(StreamEvent::Ended) => {
                // io.EOF: KEDA's one reset.
                retry = FIRST_RETRY;
                endings.push((started.elapsed(), "ended OK".to_owned()));
            }
            Some(other) => endings.push((started.elapsed(), format!("{other:?}"))),
        }
        drop(stream);
    }
    let (calls, failed) = poller.join().expect("poller");
    let wall = started.elapsed();
    println!(
        "push uptime, max connection age {age_text}, {}: stream open {:.3} % of the time, \
         {} stream(s) ended ({:?}); unary calls {calls}, {failed} failed",
        humantime::format_duration(Duration::from_secs(wall.as_secs())),
        100.0 * open_for.as_secs_f64() / wall.as_secs_f64(),
        endings.len(),
        endings
    );
}
