//! The commit stream (`SCALER_COMMIT_SOURCE`): committed offsets read from
//! `__consumer_offsets` as groups commit, against what the groups committed and what
//! OffsetFetch answers, on Apache Kafka.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;
use lagscaler::config::{CommitSource, KafkaSasl, SaslMechanism, Secret};
use lagscaler::kafka::CommitsFrom;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::support::{wait_for, Kafka, Listener, Process, Scaler, ALICE_PASSWORD};

const POLL: Duration = Duration::from_millis(300);

/// The group whose offsets a test commits in transactions.
const TXN_GROUP: &str = "txn-committers";
const TTL: Duration = Duration::from_secs(600);

/// What one group committed: (when the commit was asked, when the broker acknowledged it,
/// the sum of its committed offsets over the topic's partitions after it), oldest first.
type Committed = Arc<Mutex<Vec<(Instant, Option<Instant>, i64)>>>;

/// A member-less committer of `group` on `partitions` partitions of `topic`: every 10 to
/// 400 ms (pseudo-random) it commits one partition a few records further, up to `end`,
/// until `stop`; every commit is recorded before it is asked.
fn committer(
    broker: &Kafka,
    group: String,
    topic: &'static str,
    partitions: i32,
    end: i64,
    stop: Arc<AtomicBool>,
) -> (Committed, thread::JoinHandle<()>) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create the committer");
    let now = Instant::now();
    let committed: Committed = Arc::new(Mutex::new(vec![(now, Some(now), 0)]));
    let log = Arc::clone(&committed);
    let seed = group
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let handle = thread::Builder::new()
        .name(format!("commit-{group}"))
        .spawn(move || {
            let mut random = seed;
            let mut next = || {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                random
            };
            let mut offsets = vec![0i64; partitions as usize];
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(10 + next() % 390));
                let partition = (next() % partitions as u64) as usize;
                offsets[partition] = (offsets[partition] + 1 + (next() % 20) as i64).min(end);
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(
                    topic,
                    partition as i32,
                    Offset::Offset(offsets[partition]),
                )
                .expect("offset");
                log.lock()
                    .push((Instant::now(), None, offsets.iter().sum()));
                consumer
                    .commit(&list, CommitMode::Sync)
                    .unwrap_or_else(|err| panic!("commit for {group}: {err}"));
                if let Some(last) = log.lock().last_mut() {
                    last.1 = Some(Instant::now());
                }
            }
        })
        .expect("spawn a committer");
    (committed, handle)
}

/// The sum committed by `at` by the log: the last commit asked at or before it (what an
/// answer may already show).
fn asked_by(log: &[(Instant, Option<Instant>, i64)], at: Instant) -> i64 {
    log.iter()
        .take_while(|(asked, _, _)| *asked <= at)
        .last()
        .map_or(0, |(_, _, sum)| *sum)
}

/// The sum the broker had acknowledged by `at`: the last commit acknowledged at or before
/// it (what an answer must show a poll later).
fn acknowledged_by(log: &[(Instant, Option<Instant>, i64)], at: Instant) -> i64 {
    log.iter()
        .rfind(|(_, acked, _)| acked.is_some_and(|acked| acked <= at))
        .map_or(0, |(_, _, sum)| *sum)
}

