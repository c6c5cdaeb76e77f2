//! Kafka incidents against the real binary: the broker killed and restarted on its port and
//! data, and the broker frozen with SIGSTOP. Answers stay honest (served while fresh enough,
//! then UNAVAILABLE, never a guess), serving never waits on Kafka, and recovery needs no
//! restart. Each test here has a broker of its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;

use lagscaler::daemon::StopError;
use lagscaler::hooks;

use crate::support::{wait_for, Kafka, Process, Scaler};

const TTL: Duration = Duration::from_secs(600);
const GROUP: [(&str, &str); 2] = [("consumerGroup", "ops"), ("topic", "events")];
/// Lag 8 is never above 100: false while data is fresh, and while polls fail and the last
/// good sample is served as it stood.
const ACTIVE_ABOVE_100: [(&str, &str); 3] = [
    ("consumerGroup", "ops"),
    ("topic", "events"),
    ("activationLagThreshold", "100"),
];

/// Topic `events` with 6 + 4 records and group `ops` at 1 + 1: lag 8.
fn load(broker: &Kafka) {
    broker.create_topic("events", 2);
    broker.produce("events", 0, 6);
    broker.produce("events", 1, 4);
    broker.commit("ops", &[("events", 0, 1), ("events", 1, 1)]);
}

fn start_scaler(broker: &Kafka) -> Process {
    Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_POLL_INTERVAL", "200ms"),
            ("SCALER_KAFKA_TIMEOUT", "500ms"),
            ("SCALER_STALE_AFTER", "3s"),
        ],
    )
}

#[test]
fn broker_restart_goes_fresh_stale_unavailable_fresh() {
    let mut broker = Kafka::start();
    load(&broker);
    let scaler = start_scaler(&broker);
    let client = scaler.client();
    assert_eq!(client.lag(&GROUP).expect("fresh lag"), 8);
    assert!(!client.is_active(&ACTIVE_ABOVE_100).expect("fresh activity"));
    std::thread::sleep(Duration::from_secs(1));
    let baseline = scaler.threads_and_fds();

    broker.kill_node(0);
    let killed = Instant::now();
    // Stale but served: the polls fail, and the last good sample is answered as it stood,
    // activity included (missing data neither makes an idle workload active nor idle).
    let failing = wait_for(Duration::from_secs(2), || {
        scaler.log().contains("watch failing").then_some(())
    });
    assert!(
        failing.is_some(),
        "no failed poll seen; log:\n{}",
        scaler.log()
    );
    assert_eq!(client.lag(&GROUP).expect("stale but served"), 8);
    assert!(!client
        .is_active(&ACTIVE_ABOVE_100)
        .expect("served as it stood"));
    assert!(client
        .is_active(&GROUP)
        .expect("lag 8 above the default threshold 0, as it stood"));
    assert!(killed.elapsed() < Duration::from_millis(2500));

    // Stale: UNAVAILABLE with the cause, for both questions.
    let status = wait_for(Duration::from_secs(5), || client.lag(&GROUP).err());
    let status = status.expect("UNAVAILABLE once stale");
    let stale_at = killed.elapsed();
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");
    assert!(status.message().contains("stale after 3s"), "{status:?}");
    assert!(
        stale_at >= Duration::from_millis(2500),
        "stale after {stale_at:?}"
    );
    let status = client.is_active(&GROUP).expect_err("IsActive once stale");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");

    // The broker comes back on its port and data; the clock starts once it serves again.
    broker.restart_node(0);
    let back = Instant::now();
    let fresh = wait_for(Duration::from_secs(10), || {
        let lag = client.lag(&GROUP).ok()?;
        let active = client.is_active(&ACTIVE_ABOVE_100).ok()?;
        (lag == 8 && !active).then(|| back.elapsed())
    });
    let fresh = fresh.unwrap_or_else(|| panic!("no recovery; log:\n{}", scaler.log()));
    println!("broker restart: stale after {stale_at:?}, fresh again {fresh:?} after it served");
    // Reconnects back off to at most 1 s, then two polls of 200 ms.
    assert!(fresh < Duration::from_secs(2), "fresh only after {fresh:?}");

    // With every broker down, librdkafka adds the bootstrap addresses back (a thread and a
    // connection each, `rdk:broker-1`) and drops them at its next metadata refresh: every
    // 5 s for the cluster's client, every 30 s for the commit reader and the marker
    // consumer (`records::reader_config`; seen: two such threads 5 s after the restart).
    let settled = wait_for(Duration::from_secs(40), || {
        (scaler.threads_and_fds() == baseline).then_some(())
    });
    assert!(
        settled.is_some(),
        "threads and fds {:?}, baseline {baseline:?}",
        scaler.threads_and_fds()
    );
    let log = scaler.log();
    assert!(log.contains("watch failing"), "{log}");
    assert!(log.contains("watch recovered"), "{log}");
}

