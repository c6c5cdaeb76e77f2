//! Azul plugins against a real Redis (the dispatcher's database 2) and Apache Kafka: which
//! groups count, the remembered mapping, a Redis outage, and push (StreamIsActive). Each
//! test deploys its own plugin version with topics of its own on the shared broker, so
//! that no test sees another's groups.

use std::time::{Duration, Instant};

use redis::Commands;

use crate::support::{Kafka, Process, Redis, Scaler, StreamEvent, TestPki};

const TOPIC_PREFIX: &str = "qa01";
const PLUGIN: &str = "plugin-tika";

/// The plugin's metadata as an Azul ScaledObject has it, plus `extra`.
fn plugin<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut metadata = vec![
        ("scalerAddress", "lagscaler:8090"),
        ("entityType", "plugin"),
        ("pluginName", PLUGIN),
    ];
    metadata.extend_from_slice(extra);
    metadata
}

/// As `plugin`, reporting plain lag (targetSize is then records per replica).
fn plugin_lag<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut metadata = plugin(&[("metric", "lag"), ("targetSize", "10")]);
    metadata.extend_from_slice(extra);
    metadata
}

/// Sets the dispatcher's key for the plugin, with its 24 h expiry.
fn dispatcher_key(redis: &Redis, kafka_prefix: &str) {
    let value = format!(r#"{{"kafka_prefix":"{kafka_prefix}"}}"#);
    let _: () = redis
        .dispatcher_db()
        .set_ex(PLUGIN, value, 24 * 3600)
        .expect("SET the dispatcher's key");
}

/// One deployment of the plugin: `version` is the dispatcher's `kafka_prefix` for it, and
/// names its groups (`qa01-azul-<version>-...`) and, here, its topics.
struct Azul {
    version: &'static str,
    extracted: String,
    system: String,
}

impl Azul {
    fn new(version: &'static str) -> Azul {
        Azul {
            version,
            extracted: format!("azul.qa01.src.binary.extracted.{version}"),
            system: format!("azul.qa01.system.binary.{version}"),
        }
    }

    /// The group of this version with `role` (e.g. `live`), as the dispatcher names it.
    fn group(&self, role: &str) -> String {
        format!("{TOPIC_PREFIX}-azul-{}-{role}", self.version)
    }

    /// Topics and groups as the dispatcher names them, with decoys the Azul scaler's
    /// substring match would count. The plugin's lag is 6 (live 3 + expedite 3), 20 with
    /// historic (+14).
    fn load(&self, broker: &Kafka) {
        let (extracted, system) = (self.extracted.as_str(), self.system.as_str());
        broker.create_topic(extracted, 2);
        broker.create_topic(system, 1);
        broker.produce(extracted, 0, 10);
        broker.produce(extracted, 1, 6);
        broker.produce(system, 0, 4);
        let live = self.group("allsrc-sourced.extracted-ELH-live");
        broker.commit(&live, &[(extracted, 0, 7), (extracted, 1, 6)]);
        broker.commit(&self.group("expedite"), &[(system, 0, 1)]);
        broker.commit(
            &self.group("historic"),
            &[(extracted, 0, 2), (extracted, 1, 0)],
        );
        // Decoys: another plugin whose name extends this one's, one that contains it, and
        // another deployment's prefix.
        let version = self.version;
        broker.commit(&format!("qa01-azul-{version}X-live"), &[(extracted, 0, 0)]);
        broker.commit(
            &format!("qa01-azul-Old{version}-live"),
            &[(extracted, 0, 5)],
        );
        broker.commit(&format!("qa02-azul-{version}-live"), &[(system, 0, 0)]);
    }
}

fn start_scaler(broker: &Kafka, redis: &Redis) -> Scaler {
    let mut config = Scaler::config(
        &broker.bootstrap(),
        Duration::from_millis(300),
        Duration::from_secs(60),
    );
    config.redis = redis.config(TOPIC_PREFIX);
    Scaler::start_with(config)
}

#[test]
fn plugin_lag_counts_exactly_its_groups_and_outlives_the_dispatcher_key() {
    let broker = Kafka::shared();
    let redis = Redis::start();
    let azul = Azul::new("Tika-1.2-binary");
    azul.load(broker);
    dispatcher_key(&redis, azul.version);
    let scaler = start_scaler(broker, &redis);

    assert_eq!(scaler.lag(&plugin_lag(&[])).expect("lag"), 6);
    let historic = plugin_lag(&[("includeHistoric", " TRUE ")]);
    assert_eq!(scaler.lag(&historic).expect("lag with historic"), 20);
    assert!(
        scaler.is_active(&plugin_lag(&[])).expect("IsActive"),
        "lag 6 is above activation 0"
    );

    // Azul's own metric: `backlog`, target targetSize. Nothing moves, so it is not
    // draining: (τ + 6 records / (1 per minute)) in minutes, τ being the ~0.3 s poll spacing.
    let backlog = plugin(&[("targetSize", "5")]);
    assert_eq!(
        scaler.metric_spec(&backlog).expect("spec"),
        ("backlog".to_owned(), 5, 5.0)
    );
    let value =
        crate::support::wait_for(Duration::from_secs(5), || scaler.get_metrics(&backlog).ok())
            .expect("backlog known once two samples are in");
    assert!(value.1 > 6.0 && value.1 < 6.05, "backlog {value:?}");
    assert_eq!(value.0, 7, "integer value rounded up");

    // A plugin nobody ever saw: inactive and 0, as the Azul scaler answers.
    let nobody = [
        ("entityType", "plugin"),
        ("pluginName", "plugin-nobody"),
        ("targetSize", "5"),
    ];
    assert!(!scaler.is_active(&nobody).expect("IsActive"));
    assert_eq!(scaler.get_metrics(&nobody).expect("metric"), (0, 0.0));

    // The dispatcher's key expires (a plugin scaled to zero for a day): still watched.
    let _: () = redis.dispatcher_db().del(PLUGIN).expect("DEL");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(scaler.lag(&plugin_lag(&[])).expect("lag after DEL"), 6);
        std::thread::sleep(Duration::from_millis(100));
    }
    let remembered: Option<String> = redis
        .dispatcher_db()
        .hget(lagscaler::directory::REMEMBERED_KEY, PLUGIN)
        .expect("HGET");
    assert_eq!(remembered.as_deref(), Some(azul.version));
    scaler.stop();

    // A restarted lagscaler knows the mapping from its own key.
    let again = start_scaler(broker, &redis);
    assert_eq!(again.lag(&plugin_lag(&[])).expect("lag after restart"), 6);
    again.stop();
}

