//! Fleet mode: real lagscaler binaries sharing one real Redis, against Apache Kafka, asked
//! through real gRPC clients the way KEDA 2.16+ spreads its calls over a headless Service.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lagscaler::config::Config;
use lagscaler::fleet::assign;
use lagscaler::trigger::{codec, Trigger};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

mod clock;

use crate::support::{
    free_port, http_get, produce_one, send_signal, wait_for, Background, Kafka, Process, Redis,
};

/// The fleet's poll interval in these tests.
const POLL: Duration = Duration::from_secs(1);

/// The member TTL in these tests.
const MEMBER_TTL: Duration = Duration::from_secs(3);

/// One replica: the real binary in fleet mode.
struct Replica {
    process: Process,
    http: u16,
}

impl Replica {
    /// A replica named `name` of the fleet whose Redis is at `url`.
    fn start(name: &str, url: &str, broker: &Kafka, extra: &[(&str, &str)]) -> Replica {
        let mut env = vec![
            ("SCALER_FLEET_REDIS_URL", url),
            ("SCALER_FLEET_MEMBER", name),
            ("SCALER_FLEET_MEMBER_TTL", "3s"),
        ];
        env.extend_from_slice(extra);
        Replica::launch(broker, &env)
    }

    /// lagscaler alone, with the fleet's poll interval and rate window.
    fn alone(broker: &Kafka, extra: &[(&str, &str)]) -> Replica {
        Replica::launch(broker, extra)
    }

    fn launch(broker: &Kafka, extra: &[(&str, &str)]) -> Replica {
        let http = free_port();
        let http_text = http.to_string();
        let mut env = vec![
            ("SCALER_POLL_INTERVAL", "1s"),
            ("SCALER_RATE_WINDOW", "10s"),
            ("SCALER_HTTP_PORT", http_text.as_str()),
        ];
        env.extend_from_slice(extra);
        Replica {
            process: Process::start(&broker.bootstrap(), &env),
            http,
        }
    }

    fn metrics(&self) -> String {
        http_get(
            format!("127.0.0.1:{}", self.http).parse().expect("address"),
            "/metrics",
        )
        .1
    }
}

/// Waits until every one of `replicas` sees all of them as the fleet's members (until then
/// each would own everything).
fn wait_for_fleet_of(replicas: &[Replica]) {
    let line = format!("lagscaler_fleet_members {}", replicas.len());
    let formed = wait_for(Duration::from_secs(10), || {
        replicas
            .iter()
            .all(|r| r.metrics().contains(&line))
            .then_some(())
    });
    assert!(
        formed.is_some(),
        "the {} replicas did not form a fleet",
        replicas.len()
    );
}

/// The fleet URL of `redis`.
fn url_of(redis: &Redis) -> String {
    format!("redis://127.0.0.1:{}", redis.port())
}

/// Who owns the watch of `metadata` among `members`, as every replica computes it: the
/// owner of its cluster.
fn owner_of<'a>(metadata: &[(&str, &str)], members: &[&'a str]) -> &'a str {
    let cluster = metadata
        .iter()
        .find(|(key, _)| *key == "cluster")
        .map(|(_, name)| *name);
    assign::owner(assign::shard(cluster), members.iter().copied()).expect("an owner")
}

/// Named clusters in a clusters file, every one of them the test broker: to lagscaler they
/// are different clusters (each its own client and shared reads, and its own owner in a
/// fleet), so watches spread over replicas the way watches of different clusters do.
struct Clusters {
    _dir: tempfile::TempDir,
    path: String,
}

impl Clusters {
    fn new(broker: &Kafka, names: &[String]) -> Clusters {
        let dir = tempfile::tempdir().expect("temp dir for the clusters file");
        let path = dir.path().join("clusters.toml");
        let text: String = names
            .iter()
            .map(|name| format!("[{name}]\nbootstrap_servers = \"{}\"\n", broker.bootstrap()))
            .collect();
        std::fs::write(&path, text).expect("write the clusters file");
        Clusters {
            _dir: dir,
            path: path.to_str().expect("UTF-8 path").to_owned(),
        }
    }

    /// The setting that hands lagscaler the file.
    fn env(&self) -> (&str, &str) {
        ("SCALER_KAFKA_CLUSTERS_FILE", self.path.as_str())
    }
}

/// Sleeps until the middle of the fleet's current poll interval (ticks are the multiples of
/// the interval since the epoch), when every replica has the tick's sample.
fn sleep_to_mid_tick() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let into = now.as_millis() % POLL.as_millis();
    let half = POLL.as_millis() / 2 + 100;
    let wait = if into <= half {
        half - into
    } else {
        POLL.as_millis() - into + half
    };
    thread::sleep(Duration::from_millis(u64::try_from(wait).expect("small")));
}

/// Kafka requests by API as a replica's `/metrics` reports them (librdkafka's statistics).
fn requests(replica: &Replica) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in replica.metrics().lines() {
        let Some(rest) = line.strip_prefix("lagscaler_kafka_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(api) = labels
            .split(',')
            .find_map(|label| label.strip_prefix("api=\""))
            .map(|api| api.trim_end_matches('"').to_owned())
        else {
            continue;
        };
        *counts.entry(api).or_insert(0) += value.trim().parse::<u64>().unwrap_or(0);
    }
    counts
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(api, count)| {
            (
                api.clone(),
                count.saturating_sub(before.get(api).copied().unwrap_or(0)),
            )
        })
        .collect()
}

/// Producing and consuming on `topic` for `groups`, so that lag drains and rates exist:
/// each group has one member (it joins, so the group has an active consumer), and every
/// 250 ms 1 record goes into each partition and each group commits 4 further.
fn keep_moving(
    broker: &'static Kafka,
    topic: &'static str,
    partitions: i32,
    groups: Vec<String>,
) -> Background<()> {
    let (ready_tx, ready) = crossbeam_channel::bounded::<()>(1);
    let mover = Background::spawn("fleet-mover", move |stop: &AtomicBool| {
        let producer = broker.producer();
        let members: Vec<BaseConsumer> = groups
            .iter()
            .map(|group| {
                let member: BaseConsumer = broker
                    .client_config()
                    .set("group.id", group)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .create()
                    .expect("group member");
                member.subscribe(&[topic]).expect("subscribe");
                member
            })
            .collect();
        let commit = |member: &BaseConsumer, position: i64| {
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                list.add_partition_offset(topic, partition, Offset::Offset(position))
                    .expect("offset");
            }
            member.commit(&list, CommitMode::Sync)
        };
        // Joined once every partition is assigned and a first commit is taken.
        for member in &members {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let _ = member.poll(Duration::from_millis(50));
                let assigned = member.assignment().map_or(0, |list| list.count());
                if assigned == partitions as usize && commit(member, 0).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a group member did not join in 30 s"
                );
            }
        }
        let _ = ready_tx.send(());
        let mut position = vec![0i64; groups.len()];
        while !stop.load(Ordering::Relaxed) {
            for partition in 0..partitions {
                produce_one(&producer, topic, partition);
            }
            for (index, member) in members.iter().enumerate() {
                // Polling keeps the member in its group; what it fetches is not used.
                let _ = member.poll(Duration::ZERO);
                position[index] += 4;
                // A commit refused in a rebalance is made good by the next one.
                let _ = commit(member, position[index]);
            }
            thread::sleep(Duration::from_millis(250));
        }
    });
    ready
        .recv_timeout(Duration::from_secs(200))
        .expect("every group member joined");
    mover
}