/// The p99 of `n` GetMetrics calls, answered or refused.
/// The group drains, and the broker freezes (SIGSTOP, 10 s) right after the first poll that
/// saw it drained; 2 s polls, a 6 s idle window. Nothing is known after that sample, so
/// neither IsActive nor StreamIsActive says `false` while the broker is frozen: not while
/// the next poll hangs, nor once it failed. Thawed, the watch goes idle.
#[test]
fn a_broker_frozen_right_after_the_drain_never_reads_as_idle() {
    let broker = Kafka::start();
    load(&broker);
    let poll = Duration::from_secs(2);
    let mut config = Scaler::config(&broker.bootstrap(), poll, TTL);
    config.stale_after = Duration::from_secs(11);
    let scaler = Scaler::start_with(config);
    let trigger = [
        ("consumerGroup", "ops"),
        ("topic", "events"),
        ("idleWindow", "6s"),
    ];
    assert!(scaler.is_active(&trigger).expect("active with lag 8"));
    let stream = scaler.stream_is_active(&trigger);
    broker.commit("ops", &[("events", 0, 6), ("events", 1, 4)]);
    let drained = wait_for(Duration::from_secs(10), || {
        (scaler.lag(&trigger).ok() == Some(0)).then_some(())
    });
    assert!(drained.is_some(), "the drain was not seen");
    let frozen = broker.freeze_node(0);
    let frozen_at = Instant::now();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut idle_at = Vec::new();
    while frozen_at.elapsed() < Duration::from_secs(10) {
        let answer = match scaler.is_active(&trigger) {
            Ok(true) => "true".to_owned(),
            Ok(false) => {
                idle_at.push(frozen_at.elapsed());
                "false".to_owned()
            }
            Err(status) => format!("{:?}", status.code()),
        };
        *answers.entry(answer).or_default() += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut pushed = Vec::new();
    while let Some(event) = stream.next(Duration::ZERO) {
        pushed.push(event);
    }
    drop(frozen);
    println!("while frozen: IsActive {answers:?}; pushed {pushed:?}");
    assert!(
        idle_at.is_empty(),
        "IsActive false {} times while frozen, the first {:?} into the freeze; answers {answers:?}",
        idle_at.len(),
        idle_at.first()
    );
    let pushed_idle = pushed
        .iter()
        .filter(|event| matches!(event, crate::support::StreamEvent::Message(false, _)))
        .count();
    assert_eq!(pushed_idle, 0, "pushed while frozen: {pushed:?}");

    let idle = wait_for(Duration::from_secs(30), || {
        (scaler.is_active(&trigger).ok() == Some(false)).then_some(())
    });
    assert!(idle.is_some(), "never idle once thawed");
    drop(stream);
    scaler.stop();
}

/// Record reads (the time lag's and the marker checks') of many topics share one deadline:
/// ten topics against a frozen broker take about one Kafka timeout, not one each.
#[test]
fn record_reads_of_many_topics_share_one_deadline() {
    let broker = Kafka::start();
    let topics: Vec<String> = (0..10).map(|n| format!("probed-{n}")).collect();
    for topic in &topics {
        broker.create_topic(topic, 1);
        broker.produce(topic, 0, 2);
    }
    let timeout = Duration::from_secs(1);
    let client_with = |request_timeout| {
        let mut config = Scaler::config(&broker.bootstrap(), Duration::from_secs(1), TTL).kafka;
        config.request_timeout = request_timeout;
        lagscaler::kafka::KafkaClient::connect(&config).expect("client")
    };
    let wanted: Vec<(&str, i32, i64)> = topics.iter().map(|topic| (topic.as_str(), 0, 1)).collect();
    let isolation = lagscaler::lag::Isolation::ReadUncommitted;
    // The healthy read of the ten topics, which shares its deadline too, is given 30 s: in a
    // loaded test run, ten consumers made one after another took more than 1 s.
    let healthy = client_with(Duration::from_secs(30));
    let found = healthy
        .first_records(&wanted, isolation)
        .expect("healthy read");
    healthy.shutdown().expect("client threads");
    let client = client_with(timeout);
    assert_eq!(found.len(), topics.len(), "{found:?}");
    assert!(
        found
            .values()
            .all(|first| first.is_some_and(|record| record.offset == 1)),
        "{found:?}"
    );

    let frozen = broker.freeze_node(0);
    let started = Instant::now();
    let read = client.first_records(&wanted, isolation);
    let took = started.elapsed();
    drop(frozen);
    println!("10 topics against a frozen broker: {took:?}, {read:?}");
    assert!(took < 3 * timeout, "{took:?} for a {timeout:?} timeout");
    client.shutdown().expect("client threads");
}

fn p99_latency(client: &crate::support::GrpcClient, n: usize) -> Duration {
    let mut latencies: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            let _ = client.lag(&GROUP);
            started.elapsed()
        })
        .collect();
    latencies.sort_unstable();
    latencies[n * 99 / 100]
}

