//! The gRPC server over TLS and mutual TLS, with certificates generated in the test, as
//! KEDA's external trigger connects (enableTLS, caCert, tlsClientCert/tlsClientKey).

use std::time::Duration;

use lagscaler::config::TlsConfig;
use lagscaler::daemon::StartError;
use lagscaler::Daemon;

use crate::support::{GrpcClient, Process, Scaler, Tansu, TestPki};

const METADATA: [(&str, &str); 2] = [("consumerGroup", "secure"), ("topic", "vault")];

fn broker() -> Tansu {
    let broker = Tansu::start();
    broker.create_topic("vault", 1);
    broker.produce("vault", 0, 5);
    broker.commit("secure", &[("vault", 0, 2)]);
    broker
}

fn scaler(broker: &Tansu, pki: &TestPki, client_ca: bool) -> Scaler {
    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    config.tls = Some(TlsConfig {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("server.key"),
        client_ca_file: client_ca.then(|| pki.path("ca.pem")),
    });
    Scaler::start_with(config)
}

#[test]
fn tls_serves_clients_that_trust_its_ca_and_refuses_plaintext() {
    let broker = broker();
    let pki = TestPki::generate();
    let scaler = scaler(&broker, &pki, false);
    let addr = scaler.daemon().addr().to_string();

    let trusted = GrpcClient::connect_tls(&addr, &pki.read("ca.pem"), None);
    assert_eq!(trusted.lag(&METADATA).expect("lag over TLS"), 3);

    let plaintext = GrpcClient::connect(&addr);
    let refused = plaintext.lag(&METADATA);
    assert!(refused.is_err(), "plaintext answered: {refused:?}");
    // A client that trusts another CA does not get through either.
    let other = TestPki::generate();
    let untrusting = GrpcClient::connect_tls(&addr, &other.read("ca.pem"), None);
    assert!(untrusting.lag(&METADATA).is_err());
    scaler.stop();
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_from_its_ca() {
    let broker = broker();
    let pki = TestPki::generate();
    let scaler = scaler(&broker, &pki, true);
    let addr = scaler.daemon().addr().to_string();
    let ca = pki.read("ca.pem");

    let (cert, key) = (pki.read("client.pem"), pki.read("client.key"));
    let keda = GrpcClient::connect_tls(&addr, &ca, Some((&cert, &key)));
    assert_eq!(keda.lag(&METADATA).expect("lag over mutual TLS"), 3);
    assert!(keda.is_active(&METADATA).expect("IsActive"));

    let anonymous = GrpcClient::connect_tls(&addr, &ca, None);
    let refused = anonymous.lag(&METADATA);
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );

    // A certificate from another CA is refused too.
    let other = TestPki::generate();
    let (cert, key) = (other.read("client.pem"), other.read("client.key"));
    let stranger = GrpcClient::connect_tls(&addr, &ca, Some((&cert, &key)));
    assert!(stranger.lag(&METADATA).is_err());
    scaler.stop();
}

