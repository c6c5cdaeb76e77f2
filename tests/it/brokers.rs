//! What Apache Kafka itself does to the numbers: batched, lz4-compressed produce and a real
//! consumer's commits give exactly the lag an independent reading gives (and Kafka's own
//! `kafka-consumer-groups`), and a three-node cluster keeps the answers honest through a
//! killed node and exact through a rolling restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::{wait_for, Background, Kafka, Process, Scaler, StreamEvent};

const POLL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(600);

/// Lag as `kafka-consumer-groups` computes it, from a client of its own: for each partition
/// of `topic`, the high watermark minus the group's committed offset (read uncommitted, as
/// the tool does). `None` while a partition has no commit.
fn independent_lag(broker: &Kafka, group: &str, topic: &str, partitions: i32) -> Option<i64> {
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("create the independent reader");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = reader
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    let mut lag = 0;
    for element in committed.elements() {
        let Offset::Offset(offset) = element.offset() else {
            return None;
        };
        let (_, high) = reader
            .fetch_watermarks(topic, element.partition(), Duration::from_secs(10))
            .expect("watermarks");
        lag += high - offset;
    }
    Some(lag)
}

/// The total of the LAG column `kafka-consumer-groups --describe` prints for `topic`.
fn consumer_groups_tool_lag(broker: &Kafka, group: &str, topic: &str) -> i64 {
    let output = broker.run_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--describe", "--group", group],
    );
    let rows: Vec<i64> = output
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
            (columns.get(1) == Some(&topic)).then(|| columns.get(5)?.parse().ok())?
        })
        .collect();
    assert!(!rows.is_empty(), "no row for {topic}:\n{output}");
    rows.iter().sum()
}

#[test]
fn batched_lz4_records_and_real_commits_give_the_exact_lag_each_poll() {
    const TOPIC: &str = "exact-lz4";
    const GROUP: &str = "exact-readers";
    const PARTITIONS: i32 = 6;
    const BATCH: usize = 500;
    // 10,000 records, unevenly spread, each partition in batches of 500.
    const PER_PARTITION: [usize; 6] = [2000, 1500, 2500, 1000, 1500, 1500];
    let total: i64 = PER_PARTITION.iter().sum::<usize>() as i64;
    let broker = Kafka::shared();
    broker.create_topic(TOPIC, PARTITIONS as u32);
    for (partition, count) in PER_PARTITION.iter().enumerate() {
        for _ in 0..count / BATCH {
            broker.produce(TOPIC, partition as i32, BATCH);
        }
    }

    // A real member of the group: it subscribes, reads, and commits what it read; first 0
    // everywhere, so that every partition has a known commit.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("create the group member");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let assigned = wait_for(Duration::from_secs(30), || {
        let _ = consumer.poll(Duration::from_millis(100));
        let count = consumer.assignment().map(|list| list.count()).ok()?;
        (count == PARTITIONS as usize).then_some(())
    });
    assert!(
        assigned.is_some(),
        "no assignment of all partitions in 30 s"
    );
    let mut next: HashMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let commit = |next: &HashMap<i32, i64>| {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            list.add_partition_offset(TOPIC, *partition, Offset::Offset(*offset))
                .expect("add offset");
        }
        consumer
            .commit(&list, CommitMode::Sync)
            .expect("commit what was read");
    };
    commit(&next);

    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    // Without the cap at partitions × lagThreshold, the metric is the whole lag.
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("allowIdleConsumers", "true"),
    ];
    let mut consumed = 0i64;
    let mut checked_polls = 0;
    for step in [0, 1700, 1700, 1700, 1700, 1700, 1500] {
        let until = consumed + step;
        let deadline = Instant::now() + Duration::from_secs(30);
        while consumed < until {
            assert!(
                Instant::now() < deadline,
                "read {consumed} of {until} in 30 s"
            );
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("read a record");
            next.insert(message.partition(), message.offset() + 1);
            consumed += 1;
        }
        commit(&next);
        let expected = total - consumed;
        let independent = independent_lag(broker, GROUP, TOPIC, PARTITIONS);
        assert_eq!(independent, Some(expected), "after reading {consumed}");
        let seen = scaler.wait_for_lag(&metadata, expected, 4 * POLL + Duration::from_secs(2));
        assert!(
            seen.is_some(),
            "lag {expected} not seen after reading {consumed}: {:?}",
            scaler.lag(&metadata)
        );
        // Nothing moves now: every later poll gives the same exact number.
        for _ in 0..3 {
            std::thread::sleep(POLL);
            assert_eq!(scaler.lag(&metadata).expect("lag"), expected);
            checked_polls += 1;
        }
        if consumed == 8500 {
            // Kafka's own tool agrees, while 1,500 records are left.
            assert_eq!(consumer_groups_tool_lag(broker, GROUP, TOPIC), expected);
        }
    }
    println!(
        "Apache Kafka {}: exact lag over {checked_polls} polls, from {total} to 0",
        crate::support::kafka_version()
    );
    scaler.stop();
}