#[test]
fn redis_outage_keeps_the_last_mapping_and_recovers_by_itself() {
    let broker = Kafka::shared();
    let redis = Redis::start();
    let redis_port = redis.port();
    let azul = Azul::new("Outage-1.2-binary");
    azul.load(broker);
    dispatcher_key(&redis, azul.version);
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_REDIS_URL", &redis.address()),
            ("SCALER_TOPIC_PREFIX", TOPIC_PREFIX),
            ("SCALER_POLL_INTERVAL", "300ms"),
        ],
    );
    let client = process.client();
    let metadata = plugin_lag(&[]);
    assert_eq!(client.lag(&metadata).expect("lag"), 6);

    drop(redis);
    broker.produce(&azul.extracted, 0, 2);
    let moved = client.wait_for_lag(&metadata, 8, Duration::from_secs(5));
    assert!(
        moved.is_some(),
        "no fresh lag during the outage; log:\n{}",
        process.log()
    );
    assert!(client.is_active(&metadata).expect("IsActive"));
    // At least 5 more polls into the outage: still one warning.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(client.lag(&metadata).expect("lag"), 8);
    let outage_warning = "plugins keep their last known consumer groups";
    assert_eq!(
        process.log().matches(outage_warning).count(),
        1,
        "{}",
        process.log()
    );

    // Back, empty, and the plugin was upgraded meanwhile: the new version's groups count.
    let redis = Redis::start_on(redis_port);
    let upgraded = Azul::new("Outage-1.3-binary");
    broker.commit(&upgraded.group("live"), &[(&azul.system, 0, 0)]);
    dispatcher_key(&redis, upgraded.version);
    let recovered = client.wait_for_lag(&metadata, 4, Duration::from_secs(5));
    assert!(recovered.is_some(), "no recovery; log:\n{}", process.log());
    assert!(
        process.log().contains("is reachable again"),
        "{}",
        process.log()
    );
}