fn lag_metadata<'a>(group: &'a str, cluster: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("consumerGroup", group),
        ("topic", "fleet-alike"),
        ("cluster", cluster),
        ("lagThreshold", "10"),
    ]
}

fn eta_metadata<'a>(group: &'a str, cluster: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("consumerGroup", group),
        ("topic", "fleet-alike"),
        ("cluster", cluster),
        ("metric", "eta"),
        ("targetEtaSeconds", "30"),
    ]
}

#[test]
fn three_replicas_answer_alike_and_make_the_kafka_requests_of_one() {
    let scene = Scene::new("fleet-alike", 6, 600);
    let (broker, groups) = (scene.broker, scene.groups.clone());
    let redis = Redis::start();
    // Two clusters (both the test broker) whose owners differ, three watches on each: the
    // fleet splits the polling, and each cluster's shared reads are made by its owner only.
    let members = ["r0", "r1", "r2"];
    let first = "alike-a".to_owned();
    let second = (0..)
        .map(|i| format!("alike-b{i}"))
        .find(|name| {
            assign::owner(assign::shard(Some(name)), members)
                != assign::owner(assign::shard(Some(&first)), members)
        })
        .expect("a second cluster");
    let clusters = Clusters::new(broker, &[first.clone(), second.clone()]);
    let cluster_of: HashMap<String, String> = groups
        .iter()
        .enumerate()
        .map(|(index, group)| {
            let cluster = if index < 3 { &first } else { &second };
            (group.clone(), cluster.clone())
        })
        .collect();
    let lags: HashMap<&str, Vec<(&str, &str)>> = groups
        .iter()
        .map(|group| (group.as_str(), lag_metadata(group, &cluster_of[group])))
        .collect();
    let etas: HashMap<&str, Vec<(&str, &str)>> = groups
        .iter()
        .map(|group| (group.as_str(), eta_metadata(group, &cluster_of[group])))
        .collect();
    let fetch = [
        ("SCALER_COMMIT_SOURCE", "fetch"),
        ("SCALER_KAFKA_STATS_INTERVAL", "1s"),
        clusters.env(),
    ];
    let replicas: Vec<Replica> = members
        .iter()
        .map(|name| Replica::start(name, &url_of(&redis), broker, &fetch))
        .collect();
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();

    // KEDA's calls, round robin: watch i asked first of replica i % 3; the owners that were
    // not asked hold their watches for the fleet.
    for (index, group) in groups.iter().enumerate() {
        // A broker that has just started may still be loading its group coordinators.
        let answer = wait_for(Duration::from_secs(20), || {
            clients[index % 3].lag(&lags[group.as_str()]).ok()
        });
        assert!(
            answer.is_some(),
            "{group} on r{}: no lag within 20 s",
            index % 3
        );
    }
    // Then every replica is asked about every watch, as round robin does over time, and
    // answers an ETA once the fleet's samples give rates.
    // A real ETA, not the cap that answers "not draining": the groups drain (one member
    // each, 16 committed and 4 produced per partition per second).
    let all_answer = wait_for(Duration::from_secs(60), || {
        let mut ok = true;
        for group in &groups {
            for client in &clients {
                ok &= client
                    .get_metrics(&etas[group.as_str()])
                    .is_ok_and(|(_, eta)| eta > 0.0 && eta < 3600.0);
            }
        }
        ok.then_some(())
    });
    assert!(
        all_answer.is_some(),
        "no draining ETA on every replica within 60 s"
    );
    // Each replica shows which clusters it polls: exactly those it owns.
    for (replica, member) in replicas.iter().zip(members) {
        let metrics = replica.metrics();
        for cluster in [&first, &second] {
            let owned = assign::owner(assign::shard(Some(cluster)), members) == Some(member);
            let line = format!(
                "lagscaler_fleet_polls_cluster{{cluster=\"{cluster}\"}} {}",
                u8::from(owned)
            );
            assert!(
                metrics.contains(&line),
                "{member}: no {line:?} in\n{metrics}"
            );
        }
    }

    // Identical answers: asked at the middle of a tick, every replica has its sample.
    let mut rounds = 0;
    for _ in 0..8 {
        sleep_to_mid_tick();
        for group in &groups {
            let lags: Vec<_> = clients
                .iter()
                .map(|c| c.lag(&lags[group.as_str()]))
                .collect();
            let etas: Vec<_> = clients
                .iter()
                .map(|c| c.get_metrics(&etas[group.as_str()]).map(|(_, v)| v))
                .collect();
            let lags: Vec<i64> = lags
                .into_iter()
                .map(|lag| lag.unwrap_or_else(|err| panic!("{group}: lag: {err:?}")))
                .collect();
            let etas: Vec<f64> = etas
                .into_iter()
                .map(|eta| eta.unwrap_or_else(|err| panic!("{group}: eta: {err:?}")))
                .collect();
            assert!(
                lags.iter().all(|lag| *lag == lags[0]),
                "{group}: lags {lags:?}"
            );
            assert!(
                etas.iter().all(|eta| *eta == etas[0]),
                "{group}: ETAs {etas:?}"
            );
        }
        let rates: Vec<Vec<(Option<f64>, Option<f64>)>> = replicas
            .iter()
            .map(|replica| {
                let metrics = replica.metrics();
                groups
                    .iter()
                    .map(|group| {
                        (
                            watch_value(&metrics, "lagscaler_watch_produce_rate", group),
                            watch_value(&metrics, "lagscaler_watch_consume_rate", group),
                        )
                    })
                    .collect()
            })
            .collect();
        assert!(
            rates.iter().all(|r| *r == rates[0]),
            "rates differ: {rates:?}"
        );
        assert!(
            rates[0].iter().all(|(p, c)| p.is_some() && c.is_some()),
            "{rates:?}"
        );
        rounds += 1;
    }
    println!(
        "{rounds} rounds x 6 watches: lag, ETA and rates identical on the 3 replicas (ETA of \
         the first group in the last round: {:?})",
        clients[0]
            .get_metrics(&etas[groups[0].as_str()])
            .map(|(_, v)| v)
    );

    // Kafka requests over 15 s, summed over the fleet.
    let before: Vec<_> = replicas.iter().map(requests).collect();
    thread::sleep(Duration::from_secs(15));
    let fleet_total = replicas
        .iter()
        .zip(&before)
        .map(|(replica, before)| delta(&requests(replica), before))
        .fold(BTreeMap::new(), |mut sum, one| {
            for (api, count) in one {
                *sum.entry(api).or_insert(0) += count;
            }
            sum
        });
    drop(clients);
    drop(replicas);

    // The same watches polled by one replica alone, for as long.
    let single = Replica::alone(broker, &fetch);
    let client = single.process.client();
    for group in &groups {
        assert!(client.lag(&lags[group.as_str()]).is_ok());
    }
    thread::sleep(Duration::from_secs(3));
    let before = requests(&single);
    thread::sleep(Duration::from_secs(15));
    let single_total = delta(&requests(&single), &before);
    scene.mover.finish();
    println!("Kafka requests in 15 s, 6 watches on 2 clusters, 1 s polls, commits by OffsetFetch:");
    println!("  3 replicas, summed: {fleet_total:?}");
    println!("  1 replica alone:    {single_total:?}");
    // Per watch and tick one OffsetFetch, and per cluster and tick its shared reads (the
    // topic's ends, the group list), whoever polls: the fleet sends what one replica does,
    // API by API (statistics are reported each second, so either count is within a report,
    // and a periodic metadata refresh may fall in one window and not the other).
    let single_fetches = single_total.get("OffsetFetch").copied().unwrap_or(0);
    assert!(single_fetches >= 60, "{single_total:?}");
    let apis: std::collections::BTreeSet<&String> =
        fleet_total.keys().chain(single_total.keys()).collect();
    for api in apis {
        let fleet = fleet_total.get(api).copied().unwrap_or(0) as f64;
        let single = single_total.get(api).copied().unwrap_or(0) as f64;
        assert!(
            (fleet - single).abs() <= (0.15 * single).max(3.0),
            "{api}: fleet {fleet}, one replica {single}\n{fleet_total:?}\n{single_total:?}"
        );
    }
    let sum = |counts: &BTreeMap<String, u64>| counts.values().sum::<u64>() as f64;
    let ratio = sum(&fleet_total) / sum(&single_total);
    assert!(
        (0.9..=1.1).contains(&ratio),
        "all requests, fleet/one replica {ratio:.2}"
    );
}