/// What a checker saw: how many answers, those that broke its rule, and the stretches in
/// which lagscaler said that its latest good sample was stale (UNAVAILABLE naming the
/// stale bound, as it must once Kafka has not answered a watch's polls for
/// SCALER_STALE_AFTER), each as (since the checker started, how long).
struct Checked {
    asked: usize,
    /// Each wrong answer: when (since the checker started) and what.
    wrong: Vec<(Duration, String)>,
    stale: Vec<(Duration, Duration)>,
}

impl Checked {
    /// The stale stretches that began before `before` (since the checker started).
    fn stale_before(&self, before: Duration) -> Vec<(Duration, Duration)> {
        self.stale
            .iter()
            .copied()
            .filter(|(began, _)| *began < before)
            .collect()
    }

    /// The longest stale stretch.
    fn longest_stale(&self) -> Duration {
        self.stale
            .iter()
            .map(|(_, lasted)| *lasted)
            .max()
            .unwrap_or_default()
    }
}

/// Asks `ask` every 100 ms on a thread of its own until finished: `judge` says what is
/// wrong with an answer (`None` when it is right). A stale answer (UNAVAILABLE saying "stale
/// after") is neither: it is timed in [`Checked::stale`]. Any other error is wrong.
fn check<T: std::fmt::Debug + 'static>(
    name: &str,
    mut ask: impl FnMut() -> Result<T, grpcio::RpcStatus> + Send + 'static,
    mut judge: impl FnMut(T) -> Option<String> + Send + 'static,
) -> Background<Checked> {
    Background::spawn(name, move |stop| {
        let started = Instant::now();
        let mut checked = Checked {
            asked: 0,
            wrong: Vec::new(),
            stale: Vec::new(),
        };
        let mut stale_since = None;
        while !stop.load(Ordering::Relaxed) {
            let at = started.elapsed();
            let answer = ask();
            let stale = matches!(&answer, Err(status)
                if status.code() == grpcio::RpcStatusCode::UNAVAILABLE
                    && status.message().contains("stale after"));
            match (stale, stale_since) {
                (true, None) => stale_since = Some(at),
                (false, Some(since)) => {
                    checked.stale.push((since, at - since));
                    stale_since = None;
                }
                _ => {}
            }
            let asked = checked.asked;
            match answer {
                Ok(value) => {
                    if let Some(why) = judge(value) {
                        checked
                            .wrong
                            .push((at, format!("{why} at {at:?}, answer {asked}")));
                    }
                }
                Err(_) if stale => {}
                Err(status) => checked
                    .wrong
                    .push((at, format!("{status:?} at {at:?}, answer {asked}"))),
            }
            checked.asked += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(since) = stale_since {
            checked.stale.push((since, started.elapsed() - since));
        }
        checked
    })
}

/// Asks for a watch's lag every 100 ms while a cluster goes through incidents ([`check`]):
/// only records are added, so each answer is a number at least the previous one and at
/// most what was produced (`produced`, raised before each record is sent).
fn check_lag(
    process: &Process,
    metadata: &[(&'static str, &'static str)],
    produced: Arc<AtomicI64>,
) -> Background<Checked> {
    let client = process.client();
    let metadata = metadata.to_vec();
    let mut last = 0;
    check(
        "test-lag-checker",
        move || client.lag(&metadata),
        move |lag| {
            let most = produced.load(Ordering::SeqCst);
            if (last..=most).contains(&lag) {
                last = lag;
                return None;
            }
            Some(format!("lag {lag} (previous {last}, at most {most})"))
        },
    )
}

/// Asks whether a quiet watch is active every 100 ms ([`check`]): "inactive" is the only
/// right number.
fn check_quiet(
    process: &Process,
    metadata: &[(&'static str, &'static str)],
) -> Background<Checked> {
    let client = process.client();
    let metadata = metadata.to_vec();
    check(
        "test-idle-checker",
        move || client.is_active(&metadata),
        |active| active.then(|| "active".to_owned()),
    )
}

/// The node id of the broker that coordinates `group`: the leader of the partition of
/// `__consumer_offsets` Kafka assigns it (the Java hash of its name, modulo the partitions).
fn coordinator_of(cluster: &Kafka, group: &str) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(unit as i32)
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    let client: BaseConsumer = cluster.client_config().create().expect("metadata client");
    let metadata = client
        .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10))
        .expect("metadata of __consumer_offsets");
    let partitions = metadata.topics()[0].partitions();
    assert!(
        !partitions.is_empty(),
        "__consumer_offsets has no partitions"
    );
    partitions[abs as usize % partitions.len()].leader()
}

