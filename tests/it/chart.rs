//! The Helm chart (`deploy/helm/lagscaler`): `helm lint`, `helm template` with the defaults
//! and each option set, the rendered manifests checked against the Kubernetes API's schemas
//! (and the Prometheus Operator's CRDs) by `kubectl-validate`, the environment each
//! rendering gives lagscaler accepted by lagscaler itself, and values that cannot work
//! refused with the key named. helm, kubectl-validate and the CRDs are installed by
//! `scripts/install-deps` under `~/.cache/lagscaler-tools`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::output_text;

/// The Kubernetes versions whose schemas the manifests are checked against: the oldest the
/// chart's `kubeVersion` allows, and the newest kubectl-validate v0.0.4 knows.
const KUBERNETES: [&str; 2] = ["1.25", "1.30"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("deploy/helm/lagscaler")
}

/// Where install-deps puts the chart's tools.
fn tools() -> PathBuf {
    std::env::var_os("LAGSCALER_TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/lagscaler-tools")
        },
        PathBuf::from,
    )
}

fn tool(name: &str) -> PathBuf {
    let path = tools().join("bin").join(name);
    assert!(
        path.exists(),
        "{} missing: scripts/install-deps installs it",
        path.display()
    );
    path
}

/// `helm template` of the chart as release `lagscaler` in namespace `keda` with `sets`.
fn template(sets: &[&str]) -> Output {
    let mut command = Command::new(tool("helm"));
    command
        .args(["template", "lagscaler"])
        .arg(chart())
        .args(["--namespace", "keda"]);
    for set in sets {
        command.args(["--set", set]);
    }
    command.output().expect("run helm")
}

/// The manifests of deploy/ that are whole objects of built-in kinds (the others are a
/// patch and KEDA's ScaledObjects).
const PLAIN_MANIFESTS: &[&str] = &[
    "lagscaler.yaml",
    "lagscaler-fleet.yaml",
    "networkpolicy.yaml",
];