#[test]
fn stream_is_active_pushes_within_a_poll_and_ends_cleanly() {
    const TRIALS: usize = 5;
    let poll = Duration::from_secs(1);
    let broker = Kafka::shared();
    let redis = Redis::start();
    let azul = Azul::new("Stream-1.2-binary");
    let system = azul.system.as_str();
    broker.create_topic(system, 1);
    broker.produce(system, 0, 3);
    let live = azul.group("live");
    broker.commit(&live, &[(system, 0, 3)]);
    dispatcher_key(&redis, azul.version);
    let mut process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_REDIS_URL", &redis.address()),
            ("SCALER_TOPIC_PREFIX", TOPIC_PREFIX),
            ("SCALER_POLL_INTERVAL", "1s"),
        ],
    );
    let client = process.client();
    let metadata = plugin(&[("targetSize", "5")]);

    let stream = client.stream_is_active(&metadata);
    let first = stream.next(Duration::from_secs(3));
    assert!(
        matches!(first, Some(StreamEvent::Message(false, _))),
        "{first:?}; log:\n{}",
        process.log()
    );

    let producer = broker.producer();
    let mut offset = 3;
    let mut latencies = Vec::new();
    for trial in 0..TRIALS {
        crate::support::produce_one(&producer, system, 0);
        let produced = Instant::now();
        offset += 1;
        let pushed = stream.next(poll + Duration::from_secs(2));
        let Some(StreamEvent::Message(true, at)) = pushed else {
            panic!("trial {trial}: {pushed:?}; log:\n{}", process.log());
        };
        latencies.push(at.duration_since(produced));
        // Consumed: the push goes back to false (KEDA ignores it; scale-in is by polling).
        broker.commit(&live, &[(system, 0, offset)]);
        let idle = stream.next(poll + Duration::from_secs(2));
        assert!(
            matches!(idle, Some(StreamEvent::Message(false, _))),
            "trial {trial}: {idle:?}"
        );
    }
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        slowest <= poll + Duration::from_millis(500),
        "record-to-push latencies {latencies:?}"
    );
    eprintln!("record-to-push latencies with a 1 s poll: {latencies:?}");

    // StreamMetricSpec: the spec at once, equal to GetMetricSpec's, and nothing more.
    let specs = client.stream_metric_spec(&metadata);
    let spec = specs.next(Duration::from_secs(3));
    let (name, target, _) = client.metric_spec(&metadata).expect("spec");
    assert!(
        matches!(&spec, Some(StreamEvent::Message((n, t), _)) if *n == name && *t == target as f64),
        "{spec:?}"
    );
    assert_eq!(specs.next(Duration::from_millis(1500)), None);
    specs.cancel();

    // The client cancels: the server notices and forgets the stream.
    stream.cancel();
    let forgotten = crate::support::wait_for(Duration::from_secs(3), || {
        process
            .log()
            .contains("stream closed by the client")
            .then_some(())
    });
    assert!(forgotten.is_some(), "{}", process.log());

    // The server stops: an open stream ends with status OK.
    let open = client.stream_is_active(&metadata);
    assert!(matches!(
        open.next(Duration::from_secs(3)),
        Some(StreamEvent::Message(false, _))
    ));
    let status = process.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(open.next(Duration::from_secs(3)), Some(StreamEvent::Ended));
    let log = process.log();
    let problems: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn redis_auth_works_and_no_secret_reaches_the_log() {
    const PASSWORD: &str = "pw-4c1d-never-logged";
    const USER_PASSWORD: &str = "pw-user-77e2-never-logged";
    const WRONG: &str = "pw-wrong-9b0f-never-logged";
    let broker = Kafka::shared();
    let azul = Azul::new("Auth-1.2-binary");
    azul.load(broker);
    let port = crate::support::free_port();
    let user_password = format!(">{USER_PASSWORD}");
    let redis = Redis::start_with(
        port,
        &[
            "--requirepass",
            PASSWORD,
            "--user",
            "scaler",
            "on",
            &user_password,
            "~*",
            "&*",
            "+@all",
        ],
    );
    let value = format!(r#"{{"kafka_prefix":"{}"}}"#, azul.version);
    let _: () = redis
        .dispatcher_db_as(&format!(":{PASSWORD}@"))
        .set(PLUGIN, value)
        .expect("SET with the password");

    let secrets_dir = tempfile::tempdir().expect("temp dir");
    let password_file = secrets_dir.path().join("redis-password");
    std::fs::write(&password_file, format!("{USER_PASSWORD}\n")).expect("write secret");
    let password_file = password_file.display().to_string();
    let url = redis.address();
    let variants: [(&str, Vec<(&str, &str)>); 3] = [
        ("default user", vec![("SCALER_REDIS_PASSWORD", PASSWORD)]),
        (
            "ACL user, password from a file",
            vec![
                ("SCALER_REDIS_USERNAME", "scaler"),
                ("SCALER_REDIS_PASSWORD_FILE", password_file.as_str()),
            ],
        ),
        ("wrong password", vec![("SCALER_REDIS_PASSWORD", WRONG)]),
    ];
    for (case, credentials) in variants {
        let mut env = vec![
            ("SCALER_REDIS_URL", url.as_str()),
            ("SCALER_TOPIC_PREFIX", TOPIC_PREFIX),
            ("SCALER_POLL_INTERVAL", "300ms"),
        ];
        env.extend(credentials);
        let process = Process::start(&broker.bootstrap(), &env);
        let client = process.client();
        let lag = client.lag(&plugin_lag(&[]));
        if case == "wrong password" {
            let err = lag.expect_err("no lag without Redis");
            assert!(err.message().contains("Redis"), "{case}: {err:?}");
        } else {
            assert_eq!(lag.expect(case), 6, "{case}");
        }
        drop(client);
        let log = process.log();
        assert!(log.contains(" DEBUG "), "{case}: debug logging is on");
        for secret in [PASSWORD, USER_PASSWORD, WRONG] {
            assert!(!log.contains(secret), "{case}: a secret in the log:\n{log}");
        }
    }
}

#[test]
fn redis_over_tls_checks_the_servers_certificate_against_ssl_cert_file() {
    let broker = Kafka::shared();
    let azul = Azul::new("Tls-1.2-binary");
    azul.load(broker);
    let pki = TestPki::generate();
    let redis = Redis::start_tls(&pki);
    dispatcher_key(&redis, azul.version);
    let url = format!("rediss://{}", redis.address());
    let ca = pki.path("ca.pem").display().to_string();
    let other = TestPki::generate();
    let other_ca = other.path("ca.pem").display().to_string();
    let plain_url = redis.address();
    let cases = [
        ("trusting the server's CA", url.as_str(), ca.as_str(), None),
        (
            "trusting another CA",
            url.as_str(),
            other_ca.as_str(),
            Some("certificate verify failed"),
        ),
        (
            "plaintext to a TLS port",
            plain_url.as_str(),
            ca.as_str(),
            Some("reading Redis"),
        ),
    ];
    for (case, url, trusted, refusal) in cases {
        let process = Process::start(
            &broker.bootstrap(),
            &[
                ("SCALER_REDIS_URL", url),
                ("SCALER_TOPIC_PREFIX", TOPIC_PREFIX),
                ("SCALER_POLL_INTERVAL", "300ms"),
                // OpenSSL's own variable, which the Redis client's TLS honours.
                ("SSL_CERT_FILE", trusted),
            ],
        );
        let lag = process.client().lag(&plugin_lag(&[]));
        match refusal {
            None => {
                let lag = lag.unwrap_or_else(|err| panic!("{case}: {err:?}\n{}", process.log()));
                assert_eq!(lag, 6, "{case}");
            }
            Some(refusal) => {
                let err = lag.expect_err(case);
                assert_eq!(err.code(), grpcio::RpcStatusCode::UNAVAILABLE, "{case}");
                assert!(err.message().contains("Redis"), "{case}: {err:?}");
                assert!(
                    process.log().contains(refusal),
                    "{case}: no {refusal:?} in the log:\n{}",
                    process.log()
                );
            }
        }
        assert!(
            !process.log().contains("panicked"),
            "{case}: {}",
            process.log()
        );
    }
}

#[test]
fn check_prints_a_plugins_groups_and_what_keda_would_get() {
    let broker = Kafka::shared();
    let redis = Redis::start();
    let azul = Azul::new("Check-1.2-binary");
    azul.load(broker);
    dispatcher_key(&redis, azul.version);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lagscaler"))
        .args([
            "check",
            "entityType=plugin",
            "pluginName=plugin-tika",
            "metric=lag",
            "targetSize=10",
        ])
        .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap())
        .env("SCALER_REDIS_URL", redis.address())
        .env("SCALER_TOPIC_PREFIX", TOPIC_PREFIX)
        .env("SCALER_POLL_INTERVAL", "300ms")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run lagscaler check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A row per partition of the plugin's live and expedite groups, and none of the decoys
    // or of the historic group.
    let groups: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with("qa0"))
        .collect();
    assert_eq!(
        groups,
        [
            azul.group("allsrc-sourced.extracted-ELH-live"),
            azul.group("allsrc-sourced.extracted-ELH-live"),
            azul.group("expedite"),
        ],
        "{stdout}"
    );
    assert!(stdout.contains("GetMetrics: lag=6 (integer 6)"), "{stdout}");
    assert!(stdout.contains("IsActive: true"), "{stdout}");
}

