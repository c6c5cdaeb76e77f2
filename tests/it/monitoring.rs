//! The alert rules (`deploy/prometheus`) and the Grafana dashboard (`deploy/grafana`)
//! against lagscaler's real `/metrics`: promtool's check and unit tests, every metric name
//! they use exported by lagscaler, and a real Prometheus scraping a running lagscaler that
//! evaluates every rule, raises the alerts for the conditions the test makes (and no other),
//! and answers every query of the dashboard.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::prometheus::Prometheus;
use crate::support::{free_port, http_get, output_text, wait_for, Kafka, Scaler};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Runs promtool with `args` in `deploy/prometheus`: its output, or a panic with it.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("run promtool (Debian's prometheus package; scripts/install-deps)");
    let text = output_text(&output);
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The metric names lagscaler exports: its `/metrics`'s `# TYPE` lines, with a histogram's
/// `_bucket`, `_sum` and `_count` series.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let mut words = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every word of `text` that names a lagscaler metric (`lagscaler_...`).
fn lagscaler_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("lagscaler_"))
        .map(str::to_owned)
        .collect()
}

/// A query of the dashboard: where it is, and its PromQL (for a variable's
/// `label_values(selector, label)`, the selector, and the label it lists).
struct DashboardQuery {
    place: String,
    promql: String,
    label: Option<String>,
}

/// Every query of the dashboard: its panels' targets and its variables.
fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(DashboardQuery {
                place: format!("panel {:?} target {}", panel["title"], target["refId"]),
                promql: target["expr"].as_str().expect("a target's expr").to_owned(),
                label: None,
            });
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .expect("a variable's query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query not label_values(...): {query}"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        queries.push(DashboardQuery {
            place: format!("variable {}", variable["name"]),
            promql: selector.trim().to_owned(),
            label: Some(label.trim().to_owned()),
        });
    }
    queries
}