/// With the commit stream, a replica reads a cluster it does not own only for a watch's
/// first answer: its commit reader then idles out (3 poll intervals, at least 10 s) and it
/// sends Kafka nothing more, while the owner's reader runs on.
#[test]
fn a_replica_that_does_not_own_a_cluster_stops_its_commit_reader_and_sends_kafka_nothing() {
    let broker = Kafka::shared();
    broker.create_topic("fleet-idle", 2);
    broker.produce("fleet-idle", 0, 5);
    broker.commit(
        "fleet-idle-group",
        &[("fleet-idle", 0, 2), ("fleet-idle", 1, 0)],
    );
    let redis = Redis::start();
    let members = ["i0", "i1"];
    let metadata = [
        ("consumerGroup", "fleet-idle-group"),
        ("topic", "fleet-idle"),
    ];
    let owner_index = members
        .iter()
        .position(|m| *m == owner_of(&metadata, &members))
        .expect("member");
    let other_index = 1 - owner_index;
    let env = [
        ("SCALER_COMMIT_SOURCE", "auto"),
        ("SCALER_KAFKA_STATS_INTERVAL", "1s"),
    ];
    let replicas: Vec<Replica> = members
        .iter()
        .map(|name| Replica::start(name, &url_of(&redis), broker, &env))
        .collect();
    wait_for_fleet_of(&replicas);
    // KEDA asks both, all along; the one that does not own the cluster polls once, for its
    // first answer, from the commit stream.
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    let asked = Instant::now();
    for client in &clients {
        let lag = wait_for(Duration::from_secs(20), || client.lag(&metadata).ok());
        assert_eq!(lag, Some(3));
    }
    let idled = wait_for(Duration::from_secs(30), || {
        for client in &clients {
            assert_eq!(client.lag(&metadata).ok(), Some(3));
        }
        thread::sleep(Duration::from_millis(500));
        replicas[other_index]
            .process
            .log()
            .contains("commit reader stopped: no poll used it")
            .then(|| asked.elapsed())
    });
    let other_log = replicas[other_index].process.log();
    assert!(
        other_log.contains("commit reader started"),
        "the non-owner's first answer did not read the stream:\n{other_log}"
    );
    assert!(
        idled.is_some(),
        "the non-owner's commit reader still runs 30 s after its only poll:\n{other_log}"
    );
    // Counts are reported each second: one report more, then 5 s measured.
    thread::sleep(Duration::from_secs(2));
    let before: Vec<_> = replicas.iter().map(requests).collect();
    for _ in 0..20 {
        for client in &clients {
            assert_eq!(client.lag(&metadata).ok(), Some(3));
        }
        thread::sleep(Duration::from_millis(500));
    }
    let by_api: Vec<BTreeMap<String, u64>> = replicas
        .iter()
        .zip(&before)
        .map(|(replica, before)| delta(&requests(replica), before))
        .collect();
    let sent: Vec<u64> = by_api.iter().map(|counts| counts.values().sum()).collect();
    let owner_log = replicas[owner_index].process.log();
    println!(
        "commit reader of the non-owner stopped {:.1} s after the first ask; Kafka requests in \
         10 s: owner {:?}, non-owner {:?}",
        idled.expect("idled").as_secs_f64(),
        by_api[owner_index],
        by_api[other_index]
    );
    assert!(
        !owner_log.contains("commit reader stopped"),
        "the owner's reader stopped:\n{owner_log}"
    );
    assert!(sent[owner_index] >= 10, "owner: {by_api:?}");
    // What its client sends, owner or not: the broker list, refreshed every 5 s (10 s while
    // it references no topic); 3 in 10 s at most, as counts are reported each second.
    let other = &by_api[other_index];
    assert!(
        other.get("Metadata").copied().unwrap_or(0) <= 3
            && other
                .iter()
                .all(|(api, count)| api == "Metadata" || *count == 0),
        "the non-owner still asks Kafka: {by_api:?}"
    );
}

/// The fleet's keys in `redis` (fleet name `lagscaler`).
fn fleet_redis(redis: &Redis) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}", redis.port()))
        .and_then(|client| client.get_connection())
        .expect("connect to the fleet's Redis")
}

/// The trigger `metadata` makes, as lagscaler parses it (a named cluster of [`Clusters`]).
fn trigger_of(metadata: &[(&str, &str)]) -> Trigger {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut clusters = Config::default().cluster_set();
    if let Some(name) = metadata.get("cluster") {
        let same = clusters.default.clone();
        clusters.named.insert(name.clone(), same);
    }
    Trigger::parse(&metadata, &clusters).expect("trigger")
}

/// The fleet's name for the watch of `metadata`.
fn watch_name(metadata: &[(&str, &str)]) -> String {
    codec::encode(&trigger_of(metadata).watch)
}

