//! The estimator end to end: ETA and replica targets against a real producer and a real
//! group member on the broker, KEDA's lag options on real offsets, and the idle window.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use grpcio::RpcStatusCode;
use lagscaler::estimate::NOT_DRAINING_ETA_SECONDS;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::support::{produce_one, wait_for, Kafka, Scaler};

const TTL: Duration = Duration::from_secs(600);

/// Records per second the producer adds to each of the two partitions.
const PRODUCE_PER_PARTITION: f64 = 10.0;
/// Records per second the group member commits on each partition while behind.
const CONSUME_PER_PARTITION: f64 = 30.0;
/// Records waiting on each partition when the clock starts.
const BACKLOG_PER_PARTITION: i64 = 200;

/// Produces to both partitions of `topic` at [`PRODUCE_PER_PARTITION`] each from `start`,
/// each record sent as it is due and acknowledged, counting what the broker acknowledged,
/// until `stop`.
fn steady_producer(
    broker: &Kafka,
    topic: &'static str,
    start: Instant,
    produced: Arc<[AtomicI64; 2]>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let producer = broker.producer();
    thread::Builder::new()
        .name("test-producer".to_owned())
        .spawn(move || {
            let per_record = Duration::from_secs_f64(1.0 / (2.0 * PRODUCE_PER_PARTITION));
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let due = start + per_record * sent;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                let partition = (sent % 2) as usize;
                produce_one(&producer, topic, partition as i32);
                produced[partition].fetch_add(1, Ordering::SeqCst);
                sent += 1;
            }
        })
        .expect("spawn the producer")
}