/// Three nodes, replication factor 3: first one ListOffsets per leader broker and end
/// per cycle, then a node killed and restarted, every node restarted in turn, then every
/// node moved to another port. lagscaler polls every 300 ms but serves
/// a failed poll's last good answer for 20 s (SCALER_STALE_AFTER, what the default 5 s poll
/// gives), as in production. Throughout, a KEDA-like client asking every 100 ms never gets
/// a number that is not a true lag, nor an error other than "stale" (UNAVAILABLE once no
/// poll has been answered for 20 s, as happens when a group's coordinator is killed and a
/// loaded machine takes that long to bring a new one), and an open StreamIsActive never
/// says inactive. A second, idle watch (lag 0, idle window 3 s) on a topic whose
/// partitions the killed node also leads, of a group another node coordinates, is never
/// answered active, but for up to its idle window after a stale stretch (nothing known for
/// longer than the stale bound leaves the window uncovered); while that node is down and
/// until the restarts reach its own coordinator it is never stale, and its polls do not
/// fail: the offsets read before stand in for the partitions without a leader. Every stale
/// stretch ends by itself.
#[test]
fn a_three_node_cluster_answers_honestly_through_a_killed_node_and_a_rolling_restart() {
    const TOPIC: &str = "replicated";
    const GROUP: &str = "replicated-readers";
    let mut cluster = Kafka::start_cluster();
    assert_eq!(cluster.node_count(), 3);
    cluster.create_topic(TOPIC, 6);
    let mut committed = Vec::new();
    for partition in 0..6 {
        cluster.produce(TOPIC, partition, 100);
        committed.push((TOPIC, partition, 40));
    }
    cluster.commit(GROUP, &committed);
    // The idle watch: every record consumed, of a group whose coordinator survives the kill.
    const QUIET_TOPIC: &str = "replicated-quiet";
    cluster.create_topic(QUIET_TOPIC, 6);
    let mut quiet_commits = Vec::new();
    for partition in 0..6 {
        cluster.produce(QUIET_TOPIC, partition, 10);
        quiet_commits.push((QUIET_TOPIC, partition, 10));
    }
    let killed_id = 1; // node 0's id
    let quiet_group = [
        "quiet-a", "quiet-b", "quiet-c", "quiet-d", "quiet-e", "quiet-f",
    ]
    .into_iter()
    .find(|group| coordinator_of(&cluster, group) != killed_id)
    .expect("a group another node coordinates");
    cluster.commit(quiet_group, &quiet_commits);
    let quiet_leaders = {
        let client: BaseConsumer = cluster.client_config().create().expect("metadata client");
        let metadata = client
            .fetch_metadata(Some(QUIET_TOPIC), Duration::from_secs(10))
            .expect("metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .filter(|partition| partition.leader() == killed_id)
            .count()
    };
    assert!(
        quiet_leaders > 0,
        "node 0 leads no partition of {QUIET_TOPIC}"
    );
    expect_one_list_offsets_per_leader(&cluster, TOPIC, GROUP, 6 * 60);
    // The real binary: if librdkafka fails in the daemon, the child's exit says so.
    let mut process = Process::start(
        &cluster.bootstrap(),
        &[
            ("SCALER_POLL_INTERVAL", "300ms"),
            ("SCALER_STALE_AFTER", "20s"),
            ("SCALER_DEBUG", "false"),
        ],
    );
    let scaler = process.client();
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("allowIdleConsumers", "true"),
    ];
    assert_eq!(scaler.lag(&metadata).expect("lag"), 6 * 60);
    // KEDA's push stream is open through every incident below: the lag never reaches 0,
    // so it must never say "inactive", and it must not end.
    let activity = scaler.stream_is_active(&metadata);
    assert!(
        matches!(
            activity.next(Duration::from_secs(10)),
            Some(StreamEvent::Message(true, _))
        ),
        "the stream's first message is not active"
    );
    let quiet = [
        ("consumerGroup", quiet_group),
        ("topic", QUIET_TOPIC),
        ("idleWindow", "3s"),
    ];
    const QUIET_IDLE_WINDOW: Duration = Duration::from_secs(3);
    let idle = wait_for(Duration::from_secs(30), || {
        (!scaler.is_active(&quiet).ok()?).then_some(())
    });
    assert!(idle.is_some(), "the quiet watch never went idle");
    let quiet_checker = check_quiet(&process, &quiet);
    let checks_started = Instant::now();
    let produced = Arc::new(AtomicI64::new(6 * 60));
    let checker = check_lag(&process, &metadata, Arc::clone(&produced));
    let mut expected = 6 * 60;
    // Adds a record on the node's partition and waits until lagscaler counts it: how long
    // that took.
    let mut count_one = |cluster: &Kafka, node: usize, after: &str| {
        let started = Instant::now();
        expected += 1;
        produced.store(expected, Ordering::SeqCst);
        cluster.produce(TOPIC, node as i32, 1);
        let acknowledged = started.elapsed();
        let seen = scaler.wait_for_lag(&metadata, expected, Duration::from_secs(30));
        assert!(
            seen.is_some(),
            "lag {expected} not seen after {after} node {}: {:?}\n{}\n{}",
            node + 1,
            scaler.lag(&metadata),
            process.log(),
            cluster.log()
        );
        let counted = started.elapsed();
        println!(
            "  {after} node {}: acknowledged after {acknowledged:?}, counted after {counted:?}",
            node + 1
        );
        (acknowledged, counted)
    };

    // A node crashes. Kafka fences it after its 9 s broker session timeout and elects new
    // leaders for its partitions; a record produced then, with the node still down, is
    // counted (fresh answers, not only the last good one).
    let log_before_kill = process.log().len();
    cluster.kill_node(0);
    let killed = Instant::now();
    let observer: BaseConsumer = cluster.client_config().create().expect("metadata client");
    let elected = wait_for(Duration::from_secs(30), || {
        let metadata = observer
            .fetch_metadata(Some(TOPIC), Duration::from_secs(2))
            .ok()?;
        let partitions = metadata.topics().first()?.partitions();
        partitions
            .iter()
            .all(|partition| partition.leader() > 1)
            .then_some(())
    });
    assert!(
        elected.is_some(),
        "no new leaders within 30 s of node 1's death"
    );
    let elected_after = killed.elapsed();
    let (acknowledged, counted) = count_one(&cluster, 0, "re-election without");
    println!(
        "node 1 killed: new leaders after {elected_after:?}, a new record counted {counted:?} \
         later"
    );
    // The idle watch's polls went on through the kill: the partitions node 1 led stood in
    // with their earlier offsets, and no poll failed.
    let log = process.log();
    let during_kill: Vec<&str> = log[log_before_kill..]
        .lines()
        .filter(|line| line.contains(quiet_group))
        .collect();
    for line in &during_kill {
        println!("  {line}");
    }
    assert!(
        during_kill.iter().any(|line| line.contains("stand in")),
        "no stand-in logged for {quiet_group} while node 1 was down: {during_kill:#?}"
    );
    assert!(
        !during_kill
            .iter()
            .any(|line| line.contains("watch failing")),
        "{quiet_group}'s polls failed while node 1 was down: {during_kill:#?}"
    );
    // Fresh again within two poll intervals at the defaults (2 x 5 s) of the record's
    // acknowledgement; the test polls every 300 ms, but librdkafka's own recovery (a new
    // coordinator looked up at most once a second, leaders from refreshed metadata) takes
    // about a second, and more on a loaded machine.
    assert!(
        counted - acknowledged <= Duration::from_secs(10),
        "counted {:?} after its acknowledgement, with node 1 down and new leaders",
        counted - acknowledged
    );
    std::thread::sleep(Duration::from_secs(15).saturating_sub(killed.elapsed()));
    cluster.restart_node(0);
    let (_, took) = count_one(&cluster, 0, "bringing back");
    println!("node 1 back: a new record counted after {took:?}");

    // Every node restarted in turn: after each, a new record is counted. From here on the
    // quiet group's coordinator is killed too (restarted or moved: SIGKILL, then started
    // again), and Kafka answers none of its polls until a new one has taken over, which
    // on a loaded machine can outlast SCALER_STALE_AFTER: then lagscaler must say that
    // its latest sample is stale (UNAVAILABLE), and must never say active.
    let coordinators_killed_from = checks_started.elapsed();
    let mut took = Vec::new();
    cluster
        .restart_all_in_turn(|cluster, node| took.push(count_one(cluster, node, "restarting").1));
    println!("rolling restart: the new record counted after {took:?}");

    // Every node replaced in turn by a process with the same id on another port, so that
    // at the end no address lagscaler was started with answers (KEDA #4098): it learns the
    // new ones from the metadata and a new record is counted after each move.
    let mut took = Vec::new();
    for node in 0..cluster.node_count() {
        cluster.move_node(node);
        took.push(count_one(&cluster, node, "moving to another port").1);
    }
    println!("every node moved: the new record counted after {took:?}");

    // The quiet watch is fresh again after the last move.
    let fresh = wait_for(Duration::from_secs(30), || {
        (!scaler.is_active(&quiet).ok()?).then_some(())
    });
    assert!(
        fresh.is_some(),
        "the quiet watch is not answered 30 s after the last move: {:?}\n{}",
        scaler.is_active(&quiet),
        process.log()
    );

    // What the watches went through, for the record: stand-ins and failed polls.
    for line in process.log().lines().filter(|line| {
        ["stand in", "read again", "watch failing", "watch recovered"]
            .iter()
            .any(|event| line.contains(event))
    }) {
        println!("  {}", line.get(..220).unwrap_or(line));
    }
    let mut quiet_checked = quiet_checker.finish();
    // Where Kafka answered none of the idle watch's polls for longer than the stale bound
    // (its coordinator killed, on a loaded machine), nothing is known of that time: once
    // data returns, the idle window is not covered, and the watch is active, as a new watch
    // is, for up to the idle window after its stale stretch; at no other time.
    let uncovered = |at: Duration| {
        quiet_checked.stale.iter().any(|(began, lasted)| {
            let ended = *began + *lasted;
            at >= ended && at <= ended + QUIET_IDLE_WINDOW + Duration::from_secs(1)
        })
    };
    let after_outages: Vec<Duration> = quiet_checked
        .wrong
        .iter()
        .filter(|(at, why)| why.starts_with("active") && uncovered(*at))
        .map(|(at, _)| *at)
        .collect();
    quiet_checked
        .wrong
        .retain(|(at, _)| !after_outages.contains(at));
    let checked = checker.finish();
    let summary = format!(
        "the idle watch: {} activity answers, {} wrong: {:?}; stale (since the checks \
         began, for how long): {:?}, active while its window was uncovered after those: \
         {after_outages:?}; the coordinators killed from {coordinators_killed_from:?}\n\
         the lagging watch: {} answers, {} wrong: {:?}; stale: {:?}",
        quiet_checked.asked,
        quiet_checked.wrong.len(),
        quiet_checked.wrong,
        quiet_checked.stale,
        checked.asked,
        checked.wrong.len(),
        checked.wrong,
        checked.stale,
    );
    println!("{summary}");
    // The summary last: a CI log keeps a failure message's end.
    assert!(
        quiet_checked.wrong.is_empty() && checked.wrong.is_empty(),
        "answers that were not true:\n{}\n{summary}",
        process.log()
    );
    // While node 1 was down, and until it was back, the quiet group's coordinator answered.
    let early = quiet_checked.stale_before(coordinators_killed_from);
    assert!(
        early.is_empty(),
        "the idle watch went stale while its coordinator was up:\n{}\n{summary}",
        process.log()
    );
    // Every stale stretch ended by itself, within a bound well above Kafka's own recovery
    // here (a node's start, or the 9 s session timeout, then a new coordinator).
    for longest in [quiet_checked.longest_stale(), checked.longest_stale()] {
        assert!(
            longest < Duration::from_secs(60),
            "a watch stayed stale for {longest:?}:\n{}\n{summary}",
            process.log()
        );
    }
    let mut events = Vec::new();
    while let Some(event) = activity.next(Duration::ZERO) {
        events.push(event);
    }
    assert!(
        events
            .iter()
            .all(|event| matches!(event, StreamEvent::Message(true, _))),
        "the activity stream through the incidents: {events:?}"
    );
    drop(activity);
    drop(scaler);
    let status = process.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|status| status.success()),
        "lagscaler {status:?} after the cluster's incidents; log:\n{}",
        process.log()
    );
}

