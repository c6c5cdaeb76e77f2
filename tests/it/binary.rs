//! The real `lagscaler` binary: flags, bad configuration, and SIGTERM with watches running.

use std::fs::File;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lagscaler::config::SETTINGS;

use crate::support::{free_port, wait_for, GrpcClient, Tansu};

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
fn sigterm_with_watches_running_exits_zero_within_five_seconds() {
    let broker = Tansu::start();
    broker.create_topic("jobs", 2);
    broker.produce("jobs", 0, 4);
    broker.commit("workers", &[("jobs", 0, 1)]);
    let port = free_port();
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("lagscaler.log");
    let log = File::create(&log_path).expect("log file");
    let mut child = Command::new(BINARY)
        .env("SCALER_LISTEN_ADDR", "127.0.0.1")
        .env("SCALER_PORT", port.to_string())
        .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("SCALER_POLL_INTERVAL", "200ms")
        .env("SCALER_DEBUG", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("start lagscaler");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let listening = wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(listening.is_some(), "not listening; log:\n{}", read_log());

    // Two watches, each answered from a real poll: 4-1 + 1 (uncommitted, latest) = 4.
    let client = GrpcClient::connect(&format!("127.0.0.1:{port}"));
    for metadata in [
        [("consumerGroup", "workers"), ("topic", "jobs")],
        [("consumerGroup", "workers"), ("topic", "")],
    ] {
        let lag = client
            .lag(&metadata)
            .unwrap_or_else(|err| panic!("GetMetrics {metadata:?}: {err:?}\n{}", read_log()));
        assert_eq!(lag, 4, "{metadata:?}");
    }

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("still running 5 s after SIGTERM; log:\n{}", read_log());
    };
    let took = sent.elapsed();
    let output = read_log();
    assert!(
        status.success(),
        "exit {status:?} after {took:?}; log:\n{output}"
    );
    assert!(output.contains("watch added"), "{output}");
    assert!(output.contains("stopped"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
