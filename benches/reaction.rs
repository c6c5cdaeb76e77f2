//! Reaction benchmark: with `SCALER_POLL_INTERVAL=1s`, the time from producing one record
//! into an idle watched topic to the StreamIsActive `true` push (KEDA's `external-push`),
//! over many trials, each produced at a random moment of the poll cycle. The real
//! `lagscaler` binary, Apache Kafka, and a real gRPC client.
//!
//! `cargo bench --bench reaction` runs it in full (release); `cargo test --bench reaction`
//! runs a seconds-long smoke version (debug, no thresholds) so that it never rots.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::{Kafka, Process, StreamEvent};

const TOPIC: &str = "reaction";
const GROUP: &str = "reaction-consumers";

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let trials = if full { 40 } else { 3 };
    let poll = Duration::from_secs(1);

    let broker = Kafka::shared();
    broker.create_topic(TOPIC, 1);
    broker.commit(GROUP, &[(TOPIC, 0, 0)]);
    let process = Process::start(
        &broker.bootstrap(),
        &[("SCALER_DEBUG", "false"), ("SCALER_POLL_INTERVAL", "1s")],
    );
    let client = process.client();
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("lagThreshold", "10"),
    ];
    let stream = client.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(5));
    assert!(
        matches!(first, Some(StreamEvent::Message(false, _))),
        "{first:?}; log:\n{}",
        process.log()
    );

    let producer = broker.producer();
    let mut random = Lcg::seeded();
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        // A random phase of the poll cycle.
        thread::sleep(poll.mul_f64(random.next_unit()));
        support::produce_one(&producer, TOPIC, 0);
        let produced = Instant::now();
        let pushed = stream.next(poll + Duration::from_secs(5));
        let Some(StreamEvent::Message(true, at)) = pushed else {
            panic!("trial {trial}: {pushed:?}; log:\n{}", process.log());
        };
        latencies.push(at.duration_since(produced));
        // Consumed: back to idle before the next trial.
        broker.commit(GROUP, &[(TOPIC, 0, trial as i64 + 1)]);
        let idle = stream.next(poll + Duration::from_secs(5));
        assert!(
            matches!(idle, Some(StreamEvent::Message(false, _))),
            "trial {trial}: {idle:?}"
        );
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reaction with a 1 s poll, {trials} trials: record-to-push min {:.0} ms, p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms",
        ms(latencies[0]),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(latencies[latencies.len() - 1])
    );
    drop(stream);
}

/// A small linear congruential generator: enough to spread trials over the cycle.
struct Lcg(u64);

impl Lcg {
    fn seeded() -> Lcg {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.subsec_nanos());
        Lcg(u64::from(nanos) | 1)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}