/// An option of the chart: the values that turn it on, the kinds it adds to the default
/// Deployment and Service, and some of what lagscaler's environment must then hold.
struct ChartOption {
    name: &'static str,
    sets: &'static [&'static str],
    kinds: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const OPTIONS: &[ChartOption] = &[
    ChartOption {
        name: "defaults",
        sets: &[],
        kinds: &[],
        env: &[
            ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "kafka.kafka.svc:9092"),
            ("SCALER_HTTP_PORT", "9100"),
            ("SCALER_MAX_WATCHES", "2000"),
        ],
    },
    ChartOption {
        name: "SCRAM",
        sets: &[
            "kafka.sasl=scram_sha512",
            "kafka.username=lagscaler",
            "kafka.passwordSecret.name=kafka-credentials",
        ],
        kinds: &[],
        env: &[
            ("SCALER_KAFKA_SASL", "scram_sha512"),
            (
                "SCALER_KAFKA_PASSWORD_FILE",
                "/etc/lagscaler/kafka-sasl/password",
            ),
        ],
    },
    ChartOption {
        name: "OAUTHBEARER",
        sets: &[
            "kafka.sasl=oauthbearer",
            "kafka.username=lagscaler-client",
            "kafka.passwordSecret.name=oidc-client",
            "kafka.passwordSecret.key=client-secret",
            "kafka.oauth.tokenEndpointUri=https://idp.example.com/oauth2/token",
            "kafka.oauth.scopes=kafka\\,lag",
            "kafka.oauth.extensions=logicalCluster=lkc-1",
            "kafka.tls.enabled=true",
            "kafka.tls.secret.name=kafka-ca",
        ],
        kinds: &[],
        env: &[
            ("SCALER_KAFKA_USERNAME", "lagscaler-client"),
            (
                "SCALER_KAFKA_PASSWORD_FILE",
                "/etc/lagscaler/kafka-sasl/client-secret",
            ),
            ("SCALER_KAFKA_OAUTH_SCOPES", "kafka,lag"),
            (
                "SCALER_KAFKA_TLS_CA_FILE",
                "/etc/lagscaler/kafka-tls/ca.crt",
            ),
        ],
    },
    ChartOption {
        name: "GSSAPI",
        sets: &[
            "kafka.sasl=gssapi",
            "kafka.username=lagscaler",
            "kafka.kerberos.keytabSecret.name=lagscaler-keytab",
            "kafka.kerberos.krb5ConfigMap.name=krb5",
            "kafka.kerberos.realm=EXAMPLE.COM",
            "kafka.kerberos.serviceName=kafka-prod",
        ],
        kinds: &[],
        env: &[
            ("SCALER_KAFKA_SASL", "gssapi"),
            (
                "SCALER_KAFKA_KERBEROS_KEYTAB",
                "/etc/lagscaler/kerberos/keytab",
            ),
            ("SCALER_KAFKA_KERBEROS_REALM", "EXAMPLE.COM"),
            ("SCALER_KAFKA_KERBEROS_SERVICE_NAME", "kafka-prod"),
            ("KRB5_CONFIG", "/etc/lagscaler/krb5/krb5.conf"),
            ("KRB5CCNAME", "FILE:/var/run/lagscaler-krb5/cache"),
        ],
    },
    ChartOption {
        name: "mutual TLS to Kafka with an encrypted key",
        sets: &[
            "kafka.tls.enabled=true",
            "kafka.tls.secret.name=kafka-client-tls",
            "kafka.tls.secret.certKey=tls.crt",
            "kafka.tls.secret.keyKey=tls.key",
            "kafka.tls.secret.keyPasswordKey=key-password",
        ],
        kinds: &[],
        env: &[
            ("SCALER_KAFKA_TLS", "true"),
            (
                "SCALER_KAFKA_TLS_KEY_FILE",
                "/etc/lagscaler/kafka-tls/tls.key",
            ),
            (
                "SCALER_KAFKA_TLS_KEY_PASSWORD_FILE",
                "/etc/lagscaler/kafka-tls/key-password",
            ),
        ],
    },
    ChartOption {
        name: "clusters file",
        sets: &["clustersFile.secret=lagscaler-clusters"],
        kinds: &[],
        env: &[(
            "SCALER_KAFKA_CLUSTERS_FILE",
            "/etc/lagscaler/clusters/clusters.toml",
        )],
    },
    ChartOption {
        name: "gRPC over mutual TLS",
        sets: &[
            "grpcTls.enabled=true",
            "grpcTls.secret=lagscaler-server-tls",
        ],
        kinds: &[],
        env: &[
            ("SCALER_TLS_CERT_FILE", "/etc/lagscaler/grpc-tls/tls.crt"),
            (
                "SCALER_TLS_CLIENT_CA_FILE",
                "/etc/lagscaler/grpc-tls/ca.crt",
            ),
        ],
    },
    ChartOption {
        name: "headless Service, 2 replicas, PodDisruptionBudget",
        sets: &[
            "service.headless=true",
            "replicaCount=2",
            "podDisruptionBudget.enabled=true",
        ],
        kinds: &["PodDisruptionBudget"],
        env: &[],
    },
    ChartOption {
        name: "fleet mode through Redis Sentinel, 3 replicas, headless, PDB, max connection age",
        sets: &[
            "fleet.enabled=true",
            "fleet.redisUrl=redis+sentinel://sentinel-0.redis:26379\\,sentinel-1.redis:26379/lagscaler",
            "fleet.passwordSecret.name=lagscaler-fleet-redis",
            "fleet.name=production",
            "fleet.memberTtl=15s",
            "replicaCount=3",
            "service.headless=true",
            "podDisruptionBudget.enabled=true",
            "settings.grpcMaxConnectionAge=5m",
        ],
        kinds: &["PodDisruptionBudget"],
        env: &[
            (
                "SCALER_FLEET_REDIS_URL",
                "redis+sentinel://sentinel-0.redis:26379,sentinel-1.redis:26379/lagscaler",
            ),
            ("SCALER_FLEET_NAME", "production"),
            ("SCALER_FLEET_MEMBER_TTL", "15s"),
            ("SCALER_GRPC_MAX_CONNECTION_AGE", "5m"),
        ],
    },
    ChartOption {
        name: "NetworkPolicy",
        sets: &["networkPolicy.enabled=true"],
        kinds: &["NetworkPolicy"],
        env: &[],
    },
    ChartOption {
        name: "ServiceMonitor, PrometheusRule, dashboard",
        sets: &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=monitoring",
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=monitoring",
            "dashboard.enabled=true",
            "settings.kafkaStatsInterval=60s",
        ],
        kinds: &["ServiceMonitor", "PrometheusRule", "ConfigMap"],
        env: &[("SCALER_KAFKA_STATS_INTERVAL", "60s")],
    },
    ChartOption {
        name: "settings and scheduling",
        sets: &[
            "settings.pollInterval=10s",
            "settings.staleAfter=1m",
            "settings.watchTtl=30m",
            "settings.maxWatches=10000",
            "settings.debug=true",
            "resources.limits.memory=1Gi",
            "extraEnv[0].name=SCALER_COMMIT_SOURCE",
            "extraEnv[0].value=fetch",
            "nodeSelector.kubernetes\\.io/os=linux",
            "priorityClassName=system-cluster-critical",
        ],
        kinds: &[],
        env: &[
            ("SCALER_POLL_INTERVAL", "10s"),
            ("SCALER_STALE_AFTER", "1m"),
            ("SCALER_WATCH_TTL", "30m"),
            ("SCALER_MAX_WATCHES", "10000"),
            ("SCALER_DEBUG", "true"),
            ("SCALER_COMMIT_SOURCE", "fetch"),
        ],
    },
];

