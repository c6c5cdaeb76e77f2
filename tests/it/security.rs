//! The gRPC server over TLS and mutual TLS, with certificates generated in the test, as
//! KEDA's external trigger connects (enableTLS, caCert, tlsClientCert/tlsClientKey); and
//! lagscaler's own Kafka logins (SASL PLAIN, SCRAM-SHA-256/512) and TLS against Apache
//! Kafka's own listeners.

use std::sync::Once;
use std::time::Duration;

use lagscaler::config::TlsConfig;
use lagscaler::daemon::StartError;
use lagscaler::Daemon;

use crate::support::{
    GrpcClient, Kafka, Listener, Process, Scaler, TestPki, ALICE_PASSWORD, BOB_PASSWORD,
};

const METADATA: [(&str, &str); 2] = [("consumerGroup", "secure"), ("topic", "vault")];

/// The shared broker with topic `vault` (5 records) and group `secure` at 2: lag 3. Loaded
/// once for every test of this file; none of them changes it.
fn broker() -> &'static Kafka {
    static LOADED: Once = Once::new();
    let broker = Kafka::shared();
    LOADED.call_once(|| load_vault(broker, 5, 2));
    broker
}

fn load_vault(broker: &Kafka, records: usize, committed: i64) {
    broker.create_topic("vault", 1);
    broker.produce("vault", 0, records);
    broker.commit("secure", &[("vault", 0, committed)]);
}

fn scaler(broker: &Kafka, pki: &TestPki, client_ca: bool) -> Scaler {
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
    let scaler = scaler(broker, &pki, false);
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
    let scaler = scaler(broker, &pki, true);
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

/// A Kafka security case: its name, the settings, and `None` if lagscaler gets through, else
/// what its log says when the broker's side refuses it.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);

/// Runs the real binary with each case's settings against `bootstrap` and checks that it
/// reads lag 3 or, refused, answers UNAVAILABLE with the case's refusal in its log. Debug
/// logging is on, and no value of `secrets` may appear in the log.
fn check_cases(bootstrap: &str, cases: Vec<Case>, secrets: &[&str]) {
    for (case, settings, refusal) in cases {
        let mut env = vec![
            ("SCALER_POLL_INTERVAL", "300ms"),
            ("SCALER_KAFKA_TIMEOUT", "1s"),
        ];
        env.extend(settings);
        let process = Process::start(bootstrap, &env);
        let client = process.client();
        let lag = client.lag(&METADATA);
        if let Some(refusal) = refusal {
            let err = lag.expect_err(case);
            assert_eq!(
                err.code(),
                grpcio::RpcStatusCode::UNAVAILABLE,
                "{case}: {err:?}"
            );
            let refused = crate::support::wait_for(Duration::from_secs(5), || {
                process.log().contains(refusal).then_some(())
            });
            assert!(
                refused.is_some(),
                "{case}: no {refusal:?} in the log:\n{}",
                process.log()
            );
        } else {
            let lag = lag.unwrap_or_else(|err| panic!("{case}: {err:?}\n{}", process.log()));
            assert_eq!(lag, 3, "{case}");
        }
        drop(client);
        let log = process.log();
        assert!(log.contains(" DEBUG "), "{case}: debug logging is on");
        for secret in secrets {
            assert!(!log.contains(secret), "{case}: a secret in the log:\n{log}");
        }
    }
}

/// `settings` with SASL PLAIN over plaintext explicitly allowed.
fn plain_allowed<'a>(mut settings: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    settings.push(("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD", "true"));
    settings
}

