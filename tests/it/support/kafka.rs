//! Apache Kafka for the tests: KRaft nodes (broker and controller in one JVM each) run by
//! `scripts/kafka-run` from the jars `scripts/install-deps` resolved from Maven Central, on
//! free loopback ports, each logging into its own temp dir. One node, or three with
//! replication factor 3; a node can be killed, frozen, restarted, and all of them restarted
//! in turn. [`Kafka::shared`] is the one broker a test binary shares between the tests that
//! neither stop nor reconfigure it; it has every client listener (plaintext, TLS, mutual
//! TLS, SASL over plaintext and over TLS) and the SASL users below.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::wire::{self, WireCounter};
use super::{free_port, send_signal, wait_for, TestPki};

/// alice logs in with PLAIN and SCRAM-SHA-512, with this password.
pub const ALICE_PASSWORD: &str = "pw-5e1f-never-logged";
/// bob has SCRAM-SHA-256 credentials only, with this password.
pub const BOB_PASSWORD: &str = "pw-file-a9c3-never-logged";

/// How long a node may take from launch to serving on a loaded 2-core machine (measured:
/// 3.5 s to 7 s for one node while a build ran, longer with three JVMs starting at once).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// What a node logs once it serves clients.
const STARTED: &str = "Kafka Server started";

/// A client listener of a node; inter-broker and controller traffic stays plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Plaintext,
    /// TLS; the client checks the broker's certificate.
    Ssl,
    /// TLS that also requires a client certificate from the test CA.
    MutualTls,
    SaslPlaintext,
    SaslSsl,
    /// SASL OAUTHBEARER without TLS, its tokens checked against a JWKS
    /// ([`Kafka::start_with_oauth`]).
    OAuth,
    /// SASL GSSAPI (Kerberos) without TLS, its tickets from a test KDC
    /// ([`Kafka::start_with_kerberos`]).
    Kerberos,
}

impl Listener {
    const SECURE: [Listener; 4] = [
        Listener::Ssl,
        Listener::MutualTls,
        Listener::SaslPlaintext,
        Listener::SaslSsl,
    ];

    fn name(self) -> &'static str {
        match self {
            Listener::Plaintext => "PLAINTEXT",
            Listener::Ssl => "SSL",
            Listener::MutualTls => "MTLS",
            Listener::SaslPlaintext => "SASL_PLAINTEXT",
            Listener::SaslSsl => "SASL_SSL",
            Listener::OAuth => "OAUTH",
            Listener::Kerberos => "KERBEROS",
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Listener::MutualTls => "SSL",
            Listener::OAuth | Listener::Kerberos => "SASL_PLAINTEXT",
            other => other.name(),
        }
    }
}

/// The Apache Kafka line the tests run: `LAGSCALER_TEST_KAFKA`, a folder of
/// `scripts/kafka` (`4`, the default, or `3.9` for the compatibility run).
pub fn kafka_line() -> String {
    std::env::var("LAGSCALER_TEST_KAFKA").unwrap_or_else(|_| "4".to_owned())
}

/// The version of Apache Kafka [`kafka_line`] names: its pom's `kafka.version`, which is
/// what `scripts/kafka-run` starts.
pub fn kafka_version() -> String {
    let pom = script("kafka").join(kafka_line()).join("pom.xml");
    let text =
        std::fs::read_to_string(&pom).unwrap_or_else(|err| panic!("read {}: {err}", pom.display()));
    text.split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_else(|| panic!("no kafka.version in {}", pom.display()))
        .to_owned()
}

/// `scripts/<name>` of this repository.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// The audience an OAUTHBEARER listener expects in a token's `aud` claim.
pub const OAUTH_AUDIENCE: &str = "lagscaler-test-cluster";
/// The issuer it expects in `iss`.
pub const OAUTH_ISSUER: &str = "lagscaler-test-provider";

/// One node: its properties, ports, log, and the JVM while it runs.
struct Node {
    id: u32,
    dir: PathBuf,
    listeners: Vec<(Listener, u16)>,
    controller: u16,
    child: Option<Child>,
    /// A login listener of its own, besides the usual ones.
    extra: Option<ExtraLogin>,
    /// The counting proxy its plaintext listener is advertised through
    /// ([`Kafka::start_counted`]).
    counter: Option<WireCounter>,
}

