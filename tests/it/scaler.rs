//! The KEDA protocol end to end: exact lag from real offsets, activation, metric spec,
//! offset-reset rules, bad metadata, errors, and watch expiry.

use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;
use lagscaler::grpc::proto::health::health_check_response::ServingStatus;

use crate::support::{free_port, thread_names, wait_for, Kafka, Scaler};

const POLL: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(600);

#[test]
fn reports_exact_lag_activation_and_target_and_follows_new_commits() {
    let broker = Kafka::shared();
    broker.create_topic("orders", 3);
    for (partition, count) in [(0, 5), (1, 3), (2, 7)] {
        broker.produce("orders", partition, count);
    }
    broker.commit(
        "billing",
        &[("orders", 0, 2), ("orders", 1, 3), ("orders", 2, 1)],
    );
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let base = [
        ("scalerAddress", "lagscaler:8090"),
        ("consumerGroup", "billing"),
        ("topic", "orders"),
        ("lagThreshold", "4"),
    ];
    let with_activation = |threshold: &'static str| {
        let mut metadata = base.to_vec();
        metadata.push(("activationLagThreshold", threshold));
        metadata
    };

    let (name, target, target_float) = scaler.metric_spec(&base).expect("metric spec");
    assert_eq!(name, "kafka-lag-billing-orders");
    assert_eq!((target, target_float), (4, 4.0));

    // 5-2 + 3-3 + 7-1 = 9, in both the int and the float field.
    assert_eq!(scaler.get_metrics(&base).expect("metrics"), (9, 9.0));
    assert!(scaler.is_active(&with_activation("8")).expect("is active"));
    assert!(!scaler.is_active(&with_activation("9")).expect("is active"));
    assert!(scaler.is_active(&base).expect("is active with default 0"));
    assert_eq!(
        scaler.daemon().watch_count(),
        1,
        "thresholds share one watch"
    );

    // The consumer catches up on partition 2: lag 3 within two poll intervals.
    broker.commit("billing", &[("orders", 2, 7)]);
    let seen = scaler.wait_for_lag(&base, 3, 2 * POLL);
    assert!(seen.is_some(), "lag 3 not seen within {:?}", 2 * POLL);
    assert!(!scaler.is_active(&with_activation("8")).expect("is active"));

    // New records raise it again.
    broker.produce("orders", 1, 4);
    let seen = scaler.wait_for_lag(&base, 7, 2 * POLL);
    assert!(seen.is_some(), "lag 7 not seen within {:?}", 2 * POLL);
    scaler.stop();
}

#[test]
fn empty_topic_counts_every_topic_the_group_committed_on() {
    let broker = Kafka::shared();
    broker.create_topic("alpha", 2);
    broker.create_topic("beta", 1);
    broker.create_topic("gamma", 1);
    broker.produce("alpha", 0, 4);
    broker.produce("alpha", 1, 4);
    broker.produce("beta", 0, 6);
    broker.produce("gamma", 0, 9);
    broker.commit("mixed", &[("alpha", 0, 1), ("beta", 0, 2)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);

    // alpha[0] 3 + alpha[1] uncommitted (latest: 1) + beta 4; gamma is not the group's.
    let latest = [("consumerGroup", "mixed"), ("topic", "")];
    assert_eq!(scaler.lag(&latest).expect("lag"), 8);
    // With earliest, alpha[1]'s 4 retained records count instead of 1.
    let earliest = [
        ("consumerGroup", "mixed"),
        ("offsetResetPolicy", "earliest"),
    ];
    assert_eq!(scaler.lag(&earliest).expect("lag"), 11);
    let (name, _, _) = scaler.metric_spec(&latest).expect("spec");
    assert_eq!(name, "kafka-lag-mixed-all-topics");
    scaler.stop();
}

#[test]
fn group_without_commits_follows_the_offset_reset_policy() {
    let broker = Kafka::shared();
    broker.create_topic("fresh", 2);
    broker.produce("fresh", 0, 3);
    broker.produce("fresh", 1, 5);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);

    let latest = [("consumerGroup", "newcomer"), ("topic", "fresh")];
    assert_eq!(scaler.lag(&latest).expect("lag"), 2, "1 per partition");
    let earliest = [
        ("consumerGroup", "newcomer"),
        ("topic", "fresh"),
        ("offsetResetPolicy", "earliest"),
    ];
    assert_eq!(
        scaler.lag(&earliest).expect("lag"),
        8,
        "every retained record"
    );

    // No topic and no commits: nothing to measure, said as an error, not a 0.
    let status = scaler
        .lag(&[("consumerGroup", "newcomer")])
        .expect_err("no topic to measure");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(
        status.message().contains("no committed offsets"),
        "{status:?}"
    );
    scaler.stop();
}