#[test]
fn frozen_broker_does_not_slow_serving() {
    let broker = Kafka::start();
    load(&broker);
    let scaler = start_scaler(&broker);
    let client = scaler.client();
    assert_eq!(client.lag(&GROUP).expect("fresh lag"), 8);
    let healthy = p99_latency(&client, 400);

    // Thawed even if an assertion below fails, so that the broker's guard can stop it.
    let frozen_broker = broker.freeze_node(0);
    // Past the Kafka timeout, so that a watcher is waiting on the frozen broker.
    std::thread::sleep(Duration::from_millis(700));
    let frozen = p99_latency(&client, 400);
    println!("frozen broker: GetMetrics p99 {frozen:?}, healthy {healthy:?}");
    // A call that waited on Kafka would take at least the 500 ms Kafka timeout. Anything
    // well below that is serving from memory, however loaded the machine (a ratio to the
    // healthy p99 would compare two samples of scheduling noise of sub-millisecond calls).
    assert!(
        frozen < Duration::from_millis(250),
        "p99 {frozen:?} while frozen, {healthy:?} healthy"
    );
    let timed_out = wait_for(Duration::from_secs(3), || {
        scaler.log().contains("watch failing").then_some(())
    });
    assert!(
        timed_out.is_some(),
        "no poll timed out; log:\n{}",
        scaler.log()
    );

    assert!(!client
        .is_active(&ACTIVE_ABOVE_100)
        .expect("served as it stood while frozen"));

    drop(frozen_broker);
    let fresh = wait_for(Duration::from_secs(5), || {
        scaler.log().contains("watch recovered").then_some(())
    });
    assert!(
        fresh.is_some(),
        "no recovery after SIGCONT; log:\n{}",
        scaler.log()
    );
    assert_eq!(client.lag(&GROUP).expect("fresh lag"), 8);
}

