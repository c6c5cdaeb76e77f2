//! Footprint benchmark: the real `lagscaler` binary's time from process start to SERVING on
//! the gRPC health service, its RSS and threads when idle (no watch) and with one watch, and
//! the binary's size.
//!
//! `cargo bench --bench footprint` runs it in full (release); `cargo test --bench footprint`
//! runs a smoke version (debug, no thresholds) so that it never rots.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use lagscaler::grpc::proto::health::health_check_response::ServingStatus;
use support::{GrpcClient, Kafka, Process};

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let starts = if full { 10 } else { 2 };
    let binary = env!("CARGO_BIN_EXE_lagscaler");
    let broker = Kafka::shared();
    broker.create_topic("footprint", 4);
    broker.commit("footprint-consumers", &[("footprint", 0, 0)]);

    let mut to_serving: Vec<Duration> = (0..starts)
        .map(|_| time_to_serving(binary, &broker.bootstrap()))
        .collect();
    to_serving.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "start to SERVING over {starts} starts: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(to_serving[0]),
        ms(to_serving[to_serving.len() / 2]),
        ms(to_serving[to_serving.len() - 1])
    );

    let process = Process::start(&broker.bootstrap(), &[("SCALER_DEBUG", "false")]);
    thread::sleep(Duration::from_secs(2));
    let (idle_rss, idle_threads) = (support::rss_kb(process.pid()), process.threads_and_fds().0);
    let client = process.client();
    let metadata = [
        ("consumerGroup", "footprint-consumers"),
        ("topic", "footprint"),
    ];
    client.metric_spec(&metadata).expect("GetMetricSpec");
    thread::sleep(Duration::from_secs(2));
    let (one_rss, one_threads) = (support::rss_kb(process.pid()), process.threads_and_fds().0);
    println!(
        "RSS idle {} kB with {idle_threads} threads; with one watch {} kB with {one_threads} threads",
        idle_rss, one_rss
    );
    let size = std::fs::metadata(binary).expect("binary").len();
    println!(
        "binary {binary}: {:.1} MB (as built, with symbols)",
        size as f64 / 1e6
    );
}

/// Spawns the binary and times it until its health service answers SERVING.
fn time_to_serving(binary: &str, bootstrap: &str) -> Duration {
    let port = support::free_port();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env("SCALER_LISTEN_ADDR", "127.0.0.1")
        .env("SCALER_PORT", port.to_string())
        .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lagscaler");
    let deadline = started + Duration::from_secs(20);
    // Connect only once something listens: a refused gRPC connection backs off for a second.
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "lagscaler did not listen");
        thread::sleep(Duration::from_millis(1));
    }
    let client = GrpcClient::connect(&format!("127.0.0.1:{port}"));
    loop {
        if client.health("").ok() == Some(ServingStatus::SERVING) {
            break;
        }
        assert!(Instant::now() < deadline, "lagscaler never SERVING");
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}