#[test]
fn sasl_plain_without_tls_is_refused_at_start_unless_allowed() {
    const SECRET: &str = "pw-plain-3c9e-never-shown";
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lagscaler"))
        .env_clear()
        .env("SCALER_KAFKA_SASL", "plaintext")
        .env("SCALER_KAFKA_USERNAME", "alice")
        .env("SCALER_KAFKA_PASSWORD", SECRET)
        .env("SCALER_LISTEN_ADDR", "127.0.0.1")
        .env("SCALER_PORT", crate::support::free_port().to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("run lagscaler");
    // A binary that accepted the setting would serve until killed.
    let status =
        crate::support::wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("SCALER_KAFKA_SASL"), "{stderr}");
    assert!(
        stderr.contains("SCALER_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn kafka_sasl_logs_in_with_the_right_password_only_and_no_secret_is_logged() {
    const WRONG: &str = "pw-wrong-71d0-never-logged";
    // librdkafka's SASL error: the mechanism was really spoken, and the broker said no.
    const REFUSED: &str = "Authentication";
    let broker = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{BOB_PASSWORD}\n")).expect("write secret");
    let password_file = password_file.display().to_string();
    let sasl = |mechanism, user, password_key, password| {
        vec![
            ("SCALER_KAFKA_SASL", mechanism),
            ("SCALER_KAFKA_USERNAME", user),
            (password_key, password),
        ]
    };
    let password = "SCALER_KAFKA_PASSWORD";
    let cases: Vec<Case> = vec![
        (
            "SCRAM-SHA-512",
            sasl("scram_sha512", "alice", password, ALICE_PASSWORD),
            None,
        ),
        (
            "SCRAM-SHA-256, password from a file",
            sasl(
                "scram_sha256",
                "bob",
                "SCALER_KAFKA_PASSWORD_FILE",
                &password_file,
            ),
            None,
        ),
        (
            "PLAIN, allowed without TLS",
            plain_allowed(sasl("plaintext", "alice", password, ALICE_PASSWORD)),
            None,
        ),
        (
            "SCRAM-SHA-512, wrong password",
            sasl("scram_sha512", "alice", password, WRONG),
            Some(REFUSED),
        ),
        (
            "PLAIN, wrong password",
            plain_allowed(sasl("plaintext", "alice", password, WRONG)),
            Some(REFUSED),
        ),
        (
            "SCRAM-SHA-256 for a user with SCRAM-SHA-512 credentials only",
            sasl("scram_sha256", "alice", password, ALICE_PASSWORD),
            Some(REFUSED),
        ),
    ];
    let secrets = [ALICE_PASSWORD, BOB_PASSWORD, WRONG];
    check_cases(
        &broker.bootstrap_for(Listener::SaslPlaintext),
        cases,
        &secrets,
    );

    // SASL over TLS: the broker's certificate is checked, then the login.
    let ca = broker.pki().path("ca.pem").display().to_string();
    let mut over_tls = sasl("scram_sha512", "alice", password, ALICE_PASSWORD);
    over_tls.extend(tls_with(&ca));
    let mut wrong_over_tls = sasl("scram_sha256", "bob", password, WRONG);
    wrong_over_tls.extend(tls_with(&ca));
    let cases: Vec<Case> = vec![
        ("SCRAM-SHA-512 over TLS", over_tls, None),
        (
            "SCRAM-SHA-256 over TLS, wrong password",
            wrong_over_tls,
            Some(REFUSED),
        ),
    ];
    check_cases(&broker.bootstrap_for(Listener::SaslSsl), cases, &secrets);

    // Without SASL the broker answers nothing.
    let process = Process::start(
        &broker.bootstrap_for(Listener::SaslPlaintext),
        &[("SCALER_KAFKA_TIMEOUT", "1s")],
    );
    let err = process.client().lag(&METADATA).expect_err("no SASL");
    assert_eq!(err.code(), grpcio::RpcStatusCode::UNAVAILABLE, "{err:?}");
}

#[test]
fn kafka_over_tls_checks_the_brokers_certificate_and_presents_a_client_certificate() {
    let broker = broker();
    let pki = broker.pki();
    let other = TestPki::generate();
    let file = |pki: &TestPki, name: &str| pki.path(name).display().to_string();
    let (ca, cert, key) = (
        file(pki, "ca.pem"),
        file(pki, "client.pem"),
        file(pki, "client.key"),
    );
    let (other_ca, other_cert, other_key) = (
        file(&other, "ca.pem"),
        file(&other, "client.pem"),
        file(&other, "client.key"),
    );
    let cases: Vec<Case> = vec![
        ("TLS with the brokers' CA", tls_with(&ca), None),
        (
            "TLS trusting another CA",
            tls_with(&other_ca),
            Some("certificate verify failed"),
        ),
        ("plaintext to a TLS listener", vec![], Some("Disconnected")),
    ];
    check_cases(&broker.bootstrap_for(Listener::Ssl), cases, &[]);
    let cases: Vec<Case> = vec![
        ("mutual TLS", with_identity(&ca, &cert, &key), None),
        (
            "mutual TLS without a client certificate",
            tls_with(&ca),
            Some("SSL"),
        ),
        (
            "mutual TLS with a certificate from another CA",
            with_identity(&ca, &other_cert, &other_key),
            Some("SSL"),
        ),
    ];
    check_cases(&broker.bootstrap_for(Listener::MutualTls), cases, &[]);
}

/// SCALER_KAFKA_TLS with `ca` as the CA file.
fn tls_with(ca: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("SCALER_KAFKA_TLS", "true"),
        ("SCALER_KAFKA_TLS_CA_FILE", ca),
    ]
}

/// As [`tls_with`], presenting the client certificate `cert` with its key `key`.
fn with_identity<'a>(ca: &'a str, cert: &'a str, key: &'a str) -> Vec<(&'static str, &'a str)> {
    let mut settings = tls_with(ca);
    settings.push(("SCALER_KAFKA_TLS_CERT_FILE", cert));
    settings.push(("SCALER_KAFKA_TLS_KEY_FILE", key));
    settings
}