#[test]
fn a_panicking_watcher_is_restarted_with_backoff_and_others_carry_on() {
    let broker = Kafka::start();
    load(&broker);
    broker.commit("victim", &[("events", 0, 2), ("events", 1, 2)]);
    let scaler = Scaler::start(
        &broker.bootstrap(),
        Duration::from_millis(200),
        Duration::from_secs(600),
    );
    let victim = [("consumerGroup", "victim"), ("topic", "events")];
    // Lag 6 is never above 100: inactive, fresh or served as it stood.
    let victim_quiet = [
        ("consumerGroup", "victim"),
        ("topic", "events"),
        ("activationLagThreshold", "100"),
    ];
    assert_eq!(scaler.lag(&victim).expect("victim lag"), 6);
    assert_eq!(scaler.lag(&GROUP).expect("bystander lag"), 8);

    let mut restart_times = Vec::new();
    for death in 1..=2 {
        hooks::panic_watcher_once("victim");
        let died = wait_for(Duration::from_secs(3), || {
            (scaler.daemon().watcher_panics() == death).then(Instant::now)
        });
        let died = died.expect("the injected panic was not noticed");
        // While the watcher is down: the last good sample is served as it stood, the
        // bystander is fresh.
        let position = 2 + death as i64;
        assert_eq!(
            scaler.lag(&victim).expect("served while down"),
            10 - 2 * (position - 1)
        );
        assert!(!scaler
            .is_active(&victim_quiet)
            .expect("activity while down"));
        assert!(!scaler
            .is_active(&ACTIVE_ABOVE_100)
            .expect("bystander fresh"));
        // The victim consumes one record per partition: only a watcher that polls again
        // sees the new lag.
        broker.commit(
            "victim",
            &[("events", 0, position), ("events", 1, position)],
        );
        let lag_now = 10 - 2 * position;
        let restarted = wait_for(Duration::from_secs(6), || {
            (scaler.lag(&victim).ok()? == lag_now).then(|| died.elapsed())
        });
        restart_times.push(restarted.expect("the watcher was not restarted"));
    }
    println!("watcher panics: fresh again after {restart_times:?}");
    // Backoff: 1 s after the first death was noticed, 2 s after the second in a row (the
    // supervisor wakes when a restart is due), plus the new watcher's first poll.
    assert!(
        restart_times[0] >= Duration::from_millis(900),
        "{restart_times:?}"
    );
    assert!(
        restart_times[1] >= Duration::from_millis(1900),
        "{restart_times:?}"
    );
    assert!(restart_times[1] > restart_times[0], "{restart_times:?}");
    assert_eq!(scaler.daemon().watch_count(), 2);

    // Survived, but not forgotten: the shutdown reports both panics.
    match scaler.shutdown() {
        Err(StopError::Watches(err)) => assert_eq!((err.panicked, err.unjoined), (2, 0)),
        other => panic!("shutdown after two watcher panics: {other:?}"),
    }
}

#[test]
fn ten_thousand_watches_come_and_go_without_leaking() {
    const WATCHES: usize = 10_000;
    let broker = Kafka::start();
    load(&broker);
    let scaler = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_POLL_INTERVAL", "30m"),
            ("SCALER_RATE_WINDOW", "1h"),
            ("SCALER_WATCH_TTL", "1s"),
            ("SCALER_DEBUG", "false"),
        ],
    );
    let client = scaler.client();
    assert_eq!(client.lag(&GROUP).expect("warm-up watch"), 8);
    // Let the warm-up watch expire: the baseline has no watch at all (with the commit stream
    // on, its reader, started by the warm-up watch, stays: one per cluster, not per watch).
    let idle = wait_for(Duration::from_secs(10), || {
        let before = scaler.threads_and_fds();
        std::thread::sleep(Duration::from_millis(1500));
        (scaler.threads_and_fds() == before).then_some(())
    });
    assert!(idle.is_some());
    std::thread::sleep(Duration::from_secs(2));
    let (threads_before, fds_before) = scaler.threads_and_fds();
    let rss_before = crate::support::rss_kb(scaler.pid());

    // Two rounds: the first shows threads and fds return to baseline, the second that
    // memory levels off instead of growing with every watch ever seen.
    let mut rss_after_round = Vec::new();
    for round in 0..2 {
        let started = Instant::now();
        let mut peak_threads = 0;
        for i in 0..WATCHES {
            let group = format!("churn-{round}-{i}");
            let metadata = [("consumerGroup", group.as_str()), ("topic", "events")];
            client.metric_spec(&metadata).expect("GetMetricSpec");
            if i % 500 == 0 {
                peak_threads = peak_threads.max(scaler.threads_and_fds().0);
            }
        }
        let created_in = started.elapsed();
        let settled = wait_for(Duration::from_secs(30), || {
            (scaler.threads_and_fds() == (threads_before, fds_before)).then_some(())
        });
        let rss = crate::support::rss_kb(scaler.pid());
        println!(
            "watch churn round {round}: {WATCHES} watches in {created_in:?}, peak \
             {peak_threads} threads, threads/fds {:?} -> {:?}, RSS {rss_before} -> {rss} KiB",
            (threads_before, fds_before),
            scaler.threads_and_fds()
        );
        assert!(
            settled.is_some(),
            "threads and fds {:?}, baseline {:?}",
            scaler.threads_and_fds(),
            (threads_before, fds_before)
        );
        rss_after_round.push(rss);
    }
    // The allocator may keep what the first 10,000 watches used, but the next 10,000 must
    // not add to it.
    assert!(
        rss_after_round[1] < rss_after_round[0] + 8 * 1024,
        "RSS {rss_before} KiB -> {rss_after_round:?} KiB"
    );
    assert!(
        rss_after_round[0] < rss_before + 64 * 1024,
        "RSS {rss_before} KiB -> {rss_after_round:?} KiB"
    );
    assert!(
        client.lag(&GROUP).is_ok(),
        "still serving; log:\n{}",
        scaler.log()
    );
}