#[test]
fn kafka_errors_are_unavailable_with_the_cause() {
    let broker = Kafka::shared();
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [("consumerGroup", "g"), ("topic", "no-such-topic")];
    let status = scaler.lag(&metadata).expect_err("unknown topic");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(status.message().contains("no-such-topic"), "{status:?}");
    let status = scaler.is_active(&metadata).expect_err("unknown topic");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    scaler.stop();
}

/// `topic` with several topics, as KEDA's `apache-kafka` trigger takes it: the lag of every
/// partition of every topic listed, in any order; a topic of the list that does not exist
/// fails the watch, naming it.
#[test]
fn a_topic_list_counts_every_topic_and_names_a_missing_one() {
    let broker = Kafka::shared();
    broker.create_topic("list-a", 2);
    broker.create_topic("list-b", 1);
    broker.produce("list-a", 0, 5);
    broker.produce("list-a", 1, 3);
    broker.produce("list-b", 0, 4);
    // Lag 4 + 2 on list-a and 4 on list-b; a topic of the group not listed does not count.
    broker.create_topic("list-other", 1);
    broker.produce("list-other", 0, 9);
    broker.commit(
        "list-readers",
        &[
            ("list-a", 0, 1),
            ("list-a", 1, 1),
            ("list-b", 0, 0),
            ("list-other", 0, 0),
        ],
    );
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let group = ("consumerGroup", "list-readers");
    assert_eq!(
        scaler
            .lag(&[group, ("topic", "list-b, list-a")])
            .expect("lag"),
        10
    );
    // limitToPartitionsWithLag counts the lagging partitions of every topic: 3 of them,
    // so the metric is capped at 3 × lagThreshold.
    let capped = [
        group,
        ("topic", "list-a,list-b"),
        ("lagThreshold", "2"),
        ("limitToPartitionsWithLag", "true"),
    ];
    assert_eq!(scaler.lag(&capped).expect("capped lag"), 6);
    let missing = [group, ("topic", "list-a,list-missing")];
    let status = scaler
        .lag(&missing)
        .expect_err("a topic that does not exist");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(status.message().contains("list-missing"), "{status:?}");
    scaler.stop();
}

