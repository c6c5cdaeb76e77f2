//! Container-image benchmark: the image's size and the time from `podman run` to SERVING on
//! the gRPC health service inside the container (host network, read-only root filesystem,
//! as the Helm chart runs it).
//!
//! `cargo bench --bench image` measures the image `scripts/image build` made from source
//! (`localhost/lagscaler`, release); `cargo test --bench image` runs a smoke version on the
//! tests' image (the runtime stage around the debug binary, no thresholds) so that it never
//! rots.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use lagscaler::grpc::proto::health::health_check_response::ServingStatus;
use support::container::{podman_ok, Container};
use support::{free_port, GrpcClient};

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (image, starts) = if full {
        ("localhost/lagscaler:latest", 10)
    } else {
        (support::container::image(), 2)
    };
    let bytes: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .trim()
        .parse()
        .expect("the image's size");
    println!("image {image}: {:.1} MB", bytes as f64 / 1e6);

    let mut to_serving: Vec<Duration> = (0..starts).map(|_| time_to_serving(image)).collect();
    to_serving.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "podman run to SERVING over {starts} starts: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(to_serving[0]),
        ms(to_serving[to_serving.len() / 2]),
        ms(to_serving[to_serving.len() - 1])
    );
}

/// Starts a container of `image` and times it until its health service answers SERVING.
fn time_to_serving(image: &str) -> Duration {
    let port = free_port();
    let started = Instant::now();
    let container = Container::start_image(
        image,
        &[
            "--env",
            "SCALER_LISTEN_ADDR=127.0.0.1",
            "--env",
            &format!("SCALER_PORT={port}"),
            "--env",
            "SCALER_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9",
        ],
    );
    let deadline = started + Duration::from_secs(30);
    // Connect only once something listens: a refused gRPC connection backs off for a second.
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "lagscaler did not listen; log:\n{}",
            container.log()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let client = GrpcClient::connect(&format!("127.0.0.1:{port}"));
    while client.health("").ok() != Some(ServingStatus::SERVING) {
        assert!(Instant::now() < deadline, "lagscaler never SERVING");
        thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}