#[test]
fn a_read_only_redis_user_keeps_plugins_working_with_the_mapping_in_memory() {
    const PASSWORD: &str = "pw-reader-2b7a-never-logged";
    let broker = Kafka::shared();
    let azul = Azul::new("Reader-1.2-binary");
    azul.load(broker);
    let port = crate::support::free_port();
    let user = format!(">{PASSWORD}");
    // The Azul scaler's rights: it only reads.
    let redis = Redis::start_with(
        port,
        &[
            "--user",
            "reader",
            "on",
            &user,
            "~*",
            "+@read",
            "+@connection",
        ],
    );
    dispatcher_key(&redis, azul.version);
    let url = redis.address();
    let process = Process::start(
        &broker.bootstrap(),
        &[
            ("SCALER_REDIS_URL", url.as_str()),
            ("SCALER_REDIS_USERNAME", "reader"),
            ("SCALER_REDIS_PASSWORD", PASSWORD),
            ("SCALER_TOPIC_PREFIX", TOPIC_PREFIX),
            ("SCALER_POLL_INTERVAL", "300ms"),
        ],
    );
    let client = process.client();
    assert_eq!(client.lag(&plugin_lag(&[])).expect("lag as a reader"), 6);
    // The mapping lives on in memory after the dispatcher's key is gone.
    let _: () = redis.dispatcher_db().del(PLUGIN).expect("DEL");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(client.lag(&plugin_lag(&[])).expect("lag after DEL"), 6);
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = process.log();
    let refusals = log
        .matches("cannot write lagscaler:plugin-kafka-prefix")
        .count();
    assert_eq!(refusals, 1, "the refused write is logged once:\n{log}");
    assert!(!log.contains(PASSWORD), "a secret in the log:\n{log}");
    let nothing: Option<String> = redis
        .dispatcher_db()
        .hget(lagscaler::directory::REMEMBERED_KEY, PLUGIN)
        .expect("HGET");
    assert_eq!(nothing, None);
}

