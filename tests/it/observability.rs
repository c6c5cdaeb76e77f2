//! The HTTP listener: `/metrics` parses as Prometheus text and agrees with the gRPC answer;
//! `/healthz` follows the process, and `/readyz` whether lagscaler can serve, not Kafka.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{http_get as get, wait_for, Kafka, Scaler};

/// One sample of the text format: name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// Parses Prometheus text format 0.0.4 strictly enough to catch a malformed line: every
/// sample's family is declared by a `# TYPE` line before it, names and label names are
/// valid, label values are quoted with escapes, values are floats.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let valid_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(name) {
                return Err(fail("bad metric name"));
            }
            match keyword {
                "HELP" => {}
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail("bad type"));
                    }
                    types.insert(name.to_owned(), kind.to_owned());
                }
                _ => return Err(fail("unknown comment")),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => return Err(fail("no value")),
        };
        if !valid_name(name) {
            return Err(fail("bad metric name"));
        }
        let mut labels = HashMap::new();
        let mut rest = rest;
        if let Some(inner) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(inner).map_err(|why| fail(&why))?;
            if parsed.keys().any(|label| !valid_name(label)) {
                return Err(fail("bad label name"));
            }
            labels = parsed;
            rest = after;
        }
        let value = rest.trim();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number.parse().map_err(|_| fail("bad value"))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(fail("sample before its # TYPE"));
        }
        samples.push((name.to_owned(), labels, value));
    }
    Ok(samples)
}

/// `name="value",...}` up to the closing brace: the labels, and what follows the brace.
fn parse_labels(text: &str) -> Result<(HashMap<String, String>, &str), String> {
    let mut labels = HashMap::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| "label without a quoted value".to_owned())?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".to_owned()),
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape".to_owned()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(name.to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The value of the first sample called `name` that has `labels` (and maybe more).
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, value)| *value)
}

#[test]
fn metrics_parse_as_prometheus_text_and_agree_with_grpc_and_readiness_is_not_kafkas() {
    // A broker of its own: the test stops it to see that readiness does not follow it.
    let broker = Kafka::start();
    broker.create_topic("ledger", 2);
    broker.produce("ledger", 0, 7);
    broker.produce("ledger", 1, 2);
    broker.commit("accountants", &[("ledger", 0, 3), ("ledger", 1, 2)]);
    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    config.http = Some("127.0.0.1:0".parse().expect("address"));
    config.stale_after = Duration::from_secs(2);
    let scaler = Scaler::start_with(config);
    let http = scaler.daemon().http_addr().expect("HTTP listener");
    let metadata = [("consumerGroup", "accountants"), ("topic", "ledger")];
    let lag = scaler.lag(&metadata).expect("lag");
    assert_eq!(lag, 4);
    // The trigger's rules change (activation above 10, so not active at lag 4), and
    // `/metrics` follows; the test client's ScaledObject is always test/test-object.
    let trigger = [
        ("name", "accountants"),
        ("scaled_object", "test/test-object"),
        ("metric", "kafka-lag-accountants-ledger"),
    ];
    let quiet = [
        ("consumerGroup", "accountants"),
        ("topic", "ledger"),
        ("activationLagThreshold", "10"),
    ];
    assert!(!scaler.is_active(&quiet).expect("IsActive"));
    let text = get(http, "/metrics").1;
    let samples = parse_prometheus(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(
        value_of(&samples, "lagscaler_trigger_active", &trigger),
        Some(0.0),
        "{text}"
    );
    assert!(scaler.is_active(&metadata).expect("IsActive"));
    let bad = [("consumerGroup", "accountants"), ("lagThreshold", "lots")];
    assert!(scaler.lag(&bad).is_err());

    let (status, text) = get(http, "/metrics");
    assert_eq!(status, 200, "{text}");
    let samples = parse_prometheus(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    let value = |name: &str, labels: &[(&str, &str)]| value_of(&samples, name, labels);
    let watch = [
        ("source", "group"),
        ("name", "accountants"),
        ("topic", "ledger"),
    ];
    assert_eq!(
        value("lagscaler_watch_lag", &watch),
        Some(lag as f64),
        "{text}"
    );
    assert_eq!(value("lagscaler_watch_up", &watch), Some(1.0), "{text}");
    // The trigger's answers, as gRPC gave them.
    assert_eq!(
        value("lagscaler_trigger_value", &trigger),
        Some(lag as f64),
        "{text}"
    );
    assert_eq!(
        value("lagscaler_trigger_active", &trigger),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("lagscaler_watch_poll_errors_total", &watch),
        Some(0.0)
    );
    assert!(value("lagscaler_watch_sample_age_seconds", &watch).is_some_and(|age| age < 5.0));
    assert!(value("lagscaler_watch_poll_duration_seconds", &watch).is_some_and(|s| s > 0.0));
    assert_eq!(value("lagscaler_watches", &[]), Some(1.0));
    assert!(value("lagscaler_threads", &[]).is_some_and(|n| n > 5.0));
    let ok = [("method", "GetMetrics"), ("code", "OK")];
    assert!(
        value("lagscaler_grpc_requests_total", &ok).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let refused = [("method", "GetMetrics"), ("code", "INVALID_ARGUMENT")];
    assert_eq!(
        value("lagscaler_grpc_requests_total", &refused),
        Some(1.0),
        "{text}"
    );
    let all = [("method", "GetMetrics"), ("code", "OK"), ("le", "+Inf")];
    assert_eq!(
        value("lagscaler_grpc_request_duration_seconds_bucket", &all),
        value("lagscaler_grpc_requests_total", &ok)
    );

    assert_eq!(get(http, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(http, "/readyz").0, 200);
    assert_eq!(get(http, "/nothing").0, 404);
    drop(broker);
    // With the cluster gone, lagscaler still serves: its answers turn UNAVAILABLE (KEDA's
    // fallback) once the sample is stale, and the pod stays ready for every other trigger.
    // Readiness asks nothing of Kafka, so it answers at once.
    let gone = wait_for(Duration::from_secs(15), || {
        scaler.get_metrics(&metadata).err()
    });
    assert!(
        gone.is_some(),
        "still answered long after the broker went away"
    );
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        assert_eq!(get(http, "/readyz"), (200, "ready\n".to_owned()));
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "{:?}",
            asked.elapsed()
        );
    }
    assert_eq!(get(http, "/healthz").0, 200, "the process is still up");

    // The push thread dies: unready, and a new stream is told why (not "shutting down").
    lagscaler::hooks::panic_push_on_stream_from("obs-push-dies");
    let mut object = crate::support::scaled_object(&metadata);
    object.namespace = "obs-push-dies".to_owned();
    let _dying = scaler.stream_is_active_for(&object);
    let unready = wait_for(Duration::from_secs(5), || {
        let (status, body) = get(http, "/readyz");
        (status == 503).then_some(body)
    });
    assert_eq!(
        unready.as_deref(),
        Some("not ready: the push thread died; lagscaler is exiting\n")
    );
    assert_eq!(
        scaler.daemon().check_threads(),
        Err("the push thread died".to_owned())
    );
    let refused = scaler.stream_is_active(&metadata);
    match refused.next(Duration::from_secs(5)) {
        Some(crate::support::StreamEvent::Failed(status)) => {
            assert!(status.contains("UNAVAILABLE"), "{status}");
            assert!(status.contains("push thread died"), "{status}");
            assert!(!status.contains("shutting down"), "{status}");
        }
        other => panic!("a stream after the push thread died: {other:?}"),
    }
    scaler.stop();
}

#[test]
fn the_format_check_refuses_malformed_text() {
    let good =
        "# TYPE a gauge\na{x=\"q\\\"\\n\"} 1.5\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\n";
    let samples = parse_prometheus(good).expect("valid text");
    assert_eq!(samples[0].1["x"], "q\"\n");
    for bad in [
        "a 1\n",
        "# TYPE a gauge\na{x=\"q} 1\n",
        "# TYPE a gauge\na{x=q} 1\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\n9a 1\n",
        "# TYPE a meter\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?} accepted");
    }
}

/// The series the README's `/metrics` item names: full names, and the `_suffix` shorthand
/// it uses after a full name of the same family (`lagscaler_watch_lag`, `_produce_rate`).
fn series_the_readme_names() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("- `/metrics`")
        .expect("the README's /metrics item");
    let item = &readme[start..];
    let item = &item[..item.find("\n- `/healthz`").expect("the item's end")];
    let mut family = String::new();
    let mut names = Vec::new();
    for token in item.split('`').skip(1).step_by(2) {
        if token.starts_with("lagscaler_") {
            let parts: Vec<&str> = token.splitn(3, '_').collect();
            family = parts[..2.min(parts.len())].join("_");
            names.push(token.to_owned());
        } else if token.starts_with('_') && !family.is_empty() {
            names.push(format!("{family}{token}"));
        }
    }
    names
}