/// Leaders spread over three brokers: each cycle reads `topic`'s high watermarks and log
/// starts with one ListOffsets per leader broker for each end, not one per partition,
/// counted from librdkafka's statistics by broker (lagscaler in-process) against the one
/// OffsetFetch each cycle sends for the one watch, of `group` (lag `lag`).
fn expect_one_list_offsets_per_leader(cluster: &Kafka, topic: &str, group: &str, lag: i64) {
    let metadata_client: BaseConsumer = cluster.client_config().create().expect("client");
    let metadata = metadata_client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut leaders: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|partition| partition.leader())
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    assert!(leaders.len() >= 2, "leaders {leaders:?}: not spread");

    let mut config = Scaler::config(&cluster.bootstrap(), POLL, TTL);
    config.kafka.stats_interval = Some(Duration::from_millis(250));
    // The cycles are counted by their OffsetFetch, and only `topic`'s reads are wanted
    // (the commit stream would add those of __consumer_offsets).
    config.kafka.commit_source = lagscaler::config::CommitSource::Fetch;
    let scaler = Scaler::start_with(config);
    let watch = [
        ("consumerGroup", group),
        ("topic", topic),
        ("allowIdleConsumers", "true"),
    ];
    assert_eq!(scaler.lag(&watch).expect("lag"), lag);
    std::thread::sleep(2 * POLL);
    let before = scaler.daemon().kafka_requests_by_broker();
    std::thread::sleep(20 * POLL);
    let after = scaler.daemon().kafka_requests_by_broker();
    let delta = |broker: i32, api: &str| {
        let count = |counts: &std::collections::BTreeMap<i32, lagscaler::kafka::RequestCounts>| {
            counts
                .get(&broker)
                .and_then(|apis| apis.get(api))
                .copied()
                .unwrap_or(0)
        };
        count(&after) - count(&before)
    };
    let brokers: Vec<i32> = after.keys().copied().collect();
    let cycles: i64 = brokers
        .iter()
        .map(|broker| delta(*broker, "OffsetFetch"))
        .sum();
    assert!(
        cycles >= 10,
        "{cycles} OffsetFetch in 20 polls: {before:?} -> {after:?}"
    );
    for broker in brokers {
        let per_cycle = delta(broker, "ListOffsets") as f64 / cycles as f64;
        println!("broker {broker}: {per_cycle:.2} ListOffsets per cycle");
        if leaders.contains(&broker) {
            // One for the latest offsets and one for the earliest; the reports may lag by
            // one interval at either end of the measurement.
            assert!(
                (1.6..=2.4).contains(&per_cycle),
                "broker {broker} (a leader): {per_cycle:.2} ListOffsets per cycle over \
                 {cycles} cycles; {before:?} -> {after:?}"
            );
        } else {
            assert_eq!(per_cycle, 0.0, "broker {broker} leads nothing");
        }
    }
    scaler.stop();
}