#[test]
fn unreadable_tls_files_fail_the_start_naming_the_setting() {
    let pki = TestPki::generate();
    let mut config = Scaler::config(
        "127.0.0.1:9",
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    config.tls = Some(TlsConfig {
        cert_file: pki.path("server.pem"),
        key_file: pki.path("missing.key"),
        client_ca_file: None,
    });
    let err = Daemon::start(&config).err().expect("start must fail");
    assert!(
        matches!(
            err,
            StartError::TlsFile {
                variable: "SCALER_TLS_KEY_FILE",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("missing.key"), "{err}");

    // Not PEM: the CSR's extension file is plain text.
    config.tls = Some(TlsConfig {
        cert_file: pki.path("server.ext"),
        key_file: pki.path("server.key"),
        client_ca_file: None,
    });
    let err = Daemon::start(&config).err().expect("start must fail");
    assert!(err.to_string().contains("SCALER_TLS_CERT_FILE"), "{err}");
    assert!(err.to_string().contains("no PEM block"), "{err}");
}

/// A Kafka authentication case: its name and the settings.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>);

#[test]
fn kafka_sasl_is_spoken_and_a_refused_login_is_unavailable_without_leaking_secrets() {
    const PASSWORD: &str = "pw-5e1f-never-logged";
    const FILE_PASSWORD: &str = "pw-file-a9c3-never-logged";
    // tansu with --authentication offers SCRAM-SHA-512 and SCRAM-SHA-256 and checks them
    // against its users; with in-memory storage none can exist, so every login is refused.
    let broker = Tansu::start_authenticating();
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{FILE_PASSWORD}\n")).expect("write secret");
    let password_file = password_file.display().to_string();
    let cases: [Case; 4] = [
        (
            "SCRAM-SHA-512",
            vec![
                ("SCALER_KAFKA_SASL", "scram_sha512"),
                ("SCALER_KAFKA_USERNAME", "alice"),
                ("SCALER_KAFKA_PASSWORD", PASSWORD),
            ],
        ),
        (
            "SCRAM-SHA-256, password from a file",
            vec![
                ("SCALER_KAFKA_SASL", "scram_sha256"),
                ("SCALER_KAFKA_USERNAME", "bob"),
                ("SCALER_KAFKA_PASSWORD_FILE", password_file.as_str()),
            ],
        ),
        (
            "PLAIN, which this broker does not offer",
            vec![
                ("SCALER_KAFKA_SASL", "plaintext"),
                ("SCALER_KAFKA_USERNAME", "carol"),
                ("SCALER_KAFKA_PASSWORD", PASSWORD),
            ],
        ),
        ("no SASL", vec![]),
    ];
    for (case, settings) in cases {
        let sasl = !settings.is_empty();
        let mut env = vec![
            ("SCALER_POLL_INTERVAL", "300ms"),
            ("SCALER_KAFKA_TIMEOUT", "1s"),
        ];
        env.extend(settings);
        let process = Process::start(&broker.bootstrap(), &env);
        let client = process.client();
        let err = client.lag(&METADATA).expect_err(case);
        assert_eq!(
            err.code(),
            grpcio::RpcStatusCode::UNAVAILABLE,
            "{case}: {err:?}"
        );
        drop(client);
        let log = process.log();
        assert!(log.contains(" DEBUG "), "{case}: debug logging is on");
        if sasl {
            // The refusal is librdkafka's SASL error, so the mechanism was really spoken.
            let refused = crate::support::wait_for(Duration::from_secs(5), || {
                let log = process.log();
                log.contains("Authentication").then_some(log)
            });
            assert!(refused.is_some(), "{case}: no authentication error:\n{log}");
        }
        for secret in [PASSWORD, FILE_PASSWORD] {
            assert!(!log.contains(secret), "{case}: a secret in the log:\n{log}");
        }
    }
}

#[test]
fn named_clusters_are_reachable_by_name_or_servers_and_nothing_else_is() {
    let first = broker();
    let second = Tansu::start();
    second.create_topic("vault", 1);
    second.produce("vault", 0, 9);
    second.commit("secure", &[("vault", 0, 1)]);
    let mut config = Scaler::config(
        &first.bootstrap(),
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    let mut other = config.kafka.clone();
    other.bootstrap_servers = vec![second.bootstrap()];
    config.clusters.insert("second".to_owned(), other);
    let scaler = Scaler::start_with(config);

    // The same group and topic on each cluster: lag 3 on the default one, 8 on the second.
    assert_eq!(scaler.lag(&METADATA).expect("default cluster"), 3);
    let by_name = [METADATA[0], METADATA[1], ("cluster", "second")];
    assert_eq!(scaler.lag(&by_name).expect("cluster=second"), 8);
    let servers = second.bootstrap();
    let by_servers = [
        METADATA[0],
        METADATA[1],
        ("bootstrapServers", servers.as_str()),
    ];
    assert_eq!(scaler.lag(&by_servers).expect("bootstrapServers"), 8);

    // Anything else is refused before any connection is made.
    let elsewhere = [
        METADATA[0],
        METADATA[1],
        ("bootstrapServers", "10.0.0.1:9092"),
    ];
    let err = scaler.lag(&elsewhere).expect_err("an unconfigured host");
    assert_eq!(err.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
    assert!(err.message().contains("bootstrapServers"), "{err:?}");
    let unknown = [METADATA[0], METADATA[1], ("cluster", "third")];
    let err = scaler.lag(&unknown).expect_err("an unknown cluster");
    assert_eq!(err.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
    assert!(err.message().contains("default, second"), "{err:?}");
    assert_eq!(scaler.daemon().watch_count(), 2);
    scaler.stop();
}