#[test]
fn the_commit_stream_follows_every_commit_with_no_offset_fetch_per_poll() {
    const GROUPS: usize = 10;
    const PARTITIONS: i32 = 4;
    const END: i64 = 1_000;
    const RUN: Duration = Duration::from_secs(15);
    let broker = Kafka::shared();
    broker.create_topic("streamed", PARTITIONS as u32);
    for partition in 0..PARTITIONS {
        broker.produce("streamed", partition, END as usize);
    }
    // Groups whose commits share no partition of __consumer_offsets with the group that
    // `transactional_commits_count_once_committed_never_when_aborted` holds a transaction
    // open on: while one is open, a partition's commits come from OffsetFetch (README).
    let partitions = broker.offsets_topic_partitions();
    let busy = lagscaler::consumer_offsets::coordinator_partition(TXN_GROUP, partitions);
    let groups: Vec<String> = (0..)
        .map(|i| format!("streamed-{i}"))
        .filter(|group| {
            lagscaler::consumer_offsets::coordinator_partition(group, partitions) != busy
        })
        .take(GROUPS)
        .collect();
    for group in &groups {
        let zeros: Vec<(&str, i32, i64)> = (0..PARTITIONS).map(|p| ("streamed", p, 0)).collect();
        broker.commit(group, &zeros);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // The groups commit from before their watches start: the bootstrap races them.
    let committers: Vec<(String, Committed, thread::JoinHandle<()>)> = groups
        .iter()
        .map(|group| {
            let (log, handle) = committer(
                broker,
                group.clone(),
                "streamed",
                PARTITIONS,
                END,
                Arc::clone(&stop),
            );
            (group.clone(), log, handle)
        })
        .collect();
    let mut config = Scaler::config(&broker.bootstrap(), POLL, TTL);
    config.kafka.stats_interval = Some(Duration::from_millis(250));
    config.kafka.commit_source = CommitSource::Stream;
    let scaler = Scaler::start_with(config);

    let total = END * i64::from(PARTITIONS);
    let mut last_seen: BTreeMap<String, i64> = BTreeMap::new();
    let (mut calls, mut stale, mut ahead, mut back) = (0, Vec::new(), Vec::new(), Vec::new());
    let mut requests_at_start = None;
    let mut latest_miss = Duration::ZERO;
    let started = Instant::now();
    while started.elapsed() < RUN {
        for (group, log, _) in &committers {
            // No partition cap: the metric is the whole lag.
            let metadata = [
                ("consumerGroup", group.as_str()),
                ("topic", "streamed"),
                ("allowIdleConsumers", "true"),
            ];
            let asked = Instant::now();
            let lag = scaler
                .lag(&metadata)
                .unwrap_or_else(|err| panic!("{group}: {err:?}"));
            let seen = total - lag;
            calls += 1;
            let log = log.lock();
            // Never ahead of what was asked to be committed, never older than what the broker
            // had acknowledged a poll and a second before the call, never going back.
            if seen > asked_by(&log, Instant::now()) {
                ahead.push((group.clone(), seen, asked_by(&log, Instant::now())));
            }
            let due = acknowledged_by(&log, asked - POLL - Duration::from_secs(1));
            if seen < due {
                stale.push((group.clone(), seen, due));
            }
            // How long before the call the first commit the answer does not show was
            // acknowledged.
            if let Some((_, Some(missed), _)) = log.iter().find(|(_, _, sum)| *sum > seen) {
                latest_miss = latest_miss.max(asked.saturating_duration_since(*missed));
            }
            if last_seen.get(group).is_some_and(|before| seen < *before) {
                back.push((group.clone(), seen, last_seen[group]));
            }
            last_seen.insert(group.clone(), seen);
        }
        if requests_at_start.is_none() && started.elapsed() > Duration::from_secs(2) {
            requests_at_start = scaler.daemon().kafka_requests();
        }
        thread::sleep(Duration::from_millis(50));
    }
    let requests_at_end = scaler.daemon().kafka_requests().expect("statistics");
    stop.store(true, Ordering::Relaxed);
    let mut commits = 0;
    for (_, log, handle) in committers {
        handle.join().expect("committer");
        commits += log.lock().len();
    }
    let offset_fetches = |counts: &Option<lagscaler::kafka::RequestCounts>| {
        counts
            .as_ref()
            .and_then(|counts| counts.get("OffsetFetch").copied())
            .unwrap_or(0)
    };
    let fetched =
        offset_fetches(&Some(requests_at_end.clone())) - offset_fetches(&requests_at_start);
    eprintln!(
        "commit stream: {commits} commits by {GROUPS} groups, {calls} calls: {} stale, {} \
         ahead, {} gone back; {fetched} OffsetFetch in the last {:?}; an answer missed \
         commits acknowledged at most {latest_miss:?} before it",
        stale.len(),
        ahead.len(),
        back.len(),
        RUN - Duration::from_secs(2)
    );
    let first = |found: &[(String, i64, i64)]| found.iter().take(5).cloned().collect::<Vec<_>>();
    assert!(
        stale.is_empty(),
        "stale answers, the first: {:?}",
        first(&stale)
    );
    assert!(
        ahead.is_empty(),
        "answers ahead of the commits, the first: {:?}",
        first(&ahead)
    );
    assert!(
        back.is_empty(),
        "answers that went back, the first: {:?}",
        first(&back)
    );
    // Bootstrapped in the first seconds; after that the stream alone (an OffsetFetch only
    // when the reader is found behind, which a loaded machine may cause now and then).
    let polls = (RUN - Duration::from_secs(2)).as_secs_f64() / POLL.as_secs_f64() * GROUPS as f64;
    assert!(
        (fetched as f64) < 0.1 * polls,
        "{fetched} OffsetFetch for {polls} polls: {requests_at_end:?}"
    );
    assert_eq!(scaler.daemon().commits_from(), CommitsFrom::Stream);
    scaler.stop();
}

/// lagscaler logged in to `broker` as alice (SCRAM), reading commits from `source`.
fn as_alice(broker: &Kafka, source: CommitSource) -> Scaler {
    let mut config = Scaler::config(&broker.bootstrap_for(Listener::SaslPlaintext), POLL, TTL);
    config.kafka.sasl = Some(KafkaSasl {
        mechanism: SaslMechanism::ScramSha512,
        username: "alice".to_owned(),
        password: Secret(ALICE_PASSWORD.to_owned()),
        oauth: None,
        kerberos: None,
    });
    config.kafka.commit_source = source;
    Scaler::start_with(config)
}

/// Where `__consumer_offsets` cannot be read (an ACL denies it), `auto` reads committed
/// offsets with OffsetFetch and says so; `stream` fails the polls naming the stream.
#[test]
fn where_the_commit_topic_is_denied_auto_falls_back_and_stream_refuses() {
    let broker = Kafka::start_with_acls();
    broker.create_topic("guarded", 2);
    broker.produce("guarded", 0, 6);
    broker.produce("guarded", 1, 4);
    broker.commit("guarded-readers", &[("guarded", 0, 2), ("guarded", 1, 1)]);
    broker.deny("User:alice", &["Read", "Describe"], "__consumer_offsets");
    let as_alice = |source: CommitSource| as_alice(&broker, source);
    let metadata = [("consumerGroup", "guarded-readers"), ("topic", "guarded")];

    let auto = as_alice(CommitSource::Auto);
    assert_eq!(auto.lag(&metadata).expect("lag from OffsetFetch"), 7);
    let CommitsFrom::FetchFallback(why) = auto.daemon().commits_from() else {
        panic!("{:?}", auto.daemon().commits_from());
    };
    assert!(why.contains("uthoriz"), "{why}");
    // It follows commits all the same.
    broker.commit("guarded-readers", &[("guarded", 0, 6)]);
    let followed = wait_for(Duration::from_secs(10), || {
        (auto.lag(&metadata).ok()? == 3).then_some(())
    });
    assert!(followed.is_some(), "{:?}", auto.lag(&metadata));
    auto.stop();

    let strict = as_alice(CommitSource::Stream);
    let status = strict.lag(&metadata).expect_err("no stream");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(status.message().contains("commit stream"), "{status:?}");
    strict.stop();

    // The anonymous principal may read it: the stream.
    let mut config = Scaler::config(&broker.bootstrap(), POLL, TTL);
    config.kafka.commit_source = CommitSource::Stream;
    let allowed = Scaler::start_with(config);
    assert_eq!(allowed.lag(&metadata).expect("lag from the stream"), 3);
    assert_eq!(allowed.daemon().commits_from(), CommitsFrom::Stream);
    allowed.stop();
}

/// Where a principal may do only what an ACL allows (`allow.everyone.if.no.acl.found=false`),
/// Read on `__consumer_offsets` is all the stream needs: the reader's own group id, which
/// librdkafka looks up although the reader never joins it, may be refused
/// (GROUP_AUTHORIZATION_FAILED) without the topic being called refused.
#[test]
fn the_commit_stream_needs_read_on_its_topic_and_nothing_on_its_own_group() {
    let broker = Kafka::start_with_strict_acls();
    broker.create_topic("strict", 2);
    broker.produce("strict", 0, 6);
    broker.produce("strict", 1, 4);
    broker.commit("strict-readers", &[("strict", 0, 2), ("strict", 1, 1)]);
    // What a watch of the group needs, and Read on the commit topic.
    broker.allow("User:alice", &["Read"], ["--topic", "strict"]);
    broker.allow("User:alice", &["Describe"], ["--group", "strict-readers"]);
    broker.allow("User:alice", &["Read"], ["--topic", "__consumer_offsets"]);
    let metadata = [("consumerGroup", "strict-readers"), ("topic", "strict")];
    for (step, source) in [CommitSource::Auto, CommitSource::Stream]
        .into_iter()
        .enumerate()
    {
        let step = step as i64;
        let lag = 7 - step;
        let scaler = as_alice(&broker, source);
        assert_eq!(
            scaler
                .lag(&metadata)
                .map_err(|s| format!("{source:?}: {s:?}")),
            Ok(lag)
        );
        // A commit is followed, and polls go on for a while, so that the refusal of the
        // reader's own group has come.
        broker.commit("strict-readers", &[("strict", 1, 2 + step)]);
        let followed = wait_for(Duration::from_secs(10), || {
            (scaler.lag(&metadata).ok()? == lag - 1).then_some(())
        });
        assert!(
            followed.is_some(),
            "{source:?}: {:?}",
            scaler.lag(&metadata)
        );
        thread::sleep(10 * POLL);
        assert_eq!(
            scaler
                .lag(&metadata)
                .map_err(|s| format!("{source:?}: {s:?}")),
            Ok(lag - 1)
        );
        assert_eq!(
            scaler.daemon().commits_from(),
            CommitsFrom::Stream,
            "{source:?}"
        );
        scaler.stop();
    }
}

/// Offsets committed inside a transaction (a read-process-write application,
/// `sendOffsetsToTransaction`) count once the transaction commits, never when it aborts or
/// while it is open: the reader reads `__consumer_offsets` read committed, as OffsetFetch
/// answers only stable offsets.
#[test]
fn transactional_commits_count_once_committed_never_when_aborted() {
    use rdkafka::producer::Producer;

    let broker = Kafka::shared();
    broker.create_topic("txn-commits", 1);
    broker.produce("txn-commits", 0, 20);
    broker.commit(TXN_GROUP, &[("txn-commits", 0, 2)]);
    let mut config = Scaler::config(&broker.bootstrap(), POLL, TTL);
    config.kafka.commit_source = CommitSource::Stream;
    let scaler = Scaler::start_with(config);
    let metadata = [
        ("consumerGroup", TXN_GROUP),
        ("topic", "txn-commits"),
        ("allowIdleConsumers", "true"),
    ];
    assert_eq!(scaler.lag(&metadata).expect("lag"), 18);

    let producer = broker.transactional_producer("lagscaler-test-txn-commits");
    let member: BaseConsumer = broker
        .client_config()
        .set("group.id", TXN_GROUP)
        .create()
        .expect("the group's metadata");
    let group = member.group_metadata().expect("group metadata");
    let offsets = |offset: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("txn-commits", 0, Offset::Offset(offset))
            .expect("offset");
        list
    };
    let timeout = Duration::from_secs(30);

    // Aborted: the offset 15 never counts.
    producer.begin_transaction().expect("begin");
    producer
        .send_offsets_to_transaction(&offsets(15), &group, timeout)
        .expect("offsets in the transaction");
    producer.abort_transaction(timeout).expect("abort");
    // Open: offset 12 does not count yet.
    producer.begin_transaction().expect("begin");
    producer
        .send_offsets_to_transaction(&offsets(12), &group, timeout)
        .expect("offsets in the transaction");
    for _ in 0..8 {
        thread::sleep(POLL);
        assert_eq!(scaler.lag(&metadata).expect("lag"), 18);
    }
    // Meanwhile another group whose commits go to the same partition of __consumer_offsets
    // commits plainly: the reader cannot see that commit past the open transaction, but
    // the answer follows it all the same (OffsetFetch while the transaction is open).
    let partitions = broker.offsets_topic_partitions();
    let shared = lagscaler::consumer_offsets::coordinator_partition(TXN_GROUP, partitions);
    let neighbour = (0..)
        .map(|i| format!("txn-neighbour-{i}"))
        .find(|group| {
            lagscaler::consumer_offsets::coordinator_partition(group, partitions) == shared
        })
        .expect("a group on the same partition");
    broker.commit(&neighbour, &[("txn-commits", 0, 4)]);
    let watched = [
        ("consumerGroup", neighbour.as_str()),
        ("topic", "txn-commits"),
        ("allowIdleConsumers", "true"),
    ];
    assert_eq!(scaler.lag(&watched).expect("lag"), 16);
    let plain_commit = Instant::now();
    broker.commit(&neighbour, &[("txn-commits", 0, 10)]);
    let followed = wait_for(Duration::from_secs(10), || {
        (scaler.lag(&watched).ok()? == 10).then(|| plain_commit.elapsed())
    });
    let followed = followed.unwrap_or_else(|| panic!("{:?}", scaler.lag(&watched)));
    assert!(
        followed < POLL + Duration::from_millis(1500),
        "{followed:?}"
    );
    // Committed: 12 counts.
    producer.commit_transaction(timeout).expect("commit");
    let counted = wait_for(Duration::from_secs(10), || {
        (scaler.lag(&metadata).ok()? == 8).then_some(())
    });
    assert!(counted.is_some(), "{:?}", scaler.lag(&metadata));
    assert_eq!(scaler.daemon().commits_from(), CommitsFrom::Stream);
    scaler.stop();
}

