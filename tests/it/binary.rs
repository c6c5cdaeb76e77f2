//! The real `lagscaler` binary: flags, bad configuration, and SIGTERM with watches running.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;
use lagscaler::config::SETTINGS;

use crate::support::{free_port, output_text, Kafka, Process};

const BINARY: &str = env!("CARGO_BIN_EXE_lagscaler");

#[test]
fn help_lists_every_setting_and_version_prints() {
    let help = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for setting in SETTINGS {
        assert!(
            help.contains(setting.name),
            "{} missing:\n{help}",
            setting.name
        );
    }
    let version = Command::new(BINARY)
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("lagscaler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_configuration_fails_at_start_naming_the_variable() {
    for (name, value) in [
        ("SCALER_POLL_INTERVAL", "5"),
        ("SCALER_PORT", "99999"),
        ("SCALER_KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("SCALER_DEBUG", "perhaps"),
    ] {
        let output = Command::new(BINARY)
            .env(name, value)
            .stdin(Stdio::null())
            .output()
            .expect("run lagscaler");
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(name) && stderr.contains("expected"),
            "{name}={value}: {stderr}"
        );
    }
}

#[test]
fn check_config_judges_the_settings_without_starting_anything() {
    let check = |env: &[(&str, &str)]| {
        let output = Command::new(BINARY)
            .arg("--check-config")
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run lagscaler --check-config");
        (output.status.code(), output_text(&output))
    };
    // The gRPC port is taken: a start would fail, a check does not bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    let good = [
        ("SCALER_LISTEN_ADDR", "127.0.0.1"),
        ("SCALER_PORT", port.as_str()),
        ("SCALER_POLL_INTERVAL", "10s"),
    ];
    let (code, said) = check(&good);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("configuration ok"), "{said}");

    let secret = "hunter2-not-shown";
    let (code, said) = check(&[
        ("SCALER_KAFKA_SASL", "scram_sha512"),
        ("SCALER_KAFKA_USERNAME", "u"),
        ("SCALER_KAFKA_PASSWORD", secret),
        ("SCALER_POLL_INTERVAL", "5"),
    ]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("SCALER_POLL_INTERVAL") && said.contains("expected"),
        "{said}"
    );
    assert!(!said.contains(secret), "{said}");

    // A misspelt setting, which the daemon would only warn about and ignore.
    let (code, said) = check(&[("SCALER_POLL_INTERVALL", "10s")]);
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains("SCALER_POLL_INTERVALL is not a lagscaler setting"),
        "{said}"
    );
}

/// A GSSAPI login needs two parts besides the keytab: `kinit`, which librdkafka runs, and
/// Cyrus SASL's GSSAPI plugin, which speaks Kerberos to the brokers. Without either, the
/// settings are refused, by `--check-config` and at start alike, naming what is missing,
/// rather than every broker connection failing later.
#[test]
fn a_gssapi_login_without_kinit_or_the_sasl_gssapi_plugin_is_refused() {
    let keytab = tempfile::NamedTempFile::new().expect("a keytab file");
    let no_plugins = tempfile::tempdir().expect("an empty plugin directory");
    let keytab_path = keytab.path().to_str().expect("a UTF-8 path").to_owned();
    // A start that is not refused serves until stopped: it is stopped after 30 s.
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut child = Command::new(BINARY)
            .args(args)
            .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
            .env("SCALER_KAFKA_SASL", "gssapi")
            .env("SCALER_KAFKA_USERNAME", "lagscaler@EXAMPLE.COM")
            .env("SCALER_KAFKA_KERBEROS_KEYTAB", &keytab_path)
            .env("SCALER_LISTEN_ADDR", "127.0.0.1")
            .env("SCALER_PORT", free_port().to_string())
            .env("SCALER_HTTP_PORT", free_port().to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lagscaler");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait for lagscaler").is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let output = child.wait_with_output().expect("lagscaler's output");
        (output.status.code(), output_text(&output))
    };
    let (code, said) = run(&["--check-config"], &[]);
    assert_eq!(code, Some(0), "every part installed: {said}");

    let empty = no_plugins.path().to_str().expect("a UTF-8 path");
    for args in [&["--check-config"][..], &[]] {
        let (code, said) = run(args, &[("SASL_PATH", empty)]);
        assert_eq!(code, Some(2), "{args:?} without the plugin: {said}");
        assert!(
            said.contains("SCALER_KAFKA_SASL") && said.contains("GSSAPI plugin"),
            "{args:?}: {said}"
        );
        assert!(
            said.contains("SASL_PATH") && said.contains("libsasl2-modules-gssapi-mit"),
            "{args:?}: {said}"
        );
        let (code, said) = run(args, &[("PATH", "/nowhere")]);
        assert_eq!(code, Some(2), "{args:?} without kinit: {said}");
        assert!(said.contains("kinit"), "{args:?}: {said}");
    }
}