/// A SASL listener a node may have besides the usual ones.
#[derive(Clone, Debug)]
enum ExtraLogin {
    /// [`Listener::OAuth`]: OAUTHBEARER tokens checked against this JWKS URL.
    OAuth { jwks: String },
    /// [`Listener::Kerberos`]: the broker's principal and keytab, and the KDC's krb5.conf.
    Kerberos {
        krb5_conf: PathBuf,
        keytab: PathBuf,
        principal: String,
    },
}

impl ExtraLogin {
    fn listener(&self) -> Listener {
        match self {
            ExtraLogin::OAuth { .. } => Listener::OAuth,
            ExtraLogin::Kerberos { .. } => Listener::Kerberos,
        }
    }
}

impl Node {
    /// The port clients reach `listener` on: the counting proxy's for a counted node's
    /// plaintext listener.
    fn port(&self, listener: Listener) -> u16 {
        match (&self.counter, listener) {
            (Some(counter), Listener::Plaintext) => counter.port(),
            _ => self.bound_port(listener),
        }
    }

    /// The port the node itself listens on for `listener`.
    fn bound_port(&self, listener: Listener) -> u16 {
        self.listeners
            .iter()
            .find(|(candidate, _)| *candidate == listener)
            .map(|(_, port)| *port)
            .unwrap_or_else(|| panic!("node {} has no {listener:?} listener", self.id))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("output.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    /// JVM options for `scripts/kafka-run`: Kafka 4.x reads an OAuth JWKS only from a URL
    /// this system property allows; Java's Kerberos finds the KDC through a krb5.conf.
    fn kafka_opts(&self) -> Option<String> {
        match self.extra.as_ref()? {
            ExtraLogin::OAuth { jwks } => Some(format!(
                "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={jwks}"
            )),
            ExtraLogin::Kerberos { krb5_conf, .. } => {
                Some(format!("-Djava.security.krb5.conf={}", krb5_conf.display()))
            }
        }
    }

    /// Starts the JVM, appending to the node's log; [`Node::wait_started`] waits for it.
    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node's log");
        // setpriv (util-linux) sets PR_SET_PDEATHSIG, then execs kafka-run, which execs java:
        // the JVM dies (SIGKILL) when the thread that started it ends, so that none outlives
        // its test. The shared broker lives in a static, never dropped (its thread lasts as
        // long as the process), and a killed test process runs no `Drop`. A node is therefore
        // started and restarted by the test's own thread. Not `pre_exec`: that makes std
        // fork() a process full of gRPC and librdkafka threads.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL"])
            .arg(script("kafka-run"))
            .arg(kafka_line())
            .arg("kafka.Kafka")
            .arg(self.properties())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        if let Some(options) = self.kafka_opts() {
            command.env("KAFKA_OPTS", options);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("start scripts/kafka-run: {err}"));
        self.child = Some(child);
    }

    /// Waits until the node logs that it started for the `starts`-th time. `Err` with the
    /// log when it could not bind a port (another process took it meanwhile).
    fn wait_started(&mut self, starts: usize, deadline: Instant) -> Result<(), String> {
        loop {
            let log = self.log();
            if log.matches(STARTED).count() >= starts {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("Kafka node {} exited with {status}; log:\n{log}", self.id);
            }
            assert!(
                Instant::now() < deadline,
                "Kafka node {} did not start within {START_TIMEOUT:?}; log:\n{log}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("Kafka node {} is not running", self.id))
    }
}

/// A Kafka cluster of one or three KRaft nodes on loopback, stopped (SIGKILL) in `Drop`.
pub struct Kafka {
    nodes: Vec<Node>,
    pki: Option<TestPki>,
    _dir: tempfile::TempDir,
}

/// What a principal may do where no ACL names the resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AclDefault {
    /// Anything (`allow.everyone.if.no.acl.found=true`).
    Allow,
    /// Nothing.
    Deny,
}

/// What to start.
struct Setup {
    nodes: usize,
    secure: bool,
    /// The shared broker's: its temp dir (which a static never removes) is named after this
    /// process, so that a later run removes it.
    shared: bool,
    /// ACLs checked (Kafka's StandardAuthorizer), and the anonymous principal (plaintext,
    /// TLS without a client certificate, the nodes among themselves) may do everything.
    acls: Option<AclDefault>,
    /// A login listener of its own on each node.
    extra: Option<ExtraLogin>,
    /// Each node's plaintext listener advertised through a counting proxy.
    counted: bool,
}

/// How the shared broker's temp dir is named: the prefix, then the test process's id.
const SHARED_DIR_PREFIX: &str = "lagscaler-kafka-shared-";

/// Removes the temp dirs of shared brokers whose test process has ended.
fn remove_stale_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SHARED_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Kafka {
    /// The broker this test binary shares: one node with every listener, started on first
    /// use. Tests on it use topic and group names of their own and must not stop it. Its JVM
    /// dies with this process (it is started by a thread that never ends, with
    /// PR_SET_PDEATHSIG), since a static is never dropped.
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Kafka> = OnceLock::new();
        SHARED.get_or_init(|| {
            remove_stale_shared_dirs();
            let (sender, receiver) = crossbeam_channel::bounded(1);
            std::thread::Builder::new()
                .name("kafka-shared".to_owned())
                .spawn(move || {
                    let started = std::panic::catch_unwind(|| {
                        Kafka::launch(Setup {
                            nodes: 1,
                            secure: true,
                            shared: true,
                            acls: None,
                            extra: None,
                            counted: false,
                        })
                    });
                    let started_ok = started.is_ok();
                    let _ = sender.send(started);
                    // The JVM's parent thread: it must outlive every test.
                    if started_ok {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawn the shared broker's thread");
            match receiver.recv() {
                Ok(Ok(kafka)) => kafka,
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => panic!("the shared broker's thread ended without a broker"),
            }
        })
    }

    /// A plaintext single-node broker of the test's own, e.g. to kill or freeze it.
    pub fn start() -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: false,
            shared: false,
            acls: None,
            extra: None,
            counted: false,
        })
    }

    /// A plaintext single-node broker of the test's own whose plaintext listener is
    /// advertised through a counting proxy ([`Kafka::requests`]): every request of every
    /// client reaches it through the proxy.
    pub fn start_counted() -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: false,
            shared: false,
            acls: None,
            extra: None,
            counted: true,
        })
    }

    /// Requests sent to the cluster's nodes through their counting proxies so far, by
    /// client id and API ([`Kafka::start_counted`]; empty for any other cluster).
    pub fn requests(&self) -> wire::Counts {
        let mut all = wire::Counts::new();
        for counter in self.nodes.iter().filter_map(|node| node.counter.as_ref()) {
            for (client, apis) in counter.counts() {
                let into = all.entry(client).or_default();
                for (api, count) in apis {
                    *into.entry(api).or_default() += count;
                }
            }
        }
        all
    }

    /// A plaintext cluster of three nodes; topics get replication factor 3.
    pub fn start_cluster() -> Kafka {
        Kafka::launch(Setup {
            nodes: 3,
            secure: false,
            shared: false,
            acls: None,
            extra: None,
            counted: false,
        })
    }

    /// One node of its own with every listener (as the shared one) and ACLs checked: see
    /// [`Kafka::deny`].
    pub fn start_with_acls() -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: true,
            shared: false,
            acls: Some(AclDefault::Allow),
            extra: None,
            counted: false,
        })
    }

    /// One plaintext node of its own with an OAUTHBEARER listener ([`Listener::OAuth`]):
    /// Kafka's own `OAuthBearerValidatorCallbackHandler` checks each token's RS256
    /// signature against the JWKS at `jwks_url`, its audience and issuer
    /// ([`OAUTH_AUDIENCE`], [`OAUTH_ISSUER`]) and its expiry (no clock skew allowed).
    /// Re-authentication is on (KIP-368), so a connection lasts only as long as its token.
    pub fn start_with_oauth(jwks_url: &str) -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: false,
            shared: false,
            acls: None,
            extra: Some(ExtraLogin::OAuth {
                jwks: jwks_url.to_owned(),
            }),
            counted: false,
        })
    }

    /// One plaintext node of its own with a GSSAPI listener ([`Listener::Kerberos`]) whose
    /// service principal `kafka/127.0.0.1` logs in to `kdc` with its keytab; clients need a
    /// ticket from the same KDC.
    pub fn start_with_kerberos(kdc: &super::kerberos::Kdc) -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: false,
            shared: false,
            acls: None,
            extra: Some(ExtraLogin::Kerberos {
                krb5_conf: kdc.krb5_conf(),
                keytab: kdc.keytab(super::kerberos::BROKER_PRINCIPAL),
                principal: kdc.principal(super::kerberos::BROKER_PRINCIPAL),
            }),
            counted: false,
        })
    }

    /// One node of its own with every listener (as the shared one) where a principal other
    /// than the anonymous one may do only what an ACL allows
    /// (`allow.everyone.if.no.acl.found=false`): see [`Kafka::allow`].
    pub fn start_with_strict_acls() -> Kafka {
        Kafka::launch(Setup {
            nodes: 1,
            secure: true,
            shared: false,
            acls: Some(AclDefault::Deny),
            extra: None,
            counted: false,
        })
    }

    /// Allows `principal` (e.g. `User:alice`) the `operations` on `resource` (e.g.
    /// `["--topic", "orders"]` or `["--group", "billing"]`), through Kafka's own ACL tool.
    pub fn allow(&self, principal: &str, operations: &[&str], resource: [&str; 2]) {
        let mut args = vec![
            "--add",
            "--allow-principal",
            principal,
            resource[0],
            resource[1],
        ];
        for operation in operations {
            args.extend(["--operation", operation]);
        }
        self.run_tool("org.apache.kafka.tools.AclCommand", &args);
    }

    /// Denies `principal` (e.g. `User:alice`) the `operations` on `topic`, through Kafka's
    /// own ACL tool (a cluster of [`Kafka::start_with_acls`]).
    pub fn deny(&self, principal: &str, operations: &[&str], topic: &str) {
        let mut args = vec!["--add", "--deny-principal", principal, "--topic", topic];
        for operation in operations {
            args.extend(["--operation", operation]);
        }
        self.run_tool("org.apache.kafka.tools.AclCommand", &args);
    }

    /// Starts `setup`, retrying with other ports when one was taken between choosing and
    /// binding it.
    fn launch(setup: Setup) -> Kafka {
        super::init_logging();
        let mut last = String::new();
        for _ in 0..3 {
            match Kafka::try_launch(&setup) {
                Ok(kafka) => return kafka,
                Err(log) => last = log,
            }
        }
        panic!("Kafka could not bind its ports in 3 tries; last log:\n{last}");
    }

    fn try_launch(setup: &Setup) -> Result<Kafka, String> {
        let prefix = if setup.shared {
            format!("{SHARED_DIR_PREFIX}{}-", std::process::id())
        } else {
            "lagscaler-kafka-".to_owned()
        };
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .expect("temp dir for Kafka");
        let pki = setup.secure.then(TestPki::generate);
        let mut nodes: Vec<Node> = (1..=setup.nodes as u32)
            .map(|id| {
                let mut listeners = vec![(Listener::Plaintext, free_port())];
                if setup.secure {
                    listeners.extend(Listener::SECURE.map(|listener| (listener, free_port())));
                }
                if let Some(extra) = &setup.extra {
                    listeners.push((extra.listener(), free_port()));
                }
                let node_dir = dir.path().join(format!("node-{id}"));
                std::fs::create_dir_all(&node_dir).expect("create the node's dir");
                let counter = setup.counted.then(|| WireCounter::start(listeners[0].1));
                Node {
                    id,
                    dir: node_dir,
                    listeners,
                    controller: free_port(),
                    child: None,
                    extra: setup.extra.clone(),
                    counter,
                }
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.id, node.controller))
            .collect::<Vec<_>>()
            .join(",");
        for node in &nodes {
            let mut text = server_properties(node, &voters, setup.nodes, pki.as_ref());
            if let Some(default) = setup.acls {
                text.push_str(&format!(
                    "authorizer.class.name=\
                     org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                     super.users=User:ANONYMOUS\n\
                     allow.everyone.if.no.acl.found={}\n",
                    default == AclDefault::Allow
                ));
            }
            std::fs::write(node.properties(), text).expect("write server.properties");
        }
        format(&nodes, setup.secure);
        for node in &mut nodes {
            node.launch();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut kafka = Kafka {
            nodes,
            pki,
            _dir: dir,
        };
        for node in &mut kafka.nodes {
            node.wait_started(1, deadline)?;
        }
        kafka.wait_for_brokers(kafka.nodes.len(), deadline);
        Ok(kafka)
    }

    /// Waits until the cluster's metadata lists `count` brokers.
    fn wait_for_brokers(&self, count: usize, deadline: Instant) {
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
        let listed = wait_for(deadline.saturating_duration_since(Instant::now()), || {
            let metadata = consumer.fetch_metadata(None, Duration::from_secs(2)).ok()?;
            (metadata.brokers().len() >= count).then_some(())
        });
        assert!(
            listed.is_some(),
            "the cluster's metadata did not list {count} brokers; log:\n{}",
            self.log()
        );
    }

    /// The plaintext `bootstrap.servers` of every node.
    pub fn bootstrap(&self) -> String {
        self.bootstrap_for(Listener::Plaintext)
    }

    /// The `bootstrap.servers` of `listener` on every node.
    pub fn bootstrap_for(&self, listener: Listener) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port(listener)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The CA, broker and client certificates of a broker with TLS listeners.
    pub fn pki(&self) -> &TestPki {
        self.pki
            .as_ref()
            .expect("a broker with TLS listeners (Kafka::shared)")
    }

    /// A client configuration for the plaintext listener.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Every node's log so far, for failure messages.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- Kafka node {} ---\n{}", node.id, node.log()))
            .collect()
    }

    /// How many nodes the cluster has.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Kills node `index` (SIGKILL, no controlled shutdown), as a crash would.
    pub fn kill_node(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Freezes node `index` (SIGSTOP): connections stay open and nothing answers. The
    /// returned guard thaws it (SIGCONT) when dropped, also when an assertion fails.
    pub fn freeze_node(&self, index: usize) -> Frozen {
        let pid = self.nodes[index].pid();
        send_signal("STOP", pid);
        Frozen(pid)
    }

    /// Starts node `index` again on its ports and data (killing it first if it runs), and
    /// waits until it serves again.
    pub fn restart_node(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        node.kill();
        let starts = node.log().matches(STARTED).count() + 1;
        node.launch();
        let deadline = Instant::now() + START_TIMEOUT;
        if let Err(log) = node.wait_started(starts, deadline) {
            panic!(
                "node {} could not bind its ports again; log:\n{log}",
                node.id
            );
        }
    }

    /// Replaces node `index` by a new process with the same node id and data whose plaintext
    /// listener is on another port (a broker moved to another address, KEDA #4098), and
    /// waits until it serves. Clients bootstrapped with the old address must learn the new
    /// one from the cluster's metadata.
    pub fn move_node(&mut self, index: usize) {
        let voters = self
            .nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.id, node.controller))
            .collect::<Vec<_>>()
            .join(",");
        let size = self.nodes.len();
        let node = &mut self.nodes[index];
        node.kill();
        for (listener, port) in &mut node.listeners {
            if *listener == Listener::Plaintext {
                *port = free_port();
            }
        }
        let text = server_properties(node, &voters, size, self.pki.as_ref());
        std::fs::write(node.properties(), text).expect("write server.properties");
        let starts = node.log().matches(STARTED).count() + 1;
        node.launch();
        let deadline = Instant::now() + START_TIMEOUT;
        if let Err(log) = node.wait_started(starts, deadline) {
            panic!("node {} could not bind its new port; log:\n{log}", node.id);
        }
    }

    /// Restarts every node in turn, each after the previous one serves again; `between` runs
    /// after each restart with the cluster and the node's index (e.g. to check what a client
    /// sees).
    pub fn restart_all_in_turn(&mut self, mut between: impl FnMut(&Kafka, usize)) {
        for index in 0..self.nodes.len() {
            self.restart_node(index);
            between(self, index);
        }
    }

    /// Creates a topic with replication factor 3 on a cluster, 1 on a single node, and waits
    /// until every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, &[]);
    }

    /// [`Kafka::create_topic`] with topic configs (`cleanup.policy`...).
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("admin client");
        let replication = self.nodes.len().min(3) as i32;
        let mut topic = NewTopic::new(
            name,
            partitions as i32,
            TopicReplication::Fixed(replication),
        );
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .unwrap_or_else(|err| panic!("create topic {name}: {err}"));
        for result in results {
            if let Err((topic, err)) = result {
                panic!("create topic {topic}: {err}");
            }
        }
        let consumer: BaseConsumer = self.client_config().create().expect("metadata client");
        let led = wait_for(Duration::from_secs(30), || {
            let metadata = consumer
                .fetch_metadata(Some(name), Duration::from_secs(2))
                .ok()?;
            let topic = metadata.topics().first()?;
            let ready = topic.error().is_none()
                && topic.partitions().len() == partitions as usize
                && topic.partitions().iter().all(|p| p.leader() >= 0);
            ready.then_some(())
        });
        assert!(
            led.is_some(),
            "topic {name}: no leader for every partition within 30 s"
        );
    }

    /// Produces `count` records to one partition the way applications do: batched (up to
    /// 500 records a batch, 5 ms linger), lz4-compressed, idempotent, acks from all
    /// replicas. Returns once every record is acknowledged; a failed delivery fails the test.
    pub fn produce(&self, topic: &str, partition: i32, count: usize) {
        let producer = self.producer();
        for index in 0..count {
            let payload = format!("record {index} of {count} for {topic}[{partition}]");
            send(&producer, topic, partition, &payload);
        }
        await_acks(&producer, topic);
    }

    /// Produces `count` records to one partition as [`Kafka::produce`] does, each with the
    /// producer's timestamp (`CreateTime`) set to `written_ms` (milliseconds since the Unix
    /// epoch): records written, by their own account, at that time.
    pub fn produce_written_at(&self, topic: &str, partition: i32, count: usize, written_ms: i64) {
        let producer = self.producer();
        for index in 0..count {
            let payload = format!("record {index} of {count} for {topic}[{partition}]");
            send_at(&producer, topic, partition, &payload, Some(written_ms));
        }
        await_acks(&producer, topic);
    }

    /// An idempotent transactional producer with `transactional.id` `id`, its transactions
    /// initialised.
    pub fn transactional_producer(&self, id: &str) -> rdkafka::producer::BaseProducer {
        use rdkafka::producer::Producer;
        let producer: rdkafka::producer::BaseProducer = self
            .client_config()
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .create()
            .expect("transactional producer");
        producer
            .init_transactions(Duration::from_secs(30))
            .expect("init transactions");
        producer
    }

    /// A producer with the settings of [`Kafka::produce`].
    pub fn producer(&self) -> TestProducer {
        self.client_config()
            .set("linger.ms", "5")
            .set("batch.num.messages", "500")
            .set("compression.type", "lz4")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create_with_context(Deliveries::default())
            .expect("create test producer")
    }

    /// The number of partitions of `__consumer_offsets` (`offsets.topic.num.partitions`
    /// in every node's properties).
    pub fn offsets_topic_partitions(&self) -> i32 {
        OFFSETS_TOPIC_PARTITIONS
    }

    /// Commits `offsets` (topic, partition, offset) for `group`, as a consumer would.
    pub fn commit(&self, group: &str, offsets: &[(&str, i32, i64)]) {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create test consumer");
        let mut list = TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .expect("add offset");
        }
        // A broker that has just started answers "coordinator load in progress" (or not
        // available) until it has loaded `__consumer_offsets`: asked again, for up to 30 s.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => return,
                Err(err)
                    if Instant::now() < deadline
                        && matches!(
                            err.rdkafka_error_code(),
                            Some(
                                rdkafka::types::RDKafkaErrorCode::CoordinatorLoadInProgress
                                    | rdkafka::types::RDKafkaErrorCode::CoordinatorNotAvailable
                                    | rdkafka::types::RDKafkaErrorCode::NotCoordinator
                            )
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => panic!("commit {offsets:?} for {group}: {err}"),
            }
        }
    }

    /// Runs one of Kafka's own command-line tools (a class of kafka-tools, e.g.
    /// `org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`) against the plaintext
    /// listener and returns its standard output.
    pub fn run_tool(&self, class: &str, args: &[&str]) -> String {
        let output = Command::new(script("kafka-run"))
            .arg(kafka_line())
            .arg(class)
            .arg("--bootstrap-server")
            .arg(self.bootstrap())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("run {class}: {err}"));
        assert!(
            output.status.success(),
            "{class} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A node stopped with SIGSTOP; dropping this sends SIGCONT.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        send_signal("CONT", self.0);
    }
}