/// `topicPattern` counts every topic of the cluster whose whole name matches, whether the
/// group committed on it or not; a topic created while watched counts from the next poll
/// cycle; a pattern that matches nothing is UNAVAILABLE naming it.
#[test]
fn a_topic_pattern_counts_every_matching_topic_and_new_ones_within_a_cycle() {
    let broker = Kafka::shared();
    broker.create_topic("pat-orders-eu", 1);
    broker.create_topic("pat-orders-us", 2);
    broker.create_topic("pat-orders-us-archive", 1);
    broker.create_topic("pat-audit", 1);
    broker.produce("pat-orders-eu", 0, 5);
    broker.produce("pat-orders-us", 0, 3);
    broker.produce("pat-orders-us", 1, 2);
    broker.produce("pat-orders-us-archive", 0, 8);
    broker.produce("pat-audit", 0, 4);
    // Lag 4 on eu, 2 on us; archive (not a whole match) and audit do not count.
    broker.commit(
        "pat-readers",
        &[
            ("pat-orders-eu", 0, 1),
            ("pat-orders-us", 0, 3),
            ("pat-orders-us", 1, 0),
            ("pat-orders-us-archive", 0, 0),
            ("pat-audit", 0, 0),
        ],
    );
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [
        ("consumerGroup", "pat-readers"),
        ("topicPattern", "pat-orders-(eu|us|apac)"),
    ];
    assert_eq!(scaler.lag(&metadata).expect("lag"), 6);

    // A new matching topic, which the group has not committed on yet: its partitions count
    // 1 each (offsetResetPolicy latest, as for a listed topic), then its lag once committed.
    broker.create_topic("pat-orders-apac", 2);
    let created = Instant::now();
    let seen = wait_for(Duration::from_secs(10), || {
        (scaler.lag(&metadata).ok()? == 8).then(|| created.elapsed())
    });
    let seen = seen.unwrap_or_else(|| panic!("apac never counted: {:?}", scaler.lag(&metadata)));
    eprintln!("a new matching topic counted {seen:?} after it was created");
    // Within a poll cycle or two of the topic being there (each cycle lists the topics).
    assert!(
        seen < 4 * POLL + Duration::from_secs(1),
        "counted after {seen:?}"
    );
    broker.produce("pat-orders-apac", 0, 7);
    broker.commit(
        "pat-readers",
        &[("pat-orders-apac", 0, 0), ("pat-orders-apac", 1, 0)],
    );
    assert!(
        wait_for(Duration::from_secs(10), || (scaler.lag(&metadata).ok()?
            == 13)
            .then_some(()))
        .is_some(),
        "{:?}",
        scaler.lag(&metadata)
    );

    let nothing = [
        ("consumerGroup", "pat-readers"),
        ("topicPattern", "pat-none-.*"),
    ];
    let status = scaler
        .lag(&nothing)
        .expect_err("a pattern that matches nothing");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(
        status.message().contains("topicPattern pat-none-.*"),
        "{status:?}"
    );
    scaler.stop();
}

#[test]
fn unreachable_kafka_answers_unavailable_well_within_kedas_deadline() {
    // Nothing listens on this port, so the first poll cannot finish quickly.
    let dead = format!("127.0.0.1:{}", free_port());
    let scaler = Scaler::start(&dead, POLL, TTL);
    let started = Instant::now();
    let status = scaler
        .lag(&[("consumerGroup", "g"), ("topic", "t")])
        .expect_err("no data from a dead cluster");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE);
    assert!(
        elapsed < Duration::from_millis(2500),
        "answered after {elapsed:?}"
    );
    scaler.stop();
}

#[test]
fn bad_metadata_is_invalid_argument_naming_the_key() {
    // No broker needed: bad metadata is refused before any watch exists.
    let scaler = Scaler::start(&format!("127.0.0.1:{}", free_port()), POLL, TTL);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("topic", "orders")], "consumerGroup"),
        (
            &[("consumerGroup", "g"), ("lagThreshold", "abc")],
            "lagThreshold",
        ),
        (
            &[("consumerGroup", "g"), ("lagThreshold", "0")],
            "lagThreshold",
        ),
        (
            &[("consumerGroup", "g"), ("offsetResetPolicy", "sideways")],
            "offsetResetPolicy",
        ),
        (
            &[
                ("consumerGroup", "g"),
                ("bootstrapServers", "elsewhere:9092"),
            ],
            "bootstrapServers",
        ),
        (
            &[("consumerGroup", "g"), ("lagTreshold", "5")],
            "lagTreshold",
        ),
    ];
    for (metadata, key) in cases {
        let answers = [
            scaler.lag(metadata).map(|_| ()),
            scaler.is_active(metadata).map(|_| ()),
            scaler.metric_spec(metadata).map(|_| ()),
        ];
        for answer in answers {
            let status = answer.expect_err("bad metadata must be refused");
            assert_eq!(
                status.code(),
                RpcStatusCode::INVALID_ARGUMENT,
                "{metadata:?}"
            );
            assert!(
                status.message().contains(key) && status.message().contains("expected"),
                "{metadata:?}: {}",
                status.message()
            );
        }
    }
    assert_eq!(scaler.daemon().watch_count(), 0);
    scaler.stop();
}