/// `(slot, sample text)` of every entry of the watch's stream.
fn stream(connection: &mut redis::Connection, name: &str) -> Vec<(u64, String)> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(format!("lagscaler:fleet:lagscaler:w:{name}"))
        .arg("-")
        .arg("+")
        .query(connection)
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(id, mut fields)| {
            let (slot, seq) = id.split_once('-').expect("an entry id");
            assert_eq!(seq, "0", "entry ids are <tick>-0");
            (
                slot.parse().expect("a tick"),
                fields.remove("s").expect("a sample"),
            )
        })
        .collect()
}

/// A window fed the samples of `entries` the way a single process records its polls (a
/// tick without a sample counts as a failed poll): its latest estimate's rates.
fn replayed_rates(entries: &[(u64, String)], rule: lagscaler::lag::LagRule) -> Option<(f64, f64)> {
    use lagscaler::estimate::Window;
    use lagscaler::fleet::sample::{decode, Clock, Outcome};
    let clock = Clock::now();
    let start = Instant::now();
    let mut window = Window::new(Duration::from_secs(10), Duration::from_secs(8));
    let mut last_slot: Option<u64> = None;
    let mut rates = None;
    for (slot, text) in entries {
        let mut sample = decode(text, &clock).expect("a sample");
        if let Some(last) = last_slot {
            if *slot > last + 1000 {
                window.record_failure(clock.instant(i64::try_from(last + 1000).unwrap() * 1000));
            }
        }
        last_slot = Some(*slot);
        if let Some(last) = window.last_sample() {
            sample.taken_at = sample.taken_at.max(last);
        }
        rates = match sample.outcome {
            Outcome::Fresh {
                offsets, members, ..
            } => window
                .record(sample.taken_at, offsets, members, rule)
                .rates
                .map(|r| (r.produce, r.consume)),
            Outcome::Failed(_) | Outcome::Gone(_) => {
                window.record_failure(sample.taken_at);
                rates
            }
        };
    }
    let _ = start;
    rates
}

/// The value of the per-watch family `family` of `group` in a `/metrics` text.
fn watch_value(metrics: &str, family: &str, group: &str) -> Option<f64> {
    let name = format!("name=\"{group}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")) && line.contains(&name))
        .find_map(|line| line.rsplit_once(' ')?.1.parse().ok())
}

/// What each test starts from: `topic` (4 partitions) with `backlog` records in each
/// partition, `n` groups draining it with a member each ([`keep_moving`]), each group
/// watched on a cluster of its own name ([`Clusters`], [`metadata_on`]), so that its
/// watches spread over the replicas.
struct Scene {
    broker: &'static Kafka,
    topic: &'static str,
    groups: Vec<String>,
    clusters: Clusters,
    mover: Background<()>,
}

impl Scene {
    fn new(topic: &'static str, n: usize, backlog: usize) -> Scene {
        let broker = Kafka::shared();
        broker.create_topic(topic, 4);
        for partition in 0..4 {
            broker.produce(topic, partition, backlog);
        }
        let groups: Vec<String> = (0..n).map(|i| format!("{topic}-{i}")).collect();
        let mover = keep_moving(broker, topic, 4, groups.clone());
        let clusters = Clusters::new(broker, &groups);
        Scene {
            broker,
            topic,
            groups,
            clusters,
            mover,
        }
    }

    /// Replicas named `members` of the fleet on `redis`.
    fn fleet(&self, members: &[&str], redis: &Redis) -> Vec<Replica> {
        members
            .iter()
            .map(|name| self.replica(name, redis))
            .collect()
    }

    /// The replica `name` of the fleet on `redis`.
    fn replica(&self, name: &str, redis: &Redis) -> Replica {
        self.replica_with(name, redis, &[])
    }

    /// The replica `name` of the fleet on `redis`, with `extra` in its environment.
    fn replica_with(&self, name: &str, redis: &Redis, extra: &[(&str, &str)]) -> Replica {
        let mut env = vec![self.clusters.env()];
        env.extend_from_slice(extra);
        Replica::start(name, &url_of(redis), self.broker, &env)
    }
}

/// `group`'s lag on `topic`, read on the cluster named as the group ([`Clusters`]).
fn metadata_on<'a>(
    topic: &'a str,
    group: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut metadata = vec![
        ("consumerGroup", group),
        ("topic", topic),
        ("cluster", group),
    ];
    metadata.extend_from_slice(extra);
    metadata
}

const ETA: [(&str, &str); 2] = [("metric", "eta"), ("targetEtaSeconds", "30")];

/// Asks every replica about every group's ETA until all answer (rates need two samples).
fn ask_all_until_eta(clients: &[crate::support::GrpcClient], topic: &str, groups: &[String]) {
    let all_answer = wait_for(Duration::from_secs(30), || {
        let mut ok = true;
        for group in groups {
            for client in clients {
                ok &= client.get_metrics(&metadata_on(topic, group, &ETA)).is_ok();
            }
        }
        ok.then_some(())
    });
    assert!(all_answer.is_some(), "no ETA on every replica within 30 s");
}