/// A member of `group` subscribed to `topic` (2 partitions). Once told the start time, it
/// commits [`CONSUME_PER_PARTITION`] records per second on each partition, never past what
/// was produced, and reports when it first caught up on both.
struct Member {
    start: Sender<Instant>,
    drained: Receiver<Instant>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Member {
    fn join(
        broker: &Kafka,
        group: &str,
        topic: &'static str,
        produced: Arc<[AtomicI64; 2]>,
    ) -> Member {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("create the group member");
        consumer.subscribe(&[topic]).expect("subscribe");
        let (start_tx, start_rx) = bounded::<Instant>(1);
        let (drained_tx, drained_rx) = bounded::<Instant>(1);
        let (ready_tx, ready_rx) = bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("test-member".to_owned())
                .spawn(move || {
                    member_loop(
                        &consumer,
                        topic,
                        &produced,
                        &ready_tx,
                        &start_rx,
                        &drained_tx,
                        &stop,
                    )
                })
                .expect("spawn the member")
        };
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the member got both partitions within 30 s");
        Member {
            start: start_tx,
            drained: drained_rx,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn member_loop(
    consumer: &BaseConsumer,
    topic: &str,
    produced: &[AtomicI64; 2],
    ready: &Sender<()>,
    start: &Receiver<Instant>,
    drained: &Sender<Instant>,
    stop: &AtomicBool,
) {
    let commit = |offsets: [i64; 2]| {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets.iter().enumerate() {
            list.add_partition_offset(topic, partition as i32, Offset::Offset(*offset))
                .expect("add offset");
        }
        consumer.commit(&list, CommitMode::Sync)
    };
    // Joined once both partitions are assigned and a commit of 0 (nothing consumed) is taken.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let _ = consumer.poll(Duration::from_millis(50));
        let assigned = consumer.assignment().map(|list| list.count()).unwrap_or(0);
        if assigned == 2 && commit([0, 0]).is_ok() {
            let _ = ready.send(());
            break;
        }
    }
    let Ok(started) = start.recv() else { return };
    let mut caught_up = false;
    while !stop.load(Ordering::Relaxed) {
        let _ = consumer.poll(Duration::from_millis(50));
        let elapsed = started.elapsed().as_secs_f64();
        let mut targets = [0i64; 2];
        let mut at_end = true;
        for (partition, target) in targets.iter_mut().enumerate() {
            let high = BACKLOG_PER_PARTITION + produced[partition].load(Ordering::SeqCst);
            let paced = (CONSUME_PER_PARTITION * elapsed).floor() as i64;
            *target = paced.min(high);
            at_end &= paced >= high;
        }
        // A failed commit (e.g. a rebalance) is retried on the next turn.
        if commit(targets).is_ok() && at_end && !caught_up {
            caught_up = true;
            let _ = drained.send(Instant::now());
        }
    }
}

#[test]
fn eta_and_replicas_track_a_steady_drain() {
    let broker = Kafka::shared();
    broker.create_topic("drain", 2);
    for partition in 0..2 {
        broker.produce("drain", partition, BACKLOG_PER_PARTITION as usize);
    }
    let mut config = Scaler::config(&broker.bootstrap(), Duration::from_millis(200), TTL);
    config.rate_window = Duration::from_secs(3);
    let scaler = Scaler::start_with(config);
    let base = [("consumerGroup", "drainers"), ("topic", "drain")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut metadata = base.to_vec();
        metadata.extend_from_slice(extra);
        metadata
    };
    let lag = with(&[("lagThreshold", "100000")]);
    let eta = with(&[("metric", "eta"), ("targetEtaSeconds", "5")]);
    let replicas = with(&[
        ("metric", "replicas"),
        ("targetEtaSeconds", "2"),
        ("allowIdleConsumers", "true"),
    ]);
    let (name, target, target_float) = scaler.metric_spec(&eta).expect("eta spec");
    assert_eq!(
        (name.as_str(), target, target_float),
        ("kafka-eta-drainers-drain", 5, 5.0)
    );
    let (name, target, _) = scaler.metric_spec(&replicas).expect("replicas spec");
    assert_eq!(
        (name.as_str(), target),
        ("kafka-replicas-drainers-drain", 1)
    );

    let produced: Arc<[AtomicI64; 2]> = Arc::new([AtomicI64::new(0), AtomicI64::new(0)]);
    let member = Member::join(broker, "drainers", "drain", Arc::clone(&produced));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producer = steady_producer(
        broker,
        "drain",
        started,
        Arc::clone(&produced),
        Arc::clone(&stop),
    );
    member.start.send(started).expect("start the member");
    let total = || {
        produced
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum::<i64>()
    };

    // 400 behind, up to 20/s in (one acknowledged request at a time: the broker's latency
    // may hold it lower, so the true rate is measured), 60/s out. Read once the 3 s rate
    // window holds only samples from after the start.
    thread::sleep(Duration::from_secs(1));
    let (count_from, from) = (total(), Instant::now());
    thread::sleep(Duration::from_secs(3));
    let seen_lag = scaler.lag(&lag).expect("lag");
    let seen_eta = scaler.get_metrics(&eta).expect("eta").1;
    let read_at = Instant::now();
    let true_produce = (total() - count_from) as f64 / from.elapsed().as_secs_f64();
    let per_member = 2.0 * CONSUME_PER_PARTITION;
    // desired = ceil((produce + lag / target) / per-member throughput), 1 member at 60/s.
    // A target that puts the closed form at 2.5 keeps it clear of rounding edges.
    let target = seen_lag as f64 / (2.5 * per_member - true_produce);
    let target_text = format!("{target:.3}");
    let replicas_now = [
        ("consumerGroup", "drainers"),
        ("topic", "drain"),
        ("metric", "replicas"),
        ("targetEtaSeconds", target_text.as_str()),
        ("allowIdleConsumers", "true"),
    ];
    let seen_replicas = scaler.get_metrics(&replicas_now).expect("replicas");

    let drained_at = member
        .drained
        .recv_timeout(Duration::from_secs(30))
        .expect("the member caught up within 30 s");
    let true_eta = drained_at.duration_since(read_at).as_secs_f64();
    let error = (seen_eta - true_eta).abs() / true_eta;
    println!(
        "steady drain: lag {seen_lag}, {true_produce:.1}/s in, reported ETA {seen_eta:.2} s, \
         drained after {true_eta:.2} s ({:+.1} %)",
        (seen_eta - true_eta) / true_eta * 100.0
    );
    assert!(
        error <= 0.15,
        "reported ETA {seen_eta:.2} s, drained after {true_eta:.2} s ({:.0} % off; lag \
         {seen_lag}, {true_produce:.1}/s in)",
        error * 100.0
    );

    assert!(
        true_produce > 2.0 && seen_lag > 100,
        "produced {true_produce:.1}/s, lag {seen_lag}: not the drain this test is about"
    );
    assert_eq!(
        seen_replicas,
        (3, 3.0),
        "replicas for lag {seen_lag} at {true_produce:.1}/s in, targetEtaSeconds {target_text}"
    );

    // Caught up: the little lag left is in flight, consumed well inside a second.
    let settled = wait_for(Duration::from_secs(5), || {
        let value = scaler.get_metrics(&eta).ok()?.1;
        (value < 1.0).then_some(value)
    });
    assert!(
        settled.is_some(),
        "ETA did not settle below 1 s after the drain"
    );

    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer thread");
    drop(member);
    scaler.stop();
}

#[test]
fn eta_is_unknown_first_then_not_draining_without_consumers() {
    let broker = Kafka::shared();
    broker.create_topic("stuck", 1);
    broker.produce("stuck", 0, 50);
    broker.commit("sleepers", &[("stuck", 0, 10)]);
    let mut config = Scaler::config(&broker.bootstrap(), Duration::from_secs(1), TTL);
    config.rate_window = Duration::from_secs(5);
    let scaler = Scaler::start_with(config);
    let eta = [
        ("consumerGroup", "sleepers"),
        ("topic", "stuck"),
        ("metric", "eta"),
        ("targetEtaSeconds", "60"),
    ];
    let replicas = [
        ("consumerGroup", "sleepers"),
        ("topic", "stuck"),
        ("metric", "replicas"),
        ("targetEtaSeconds", "60"),
    ];

    // One sample: no rates, so no ETA, and KEDA is told so rather than given a number.
    let status = scaler.get_metrics(&eta).expect_err("ETA from one sample");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");
    assert!(status.message().contains("not known yet"), "{status:?}");
    // The group has no member and 40 waiting: wake one consumer, rates or not.
    assert_eq!(scaler.get_metrics(&replicas).expect("replicas"), (1, 1.0));

    let value = wait_for(Duration::from_secs(5), || scaler.get_metrics(&eta).ok());
    let (int, float) = value.expect("an ETA once two samples are in");
    assert_eq!(float, NOT_DRAINING_ETA_SECONDS);
    assert_eq!(int, NOT_DRAINING_ETA_SECONDS as i64);
    assert!(scaler.is_active(&eta).expect("is active"));
    scaler.stop();
}

#[test]
fn keda_lag_options_apply_to_real_offsets() {
    let broker = Kafka::shared();
    broker.create_topic("parity", 4);
    for (partition, count) in [(0, 10), (1, 20), (3, 5)] {
        broker.produce("parity", partition, count);
    }
    // p0: 8 behind; p1: never committed; p2: empty, never committed; p3: caught up.
    broker.commit("keda", &[("parity", 0, 2), ("parity", 3, 5)]);
    let scaler = Scaler::start(&broker.bootstrap(), Duration::from_millis(200), TTL);
    let base = [("consumerGroup", "keda"), ("topic", "parity")];
    let lag_with = |extra: &[(&'static str, &'static str)]| {
        let mut metadata = base.to_vec();
        metadata.extend_from_slice(extra);
        scaler
            .lag(&metadata)
            .unwrap_or_else(|status| panic!("{extra:?}: {status:?}"))
    };

    // latest: 8 + 1 + 1 + 0.
    assert_eq!(lag_with(&[]), 10);
    assert_eq!(lag_with(&[("partitionLimitation", "0-1")]), 9);
    assert_eq!(lag_with(&[("partitionLimitation", "2,3")]), 1);
    assert_eq!(lag_with(&[("scaleToZeroOnInvalidOffset", "true")]), 8);
    // earliest counts every retained record of the uncommitted p1.
    assert_eq!(lag_with(&[("offsetResetPolicy", "earliest")]), 28);
    assert_eq!(
        lag_with(&[
            ("offsetResetPolicy", "earliest"),
            ("scaleToZeroOnInvalidOffset", "true")
        ]),
        8
    );
    // Capped at exactly partitions × threshold: 4 × 2.
    assert_eq!(lag_with(&[("lagThreshold", "2")]), 8);
    assert_eq!(
        lag_with(&[("lagThreshold", "2"), ("allowIdleConsumers", "true")]),
        10
    );
    // Only 3 partitions have lag: 3 × 2.
    assert_eq!(
        lag_with(&[("lagThreshold", "2"), ("limitToPartitionsWithLag", "true")]),
        6
    );
    // 10 at threshold 3 wants 4 replicas, a divisor of 4: 12. At threshold 4, 3 → 4 → 16.
    assert_eq!(
        lag_with(&[
            ("lagThreshold", "3"),
            ("ensureEvenDistributionOfPartitions", "true")
        ]),
        12
    );
    assert_eq!(
        lag_with(&[
            ("lagThreshold", "4"),
            ("ensureEvenDistributionOfPartitions", "true")
        ]),
        16
    );

    // p0's commit does not move between polls: persistent, left out of the metric once a
    // second sample shows it, but still counted for activation.
    let persistent = [
        ("consumerGroup", "keda"),
        ("topic", "parity"),
        ("excludePersistentLag", "true"),
        ("activationLagThreshold", "5"),
    ];
    let excluded = scaler.wait_for_lag(&persistent, 2, Duration::from_secs(3));
    assert!(
        excluded.is_some(),
        "p0's persistent 8 never left the metric"
    );
    assert!(scaler.is_active(&persistent).expect("is active"));
    // The consumer moves on p0: it counts again.
    broker.commit("keda", &[("parity", 0, 4)]);
    let counted = scaler.wait_for_lag(&persistent, 8, Duration::from_secs(3));
    assert!(
        counted.is_some(),
        "p0's lag did not count again after its commit moved"
    );

    // A limitation that matches no partition is an error, not 0.
    let none = [
        ("consumerGroup", "keda"),
        ("topic", "parity"),
        ("partitionLimitation", "7-9"),
    ];
    let status = scaler.lag(&none).expect_err("no partition matches");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");
    assert!(
        status.message().contains("partitionLimitation 7-9"),
        "{status:?}"
    );
    scaler.stop();
}

#[test]
fn idle_window_ignores_flapping_and_then_lets_go() {
    const IDLE: Duration = Duration::from_secs(2);
    let poll = Duration::from_millis(200);
    let broker = Kafka::shared();
    broker.create_topic("flap", 1);
    broker.produce("flap", 0, 3);
    broker.commit("flappers", &[("flap", 0, 0)]);
    let scaler = Scaler::start(&broker.bootstrap(), poll, TTL);
    let metadata = [
        ("consumerGroup", "flappers"),
        ("topic", "flap"),
        ("idleWindow", "2s"),
    ];
    assert!(scaler.is_active(&metadata).expect("is active with lag 3"));

    // Lag goes 0 and back to 1 for 5 s (more than twice the window), each lag seen by a
    // poll before the next change (event-driven, so that a loaded machine's slower calls
    // cannot stretch a lag-0 spell past the window): IsActive must never say false while
    // the lag is 0 between two lags of 1.
    let producer = broker.producer();
    let mut high = 3;
    let flapping_until = Instant::now() + Duration::from_secs(5);
    let (mut turns, mut checks) = (0, 0);
    let seen = |lag: i64| {
        let seen = wait_for(Duration::from_secs(5), || {
            (scaler.lag(&metadata).ok()? == lag).then_some(())
        });
        assert!(seen.is_some(), "lag {lag} never seen");
    };
    while Instant::now() < flapping_until {
        broker.commit("flappers", &[("flap", 0, high)]);
        seen(0);
        let turn_end = Instant::now() + Duration::from_millis(400);
        while Instant::now() < turn_end {
            assert!(
                scaler.is_active(&metadata).expect("is active"),
                "false idle while flapping"
            );
            checks += 1;
            thread::sleep(Duration::from_millis(50));
        }
        produce_one(&producer, "flap", 0);
        high += 1;
        seen(1);
        turns += 1;
    }
    assert!(
        turns >= 3 && checks >= turns,
        "{turns} turns, {checks} checks"
    );

    // Caught up for good: still active until the window has passed, then idle.
    broker.commit("flappers", &[("flap", 0, high)]);
    let caught_up = Instant::now();
    let idle = wait_for(IDLE + Duration::from_secs(3), || {
        (!scaler.is_active(&metadata).ok()?).then(|| caught_up.elapsed())
    });
    let idle = idle.expect("idle within the window plus 3 s");
    assert!(
        idle >= IDLE - 2 * poll,
        "idle after {idle:?}, before the {IDLE:?} window passed"
    );

    // One record: active again within a poll or two.
    produce_one(&producer, "flap", 0);
    let woke = wait_for(4 * poll, || scaler.is_active(&metadata).ok()?.then_some(()));
    assert!(woke.is_some(), "a new record did not make the group active");
    scaler.stop();
}