/// A group that drains is seen at the next poll after its commit: StreamIsActive pushes
/// `false` and GetMetrics drops to 0, however rarely the group commits.
#[test]
fn a_drained_group_reads_inactive_at_the_next_poll_after_its_commit() {
    const POLL_EVERY: Duration = Duration::from_secs(1);
    let broker = Kafka::shared();
    broker.create_topic("drained", 2);
    broker.produce("drained", 0, 30);
    broker.produce("drained", 1, 30);
    broker.commit(
        "drained-committers",
        &[("drained", 0, 5), ("drained", 1, 5)],
    );
    let mut config = Scaler::config(&broker.bootstrap(), POLL_EVERY, TTL);
    config.kafka.commit_source = CommitSource::Stream;
    let scaler = Scaler::start_with(config);
    let metadata = [
        ("consumerGroup", "drained-committers"),
        ("topic", "drained"),
    ];
    let stream = scaler.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(5));
    assert!(
        matches!(first, Some(crate::support::StreamEvent::Message(true, _))),
        "{first:?}"
    );
    // Three quiet polls, then one commit of everything (a group committing once a minute).
    thread::sleep(3 * POLL_EVERY);
    let committed = Instant::now();
    broker.commit(
        "drained-committers",
        &[("drained", 0, 30), ("drained", 1, 30)],
    );
    let next = stream.next(Duration::from_secs(10));
    let Some(crate::support::StreamEvent::Message(false, at)) = next else {
        panic!("no inactive push: {next:?}");
    };
    let after = at.duration_since(committed);
    eprintln!(
        "drained: StreamIsActive false {after:?} after the commit (poll every {POLL_EVERY:?})"
    );
    // The commit call itself, then at most one poll interval, with room for a loaded machine.
    assert!(
        after < POLL_EVERY + Duration::from_millis(1500),
        "{after:?}"
    );
    assert_eq!(scaler.lag(&metadata).expect("lag"), 0);
    assert_eq!(scaler.daemon().commits_from(), CommitsFrom::Stream);
    stream.cancel();
    scaler.stop();
}