/// A producer whose failed deliveries are counted.
pub type TestProducer = BaseProducer<Deliveries>;

/// Counts the deliveries a producer's broker refused or timed out.
#[derive(Default)]
pub struct Deliveries {
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            log::error!("test producer: delivery failed: {err}");
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Sends one record and waits until the broker has acknowledged it: a producer that sends
/// as records come, e.g. at a paced rate.
pub fn produce_one(producer: &TestProducer, topic: &str, partition: i32) {
    send(producer, topic, partition, "record");
    await_acks(producer, topic);
}

/// Enqueues one record, waiting for room in the producer's queue when it is full.
fn send(producer: &TestProducer, topic: &str, partition: i32, payload: &str) {
    send_at(producer, topic, partition, payload, None);
}

/// [`send`] with the record's timestamp set, or left to the producer (the time of sending).
fn send_at(
    producer: &TestProducer,
    topic: &str,
    partition: i32,
    payload: &str,
    timestamp_ms: Option<i64>,
) {
    let mut record = BaseRecord::<(), _>::to(topic)
        .partition(partition)
        .payload(payload);
    if let Some(timestamp_ms) = timestamp_ms {
        record = record.timestamp(timestamp_ms);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((err, _)) => panic!("enqueue a record for {topic}[{partition}]: {err}"),
        }
    }
}

