//! Time lag end to end: how long the oldest record a group has not consumed has waited, with
//! the records' timestamps (`CreateTime`) set by the test, on Apache Kafka.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{wait_for, Kafka, Scaler};

const POLL: Duration = Duration::from_millis(300);
const TTL: Duration = Duration::from_secs(600);

/// Milliseconds since the Unix epoch, `ago` before now.
fn written_ago(ago: Duration) -> i64 {
    let written = SystemTime::now() - ago;
    written
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64
}

/// The `timeLag` value GetMetrics gives once `accept` holds for it, within 20 s.
fn wait_for_time_lag(scaler: &Scaler, metadata: &[(&str, &str)], accept: impl Fn(f64) -> bool) {
    let mut last = None;
    let found = wait_for(Duration::from_secs(20), || {
        let value = scaler.get_metrics(metadata).ok().map(|(_, value)| value);
        last = value;
        value.filter(|value| accept(*value))
    });
    assert!(found.is_some(), "last time lag {last:?} for {metadata:?}");
}

#[test]
fn a_backlog_older_than_the_watch_is_aged_by_the_records_timestamps() {
    let broker = Kafka::shared();
    broker.create_topic("aged", 2);
    // Partition 0: five records written 10 minutes ago, then five 5 minutes ago; partition 1:
    // three records 2 minutes ago, all consumed.
    let clock = Instant::now();
    broker.produce_written_at("aged", 0, 5, written_ago(Duration::from_secs(600)));
    broker.produce_written_at("aged", 0, 5, written_ago(Duration::from_secs(300)));
    broker.produce_written_at("aged", 1, 3, written_ago(Duration::from_secs(120)));
    broker.commit("aged-readers", &[("aged", 0, 0), ("aged", 1, 3)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [
        ("consumerGroup", "aged-readers"),
        ("topic", "aged"),
        ("metric", "timeLag"),
        ("timeLagThreshold", "60"),
    ];
    let spec = scaler.metric_spec(&metadata).expect("metric spec");
    assert_eq!(
        spec,
        ("kafka-timeLag-aged-readers-aged".to_owned(), 60, 60.0)
    );
    // The oldest record waiting is 10 minutes old, and the watch began just now: only the
    // broker's timestamp can tell.
    let value = time_lag(&scaler, &metadata);
    let most = 600.0 + clock.elapsed().as_secs_f64() + 0.01;
    assert!((600.0..most).contains(&value), "{value} (most {most})");

    // Consumed past the older five: the oldest waiting is 5 minutes old, still before the
    // watch's own history.
    broker.commit("aged-readers", &[("aged", 0, 5)]);
    wait_for_time_lag(&scaler, &metadata, |value| {
        (300.0..300.0 + clock.elapsed().as_secs_f64()).contains(&value)
    });
    // Everything consumed: nothing waits.
    broker.commit("aged-readers", &[("aged", 0, 10)]);
    wait_for_time_lag(&scaler, &metadata, |value| value == 0.0);
    assert!(!scaler.is_active(&metadata).expect("IsActive"));
    scaler.stop();
}

#[test]
fn records_written_while_watched_are_aged_by_the_watch_not_by_their_timestamps() {
    let broker = Kafka::shared();
    broker.create_topic("aged-live", 1);
    broker.produce("aged-live", 0, 2);
    broker.commit("aged-live-readers", &[("aged-live", 0, 2)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [
        ("consumerGroup", "aged-live-readers"),
        ("topic", "aged-live"),
        ("metric", "timeLag"),
        ("timeLagThreshold", "30"),
    ];
    assert_eq!(time_lag(&scaler, &metadata), 0.0);
    // Records whose producer claims they are an hour old (a replay, a clock far behind):
    // the watch saw the end pass them just now, which is what their wait is measured from.
    let produced = Instant::now();
    broker.produce_written_at("aged-live", 0, 3, written_ago(Duration::from_secs(3600)));
    thread_sleep(Duration::from_secs(2));
    let value = time_lag(&scaler, &metadata);
    // Between the poll that last saw the end before them and the call: at most the time
    // since the produce call began plus one poll interval (and the served sample's age).
    let most = produced.elapsed().as_secs_f64() + POLL.as_secs_f64();
    assert!(value > 0.5 && value <= most, "{value} (most {most})");
    // Nobody consumes: the wait grows as time passes, as the records really wait.
    wait_for_time_lag(&scaler, &metadata, |later| later >= value + 1.5);

    // Consumed, then a producer gone quiet: nothing waits, however long nothing comes.
    broker.commit("aged-live-readers", &[("aged-live", 0, 5)]);
    wait_for_time_lag(&scaler, &metadata, |value| value == 0.0);
    for _ in 0..5 {
        thread_sleep(POLL);
        assert_eq!(time_lag(&scaler, &metadata), 0.0);
    }
    scaler.stop();
}

#[test]
fn activation_on_age_waits_until_the_oldest_record_has_waited_long_enough() {
    let broker = Kafka::shared();
    broker.create_topic("aged-batches", 1);
    broker.produce("aged-batches", 0, 1);
    broker.commit("aged-batchers", &[("aged-batches", 0, 1)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    // A batch workload: wake only once a record has waited 4 s.
    let metadata = [
        ("consumerGroup", "aged-batchers"),
        ("topic", "aged-batches"),
        ("activationTimeLagThreshold", "4"),
    ];
    assert!(!scaler.is_active(&metadata).expect("IsActive"));
    let produced = Instant::now();
    broker.produce("aged-batches", 0, 3);
    let became_active = wait_for(Duration::from_secs(20), || {
        scaler
            .is_active(&metadata)
            .ok()
            .filter(|active| *active)
            .map(|_| produced.elapsed())
    })
    .expect("active once the records waited 4 s");
    // The wait is measured from the last poll before the records at the earliest.
    assert!(
        became_active >= Duration::from_secs(4) - POLL,
        "active after {became_active:?}"
    );
    // The lag metric is unchanged by the age rule.
    assert_eq!(scaler.lag(&metadata).expect("lag"), 3);
    scaler.stop();
}

/// The `timeLag` value GetMetrics gives now.
fn time_lag(scaler: &Scaler, metadata: &[(&str, &str)]) -> f64 {
    match scaler.get_metrics(metadata) {
        Ok((_, value)) => value,
        Err(status) => panic!("GetMetrics: {status:?}"),
    }
}

fn thread_sleep(duration: Duration) {
    std::thread::sleep(duration);
}

#[test]
fn an_unknown_time_lag_is_unavailable_and_never_reads_as_idle() {
    let broker = Kafka::shared();
    broker.create_topic("aged-unread", 1);
    broker.produce_written_at("aged-unread", 0, 4, written_ago(Duration::from_secs(60)));
    broker.commit("aged-unread-readers", &[("aged-unread", 0, 0)]);
    // The backlog predates the watch, and the broker's records cannot be read.
    lagscaler::hooks::fail_record_reads("aged-unread", true);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let group = [
        ("consumerGroup", "aged-unread-readers"),
        ("topic", "aged-unread"),
    ];
    let time_lag = [
        group[0],
        group[1],
        ("metric", "timeLag"),
        ("timeLagThreshold", "30"),
    ];
    let status = scaler.get_metrics(&time_lag).expect_err("no time lag");
    assert_eq!(status.code(), grpcio::RpcStatusCode::UNAVAILABLE);
    assert!(
        status
            .message()
            .contains("the time lag is not known: on 1 partitions"),
        "{status:?}"
    );
    // Activation on age with an unknown age: active, never a false idle; the lag itself is
    // known and served.
    let on_age = [group[0], group[1], ("activationTimeLagThreshold", "3600")];
    assert!(scaler.is_active(&on_age).expect("IsActive"));
    assert_eq!(scaler.lag(&on_age).expect("lag"), 4);

    // Readable again: the record's own timestamp, about a minute.
    lagscaler::hooks::fail_record_reads("aged-unread", false);
    wait_for_time_lag(&scaler, &time_lag, |value| (60.0..120.0).contains(&value));
    assert!(
        !scaler.is_active(&on_age).expect("IsActive"),
        "a minute < an hour"
    );
    scaler.stop();
}