#[test]
fn watches_polling_for_the_first_time_together_start_one_commit_reader() {
    const WATCHES: usize = 16;
    let broker = Kafka::shared();
    let topic = "one-reader";
    broker.create_topic(topic, 2);
    broker.produce(topic, 0, 3);
    let groups: Vec<String> = (0..WATCHES).map(|n| format!("one-reader-{n}")).collect();
    for group in &groups {
        broker.commit(group, &[(topic, 0, 1), (topic, 1, 0)]);
    }
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_COMMIT_SOURCE", "auto"),
            ("SCALER_POLL_INTERVAL", "1s"),
        ],
    );
    // Every watch's first poll at once, as when KEDA (re)connects with many ScaledObjects:
    // GetMetricSpec answers without waiting for a poll, so the watches start together.
    let client = process.client();
    for group in &groups {
        let watch = [("consumerGroup", group.as_str()), ("topic", topic)];
        client.metric_spec(&watch).expect("GetMetricSpec");
    }
    for group in &groups {
        let watch = [("consumerGroup", group.as_str()), ("topic", topic)];
        let answered = client.wait_for_lag(&watch, 2, Duration::from_secs(10));
        assert!(answered.is_some(), "{group}");
    }
    let log = process.log();
    let started = log.matches("commit reader started").count();
    assert_eq!(
        started, 1,
        "{started} commit readers started for one cluster (each a librdkafka consumer and a \
         thread):\n{log}"
    );
}