/// A loopback listener that accepts connections and never says a word: a blackholed Redis,
/// or a TLS port whose handshake never finishes. Stops with the test.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    if let Ok((socket, _)) = listener.accept() {
                        held.push(socket);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_silent_redis_never_stalls_plugin_lookups_beyond_their_deadline() {
    use lagscaler::config::RedisConfig;
    use lagscaler::directory::{Directory, REDIS_TIMEOUT, RETRY_AFTER};
    use redis::IntoConnectionInfo;

    const LOOKUPS: usize = 6;
    let silent = Silent::start();
    let plain = RedisConfig {
        connection: lagscaler::config::redis_connection("127.0.0.1", silent.port),
        topic_prefix: TOPIC_PREFIX.to_owned(),
    };
    let tls = RedisConfig {
        connection: format!("rediss://127.0.0.1:{}/2", silent.port)
            .into_connection_info()
            .expect("a rediss URL"),
        topic_prefix: TOPIC_PREFIX.to_owned(),
    };
    // Each lookup gives up within one connect deadline plus one command deadline, however
    // many run at once: none waits for another's round trips.
    let bound = REDIS_TIMEOUT * 2 + Duration::from_secs(1);
    for (case, config) in [("blackholed", plain), ("TLS handshake never ends", tls)] {
        let directory = std::sync::Arc::new(Directory::new(config));
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let started = Instant::now();
        for n in 0..LOOKUPS {
            let directory = std::sync::Arc::clone(&directory);
            let done = done_tx.clone();
            std::thread::spawn(move || {
                let answer = directory.lookup(&format!("plugin-{n}"));
                let _ = done.send((answer, Instant::now()));
            });
        }
        let mut took = Vec::new();
        for _ in 0..LOOKUPS {
            let (answer, at) = done_rx
                .recv_timeout(bound * 3)
                .unwrap_or_else(|_| panic!("{case}: a lookup hung"));
            let err = answer.expect_err("nothing is known of these plugins");
            assert!(err.contains("reading Redis"), "{case}: {err}");
            took.push(at - started);
        }
        println!("{case}: {LOOKUPS} concurrent lookups gave up after {took:?}");
        assert!(took.iter().all(|t| *t <= bound), "{case}: {took:?}");
        // Right after a failure, lookups answer from memory without waiting on Redis.
        let quick = Instant::now();
        assert!(directory.lookup("plugin-0").is_err());
        assert!(
            quick.elapsed() < RETRY_AFTER / 2,
            "{case}: {:?}",
            quick.elapsed()
        );
    }
}