#[test]
fn a_watcher_that_cannot_start_is_retried_with_backoff_and_still_expires() {
    let broker = Kafka::shared();
    broker.create_topic("spawn-events", 1);
    broker.produce("spawn-events", 0, 5);
    broker.commit("spawn-group", &[("spawn-events", 0, 1)]);
    let trigger = [("consumerGroup", "spawn-group"), ("topic", "spawn-events")];
    let scaler = Scaler::start(
        &broker.bootstrap(),
        Duration::from_millis(200),
        Duration::from_secs(3),
    );
    // A pids limit refuses the first two thread starts of this watch.
    hooks::fail_watcher_spawn_once("spawn-group");
    hooks::fail_watcher_spawn_once("spawn-group");
    let asked = Instant::now();
    let refused = scaler.lag(&trigger).expect_err("no watcher yet");
    assert_eq!(refused.code(), RpcStatusCode::UNAVAILABLE, "{refused:?}");
    assert!(
        refused.message().contains("cannot start a watcher thread"),
        "{refused:?}"
    );
    // Retried after 1 s, then 2 s (each plus up to one 1 s supervisor tick): fresh by then.
    let fresh = wait_for(Duration::from_secs(10), || {
        scaler.lag(&trigger).ok().map(|lag| (lag, asked.elapsed()))
    });
    let (lag, after) = fresh.expect("the watcher never started");
    assert_eq!(lag, 4);
    println!("watcher started after two refused spawns, {after:?} after the first ask");
    assert!(after >= Duration::from_millis(2900), "{after:?}");
    assert_eq!(scaler.daemon().watch_count(), 1);

    // A watch whose thread never starts still expires once nobody asks (TTL 3 s).
    hooks::fail_watcher_spawn_once("spawn-other");
    let other = [("consumerGroup", "spawn-other"), ("topic", "spawn-events")];
    let _ = scaler.lag(&other);
    assert_eq!(scaler.daemon().watch_count(), 2);
    let expired = wait_for(Duration::from_secs(12), || {
        (scaler.daemon().watch_count() == 0).then_some(())
    });
    assert!(
        expired.is_some(),
        "a watch whose thread failed to start never expired"
    );
    scaler.stop();
}