#[test]
fn named_clusters_are_reachable_by_name_or_servers_and_nothing_else_is() {
    let first = broker();
    // A second cluster of its own with the same names: 9 records, committed at 1.
    let second = Kafka::start();
    load_vault(&second, 9, 1);
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

/// Replaces `to` by a copy of `from` the way Kubernetes updates a mounted Secret: a new
/// file renamed over the old one.
fn rotate(from: &std::path::Path, to: &std::path::Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).expect("stage the new file");
    std::fs::rename(&staged, to).expect("rename it over the old one");
}

#[test]
fn a_rotated_grpc_certificate_is_served_to_new_connections_without_a_restart() {
    let broker = broker();
    let (old, new) = (TestPki::generate(), TestPki::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    rotate(&old.path("server.pem"), &cert);
    rotate(&old.path("server.key"), &key);
    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    config.tls = Some(TlsConfig {
        cert_file: cert.clone(),
        key_file: key.clone(),
        client_ca_file: None,
    });
    let scaler = Scaler::start_with(config);
    let addr = scaler.daemon().addr().to_string();
    let live = GrpcClient::connect_tls(&addr, &old.read("ca.pem"), None);
    assert_eq!(
        live.lag(&METADATA).expect("lag over the old certificate"),
        3
    );

    // cert-manager renews the certificate, from another CA here so that the test can tell
    // which one a connection got.
    rotate(&new.path("server.pem"), &cert);
    rotate(&new.path("server.key"), &key);
    let renewed = GrpcClient::connect_tls(&addr, &new.read("ca.pem"), None);
    assert_eq!(
        renewed
            .lag(&METADATA)
            .expect("lag over the new certificate"),
        3
    );
    let stale = GrpcClient::connect_tls(&addr, &old.read("ca.pem"), None);
    assert!(
        stale.lag(&METADATA).is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the rotation keeps working.
    assert_eq!(
        live.lag(&METADATA).expect("the live client after rotation"),
        3
    );

    // A half-written file is not taken: connections keep getting the last good certificate.
    std::fs::write(&cert, b"not a certificate").expect("truncate");
    let during = GrpcClient::connect_tls(&addr, &new.read("ca.pem"), None);
    assert_eq!(
        during.lag(&METADATA).expect("lag with a bad file in place"),
        3
    );
    scaler.stop();
}

#[test]
fn a_rotated_kafka_client_certificate_is_used_without_a_restart() {
    let broker = broker();
    let pki = broker.pki();
    let other = TestPki::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    // A certificate the brokers do not trust: refused.
    rotate(&other.path("client.pem"), &cert);
    rotate(&other.path("client.key"), &key);
    let ca = pki.path("ca.pem").display().to_string();
    let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
    let mut env = vec![
        ("SCALER_POLL_INTERVAL", "300ms"),
        ("SCALER_KAFKA_TIMEOUT", "1s"),
    ];
    env.extend(with_identity(&ca, &cert_path, &key_path));
    let process = Process::start(&broker.bootstrap_for(Listener::MutualTls), &env);
    let client = process.client();
    let refused = client
        .lag(&METADATA)
        .expect_err("an untrusted client certificate");
    assert_eq!(
        refused.code(),
        grpcio::RpcStatusCode::UNAVAILABLE,
        "{refused:?}"
    );

    // The certificate is renewed by one the brokers trust: polls pick it up.
    rotate(&pki.path("client.pem"), &cert);
    rotate(&pki.path("client.key"), &key);
    let rotated = std::time::Instant::now();
    let lag = crate::support::wait_for(Duration::from_secs(20), || client.lag(&METADATA).ok());
    assert_eq!(lag, Some(3), "log:\n{}", process.log());
    println!(
        "Kafka client certificate rotated: lag read {:?} later",
        rotated.elapsed()
    );
    assert!(
        process
            .log()
            .contains("Kafka TLS files of cluster default changed"),
        "{}",
        process.log()
    );
}

/// An encrypted client key (KEDA's `keyPassword`): with its password lagscaler presents
/// the certificate and reads the lag over mutual TLS; with a wrong one it does not start,
/// naming the key file, and the password is never shown.
#[test]
fn an_encrypted_client_key_is_read_with_its_password_which_is_never_shown() {
    const PASSWORD: &str = "key-pw-4d1e-never-logged";
    const WRONG: &str = "key-pw-wrong-0a77-never-logged";
    let broker = broker();
    let pki = broker.pki();
    let dir = tempfile::tempdir().expect("temp dir");
    let encrypted = dir.path().join("client-encrypted.key");
    let output = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-in"])
        .arg(pki.path("client.key"))
        .arg("-out")
        .arg(&encrypted)
        .args(["-passout", &format!("pass:{PASSWORD}")])
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "{output:?}");
    let key_text = std::fs::read_to_string(&encrypted).expect("read the key");
    assert!(key_text.contains("ENCRYPTED PRIVATE KEY"), "{key_text}");
    let ca = pki.path("ca.pem").display().to_string();
    let cert = pki.path("client.pem").display().to_string();
    let key = encrypted.display().to_string();
    let mut settings = with_identity(&ca, &cert, &key);
    settings.push(("SCALER_KAFKA_TLS_KEY_PASSWORD", PASSWORD));
    check_cases(
        &broker.bootstrap_for(Listener::MutualTls),
        vec![("an encrypted client key with its password", settings, None)],
        &[PASSWORD],
    );

    let log = dir.path().join("stderr");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lagscaler"));
    command
        .env_clear()
        .env(
            "SCALER_KAFKA_BOOTSTRAP_SERVERS",
            broker.bootstrap_for(Listener::MutualTls),
        )
        .env("SCALER_KAFKA_TLS_KEY_PASSWORD", WRONG)
        .env("SCALER_LISTEN_ADDR", "127.0.0.1")
        .env("SCALER_PORT", crate::support::free_port().to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"));
    for (name, value) in with_identity(&ca, &cert, &key) {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run lagscaler");
    let status =
        crate::support::wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    println!("a wrong key password: {status:?}, {stderr}");
    assert!(
        status.is_some_and(|status| !status.success()),
        "a wrong key password did not stop the start: {stderr}"
    );
    assert!(stderr.contains("ssl.key"), "{stderr}");
    assert!(
        !stderr.contains(WRONG) && !stderr.contains(PASSWORD),
        "{stderr}"
    );
}