/// The keys KEDA's own `external` and `external-push` scalers read from a trigger's
/// metadata, which KEDA forwards to the scaler with the rest (kedacore/keda
/// `pkg/scalers/external_scaler.go`, v2.13 to v2.21): `scalerAddress` and `unsafeSsl` in all,
/// `tlsCertFile` up to 2.16, `enableTLS` from 2.17; `caCert`, `tlsClientCert` and
/// `tlsClientKey` are read from its TriggerAuthentication, and are accepted here too in case a
/// ScaledObject puts them in its metadata.
const KEDA_EXTERNAL_KEYS: &[(&str, &str)] = &[
    ("scalerAddress", "lagscaler.keda.svc:8090"),
    ("unsafeSsl", "false"),
    ("tlsCertFile", "/certs/lagscaler-ca.crt"),
    ("enableTLS", "true"),
    ("caCert", "-----BEGIN CERTIFICATE-----"),
    ("tlsClientCert", "-----BEGIN CERTIFICATE-----"),
    ("tlsClientKey", "-----BEGIN PRIVATE KEY-----"),
];

#[test]
fn every_key_kedas_external_scaler_reads_is_accepted_by_every_call() {
    let broker = Kafka::shared();
    broker.create_topic("keda-keys", 1);
    broker.produce("keda-keys", 0, 3);
    broker.commit("keda-keys-group", &[("keda-keys", 0, 1)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let base = [("consumerGroup", "keda-keys-group"), ("topic", "keda-keys")];
    for key in KEDA_EXTERNAL_KEYS {
        let mut metadata = base.to_vec();
        metadata.push(*key);
        let name = key.0;
        scaler
            .metric_spec(&metadata)
            .unwrap_or_else(|status| panic!("GetMetricSpec with {name}: {status:?}"));
        let refused = |status: grpcio::RpcStatus| format!("{name}: {status:?}");
        assert_eq!(scaler.lag(&metadata).map_err(refused), Ok(2));
        assert_eq!(scaler.is_active(&metadata).map_err(refused), Ok(true));
        let stream = scaler.stream_is_active(&metadata);
        let first = stream.next(Duration::from_secs(10));
        assert!(
            matches!(first, Some(crate::support::StreamEvent::Message(true, _))),
            "StreamIsActive with {name}: {first:?}"
        );
        drop(stream);
    }
    // All of them at once, as a ScaledObject with TLS to the scaler has them.
    let mut metadata = base.to_vec();
    metadata.extend_from_slice(KEDA_EXTERNAL_KEYS);
    let refused = |status: grpcio::RpcStatus| format!("{status:?}");
    assert_eq!(scaler.lag(&metadata).map_err(refused), Ok(2));
    scaler.stop();
}

#[test]
fn scaled_object_names_must_be_kubernetes_names_and_are_never_echoed() {
    // No broker needed: a bad name is refused before any watch exists.
    let scaler = Scaler::start(&format!("127.0.0.1:{}", free_port()), POLL, TTL);
    let metadata = [("consumerGroup", "g"), ("topic", "t")];
    let huge = "n".repeat(3 * 1024 * 1024);
    let cases = [
        ("namespace", huge.as_str(), "test-object"),
        ("namespace", "Not_A_Namespace", "test-object"),
        ("namespace", "", "test-object"),
        ("name", "test", "bad name with spaces\n"),
        ("name", "test", huge.as_str()),
        ("name", "test", ""),
    ];
    for (field, namespace, name) in cases {
        let mut object = crate::support::scaled_object(&metadata);
        object.namespace = namespace.to_owned();
        object.name = name.to_owned();
        let refusals = [
            scaler.is_active_for(&object).map(|_| ()),
            scaler
                .try_get_metrics_for(object.clone())
                .map(|_| ())
                .map_err(crate::support::into_status),
        ];
        for refused in refusals {
            let status = refused.expect_err("a bad ScaledObjectRef must be refused");
            assert_eq!(status.code(), RpcStatusCode::INVALID_ARGUMENT, "{field}");
            let message = status.message();
            assert!(
                message.contains(&format!("scaledObjectRef.{field}"))
                    && message.contains("expected"),
                "{field}: {message}"
            );
            assert!(
                message.len() < 400,
                "{field}: the value is echoed ({} bytes)",
                message.len()
            );
        }
        let stream = scaler.stream_is_active_for(&object);
        match stream.next(Duration::from_secs(5)) {
            Some(crate::support::StreamEvent::Failed(status)) => {
                assert!(status.contains("INVALID_ARGUMENT"), "{field}: {status}")
            }
            other => panic!("{field}: a stream from a bad ScaledObjectRef: {other:?}"),
        }
    }
    assert_eq!(scaler.daemon().watch_count(), 0, "nothing was kept");
    // Names at the limits are fine.
    let mut object = crate::support::scaled_object(&metadata);
    object.namespace = "a".repeat(63);
    object.name = format!("{0}.{0}.{0}.{1}", "b".repeat(63), "c".repeat(61));
    assert_eq!(object.name.len(), 253);
    let status = scaler.is_active_for(&object).expect_err("no broker");
    assert_eq!(status.code(), RpcStatusCode::UNAVAILABLE, "{status:?}");
    scaler.stop();
}

#[test]
fn idle_watch_expires_and_its_thread_is_joined_while_an_active_one_stays() {
    let broker = Kafka::shared();
    broker.create_topic("ttl-topic", 1);
    let ttl = Duration::from_secs(1);
    let scaler = Scaler::start(&broker.bootstrap(), Duration::from_millis(200), ttl);
    // Thread names are "watch-<group>", cut by Linux to 15 bytes: these fit exactly.
    let idle = [("consumerGroup", "ttl-probe"), ("topic", "ttl-topic")];
    let kept = [("consumerGroup", "ttl-keeps"), ("topic", "ttl-topic")];
    scaler.metric_spec(&idle).expect("spec");
    scaler.metric_spec(&kept).expect("spec");
    let running = wait_for(Duration::from_secs(5), || {
        let names = thread_names();
        (names.iter().any(|n| n == "watch-ttl-probe")
            && names.iter().any(|n| n == "watch-ttl-keeps"))
        .then_some(())
    });
    assert!(running.is_some(), "watcher threads: {:?}", thread_names());
    assert_eq!(scaler.daemon().watch_count(), 2);

    // Keep asking about one watch for three TTLs; the other is left alone.
    let started = Instant::now();
    while started.elapsed() < 3 * ttl {
        scaler.lag(&kept).expect("kept watch answers");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        scaler.daemon().watch_count(),
        1,
        "only the idle watch expired"
    );
    let names = thread_names();
    assert!(!names.iter().any(|n| n == "watch-ttl-probe"), "{names:?}");
    assert!(names.iter().any(|n| n == "watch-ttl-keeps"), "{names:?}");

    // Asking again starts a fresh watch.
    scaler.lag(&idle).expect("re-registered watch answers");
    assert_eq!(scaler.daemon().watch_count(), 2);
    scaler.stop();
    let names = thread_names();
    assert!(
        !names.iter().any(|n| n.starts_with("watch-ttl-")),
        "{names:?}"
    );
}

#[test]
fn health_service_reports_serving_and_unknown_services_are_not_found() {
    let scaler = Scaler::start(&format!("127.0.0.1:{}", free_port()), POLL, TTL);
    for service in ["", "externalscaler.ExternalScaler"] {
        let status = scaler.health(service).expect("health check");
        assert_eq!(status, ServingStatus::SERVING, "service {service:?}");
    }
    let status = scaler
        .health("no.such.Service")
        .expect_err("unknown service");
    assert_eq!(status.code(), RpcStatusCode::NOT_FOUND);
    scaler.stop();
}

mod fuzz {
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::time::Duration;

    use grpcio::RpcStatusCode;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use crate::support::{free_port, Scaler};

    /// KEDA's keys and lagscaler's, plus random ones.
    fn key() -> impl Strategy<Value = String> {
        let known: Vec<&'static str> = lagscaler::trigger::OWN_KEYS
            .iter()
            .copied()
            .chain(["scalerAddress"])
            .collect();
        prop_oneof![
            20 => prop::sample::select(known).prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => any::<String>(),
            1 => any::<i128>().prop_map(|n| n.to_string()),
            3 => prop::sample::select(vec![
                "", "g", "t", "0", "1", "5", "true", "false", "lag", "2m", "earliest",
            ])
            .prop_map(str::to_owned),
            1 => (1usize..50_000).prop_map(|n| "x".repeat(n)),
        ]
    }

    /// Arbitrary metadata over real gRPC: never a panic or a dropped call, always OK (a
    /// valid trigger's spec, with a target KEDA can hold) or INVALID_ARGUMENT.
    #[test]
    fn any_metadata_over_grpc_is_ok_or_invalid_argument() {
        // Nothing listens on this port: valid triggers get a spec and a watch that fails.
        let dead = format!("127.0.0.1:{}", free_port());
        let mut config = Scaler::config(&dead, Duration::from_secs(60), Duration::from_secs(1));
        config.kafka.request_timeout = Duration::from_millis(200);
        let scaler = Scaler::start_with(config);
        let mut runner = TestRunner::new(Config::with_cases(1_500));
        // Half the maps name a plain group, so that valid triggers are common too.
        let strategy = (
            prop::collection::hash_map(key(), value(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(mut metadata, named)| {
                if named {
                    metadata.insert("consumerGroup".to_owned(), "g".to_owned());
                }
                metadata
            });
        let (ok, invalid) = (Cell::new(0), Cell::new(0));
        let result = runner.run(&strategy, |metadata: HashMap<String, String>| {
            let pairs: Vec<(&str, &str)> = metadata
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str()))
                .collect();
            match scaler.metric_spec(&pairs) {
                Ok((_, target, target_float)) => {
                    // A target KEDA can hold: it keeps target × 1000 in an int64.
                    let max = lagscaler::estimate::MAX_REPORTED_INT;
                    prop_assert!((1..=max).contains(&target), "target {}", target);
                    prop_assert!(
                        target_float > 0.0 && target_float <= max as f64,
                        "target {}",
                        target_float
                    );
                    ok.set(ok.get() + 1)
                }
                Err(status) => {
                    prop_assert_eq!(status.code(), RpcStatusCode::INVALID_ARGUMENT);
                    prop_assert!(status.message().starts_with("metadata "));
                    invalid.set(invalid.get() + 1);
                }
            }
            Ok(())
        });
        let (ok, invalid) = (ok.get(), invalid.get());
        println!("metadata over gRPC: {ok} accepted, {invalid} refused");
        result.expect("every call OK or INVALID_ARGUMENT");
        assert!(ok > 0 && invalid > 0, "{ok} accepted, {invalid} refused");
        scaler.stop();
    }
}

#[test]
fn watches_beyond_the_cap_are_resource_exhausted_and_existing_ones_unaffected() {
    let broker = Kafka::shared();
    broker.create_topic("capped", 1);
    broker.produce("capped", 0, 4);
    for group in ["a", "b", "c"] {
        broker.commit(group, &[("capped", 0, 1)]);
    }
    let mut config = Scaler::config(&broker.bootstrap(), POLL, Duration::from_secs(1));
    config.max_watches = 2;
    let scaler = Scaler::start_with(config);
    let watch = |group: &'static str| [("consumerGroup", group), ("topic", "capped")];

    assert_eq!(scaler.lag(&watch("a")).expect("first watch"), 3);
    assert_eq!(scaler.lag(&watch("b")).expect("second watch"), 3);
    for status in [
        scaler.lag(&watch("c")).expect_err("third watch"),
        scaler
            .metric_spec(&watch("c"))
            .expect_err("third watch's spec"),
    ] {
        assert_eq!(
            status.code(),
            RpcStatusCode::RESOURCE_EXHAUSTED,
            "{status:?}"
        );
        assert!(
            status.message().contains("SCALER_MAX_WATCHES=2"),
            "{status:?}"
        );
    }
    // A different threshold on a watched group needs no new watch.
    let mut same_watch = watch("a").to_vec();
    same_watch.push(("activationLagThreshold", "5"));
    assert!(!scaler
        .is_active(&same_watch)
        .expect("same watch, other rules"));
    assert_eq!(scaler.daemon().watch_count(), 2);

    // Once "b" expires (TTL 1 s) while "a" is kept asked about, "c" fits.
    let admitted = wait_for(Duration::from_secs(5), || {
        scaler.lag(&watch("a")).ok()?;
        scaler.lag(&watch("c")).ok()
    });
    assert_eq!(admitted, Some(3));
    scaler.stop();
}

/// Requests of each kind per poll cycle, with [`SHARING_WATCHES`] watches of one topic read
/// with committed offsets from `source`.
fn requests_per_cycle(
    source: lagscaler::config::CommitSource,
) -> (std::collections::BTreeMap<String, f64>, String) {
    let broker = Kafka::shared();
    let topic = format!("shared-{}", source.as_str());
    broker.create_topic(&topic, 4);
    broker.produce(&topic, 0, 3);
    let groups: Vec<String> = (0..SHARING_WATCHES)
        .map(|i| format!("sharer-{}-{i}", source.as_str()))
        .collect();
    for group in &groups {
        broker.commit(group, &[(&topic, 0, 1)]);
    }
    let mut config = Scaler::config(&broker.bootstrap(), POLL, TTL);
    config.kafka.stats_interval = Some(Duration::from_millis(250));
    config.kafka.commit_source = source;
    let scaler = Scaler::start_with(config);
    for group in &groups {
        let metadata = [("consumerGroup", group.as_str()), ("topic", topic.as_str())];
        // 2 on partition 0, and 1 on each partition never committed (KEDA's rule).
        assert_eq!(scaler.lag(&metadata).expect("lag"), 5);
    }
    // Two cycles in: every watch is on the shared schedule.
    std::thread::sleep(2 * POLL);
    let before = scaler.daemon().kafka_requests().expect("statistics");
    let measured = Instant::now();
    std::thread::sleep(6 * POLL);
    let after = scaler.daemon().kafka_requests().expect("statistics");
    let cycles = measured.elapsed().as_secs_f64() / POLL.as_secs_f64();
    let per_cycle = after
        .iter()
        .map(|(api, count)| {
            let earlier = before.get(api).copied().unwrap_or(0);
            (api.clone(), (count - earlier) as f64 / cycles)
        })
        .collect();
    scaler.stop();
    (per_cycle, format!("{before:?} -> {after:?}"))
}

const SHARING_WATCHES: usize = 12;

#[test]
fn watches_of_one_topic_share_its_offsets_reads_in_each_cycle() {
    use lagscaler::config::CommitSource;
    let count = |counts: &std::collections::BTreeMap<String, f64>, api: &str| {
        counts.get(api).copied().unwrap_or(0.0)
    };
    // The reports lag by up to their interval: allow half a read either side.
    // With OffsetFetch, per cycle: one OffsetFetch per watch, but one Metadata and two
    // ListOffsets (latest, earliest) for the topic, and one ListGroups + DescribeGroups for
    // everyone.
    let (fetch, seen) = requests_per_cycle(CommitSource::Fetch);
    assert!(
        count(&fetch, "OffsetFetch") > (SHARING_WATCHES - 2) as f64,
        "{seen}"
    );
    for (api, reads) in [
        ("ListOffsets", 2.0),
        ("Metadata", 1.0),
        ("DescribeGroups", 1.0),
    ] {
        assert!(
            count(&fetch, api) <= reads * 1.5,
            "{api}: {fetch:?}; {seen}"
        );
    }
    // With the commit stream: no OffsetFetch once every group is bootstrapped; the topic's
    // reads, plus those of __consumer_offsets (one broker here) that check the reader is
    // up to date (its last stable offsets and high watermarks: two reads of two ends); a
    // fetch of the reader now and then.
    let (stream, seen) = requests_per_cycle(CommitSource::Auto);
    assert!(count(&stream, "OffsetFetch") < 0.5, "{stream:?}; {seen}");
    for (api, reads) in [
        ("ListOffsets", 6.0),
        ("Metadata", 3.0),
        ("DescribeGroups", 1.0),
    ] {
        assert!(
            count(&stream, api) <= reads * 1.5,
            "{api}: {stream:?}; {seen}"
        );
    }
}

#[test]
fn an_open_stream_resends_its_activity_after_thirty_quiet_seconds() {
    let broker = Kafka::shared();
    broker.create_topic("keepalive", 1);
    broker.produce("keepalive", 0, 4);
    broker.commit("keepalive-group", &[("keepalive", 0, 1)]);
    let scaler = Scaler::start(&broker.bootstrap(), POLL, TTL);
    let metadata = [("consumerGroup", "keepalive-group"), ("topic", "keepalive")];
    let stream = scaler.stream_is_active(&metadata);
    let Some(crate::support::StreamEvent::Message(true, first)) =
        stream.next(Duration::from_secs(5))
    else {
        panic!("no first message");
    };
    // Nothing changes: the next message is the same activity, sent again after 30 s.
    let next = stream.next(lagscaler::grpc::KEEPALIVE + Duration::from_secs(5));
    let Some(crate::support::StreamEvent::Message(true, again)) = next else {
        panic!("no keep-alive: {next:?}");
    };
    let quiet = again.duration_since(first);
    println!("keep-alive after {quiet:?}");
    assert!(
        quiet >= lagscaler::grpc::KEEPALIVE
            && quiet <= lagscaler::grpc::KEEPALIVE + Duration::from_secs(3),
        "{quiet:?}"
    );
    drop(stream);
    scaler.stop();
}

#[test]
fn a_cancelled_stream_is_forgotten_and_stops_keeping_its_watch_alive() {
    let broker = Kafka::shared();
    broker.create_topic("cancelled", 1);
    broker.produce("cancelled", 0, 2);
    let ttl = Duration::from_secs(2);
    let scaler = Scaler::start(&broker.bootstrap(), Duration::from_millis(200), ttl);
    let metadata = [("consumerGroup", "cancelled-group"), ("topic", "cancelled")];
    let streams: Vec<_> = (0..3).map(|_| scaler.stream_is_active(&metadata)).collect();
    for stream in &streams {
        assert!(matches!(
            stream.next(Duration::from_secs(5)),
            Some(crate::support::StreamEvent::Message(..))
        ));
    }
    // Open streams keep the watch alive past its TTL with no other call.
    std::thread::sleep(ttl * 2);
    assert_eq!(
        scaler.daemon().watch_count(),
        1,
        "an open stream keeps its watch"
    );
    let cancelled = Instant::now();
    for stream in streams {
        stream.cancel();
    }
    // Forgotten within a second's sweep; then the watch expires after its TTL.
    let expired = wait_for(ttl + Duration::from_secs(4), || {
        (scaler.daemon().watch_count() == 0).then(|| cancelled.elapsed())
    });
    let expired = expired.expect("cancelled streams still keep the watch alive");
    println!("watch expired {expired:?} after its streams were cancelled (TTL {ttl:?})");
    // The last sweep before the cancel touched it up to a second earlier.
    assert!(expired >= ttl - Duration::from_secs(1), "{expired:?}");
    scaler.stop();
}
