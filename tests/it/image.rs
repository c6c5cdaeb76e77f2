//! The container image as users build it from the Dockerfile (its runtime stage, around
//! this run's binary) and as KEDA runs it: a read-only root filesystem, uid 65532, every
//! library there, the image's own HEALTHCHECK, KEDA's calls from the host, and SIGTERM.

use std::time::Duration;

use crate::support::container::{self, Container};
use crate::support::{free_port, http_get, wait_for, GrpcClient, Kafka, StreamEvent};

#[test]
fn the_image_runs_as_uid_65532_with_every_library_and_the_parts_gssapi_needs() {
    let image = container::image();
    let mut args = container::RUN_ONCE.to_vec();
    args.extend([
        "--entrypoint",
        "sh",
        image,
        "-c",
        "id -u; id -g; ldd /usr/local/bin/lagscaler; command -v kinit; \
         ls /usr/lib/x86_64-linux-gnu/sasl2/",
    ]);
    let inside = container::podman_ok(&args);
    let mut lines = inside.lines();
    assert_eq!(lines.next(), Some("65532"), "{inside}");
    assert_eq!(lines.next(), Some("65532"), "{inside}");
    assert!(
        !inside.contains("not found"),
        "a library is missing: {inside}"
    );
    assert!(inside.contains("libsasl2.so.2"), "{inside}");
    assert!(inside.contains("/usr/bin/kinit"), "{inside}");
    assert!(
        inside.contains("libgssapiv2.so"),
        "no GSSAPI plugin: {inside}"
    );

    // The settings of a GSSAPI login are accepted inside, kinit and the plugin found (a start
    // without them stops), the keytab read from a mounted file as a Secret would be.
    let keytab = tempfile::NamedTempFile::new().expect("a keytab file");
    // Readable by the image's uid, as a Secret's files are by default (0644).
    std::fs::set_permissions(
        keytab.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod the keytab");
    let mount = format!("{}:/etc/lagscaler/keytab:ro", keytab.path().display());
    // `--check-config` of a GSSAPI login inside, with `env` added.
    let check_config = |env: &[&str]| {
        let mut args = container::RUN_ONCE.to_vec();
        args.extend([
            "--volume",
            &mount,
            "--env",
            "SCALER_KAFKA_BOOTSTRAP_SERVERS=kafka.example:9092",
            "--env",
            "SCALER_KAFKA_SASL=gssapi",
            "--env",
            "SCALER_KAFKA_USERNAME=lagscaler@EXAMPLE.COM",
            "--env",
            "SCALER_KAFKA_KERBEROS_KEYTAB=/etc/lagscaler/keytab",
        ]);
        args.extend_from_slice(env);
        args.extend([image, "--check-config"]);
        container::run(&args)
    };
    let check = check_config(&[]);
    let text = crate::support::output_text(&check);
    assert!(check.status.success(), "{text}");
    assert!(text.contains("configuration ok"), "{text}");
    // Without kinit on PATH the same settings are refused, naming what is missing.
    let without = check_config(&["--env", "PATH=/nowhere"]);
    let text = crate::support::output_text(&without);
    assert!(!without.status.success(), "{text}");
    assert!(text.contains("kinit"), "{text}");
    // And so are they where Cyrus SASL finds no GSSAPI plugin: the image's is what passed.
    let without = check_config(&["--env", "SASL_PATH=/nowhere"]);
    let text = crate::support::output_text(&without);
    assert!(!without.status.success(), "{text}");
    assert!(text.contains("GSSAPI plugin"), "{text}");
}

/// KEDA's calls from the host reach the container on the ports the settings give (not the
/// image's defaults), answer the true lag, and the image's HEALTHCHECK asks the HTTP port
/// the settings give; SIGTERM ends it with status 0 well inside Kubernetes' 10 s grace.
#[test]
fn the_image_serves_keda_read_only_passes_its_healthcheck_and_stops_on_sigterm() {
    let broker = Kafka::shared();
    broker.create_topic("image-orders", 2);
    broker.produce("image-orders", 0, 5);
    broker.produce("image-orders", 1, 3);
    broker.commit(
        "image-readers",
        &[("image-orders", 0, 1), ("image-orders", 1, 1)],
    );
    let (grpc, http) = (free_port(), free_port());
    let container = Container::start(&[
        "--env",
        "SCALER_LISTEN_ADDR=127.0.0.1",
        "--env",
        &format!("SCALER_PORT={grpc}"),
        "--env",
        &format!("SCALER_HTTP_PORT={http}"),
        "--env",
        &format!("SCALER_KAFKA_BOOTSTRAP_SERVERS={}", broker.bootstrap()),
        "--env",
        "SCALER_POLL_INTERVAL=1s",
    ]);
    let http_addr = format!("127.0.0.1:{http}").parse().expect("address");
    let ready = wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(http_addr).ok()?;
        (http_get(http_addr, "/readyz").0 == 200).then_some(())
    });
    assert!(ready.is_some(), "not ready; log:\n{}", container.log());
    assert_eq!(container.inspect("{{.Config.User}}"), "65532:65532");

    let client = GrpcClient::connect(&format!("127.0.0.1:{grpc}"));
    let metadata = [
        ("consumerGroup", "image-readers"),
        ("topic", "image-orders"),
        ("lagThreshold", "10"),
    ];
    let (name, target, _) = client.metric_spec(&metadata).expect("GetMetricSpec");
    assert_eq!(
        (name.as_str(), target),
        ("kafka-lag-image-readers-image-orders", 10)
    );
    assert_eq!(client.lag(&metadata).expect("GetMetrics"), 6);
    assert!(client.is_active(&metadata).expect("IsActive"));
    let stream = client.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(10));
    assert!(
        matches!(first, Some(StreamEvent::Message(true, _))),
        "{first:?}"
    );
    drop(stream);

    let health = container::run(&["healthcheck", "run", &container.name]);
    assert!(
        health.status.success(),
        "HEALTHCHECK failed with SCALER_HTTP_PORT={http}: {}",
        crate::support::output_text(&health)
    );

    let (took, code) = container.stop(Duration::from_secs(10));
    println!("image: stopped in {took:?} with status {code}");
    assert_eq!(code, 0, "log:\n{}", container.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
}