/// A compacted topic: the cleaner removes all but the latest record of each key, so the
/// offsets a group has left to consume have gaps. Lag counts offsets, as Kafka's own tool
/// does (end − committed, gaps included), and a commit inside a gap is a valid position.
#[test]
fn a_compacted_topic_with_gaps_in_its_offsets_gives_kafkas_own_lag() {
    const TOPIC: &str = "compacted";
    const GROUP: &str = "compacted-readers";
    let broker = Kafka::shared();
    broker.create_topic_with(
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
    );
    // 200 records over 10 keys, then, once the segment is old enough to roll, one more: the
    // first segment (offsets 0 to 199) becomes cleanable.
    let producer = broker.producer();
    let send = |key: &str, payload: &str| {
        producer
            .send(
                rdkafka::producer::BaseRecord::to(TOPIC)
                    .partition(0)
                    .key(key)
                    .payload(payload),
            )
            .map_err(|(err, _)| err)
            .expect("send");
    };
    for n in 0..200 {
        send(&format!("key-{}", n % 10), &format!("value {n}"));
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    send("key-0", "rolls the segment");
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");

    // Wait for the cleaner: reading from 0 then finds only the latest record of each key
    // below offset 200.
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", "compacted-counter")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader");
    let count_records = || {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(TOPIC, 0, Offset::Beginning)
            .expect("offset");
        reader.assign(&list).expect("assign");
        let mut offsets = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => offsets.push(message.offset()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                _ => {}
            }
        }
        offsets
    };
    let compacted = wait_for(Duration::from_secs(60), || {
        let offsets = count_records();
        (offsets.iter().filter(|offset| **offset < 200).count() <= 10).then_some(offsets)
    })
    .expect("the cleaner compacted the first segment within 60 s");
    println!(
        "compacted: {} records left at offsets {compacted:?}, end 201",
        compacted.len()
    );

    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [
        ("consumerGroup", GROUP),
        ("topic", TOPIC),
        ("allowIdleConsumers", "true"),
    ];
    // A commit in a gap (offset 3 no longer holds a record), then one near the end.
    for committed in [3, 195] {
        broker.commit(GROUP, &[(TOPIC, 0, committed)]);
        let expected = 201 - committed;
        assert_eq!(consumer_groups_tool_lag(broker, GROUP, TOPIC), expected);
        let seen = scaler.wait_for_lag(&metadata, expected, Duration::from_secs(10));
        assert!(
            seen.is_some(),
            "committed at {committed}: lag {expected} not seen: {:?}",
            scaler.lag(&metadata)
        );
    }
    scaler.stop();
}