#[test]
fn a_restarted_watcher_starts_with_an_empty_window_so_eta_waits_for_two_samples() {
    let broker = Kafka::shared();
    broker.create_topic("window-events", 1);
    broker.produce("window-events", 0, 9);
    broker.commit("window-group", &[("window-events", 0, 3)]);
    // A long poll, so that the stretch with one sample lasts long enough to be seen.
    let scaler = Scaler::start(
        &broker.bootstrap(),
        Duration::from_millis(1500),
        Duration::from_secs(600),
    );
    let eta = [
        ("consumerGroup", "window-group"),
        ("topic", "window-events"),
        ("metric", "eta"),
        ("targetEtaSeconds", "60"),
    ];
    let fresh_probe = [
        ("consumerGroup", "window-group"),
        ("topic", "window-events"),
        ("activationLagThreshold", "100"),
    ];
    let known = wait_for(Duration::from_secs(10), || scaler.get_metrics(&eta).ok());
    assert!(known.is_some(), "the ETA never became known");

    hooks::panic_watcher_once("window-group");
    let died = wait_for(Duration::from_secs(5), || {
        (scaler.daemon().watcher_panics() == 1).then_some(())
    });
    assert!(died.is_some(), "the injected panic was not noticed");
    // While the watcher is down its last good sample, with rates, is served as it stood;
    // the new watcher's first sample has fresh lag, but no rates yet.
    let restarted = wait_for(Duration::from_secs(8), || {
        scaler
            .get_metrics(&eta)
            .err()
            .filter(|status| status.message().contains("two samples"))
    });
    let status = restarted.expect("the watcher was not restarted");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");
    assert_eq!(scaler.lag(&fresh_probe).expect("lag is known at once"), 6);
    // Known again from the second sample on.
    let again = wait_for(Duration::from_secs(5), || scaler.get_metrics(&eta).ok());
    assert!(again.is_some(), "the ETA did not come back");
    let _ = scaler.shutdown();
}

#[test]
fn reconnects_to_a_dead_broker_back_off_instead_of_storming() {
    const WATCHES: usize = 20;
    let mut broker = Kafka::start();
    load(&broker);
    let scaler = start_scaler(&broker);
    let client = scaler.client();
    let groups: Vec<String> = (0..WATCHES).map(|n| format!("storm-{n}")).collect();
    for group in &groups {
        let metadata = [("consumerGroup", group.as_str()), ("topic", "events")];
        client
            .lag(&metadata)
            .unwrap_or_else(|err| panic!("{group}: {err:?}"));
    }
    let port: u16 = broker
        .bootstrap()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the broker's port");
    broker.kill_node(0);
    // The broker's port now answers every connection by closing it, and counts them by the
    // client id of the request each sends first (lagscaler's client, and in stream mode its
    // commit reader's).
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    listener.set_nonblocking(true).expect("nonblocking");
    let window = Duration::from_secs(6);
    let started = Instant::now();
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    while started.elapsed() < window {
        match listener.accept() {
            Ok((socket, _)) => {
                *attempts.entry(client_id(socket)).or_default() += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    let polls = WATCHES as f64 * window.as_secs_f64() / 0.2;
    let total: usize = attempts.values().sum();
    println!(
        "{total} connection attempts in {window:?} from {WATCHES} watches polling every \
         200 ms ({polls:.0} polls), by client id: {attempts:?}"
    );
    // librdkafka keeps one connection per broker (here the bootstrap address and the node
    // it names, both this port; the commit reader its group coordinator's too) and backs off
    // from 100 ms to 1 s: about 7 attempts each in 6 s, never one per poll. Before the
    // librdkafka patch on reconnect backoff (vendor/rdkafka-sys/PATCHED.md), coordinator
    // requests waiting for the dead broker made it reconnect at once, every 5 ms: 25 to 85
    // attempts from lagscaler's client in 3 runs of 13.
    assert!(total >= 2, "no reconnect at all");
    for (client, count) in &attempts {
        assert!(
            (*count as f64) < polls / 20.0,
            "{count} connection attempts from {client} for {polls} polls: {attempts:?}"
        );
    }
}

/// The client id of the first request a connection sends (Kafka's request header: size,
/// API key, version, correlation id, then the client id as a 16-bit length and bytes), or
/// why there is none.
fn client_id(mut socket: std::net::TcpStream) -> String {
    use std::io::Read;
    let _ = socket.set_nonblocking(false);
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let mut header = [0u8; 14];
    if socket.read_exact(&mut header).is_err() {
        return "(no request)".to_owned();
    }
    let length = usize::from(u16::from_be_bytes([header[12], header[13]]));
    let mut id = vec![0u8; length.min(256)];
    match socket.read_exact(&mut id) {
        Ok(()) => String::from_utf8_lossy(&id).into_owned(),
        Err(_) => "(cut short)".to_owned(),
    }
}