/// Serves delivery reports until nothing is in flight, and checks that none failed.
fn await_acks(producer: &TestProducer, topic: &str) {
    // Not `flush`: it sleeps in steps of up to 100 ms, which caps a paced producer at ~10
    // records/s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.in_flight_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "{topic}: records not acknowledged within 30 s"
        );
        producer.poll(Duration::from_millis(1));
    }
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(failed, 0, "{topic}: {failed} records were not delivered");
}

/// Formats every node's storage with one cluster id (and the SASL users of a secure
/// cluster), the nodes in parallel.
fn format(nodes: &[Node], secure: bool) {
    let cluster_id = random_cluster_id();
    let mut users = Vec::new();
    if secure {
        users.push(format!(
            "SCRAM-SHA-512=[name=alice,password={ALICE_PASSWORD}]"
        ));
        users.push(format!("SCRAM-SHA-256=[name=bob,password={BOB_PASSWORD}]"));
    }
    let children: Vec<(u32, Child, PathBuf)> = nodes
        .iter()
        .map(|node| {
            let log_path = node.dir.join("format.log");
            let log = File::create(&log_path).expect("create the format log");
            let mut command = Command::new(script("kafka-run"));
            command
                .arg(kafka_line())
                .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
                .arg(node.properties());
            for user in &users {
                command.arg("--add-scram").arg(user);
            }
            if let Some(options) = node.kafka_opts() {
                command.env("KAFKA_OPTS", options);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|err| panic!("run scripts/kafka-run (format): {err}"));
            (node.id, child, log_path)
        })
        .collect();
    for (id, mut child, log_path) in children {
        let status = child.wait().expect("wait for the format");
        let mut log = String::new();
        let _ = File::open(&log_path).and_then(|mut file| file.read_to_string(&mut log));
        assert!(status.success(), "format of node {id}: {status}\n{log}");
    }
}