#[test]
fn sigterm_with_watches_running_exits_zero_within_five_seconds() {
    let broker = Kafka::shared();
    broker.create_topic("jobs", 2);
    broker.produce("jobs", 0, 4);
    broker.commit("workers", &[("jobs", 0, 1)]);
    let mut process = Process::start(&broker.bootstrap(), &[("SCALER_POLL_INTERVAL", "200ms")]);

    // Two watches, each answered from a real poll: 4-1 + 1 (uncommitted, latest) = 4.
    let client = process.client();
    for metadata in [
        [("consumerGroup", "workers"), ("topic", "jobs")],
        [("consumerGroup", "workers"), ("topic", "")],
    ] {
        let lag = client
            .lag(&metadata)
            .unwrap_or_else(|err| panic!("GetMetrics {metadata:?}: {err:?}\n{}", process.log()));
        assert_eq!(lag, 4, "{metadata:?}");
    }

    let sent = Instant::now();
    let status = process.terminate(Duration::from_secs(5));
    let Some(status) = status else {
        panic!("still running 5 s after SIGTERM; log:\n{}", process.log());
    };
    let took = sent.elapsed();
    let output = process.log();
    assert!(
        status.success(),
        "exit {status:?} after {took:?}; log:\n{output}"
    );
    assert!(output.contains("watch added"), "{output}");
    assert!(output.contains("stopped"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}

#[test]
fn systemd_hears_ready_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let socket = socket_path.display().to_string();
    // Nothing listens at this Kafka address: readiness must not wait on Kafka.
    let mut process = Process::start("127.0.0.1:9", &[("NOTIFY_SOCKET", socket.as_str())]);
    let receive = |what: &str| {
        let mut buffer = [0u8; 256];
        let n = systemd
            .recv(&mut buffer)
            .unwrap_or_else(|err| panic!("no {what} datagram: {err}"));
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    assert_eq!(receive("READY"), "READY=1");
    // READY is sent after the server started: the health service serves at once.
    assert_eq!(
        process.client().health("").expect("health"),
        lagscaler::grpc::proto::health::health_check_response::ServingStatus::SERVING
    );
    let status = process.terminate(Duration::from_secs(5));
    assert_eq!(receive("STOPPING"), "STOPPING=1");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        process.log().contains("told systemd READY=1"),
        "{}",
        process.log()
    );
}

#[test]
fn sigterm_under_load_exits_zero_and_answers_or_refuses_cleanly() {
    const CLIENTS: usize = 4;
    let broker = Kafka::shared();
    broker.create_topic("load", 1);
    broker.produce("load", 0, 3);
    broker.commit("loaders", &[("load", 0, 1)]);
    let mut process = Process::start(&broker.bootstrap(), &[("SCALER_DEBUG", "false")]);
    let metadata = [("consumerGroup", "loaders"), ("topic", "load")];
    assert_eq!(process.client().lag(&metadata).expect("warm"), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let answered_so_far = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = process.client();
            let stop = Arc::clone(&stop);
            let answered_so_far = Arc::clone(&answered_so_far);
            thread::spawn(move || {
                // (answered, refused with a clean status, other failures)
                let mut tally = (0usize, 0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.try_get_metrics(&metadata) {
                        Ok((2, _)) => {
                            tally.0 += 1;
                            answered_so_far.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(other) => tally.2.push(format!("wrong answer {other:?}")),
                        Err(grpcio::Error::RpcFailure(status))
                            if matches!(
                                status.code(),
                                RpcStatusCode::UNAVAILABLE | RpcStatusCode::CANCELLED
                            ) =>
                        {
                            tally.1 += 1;
                            // Connection refused once the server is gone: don't spin.
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(err) => tally.2.push(err.to_string()),
                    }
                }
                tally
            })
        })
        .collect();
    // Under load: SIGTERM once 1,000 calls were answered (about 1 s on an idle machine).
    let loaded = crate::support::wait_for(Duration::from_secs(30), || {
        (answered_so_far.load(Ordering::Relaxed) >= 1_000).then_some(())
    });
    assert!(loaded.is_some(), "fewer than 1,000 calls answered in 30 s");
    let sent = Instant::now();
    let status = process.terminate(Duration::from_secs(5));
    let took = sent.elapsed();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    let mut refused = 0;
    for caller in callers {
        let (ok, clean, other) = caller.join().expect("caller thread");
        answered += ok;
        refused += clean;
        assert!(other.is_empty(), "unclean outcomes: {other:?}");
    }
    let log = process.log();
    println!(
        "sigterm under load: {answered} calls answered from {CLIENTS} clients, {refused} \
         refused cleanly, exited {took:?} after SIGTERM"
    );
    let Some(status) = status else {
        panic!("still running 5 s after SIGTERM; log:\n{log}");
    };
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(answered > 1_000, "only {answered} calls answered");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn check_prints_each_partition_and_what_keda_would_get() {
    let broker = Kafka::shared();
    broker.create_topic("audits", 2);
    // Written 90 s ago by the records' own timestamps.
    let written_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64
        - 90_000;
    broker.produce_written_at("audits", 0, 6, written_ms);
    broker.produce("audits", 1, 4);
    broker.commit("auditors", &[("audits", 0, 2), ("audits", 1, 4)]);
    let check = |args: &[&str]| {
        Command::new(BINARY)
            .arg("check")
            .args(args)
            .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
            .env("SCALER_POLL_INTERVAL", "300ms")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run lagscaler check")
    };

    let output = check(&["consumerGroup=auditors", "topic=audits", "lagThreshold=3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let row = |partition: &str| {
        stdout
            .lines()
            .find(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&"audits") && fields.get(2) == Some(&partition)
            })
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no row for partition {partition}:\n{stdout}"))
    };
    // group topic partition log-start committed high-mark lag time-lag produce/s consume/s
    assert_eq!(
        row("0")[..7],
        ["auditors", "audits", "0", "0", "2", "6", "4"]
    );
    assert_eq!(
        row("1")[..8],
        ["auditors", "audits", "1", "0", "4", "4", "0", "0.0s"]
    );
    // The records waiting on partition 0 predate the check: their timestamps tell.
    let waited: f64 = row("0")[7]
        .strip_suffix('s')
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("time lag of partition 0:\n{stdout}"));
    assert!((90.0..150.0).contains(&waited), "{waited}\n{stdout}");
    assert!(
        stdout.contains("GetMetricSpec: metricName=kafka-lag-auditors-audits target=3"),
        "{stdout}"
    );
    assert!(stdout.contains("GetMetrics: lag=4 (integer 4)"), "{stdout}");
    assert!(stdout.contains("IsActive: true"), "{stdout}");

    // Bad metadata: exit code 2, the key named, no report.
    let output = check(&["consumerGroup=auditors", "lagThreshold=many"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("lagThreshold"));
    assert!(output.stdout.is_empty());
    let output = check(&["auditors"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn sigterm_during_a_kafka_outage_exits_zero_within_the_grace() {
    // A broker of its own: the test freezes it, then kills it.
    let mut broker = Kafka::start();
    broker.create_topic("stalled", 2);
    broker.produce("stalled", 0, 4);
    broker.commit("stalled-workers", &[("stalled", 0, 1)]);
    for outage in ["frozen", "killed"] {
        // Kafka requests may take 5 s, longer than the 4 s shutdown grace.
        let mut process = Process::start(
            &broker.bootstrap(),
            &[
                ("SCALER_POLL_INTERVAL", "200ms"),
                ("SCALER_KAFKA_TIMEOUT", "5s"),
            ],
        );
        let client = process.client();
        let groups = ["stalled-workers", "stalled-a", "stalled-b", "stalled-c"];
        for group in groups {
            let metadata = [("consumerGroup", group), ("topic", "stalled")];
            client
                .lag(&metadata)
                .unwrap_or_else(|err| panic!("{group}: {err:?}\n{}", process.log()));
        }
        let frozen = match outage {
            "frozen" => Some(broker.freeze_node(0)),
            _ => {
                broker.kill_node(0);
                None
            }
        };
        // Polls are now waiting on Kafka: wait until they have been for a while.
        let waiting = crate::support::wait_for(Duration::from_secs(15), || {
            process.log().contains("watch failing").then_some(())
        });
        assert!(
            waiting.is_some(),
            "{outage}: polls never failed:\n{}",
            process.log()
        );
        thread::sleep(Duration::from_millis(1500));
        let sent = Instant::now();
        let status = process.terminate(Duration::from_secs(8));
        let took = sent.elapsed();
        let log = process.log();
        let status = status.unwrap_or_else(|| panic!("{outage}: still running:\n{log}"));
        println!("SIGTERM with the broker {outage}: exit {status:?} after {took:?}");
        assert!(
            status.success(),
            "{outage}: exit {status:?} after {took:?}:\n{log}"
        );
        assert!(took < Duration::from_secs(4), "{outage}: {took:?}:\n{log}");
        assert!(!log.contains("did not stop"), "{outage}:\n{log}");
        drop(frozen);
    }
}

#[test]
fn a_dead_push_or_http_thread_makes_the_binary_exit_one() {
    let broker = Kafka::shared();
    for thread_name in ["push", "http"] {
        let http_port = crate::support::free_port().to_string();
        let mut process = Process::start(
            &broker.bootstrap(),
            &[
                (lagscaler::hooks::PANIC_THREAD_VAR, thread_name),
                ("SCALER_HTTP_PORT", http_port.as_str()),
            ],
        );
        if thread_name == "http" {
            // The http thread panics at its first request.
            let _ = std::net::TcpStream::connect(("127.0.0.1", http_port.parse().unwrap()))
                .and_then(|mut stream| {
                    use std::io::Write;
                    stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
                });
        }
        let status = process.wait_exit(Duration::from_secs(10));
        let log = process.log();
        let status = status.unwrap_or_else(|| panic!("{thread_name}: still running:\n{log}"));
        assert_eq!(status.code(), Some(1), "{thread_name}:\n{log}");
        assert!(
            log.contains(&format!("the {thread_name} thread died")),
            "{thread_name}:\n{log}"
        );
        assert!(
            log.contains("panic injected by a test"),
            "{thread_name}:\n{log}"
        );
    }
}