/// The documents of a rendering, by kind.
fn by_kind(rendered: &str) -> BTreeMap<String, Yaml> {
    YamlLoader::load_from_str(rendered)
        .unwrap_or_else(|err| panic!("rendered YAML: {err}\n{rendered}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .map(|doc| {
            let kind = doc["kind"].as_str().expect("a kind").to_owned();
            (kind, doc)
        })
        .collect()
}

/// `yaml` as JSON, to compare documents whatever the order of their keys.
fn as_json(yaml: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match yaml {
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Integer(number) => Value::from(*number),
        Yaml::Real(text) => text.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Boolean(flag) => Value::Bool(*flag),
        Yaml::Array(items) => Value::Array(items.iter().map(as_json).collect()),
        Yaml::Hash(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = key
                        .as_str()
                        .map_or_else(|| format!("{key:?}"), str::to_owned);
                    (key, as_json(value))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The Deployment's container environment, name to value.
fn environment(deployment: &Yaml) -> BTreeMap<String, String> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    container["env"]
        .as_vec()
        .expect("env")
        .iter()
        .map(|var| {
            let value = match &var["value"] {
                Yaml::String(text) => text.clone(),
                other => panic!("env {:?} is not a string: {other:?}", var["name"]),
            };
            (var["name"].as_str().expect("name").to_owned(), value)
        })
        .collect()
}

/// Runs `lagscaler --check-config` with `env`, every file under /etc/lagscaler it names
/// made under a temp dir that stands in for the mounts: a clusters file with one cluster,
/// any other file with a placeholder (a secret).
fn check_config(env: &BTreeMap<String, String>) -> Output {
    let mounts = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lagscaler"));
    // The rendering's environment on top of the image's own PATH (its base's ENV), which
    // the pod inherits: a GSSAPI start looks kinit up on it.
    command.arg("--check-config").env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for (name, value) in env {
        let value = match value.strip_prefix("/etc/lagscaler/") {
            Some(file) => {
                let path = mounts.path().join(file);
                std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
                let content = if name == "SCALER_KAFKA_CLUSTERS_FILE" {
                    "[analytics]\nbootstrap_servers = \"analytics.kafka:9092\"\n"
                } else {
                    "placeholder\n"
                };
                std::fs::write(&path, content).expect("write");
                path.display().to_string()
            }
            None => value.clone(),
        };
        command.env(name, value);
    }
    command.output().expect("run lagscaler --check-config")
}

/// Every /etc/lagscaler/<volume>/ path of the environment is a mounted volume of an
/// existing Secret or ConfigMap (the chart makes none).
fn check_mounts(deployment: &Yaml, env: &BTreeMap<String, String>, option: &str) {
    let pod = &deployment["spec"]["template"]["spec"];
    let mounts: BTreeMap<&str, &str> = pod["containers"][0]["volumeMounts"]
        .as_vec()
        .into_iter()
        .flatten()
        .map(|mount| {
            (
                mount["mountPath"].as_str().expect("mountPath"),
                mount["name"].as_str().expect("name"),
            )
        })
        .collect();
    for (name, value) in env {
        let Some(file) = value.strip_prefix("/etc/lagscaler/") else {
            continue;
        };
        let dir = format!("/etc/lagscaler/{}", file.split('/').next().unwrap_or(""));
        let volume = mounts
            .get(dir.as_str())
            .unwrap_or_else(|| panic!("{option}: {name}={value} is in no mounted volume"));
        let secret = pod["volumes"]
            .as_vec()
            .into_iter()
            .flatten()
            .find(|one| one["name"].as_str() == Some(volume))
            .map(|one| match &one["configMap"]["name"] {
                Yaml::String(name) => Some(name.as_str()),
                _ => one["secret"]["secretName"].as_str(),
            });
        assert!(
            secret.is_some_and(|name| name.is_some_and(|name| !name.is_empty())),
            "{option}: volume {volume} is not a named Secret or ConfigMap"
        );
    }
}

#[test]
fn the_helm_chart_lints_renders_each_option_and_validates_against_the_kubernetes_schemas() {
    let rendered_dir = tempfile::tempdir().expect("temp dir");
    let rules_text = std::fs::read_to_string(root().join("deploy/prometheus/lagscaler-rules.yaml"))
        .expect("rule file");
    let dashboard_text =
        std::fs::read_to_string(root().join("deploy/grafana/lagscaler.json")).expect("dashboard");
    // The chart's copies are the files of deploy/ (Helm reads only files in the chart).
    for (copy, original) in [
        ("files/lagscaler-rules.yaml", &rules_text),
        ("files/lagscaler.json", &dashboard_text),
    ] {
        let text = std::fs::read_to_string(chart().join(copy)).expect("chart file");
        assert_eq!(
            &text, original,
            "deploy/helm/lagscaler/{copy} differs from deploy/"
        );
    }

    for (index, chart_option) in OPTIONS.iter().enumerate() {
        let (option, sets) = (chart_option.name, chart_option.sets);
        let mut lint = Command::new(tool("helm"));
        lint.args(["lint", "--strict"]).arg(chart());
        for set in sets {
            lint.args(["--set", set]);
        }
        let linted = lint.output().expect("run helm lint");
        assert!(
            linted.status.success(),
            "helm lint, {option}:\n{}",
            output_text(&linted)
        );

        let output = template(sets);
        assert!(
            output.status.success(),
            "helm template, {option}:\n{}",
            output_text(&output)
        );
        let rendered = String::from_utf8(output.stdout).expect("UTF-8");
        std::fs::write(rendered_dir.path().join(format!("{index}.yaml")), &rendered)
            .expect("write the rendering");
        let documents = by_kind(&rendered);
        let kinds: Vec<&str> = documents.keys().map(String::as_str).collect();
        let mut expected = vec!["Deployment", "Service"];
        expected.extend(chart_option.kinds.iter());
        expected.sort();
        assert_eq!(kinds, expected, "{option}");

        // What the Deployment tells lagscaler, lagscaler accepts.
        let deployment = &documents["Deployment"];
        let env = environment(deployment);
        check_mounts(deployment, &env, option);
        let checked = check_config(&env);
        assert!(
            checked.status.success(),
            "{option}: lagscaler --check-config refused the chart's environment {env:?}:\n{}",
            output_text(&checked)
        );
        for (name, value) in chart_option.env {
            assert_eq!(env.get(*name).map(String::as_str), Some(*value), "{option}");
        }

        if let Some(rule) = documents.get("PrometheusRule") {
            assert_eq!(
                rule["metadata"]["labels"]["release"].as_str(),
                Some("monitoring")
            );
            let expected = &YamlLoader::load_from_str(&rules_text).expect("rule file YAML")[0];
            assert_eq!(
                as_json(&rule["spec"]["groups"]),
                as_json(&expected["groups"]),
                "the PrometheusRule's groups are not deploy/prometheus/lagscaler-rules.yaml's"
            );
        }
        if let Some(config_map) = documents.get("ConfigMap") {
            let json = config_map["data"]["lagscaler.json"]
                .as_str()
                .expect("the dashboard");
            let shipped: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
            let original: serde_json::Value =
                serde_json::from_str(&dashboard_text).expect("dashboard JSON");
            assert_eq!(shipped, original, "the dashboard ConfigMap");
        }
        if let Some(monitor) = documents.get("ServiceMonitor") {
            // The job label the alert rules expect is the Service's app.kubernetes.io/name.
            let label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
            assert_eq!(
                documents["Service"]["metadata"]["labels"][label].as_str(),
                Some("lagscaler")
            );
        }
        println!("{option}: {kinds:?}, {} environment variables", env.len());
    }

    // The plain manifests of deploy/ go through the same checks: their environment through
    // --check-config, their kinds through kubectl-validate with the renderings.
    for manifest in PLAIN_MANIFESTS {
        let text = std::fs::read_to_string(root().join("deploy").join(manifest)).expect(manifest);
        let documents = by_kind(&text);
        if let Some(deployment) = documents.get("Deployment") {
            let checked = check_config(&environment(deployment));
            assert!(
                checked.status.success(),
                "deploy/{manifest}: --check-config:\n{}",
                output_text(&checked)
            );
        }
        std::fs::write(
            rendered_dir.path().join(format!("deploy-{manifest}")),
            &text,
        )
        .expect("write the manifest");
    }

    // Every rendering against the Kubernetes API's schemas, the Prometheus Operator's CRDs
    // for its kinds.
    for version in KUBERNETES {
        let (passed, report) = validate(rendered_dir.path(), version);
        assert!(passed, "kubectl-validate (Kubernetes {version}):\n{report}");
        println!(
            "kubectl-validate, Kubernetes {version}: {} renderings and {} manifests of deploy/ \
             valid",
            OPTIONS.len(),
            PLAIN_MANIFESTS.len()
        );
    }

    // The validator is not vacuous: the monitoring rendering, broken in a native kind and in
    // each CRD's kind, is refused with each broken field named.
    let monitoring = OPTIONS
        .iter()
        .position(|option| option.name.starts_with("ServiceMonitor"))
        .expect("the monitoring option");
    let good = std::fs::read_to_string(rendered_dir.path().join(format!("{monitoring}.yaml")))
        .expect("the rendering");
    let broken = good
        .replacen("containerPort: 8090", "containerPort: \"grpc\"", 1)
        .replacen("for: 2m", "for: 2 minutes", 1)
        .replacen("jobLabel:", "jobLabels:", 1);
    let broken_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(broken_dir.path().join("broken.yaml"), broken).expect("write");
    let (passed, report) = validate(broken_dir.path(), KUBERNETES[0]);
    assert!(!passed, "a broken rendering passed:\n{report}");
    for field in [
        "spec.template.spec.containers[0].ports[0].containerPort",
        "spec.groups[0].rules[0].for",
        "spec.jobLabels",
    ] {
        assert!(report.contains(field), "{field} not named:\n{report}");
    }
}

/// kubectl-validate on every file of `dir` against Kubernetes `version`, with the Prometheus
/// Operator's CRDs: whether all passed, and its JSON report.
fn validate(dir: &Path, version: &str) -> (bool, String) {
    let validated = Command::new(tool("kubectl-validate"))
        .arg(dir)
        .args(["--version", version, "--output", "json", "--local-crds"])
        .arg(tools().join("crds"))
        .output()
        .expect("run kubectl-validate");
    (validated.status.success(), output_text(&validated))
}

#[test]
fn values_that_cannot_work_are_refused_naming_the_key() {
    let refused: &[(&[&str], &str)] = &[
        (&["kafka.sasl=kerberos"], "kafka.sasl: accepted are"),
        (
            &["kafka.sasl=gssapi", "kafka.username=lagscaler"],
            "kafka.kerberos.keytabSecret.name",
        ),
        (
            &[
                "kafka.sasl=gssapi",
                "kafka.username=lagscaler",
                "kafka.kerberos.keytabSecret.name=keytab",
                "kafka.passwordSecret.name=credentials",
            ],
            "kafka.passwordSecret.name: not with kafka.sasl=gssapi",
        ),
        (
            &["kafka.sasl=scram_sha512", "kafka.username=lagscaler"],
            "kafka.passwordSecret.name",
        ),
        (
            &[
                "kafka.sasl=plaintext",
                "kafka.passwordSecret.name=credentials",
            ],
            "kafka.username",
        ),
        (
            &[
                "kafka.sasl=oauthbearer",
                "kafka.username=client",
                "kafka.passwordSecret.name=oidc",
            ],
            "kafka.oauth.tokenEndpointUri",
        ),
        (&["kafka.tls.enabled=true"], "kafka.tls.secret.name"),
        (
            &[
                "kafka.tls.enabled=true",
                "kafka.tls.secret.name=tls",
                "kafka.tls.secret.certKey=tls.crt",
            ],
            "certKey and keyKey",
        ),
        (&["grpcTls.enabled=true"], "grpcTls.secret"),
        (&["fleet.enabled=true"], "fleet.redisUrl: the fleet's Redis"),
        (
            &[
                "fleet.enabled=true",
                "fleet.redisUrl=redis://u:pw@redis:6379",
            ],
            "fleet.redisUrl: no password in the URL",
        ),
    ];
    for (sets, key) in refused {
        let output = template(sets);
        let said = output_text(&output);
        assert!(!output.status.success(), "{sets:?} rendered:\n{said}");
        assert!(
            said.contains(key),
            "{sets:?}: the error names no {key:?}:\n{said}"
        );
    }
}