/// Partitions of `__consumer_offsets` on every test cluster.
const OFFSETS_TOPIC_PARTITIONS: i32 = 3;

/// The properties of `node` in a cluster of `size` nodes whose controllers are `voters`.
fn server_properties(node: &Node, voters: &str, size: usize, pki: Option<&TestPki>) -> String {
    let mut listeners: Vec<String> = node
        .listeners
        .iter()
        .map(|(listener, port)| format!("{}://127.0.0.1:{port}", listener.name()))
        .collect();
    listeners.push(format!("CONTROLLER://127.0.0.1:{}", node.controller));
    // A counted node's clients reach its plaintext listener through the proxy.
    let advertised: Vec<String> = node
        .listeners
        .iter()
        .map(|(listener, _)| format!("{}://127.0.0.1:{}", listener.name(), node.port(*listener)))
        .collect();
    let mut protocols: Vec<String> = node
        .listeners
        .iter()
        .map(|(listener, _)| format!("{}:{}", listener.name(), listener.protocol()))
        .collect();
    protocols.push("CONTROLLER:PLAINTEXT".to_owned());
    let (replication, min_isr) = if size >= 3 { (3, 2) } else { (1, 1) };
    let mut text = format!(
        "process.roles=broker,controller\n\
         node.id={id}\n\
         controller.quorum.voters={voters}\n\
         controller.listener.names=CONTROLLER\n\
         listeners={listeners}\n\
         advertised.listeners={advertised}\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map={protocols}\n\
         log.dirs={data}\n\
         auto.create.topics.enable=false\n\
         default.replication.factor={replication}\n\
         offsets.topic.replication.factor={replication}\n\
         offsets.topic.num.partitions={OFFSETS_TOPIC_PARTITIONS}\n\
         transaction.state.log.replication.factor={replication}\n\
         transaction.state.log.min.isr={min_isr}\n\
         transaction.state.log.num.partitions=3\n\
         share.coordinator.state.topic.replication.factor={replication}\n\
         share.coordinator.state.topic.min.isr={min_isr}\n\
         group.initial.rebalance.delay.ms=0\n\
         num.network.threads=2\n\
         num.io.threads=2\n\
         num.partitions=1\n\
         log.cleaner.dedupe.buffer.size=2097152\n\
         log.cleaner.backoff.ms=500\n\
         log.segment.bytes=8388608\n",
        id = node.id,
        listeners = listeners.join(","),
        advertised = advertised.join(","),
        protocols = protocols.join(","),
        data = node.dir.join("data").display(),
    );
    if let Some(pki) = pki {
        let keystore = node.dir.join("broker-keystore.pem");
        // A PEM keystore: the unencrypted PKCS#8 key, then the certificate.
        let mut pem = pki.read("server.key");
        pem.extend(pki.read("server.pem"));
        std::fs::write(&keystore, pem).expect("write the broker's keystore");
        let path = |path: &Path| path.display().to_string();
        let plain_users = format!("user_alice=\"{ALICE_PASSWORD}\"");
        text.push_str(&format!(
            "ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             listener.name.mtls.ssl.client.auth=required\n\
             sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n",
            keystore = path(&keystore),
            ca = path(&pki.path("ca.pem")),
        ));
        for listener in ["sasl_plaintext", "sasl_ssl"] {
            text.push_str(&format!(
                "listener.name.{listener}.plain.sasl.jaas.config=\
                 org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};\n"
            ));
            for mechanism in ["scram-sha-256", "scram-sha-512"] {
                text.push_str(&format!(
                    "listener.name.{listener}.{mechanism}.sasl.jaas.config=\
                     org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                ));
            }
        }
    }
    match &node.extra {
        None => {}
        Some(ExtraLogin::OAuth { jwks }) => text.push_str(&format!(
            "listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER\n\
             listener.name.oauth.oauthbearer.sasl.jaas.config=\
             org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n\
             listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=\
             org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler\n\
             listener.name.oauth.oauthbearer.connections.max.reauth.ms=3600000\n\
             sasl.oauthbearer.jwks.endpoint.url={jwks}\n\
             sasl.oauthbearer.expected.audience={OAUTH_AUDIENCE}\n\
             sasl.oauthbearer.expected.issuer={OAUTH_ISSUER}\n\
             sasl.oauthbearer.clock.skew.seconds=0\n"
        )),
        Some(ExtraLogin::Kerberos {
            keytab, principal, ..
        }) => text.push_str(&format!(
            "listener.name.kerberos.sasl.enabled.mechanisms=GSSAPI\n\
             listener.name.kerberos.gssapi.sasl.jaas.config=\
             com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true \
             storeKey=true keyTab=\"{keytab}\" principal=\"{principal}\";\n\
             sasl.kerberos.service.name={service}\n",
            keytab = keytab.display(),
            service = super::kerberos::SERVICE_NAME,
        )),
    }
    text
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, not starting
/// with `-` (which the tools would read as a flag).
fn random_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let mut bytes = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .expect("read /dev/urandom");
        let mut id = String::with_capacity(22);
        for chunk in bytes.chunks(3) {
            let bits = chunk.iter().enumerate().fold(0u32, |bits, (index, byte)| {
                bits | u32::from(*byte) << (16 - 8 * index)
            });
            for index in 0..=chunk.len() {
                id.push(char::from(
                    ALPHABET[(bits >> (18 - 6 * index)) as usize & 63],
                ));
            }
        }
        if !id.starts_with('-') {
            return id;
        }
    }
}