#[test]
fn killing_the_owner_moves_its_watches_within_the_ttl_and_a_poll_without_losing_their_windows() {
    let scene = Scene::new("fleet-failover", 6, 2000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let redis = Redis::start();
    let members = ["f0", "f1", "f2"];
    let mut replicas: Vec<Option<Replica>> = scene
        .fleet(&members, &redis)
        .into_iter()
        .map(Some)
        .collect();
    let clients: Vec<_> = replicas
        .iter()
        .flatten()
        .map(|r| r.process.client())
        .collect();
    ask_all_until_eta(&clients, topic, &groups);

    // The victim: the owner of the most watches.
    let owners: Vec<&str> = groups
        .iter()
        .map(|group| owner_of(&metadata_on(topic, group, &[]), &members))
        .collect();
    let victim_index = (0..3)
        .max_by_key(|i| owners.iter().filter(|o| **o == members[*i]).count())
        .expect("a replica");
    let victim = members[victim_index];
    let moved: Vec<&String> = groups
        .iter()
        .zip(&owners)
        .filter(|(_, o)| **o == victim)
        .map(|(g, _)| g)
        .collect();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim_index).collect();
    let rest: Vec<&str> = survivors.iter().map(|i| members[*i]).collect();

    // KEDA keeps asking the survivors, every 100 ms, all the while.
    let load_clients: Vec<_> = survivors
        .iter()
        .map(|i| replicas[*i].as_ref().expect("survivor").process.client())
        .collect();
    let load_groups = groups.clone();
    let load = Background::spawn("fleet-load", move |stop: &AtomicBool| {
        let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut calls = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for group in &load_groups {
                for client in &load_clients {
                    calls += 1;
                    if let Err(err) =
                        client.get_metrics(&metadata_on("fleet-failover", group, &ETA))
                    {
                        failures
                            .entry(group.clone())
                            .or_default()
                            .push(format!("{err:?}"));
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        (calls, failures)
    });
    thread::sleep(Duration::from_secs(2));

    let victim_pid = replicas[victim_index]
        .as_ref()
        .expect("victim")
        .process
        .pid();
    send_signal("KILL", victim_pid);
    let killed = Instant::now();
    // Each moved watch has a sample taken after the kill on its new owner.
    let mut moved_after: BTreeMap<String, Duration> = BTreeMap::new();
    let all_moved = wait_for(Duration::from_secs(20), || {
        for group in &moved {
            if moved_after.contains_key(*group) {
                continue;
            }
            let new_owner = owner_of(&metadata_on(topic, group, &[]), &rest);
            let index = members
                .iter()
                .position(|m| *m == new_owner)
                .expect("member");
            let metrics = replicas[index].as_ref().expect("survivor").metrics();
            let since = killed.elapsed();
            if let Some(age) = watch_value(&metrics, "lagscaler_watch_sample_age_seconds", group) {
                if Duration::from_secs_f64(age) + Duration::from_millis(50) < since {
                    moved_after.insert((*group).clone(), since - Duration::from_secs_f64(age));
                }
            }
        }
        (moved_after.len() == moved.len()).then_some(())
    });
    assert!(
        all_moved.is_some(),
        "moved watches with a new sample: {moved_after:?}"
    );
    thread::sleep(Duration::from_secs(3));
    let (calls, failures) = load.finish();
    let slowest = moved_after.values().max().copied().unwrap_or_default();
    println!(
        "killed {victim} (owner of {} of 6 watches): each had a sample from its new owner \
         {:.2} s at most after the kill (member TTL {} s + poll {} s); {calls} calls to the \
         survivors, failures {failures:?}",
        moved.len(),
        slowest.as_secs_f64(),
        MEMBER_TTL.as_secs(),
        POLL.as_secs()
    );
    // The lease lapses at most a TTL after the kill, the survivors notice within a renewal
    // (TTL/10) and the new owner polls at once; 1 s more for a loaded machine.
    assert!(
        slowest <= MEMBER_TTL + POLL + Duration::from_secs(1),
        "{moved_after:?}"
    );
    for (group, errors) in &failures {
        assert!(
            errors.len() <= 2,
            "{group}: more than one failed call per survivor: {errors:?}"
        );
    }

    // The new owners' windows continue the dead owner's: their rates are those of one
    // window fed every sample of the watch's stream.
    let mut connection = fleet_redis(&redis);
    for group in &moved {
        let metadata = metadata_on(topic, group, &[]);
        let new_owner = owner_of(&metadata, &rest);
        let index = members
            .iter()
            .position(|m| *m == new_owner)
            .expect("member");
        let replica = replicas[index].as_ref().expect("survivor");
        let rule = trigger_of(&metadata).watch.lag_rule;
        let agreed = wait_for(Duration::from_secs(10), || {
            sleep_to_mid_tick();
            let before = replica.metrics();
            let entries = stream(&mut connection, &watch_name(&metadata));
            let after = replica.metrics();
            let rates = |m: &str| {
                (
                    watch_value(m, "lagscaler_watch_produce_rate", group),
                    watch_value(m, "lagscaler_watch_consume_rate", group),
                )
            };
            if rates(&before) != rates(&after) {
                return None;
            }
            let (Some(produce), Some(consume)) = rates(&after) else {
                return None;
            };
            let (replay_produce, replay_consume) = replayed_rates(&entries, rule)?;
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
            assert!(
                close(produce, replay_produce) && close(consume, replay_consume),
                "{group} on {new_owner}: rates {produce}/{consume}, replayed \
                 {replay_produce}/{replay_consume} over {} samples",
                entries.len()
            );
            Some(entries.len())
        });
        assert!(agreed.is_some(), "{group}: no settled rates to compare");
    }
    scene.mover.finish();
    replicas[victim_index] = None;
}

#[test]
fn a_replica_frozen_for_30_s_and_resumed_writes_no_duplicate_or_out_of_order_sample() {
    let scene = Scene::new("fleet-frozen", 4, 2000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let redis = Redis::start();
    let members = ["s0", "s1", "s2"];
    let replicas = scene.fleet(&members, &redis);
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    ask_all_until_eta(&clients, topic, &groups);
    let frozen_index = (0..3)
        .max_by_key(|i| {
            groups
                .iter()
                .filter(|g| owner_of(&metadata_on(topic, g, &[]), &members) == members[*i])
                .count()
        })
        .expect("a replica");
    send_signal("STOP", replicas[frozen_index].process.pid());
    // KEDA asks the others meanwhile; the watches stay alive fleet-wide.
    let others: Vec<usize> = (0..3).filter(|i| *i != frozen_index).collect();
    let frozen_at = Instant::now();
    while frozen_at.elapsed() < Duration::from_secs(30) {
        for group in &groups {
            for i in &others {
                let _ = clients[*i].lag(&metadata_on(topic, group, &[]));
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
    send_signal("CONT", replicas[frozen_index].process.pid());
    // It renews, rejoins and takes its watches back.
    let rejoined = wait_for(Duration::from_secs(15), || {
        let metrics = replicas[frozen_index].metrics();
        let members_now = metrics
            .lines()
            .find_map(|line| line.strip_prefix("lagscaler_fleet_members "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        (members_now == Some(3)).then_some(())
    });
    assert!(rejoined.is_some(), "the resumed replica did not rejoin");
    thread::sleep(Duration::from_secs(5));
    scene.mover.finish();

    let mut connection = fleet_redis(&redis);
    for group in &groups {
        let name = watch_name(&metadata_on(topic, group, &[]));
        let entries = stream(&mut connection, &name);
        assert!(entries.len() >= 10, "{group}: {} samples", entries.len());
        let clock = lagscaler::fleet::sample::Clock::now();
        let mut previous: Option<(u64, Instant)> = None;
        for (slot, text) in &entries {
            let sample = lagscaler::fleet::sample::decode(text, &clock).expect("a sample");
            if let Some((last_slot, last_taken)) = previous {
                assert!(*slot > last_slot, "{group}: tick {slot} after {last_slot}");
                assert!(
                    sample.taken_at > last_taken,
                    "{group}: a sample of tick {slot} taken before the one of tick {last_slot}"
                );
            }
            previous = Some((*slot, sample.taken_at));
        }
    }
    // The feed: each (watch, tick) once, and per watch in tick order.
    let feed: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("lagscaler:fleet:lagscaler:feed")
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .expect("XRANGE feed");
    let mut last: HashMap<String, u64> = HashMap::new();
    for (_, fields) in &feed {
        let watch = fields["w"].clone();
        let slot: u64 = fields["slot"].parse().expect("a tick");
        if let Some(previous) = last.insert(watch.clone(), slot) {
            assert!(
                slot > previous,
                "feed: tick {slot} of {watch} after {previous}"
            );
        }
    }
    let refused: u64 = replicas
        .iter()
        .map(|r| {
            r.metrics()
                .lines()
                .filter(|l| {
                    l.starts_with("lagscaler_fleet_samples_total{outcome=\"refused\"}")
                        || l.starts_with("lagscaler_fleet_samples_total{outcome=\"unwritten\"}")
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    println!(
        "frozen 30 s: {} feed entries, every watch's ticks in order, none twice; {refused} \
         samples refused or unwritten",
        feed.len()
    );
}

#[test]
fn a_restarted_replica_answers_eta_and_replicas_on_its_first_call() {
    let scene = Scene::new("fleet-restart", 1, 2000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let redis = Redis::start();
    let replicas_metadata = metadata_on(
        topic,
        &groups[0],
        &[("metric", "replicas"), ("targetEtaSeconds", "30")],
    );
    let mut replica = scene.replica("only", &redis);
    ask_all_until_eta(&[replica.process.client()], topic, &groups);
    assert!(replica
        .process
        .client()
        .get_metrics(&replicas_metadata)
        .is_ok());
    let status = replica.process.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let restarted = scene.replica("only", &redis);
    let client = restarted.process.client();
    let eta = client.get_metrics(&metadata_on(topic, &groups[0], &ETA));
    let replicas = client.get_metrics(&replicas_metadata);
    scene.mover.finish();
    println!("after a restart, first calls: eta {eta:?}, replicas {replicas:?}");
    assert!(
        eta.is_ok() && replicas.is_ok(),
        "{eta:?} {replicas:?}\n{}",
        restarted.process.log()
    );
    drop(replica);
}

#[test]
fn redis_killed_and_restarted_never_makes_a_false_idle_and_the_fleet_recovers_by_itself() {
    let scene = Scene::new("fleet-redis-down", 4, 3000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let redis = Redis::start();
    let port = redis.port();
    let members = ["d0", "d1", "d2"];
    let replicas = scene.fleet(&members, &redis);
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    ask_all_until_eta(&clients, topic, &groups);
    let written = |replica: &Replica| {
        replica
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("lagscaler_fleet_samples_total{outcome=\"written\"} "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    drop(redis);
    let down_at = Instant::now();
    let (mut answers, mut failures) = (0usize, 0usize);
    while down_at.elapsed() < Duration::from_secs(12) {
        for group in &groups {
            for client in &clients {
                match client.is_active(&metadata_on(topic, group, &[])) {
                    Ok(active) => {
                        assert!(active, "{group}: IsActive false with Redis down");
                        answers += 1;
                    }
                    Err(_) => failures += 1,
                }
                assert!(client
                    .lag(&metadata_on(topic, group, &[]))
                    .is_ok_and(|lag| lag > 0));
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    let alone: usize = replicas
        .iter()
        .filter(|r| r.metrics().contains("lagscaler_fleet_alone 1"))
        .count();
    assert_eq!(alone, 3, "every replica alone with Redis down");
    let redis = Redis::start_on(port);
    let recovered = wait_for(Duration::from_secs(15), || {
        replicas
            .iter()
            .all(|r| {
                let m = r.metrics();
                m.contains("lagscaler_fleet_members 3") && m.contains("lagscaler_fleet_alone 0")
            })
            .then_some(())
    });
    assert!(recovered.is_some(), "the fleet did not re-form");
    // Writes from a member list one renewal old (each replica saw the fleet of 3) are over.
    thread::sleep(MEMBER_TTL / 10 + POLL);
    let before: Vec<u64> = replicas.iter().map(written).collect();
    thread::sleep(Duration::from_secs(3));
    let after: Vec<u64> = replicas.iter().map(written).collect();
    let writing: Vec<&str> = before
        .iter()
        .zip(&after)
        .zip(members)
        .filter(|((b, a), _)| a > b)
        .map(|(_, member)| member)
        .collect();
    let mut owners: Vec<&str> = groups
        .iter()
        .map(|group| owner_of(&metadata_on(topic, group, &[]), &members))
        .collect();
    owners.sort_unstable();
    owners.dedup();
    scene.mover.finish();
    println!(
        "Redis down 12 s: {answers} IsActive answers, all true, {failures} failed; all 3 \
         replicas alone, then the fleet re-formed and {writing:?} write samples again \
         (the owners: {owners:?})"
    );
    assert_eq!(writing, owners, "the replicas writing samples again");
    let mut connection = fleet_redis(&redis);
    for group in &groups {
        let entries = stream(
            &mut connection,
            &watch_name(&metadata_on(topic, group, &[])),
        );
        assert!(
            !entries.is_empty(),
            "{group}: no sample after Redis came back"
        );
    }
}

#[test]
fn a_sentinel_failover_under_load_makes_no_false_idle_and_the_fleet_follows_the_new_master() {
    use crate::support::Sentinel;
    let scene = Scene::new("fleet-sentinel", 4, 3000);
    let (topic, groups) = (scene.topic, scene.groups.clone());
    let master = Redis::start();
    let master_port = master.port().to_string();
    let replica = Redis::start_with(free_port(), &["--replicaof", "127.0.0.1", &master_port]);
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| Sentinel::start("fleet", master.port(), 2))
        .collect();
    let ask = |sentinel: &Sentinel, command: &[&str]| -> redis::RedisResult<redis::Value> {
        let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", sentinel.port()))?
            .get_connection()?;
        let mut cmd = redis::cmd(command[0]);
        for arg in &command[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut connection)
    };
    // Every sentinel knows the replica and the other sentinels before the master goes.
    let known = wait_for(Duration::from_secs(30), || {
        sentinels
            .iter()
            .all(|sentinel| {
                let replicas = ask(sentinel, &["SENTINEL", "REPLICAS", "fleet"]);
                let peers = ask(sentinel, &["SENTINEL", "SENTINELS", "fleet"]);
                matches!(replicas, Ok(redis::Value::Array(ref list)) if list.len() == 1)
                    && matches!(peers, Ok(redis::Value::Array(ref list)) if list.len() == 2)
            })
            .then_some(())
    });
    assert!(
        known.is_some(),
        "the sentinels did not find each other and the replica"
    );
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    let url = format!("redis+sentinel://{}/fleet", hosts.join(","));
    let replicas: Vec<Replica> = ["t0", "t1"]
        .iter()
        .map(|name| Replica::start(name, &url, scene.broker, &[scene.clusters.env()]))
        .collect();
    let clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    ask_all_until_eta(&clients, topic, &groups);
    let joined = wait_for(Duration::from_secs(10), || {
        replicas
            .iter()
            .all(|r| r.metrics().contains("lagscaler_fleet_members 2"))
            .then_some(())
    });
    assert!(
        joined.is_some(),
        "the replicas did not form a fleet through the sentinels"
    );

    // KEDA asks all the while; the master dies.
    let load_clients: Vec<_> = replicas.iter().map(|r| r.process.client()).collect();
    let load_groups = groups.clone();
    let load = Background::spawn("fleet-sentinel-load", move |stop: &AtomicBool| {
        let (mut active, mut failed) = (0usize, 0usize);
        while !stop.load(Ordering::Relaxed) {
            for group in &load_groups {
                for client in &load_clients {
                    match client.is_active(&metadata_on("fleet-sentinel", group, &[])) {
                        Ok(true) => active += 1,
                        Ok(false) => panic!("{group}: IsActive false during the failover"),
                        Err(_) => failed += 1,
                    }
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        (active, failed)
    });
    thread::sleep(Duration::from_secs(2));
    drop(master);
    let failed_over = Instant::now();
    let promoted = wait_for(Duration::from_secs(30), || {
        match ask(
            &sentinels[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "fleet"],
        ) {
            Ok(redis::Value::Array(addr)) if addr.len() == 2 => {
                let port: String = redis::from_redis_value(addr[1].clone()).ok()?;
                (port == replica.port().to_string()).then_some(failed_over.elapsed())
            }
            _ => None,
        }
    });
    let Some(promoted) = promoted else {
        panic!(
            "no failover within 30 s; sentinel log:\n{}",
            sentinels[0].log()
        );
    };
    // The fleet writes to the new master again, by itself.
    let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", replica.port()))
        .and_then(|client| client.get_connection())
        .expect("connect to the new master");
    let name = watch_name(&metadata_on(topic, &groups[0], &[]));
    let now_ms = || {
        u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms")
    };
    let since = now_ms();
    let writing = wait_for(Duration::from_secs(20), || {
        let latest = stream(&mut connection, &name)
            .last()
            .map(|(slot, _)| *slot)?;
        (latest > since).then(|| Duration::from_millis(now_ms() - since))
    });
    let recovered = wait_for(Duration::from_secs(10), || {
        replicas
            .iter()
            .all(|r| {
                let m = r.metrics();
                m.contains("lagscaler_fleet_members 2") && m.contains("lagscaler_fleet_alone 0")
            })
            .then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    let (active, failed) = load.finish();
    scene.mover.finish();
    println!(
        "Sentinel failover: replica promoted {:.1} s after the master died; samples on the \
         new master {writing:?} later; {active} IsActive answers, all true, {failed} failed",
        promoted.as_secs_f64()
    );
    assert!(
        writing.is_some(),
        "no sample written to the new master within 20 s"
    );
    assert!(
        recovered.is_some(),
        "the fleet did not re-form on the new master"
    );
}

/// The client ports of the established TCP connections to `port` (gRPC core's socket is
/// IPv6 with IPv4-mapped addresses, so both tables are read).
fn clients_of(port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp")
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let local_port = u16::from_str_radix(local.split_once(':')?.1, 16).ok()?;
            let remote_port = u16::from_str_radix(remote.split_once(':')?.1, 16).ok()?;
            (local_port == port && *state == "01").then_some(remote_port)
        })
        .collect()
}

#[test]
fn a_max_connection_age_makes_keda_reconnect_without_a_failed_call() {
    let broker = Kafka::shared();
    broker.create_topic("fleet-age", 1);
    // Once the group's coordinator is loaded (a broker that just started is loading it).
    broker.commit("fleet-age-group", &[("fleet-age", 0, 0)]);
    let process = Process::start(
        &broker.bootstrap(),
        &[("SCALER_GRPC_MAX_CONNECTION_AGE", "1s")],
    );
    let port: u16 = process
        .log()
        .lines()
        .find_map(|line| line.split("listen=127.0.0.1:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .expect("the port in the start-up log");
    let client = process.client();
    let metadata = [("consumerGroup", "fleet-age-group"), ("topic", "fleet-age")];
    let mut seen = std::collections::BTreeSet::new();
    let (mut calls, mut failed) = (0, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        calls += 1;
        if let Err(err) = client.lag(&metadata) {
            failed.push(err);
        }
        seen.extend(clients_of(port));
        thread::sleep(Duration::from_millis(100));
    }
    println!(
        "max connection age 1 s: {calls} calls over 6 s on {} connections, {} failed",
        seen.len(),
        failed.len()
    );
    assert!(
        seen.len() >= 3,
        "connections to {port} seen: {seen:?}; {:?}",
        failed.first()
    );
    // The first call may wait for the watch's first poll of a broker that just started.
    assert!(failed.len() <= 1, "{:?}", &failed[..failed.len().min(3)]);
}

/// The max connection age moves unary calls to new connections but never cuts a
/// StreamIsActive stream: KEDA's push client backs off up to a minute after a cut stream and
/// does not reset that after a good one, so cuts every few minutes would leave each
/// ScaledObject without a stream for a minute in every few.
#[test]
fn a_max_connection_age_never_cuts_a_stream() {
    let broker = Kafka::shared();
    broker.create_topic("fleet-age-stream", 1);
    broker.produce("fleet-age-stream", 0, 3);
    broker.commit("fleet-age-stream-group", &[("fleet-age-stream", 0, 1)]);
    let process = Process::start(
        &broker.bootstrap(),
        &[("SCALER_GRPC_MAX_CONNECTION_AGE", "1s")],
    );
    let client = process.client();
    let metadata = [
        ("consumerGroup", "fleet-age-stream-group"),
        ("topic", "fleet-age-stream"),
    ];
    let stream = client.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(10));
    assert!(
        matches!(first, Some(crate::support::StreamEvent::Message(true, _))),
        "{first:?}"
    );
    // Past the age and the 10 s grace calls in flight used to get, with unary calls on.
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut events = Vec::new();
    while started.elapsed() < Duration::from_secs(16) {
        if let Err(err) = client.lag(&metadata) {
            failed.push(err);
        }
        while let Some(event) = stream.next(Duration::ZERO) {
            events.push((started.elapsed(), event));
        }
        thread::sleep(Duration::from_millis(200));
    }
    let ended: Vec<_> = events
        .iter()
        .filter(|(_, event)| !matches!(event, crate::support::StreamEvent::Message(..)))
        .collect();
    println!(
        "max connection age 1 s, 16 s: stream events {events:?}, {} failed calls",
        failed.len()
    );
    assert!(ended.is_empty(), "the stream was cut: {ended:?}");
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(3)]);
    drop(stream);
}

/// Per replica, the groups it polled in a 3 s window (only a watch's owner polls it).
fn polled_by(replicas: &[Replica], groups: &[String]) -> Vec<Vec<String>> {
    let polls = |replica: &Replica| -> Vec<f64> {
        let metrics = replica.metrics();
        groups
            .iter()
            .map(|g| watch_value(&metrics, "lagscaler_watch_polls_total", g).unwrap_or(0.0))
            .collect()
    };
    let before: Vec<Vec<f64>> = replicas.iter().map(polls).collect();
    thread::sleep(Duration::from_secs(3));
    replicas
        .iter()
        .zip(before)
        .map(|(replica, before)| {
            groups
                .iter()
                .zip(polls(replica).iter().zip(before))
                .filter(|(_, (after, before))| *after > before)
                .map(|(group, _)| group.clone())
                .collect()
        })
        .collect()
}

#[test]
fn scaling_the_fleet_from_3_to_5_moves_only_the_watches_the_new_members_win() {
    let broker = Kafka::shared();
    broker.create_topic("fleet-scale", 1);
    let groups: Vec<String> = (0..20).map(|i| format!("fleet-scale-{i}")).collect();
    let redis = Redis::start();
    let url = url_of(&redis);
    let names = ["m0", "m1", "m2", "m3", "m4"];
    // Each watch on a cluster of its own, so 20 owners to move; commits by OffsetFetch, so
    // that 20 clusters do not make 20 commit readers of __consumer_offsets.
    let clusters = Clusters::new(broker, &groups);
    let env = [clusters.env(), ("SCALER_COMMIT_SOURCE", "fetch")];
    let mut replicas: Vec<Replica> = names[..3]
        .iter()
        .map(|name| Replica::start(name, &url, broker, &env))
        .collect();
    // KEDA asks one replica; the owners hold the watches for the fleet.
    let client = replicas[0].process.client();
    for group in &groups {
        let asked = wait_for(Duration::from_secs(20), || {
            client.lag(&metadata_on("fleet-scale", group, &[])).ok()
        });
        assert!(asked.is_some(), "{group}: no answer");
    }
    let expected = |members: &[&str]| -> Vec<Vec<String>> {
        members
            .iter()
            .map(|member| {
                groups
                    .iter()
                    .filter(|g| owner_of(&metadata_on("fleet-scale", g, &[]), members) == *member)
                    .cloned()
                    .collect()
            })
            .collect()
    };
    let settled = |replicas: &[Replica], members: &[&str]| {
        wait_for(Duration::from_secs(20), || {
            let seen = polled_by(replicas, &groups);
            (seen == expected(members)).then_some(seen)
        })
    };
    let three = settled(&replicas, &names[..3]);
    assert!(
        three.is_some(),
        "3 replicas: owners are not the computed ones"
    );
    replicas.extend(
        names[3..]
            .iter()
            .map(|name| Replica::start(name, &url, broker, &env)),
    );
    let five = settled(&replicas, &names);
    assert!(
        five.is_some(),
        "5 replicas: owners are not the computed ones"
    );
    let (three, five) = (three.expect("3"), five.expect("5"));
    let owner = |split: &[Vec<String>], group: &String| {
        split
            .iter()
            .position(|owned| owned.contains(group))
            .expect("an owner")
    };
    let moved: Vec<&String> = groups
        .iter()
        .filter(|g| owner(&three, g) != owner(&five, g))
        .collect();
    assert!(
        moved.iter().all(|g| owner(&five, g) >= 3),
        "moved between old members: {moved:?}"
    );
    println!(
        "3 -> 5 replicas: {} of {} watches (each its own cluster) moved, all to the new \
         members (2/5 expected: {})",
        moved.len(),
        groups.len(),
        groups.len() * 2 / 5
    );
}

#[test]
fn a_watch_asked_on_one_replica_is_polled_by_its_owner_streams_there_follow_it_and_it_expires_fleet_wide(
) {
    use crate::support::StreamEvent;
    let broker = Kafka::shared();
    broker.create_topic("fleet-alive", 1);
    broker.commit("fleet-alive-group", &[("fleet-alive", 0, 0)]);
    let redis = Redis::start();
    let url = url_of(&redis);
    let members = ["a0", "a1"];
    let metadata = [
        ("consumerGroup", "fleet-alive-group"),
        ("topic", "fleet-alive"),
    ];
    let owner = owner_of(&metadata, &members);
    let owner_index = members.iter().position(|m| *m == owner).expect("member");
    let other_index = 1 - owner_index;
    let replicas: Vec<Replica> = members
        .iter()
        .map(|name| Replica::start(name, &url, broker, &[("SCALER_WATCH_TTL", "4s")]))
        .collect();
    // Both see the fleet of two before KEDA asks (until then each would own everything).
    wait_for_fleet_of(&replicas);
    let other = replicas[other_index].process.client();
    let lag = wait_for(Duration::from_secs(20), || other.lag(&metadata).ok());
    assert_eq!(lag, Some(0));
    // KEDA asks only the replica that does not own the watch, and holds a stream open there.
    let asking = {
        let client = replicas[other_index].process.client();
        Background::spawn("fleet-asking", move |stop: &AtomicBool| {
            let metadata = [
                ("consumerGroup", "fleet-alive-group"),
                ("topic", "fleet-alive"),
            ];
            while !stop.load(Ordering::Relaxed) {
                let _ = client.lag(&metadata);
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let stream = other.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(5));
    assert!(
        matches!(first, Some(StreamEvent::Message(false, _))),
        "{first:?}"
    );
    let polls = |index: usize| {
        watch_value(
            &replicas[index].metrics(),
            "lagscaler_watch_polls_total",
            "fleet-alive-group",
        )
        .unwrap_or(0.0)
    };
    let owner_polls = wait_for(Duration::from_secs(15), || {
        let now = polls(owner_index);
        (now >= 3.0).then_some(now)
    });
    assert!(
        owner_polls.is_some(),
        "the owner, never asked, does not poll the watch"
    );
    // The other polled for its first answer (the fleet had no sample yet), and never again.
    let other_before = polls(other_index);

    // A record: the owner's next sample reaches the stream on the other replica.
    broker.produce("fleet-alive", 0, 5);
    let produced_at = Instant::now();
    let event = stream.next(Duration::from_secs(10));
    let Some(StreamEvent::Message(true, at)) = event else {
        panic!("no activity on the other replica's stream: {event:?}");
    };
    let reaction = at.duration_since(produced_at);
    let other_polls = polls(other_index) - other_before;
    println!(
        "asked on {} only: {owner} polled it ({} polls so far), the other {other_polls} since; a \
         record reached the other's StreamIsActive {:.2} s after it was acknowledged",
        members[other_index],
        polls(owner_index),
        reaction.as_secs_f64()
    );
    // The owner polls on the next tick; the feed and the push thread take milliseconds.
    assert!(reaction <= POLL + Duration::from_secs(1), "{reaction:?}");
    assert!(
        other_polls == 0.0,
        "{other_polls} polls on the replica that does not own it"
    );

    // Nobody asks any more: after the watch TTL the watch is gone from both.
    stream.cancel();
    asking.finish();
    let stopped = Instant::now();
    let gone = wait_for(Duration::from_secs(30), || {
        replicas
            .iter()
            .all(|r| r.metrics().lines().any(|l| l == "lagscaler_watches 0"))
            .then(|| stopped.elapsed())
    });
    println!("gone from both replicas {gone:?} after the last ask (watch TTL 4 s)");
    assert!(gone.is_some(), "the watch did not expire fleet-wide");
}