/// `promql` as Grafana sends it with every variable at "All" (`.+`) and a rate interval of
/// 15 s (15 scrapes of the test's Prometheus).
fn with_variables(promql: &str) -> String {
    let promql = promql.replace("$__rate_interval", "15s");
    let mut out = String::new();
    let mut rest = promql.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        out.push_str(".+");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The PrometheusRule shipped for the Prometheus Operator: the rule file's groups under
/// `spec`, nothing else changed.
fn prometheus_rule_from(rules: &str) -> String {
    let groups = &rules[rules.find("groups:").expect("groups:")..];
    let mut out = String::from(
        "# lagscaler-rules.yaml as a PrometheusRule for the Prometheus Operator; its spec is\n\
         # that file's groups, unchanged (a test checks). Its labels must match the\n\
         # Prometheus resource's ruleSelector (kube-prometheus-stack: release=<its release>).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: lagscaler\n  labels:\n    app.kubernetes.io/name: lagscaler\n\
         spec:\n",
    );
    for line in groups.lines() {
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_the_rules_and_dashboard_name_only_exported_metrics() {
    let checked = promtool(&["check", "rules", "lagscaler-rules.yaml"]);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "lagscaler-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let rules = read(&deploy("prometheus/lagscaler-rules.yaml"));
    assert_eq!(
        read(&deploy("prometheus/prometheusrule.yaml")),
        prometheus_rule_from(&rules),
        "deploy/prometheus/prometheusrule.yaml is not lagscaler-rules.yaml's groups"
    );

    // The names lagscaler exports, read off a running daemon: every family is declared
    // even before it has a sample, so no Kafka is needed.
    let mut config = Scaler::config(
        &format!("127.0.0.1:{}", free_port()),
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    config.http = Some("127.0.0.1:0".parse().expect("address"));
    let scaler = Scaler::start_with(config);
    let http = scaler.daemon().http_addr().expect("HTTP listener");
    let exported = exported_names(&http_get(http, "/metrics").1);
    scaler.stop();
    assert!(exported.len() >= 25, "{exported:?}");

    let dashboard_text = read(&deploy("grafana/lagscaler.json"));
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard JSON");
    for (file, text) in [
        ("deploy/prometheus/lagscaler-rules.yaml", &rules),
        ("deploy/grafana/lagscaler.json", &dashboard_text),
    ] {
        let named = lagscaler_names(text);
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics lagscaler does not export: {unknown:?}\nexported: \
             {exported:?}"
        );
        println!(
            "{file}: {} lagscaler metric names, all exported",
            named.len()
        );
    }
    // Every query names a metric (no panel is left reading nothing).
    for query in dashboard_queries(&dashboard) {
        let words = lagscaler_names(&query.promql);
        assert!(
            !words.is_empty() || query.promql.starts_with("up{"),
            "{} reads no lagscaler metric: {}",
            query.place,
            query.promql
        );
    }
}

/// The names of the alerts pending or firing, each with its `watch` label ("" if none).
fn active_alerts(prometheus: &Prometheus) -> Vec<(String, String, String)> {
    prometheus
        .alerts()
        .iter()
        .map(|alert| {
            let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
            (
                text(&alert["labels"]["alertname"]),
                text(&alert["labels"]["watch"]),
                text(&alert["state"]),
            )
        })
        .collect()
}

/// Waits up to `timeout` until every alert of `wanted` is pending or firing; panics with
/// what was active and Prometheus's log otherwise.
fn wait_for_alerts(
    prometheus: &Prometheus,
    wanted: &[(&str, Option<&str>)],
    timeout: Duration,
) -> Vec<(String, String, String)> {
    let mut active = Vec::new();
    let found = wait_for(timeout, || {
        std::thread::sleep(Duration::from_millis(250));
        active = active_alerts(prometheus);
        wanted
            .iter()
            .all(|(name, watch)| {
                active.iter().any(|(alert, label, _)| {
                    alert == name && watch.is_none_or(|watch| label.contains(watch))
                })
            })
            .then_some(())
    });
    assert!(
        found.is_some(),
        "within {timeout:?}, wanted {wanted:?} among the active alerts, got {active:?}"
    );
    active
}

#[test]
fn a_real_prometheus_scraping_lagscaler_evaluates_every_rule_alerts_and_answers_every_panel() {
    // A broker of the test's own: it is frozen later, to make polls fail and answers stale.
    let broker = Kafka::start();
    broker.create_topic("parcels", 2);
    broker.produce("parcels", 0, 30);
    broker.produce("parcels", 1, 10);
    // shipping: 25 records behind and no consumer, so not draining; billing: drained.
    broker.commit("shipping", &[("parcels", 0, 10), ("parcels", 1, 5)]);
    broker.commit("billing", &[("parcels", 0, 30), ("parcels", 1, 10)]);

    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(500),
        Duration::from_secs(600),
    );
    config.http = Some("127.0.0.1:0".parse().expect("address"));
    config.max_watches = 2;
    config.stale_after = Duration::from_secs(4);
    config.kafka.request_timeout = Duration::from_secs(3);
    config.kafka.stats_interval = Some(Duration::from_secs(1));
    let scaler = Scaler::start_with(config);
    let http = scaler.daemon().http_addr().expect("HTTP listener");
    let shipping = [
        ("consumerGroup", "shipping"),
        ("topic", "parcels"),
        ("metric", "timeLag"),
        ("timeLagThreshold", "30"),
    ];
    let billing = [
        ("consumerGroup", "billing"),
        ("topic", "parcels"),
        ("metric", "replicas"),
        ("targetEtaSeconds", "60"),
    ];
    let lag = scaler
        .lag(&[
            ("consumerGroup", "shipping"),
            ("topic", "parcels"),
            ("lagThreshold", "100"),
        ])
        .expect("lag");
    assert_eq!(lag, 25, "{}", http_get(http, "/metrics").1);
    // Rates, and so the replica target, need two samples.
    let ready = wait_for(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(100));
        (scaler.get_metrics(&shipping).is_ok() && scaler.get_metrics(&billing).is_ok())
            .then_some(())
    });
    assert!(ready.is_some(), "no answers for both triggers");

    let rules = deploy("prometheus/lagscaler-rules.yaml");
    let prometheus = Prometheus::start(http, &[&rules]);
    let started = Instant::now();
    // Keep KEDA's calls coming, so that the triggers stay on /metrics and gRPC has traffic.
    let ask = || {
        let _ = scaler.get_metrics(&shipping);
        let _ = scaler.is_active(&billing);
    };

    // Every dashboard query answers with data from the real series.
    let dashboard: Value =
        serde_json::from_str(&read(&deploy("grafana/lagscaler.json"))).expect("dashboard JSON");
    let queries = dashboard_queries(&dashboard);
    let mut empty: Vec<String> = Vec::new();
    let answered = wait_for(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(500));
        ask();
        empty = queries
            .iter()
            .filter(|query| {
                let series = prometheus.query(&with_variables(&query.promql));
                match &query.label {
                    None => series.is_empty(),
                    Some(label) => !series
                        .iter()
                        .any(|one| one["metric"][label.as_str()].is_string()),
                }
            })
            .map(|query| format!("{}: {}", query.place, query.promql))
            .collect();
        empty.is_empty().then_some(())
    });
    assert!(
        answered.is_some(),
        "dashboard queries with no data after 60 s: {empty:#?}\n/metrics:\n{}",
        http_get(http, "/metrics").1
    );
    println!(
        "all {} dashboard queries answered with data after {:.1} s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );

    // Every rule evaluates on the real series without an error.
    let healthy = wait_for(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(250));
        let rules = prometheus.rules();
        (rules.len() == 6 && rules.iter().all(|rule| rule["health"] == "ok")).then_some(rules)
    });
    let rules_seen = prometheus.rules();
    assert!(
        healthy.is_some(),
        "rules not all evaluated ok: {rules_seen:#?}"
    );

    // The conditions the test made: a workload not draining, and both watches of the 2
    // allowed used. Nothing else, and nothing about the drained group.
    let active = wait_for_alerts(
        &prometheus,
        &[
            ("LagscalerWorkloadNotDraining", Some("group=shipping")),
            ("LagscalerWatchLimitNear", None),
        ],
        Duration::from_secs(30),
    );
    ask();
    let unexpected: Vec<&(String, String, String)> = active
        .iter()
        .filter(|(name, watch, _)| {
            watch.contains("group=billing")
                || !["LagscalerWorkloadNotDraining", "LagscalerWatchLimitNear"]
                    .contains(&name.as_str())
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "alerts the healthy run must not raise: {unexpected:?}"
    );
    println!("healthy run: active alerts {active:?}");

    // The broker stops answering: polls time out (3 s, six poll intervals), the samples
    // grow older than SCALER_STALE_AFTER, and the cycles outlast the poll interval.
    let frozen = broker.freeze_node(0);
    let active = wait_for_alerts(
        &prometheus,
        &[
            ("LagscalerPollsFailing", Some("group=shipping")),
            ("LagscalerPollsFailing", Some("group=billing")),
            ("LagscalerAnswersStale", Some("group=shipping")),
            ("LagscalerPollCycleSlow", None),
        ],
        Duration::from_secs(60),
    );
    assert!(
        !active.iter().any(|(name, _, _)| name == "LagscalerDown"),
        "{active:?}"
    );
    println!("broker frozen: active alerts {active:?}");
    drop(frozen);

    // lagscaler itself goes away: its scrapes fail.
    scaler.stop();
    let active = wait_for_alerts(
        &prometheus,
        &[("LagscalerDown", None)],
        Duration::from_secs(30),
    );
    println!("lagscaler stopped: active alerts {active:?}");
}