#[test]
fn every_metrics_series_the_readme_names_is_served() {
    let names = series_the_readme_names();
    assert!(names.len() >= 16, "{names:?}");
    let broker = Kafka::shared();
    broker.create_topic("every-series", 1);
    broker.produce("every-series", 0, 5);
    broker.commit("every-series-group", &[("every-series", 0, 5)]);
    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    config.http = Some("127.0.0.1:0".parse().expect("address"));
    // lagscaler_kafka_requests_total needs librdkafka's statistics.
    config.kafka.stats_interval = Some(Duration::from_secs(1));
    let scaler = Scaler::start_with(config);
    let http = scaler.daemon().http_addr().expect("HTTP listener");
    let lag = [
        ("consumerGroup", "every-series-group"),
        ("topic", "every-series"),
    ];
    let replicas = [
        ("consumerGroup", "every-series-group"),
        ("topic", "every-series"),
        ("metric", "replicas"),
        ("targetEtaSeconds", "10"),
    ];
    assert_eq!(scaler.lag(&lag).expect("lag"), 0);
    // Rates, and so the replica target, need two samples.
    let replica_target = wait_for(Duration::from_secs(10), || {
        scaler.get_metrics(&replicas).ok()
    });
    assert!(replica_target.is_some(), "no replica target");
    assert!(scaler.is_active(&lag).is_ok());
    // The first statistics report (1 s) and the first complete poll cycle come by themselves.
    let mut text = String::new();
    let mut missing: Vec<&String> = Vec::new();
    let all_served = wait_for(Duration::from_secs(15), || {
        std::thread::sleep(Duration::from_millis(100));
        text = get(http, "/metrics").1;
        let samples = parse_prometheus(&text).expect("valid exposition format");
        missing = names
            .iter()
            .filter(|name| {
                !samples
                    .iter()
                    .any(|(sample, _, _)| sample == *name || sample == &format!("{name}_bucket"))
            })
            .collect();
        missing.is_empty().then_some(())
    });
    assert!(
        all_served.is_some() && missing.is_empty(),
        "named in the README, not served: {missing:?}\n{text}"
    );
    println!(
        "/metrics serves all {} series the README names",
        names.len()
    );
    scaler.stop();
}
