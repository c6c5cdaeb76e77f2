//! The real `lagscaler` binary: flags, bad configuration, and SIGTERM with watches running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lagscaler::config::SETTINGS;

use crate::support::{Process, Tansu};

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
