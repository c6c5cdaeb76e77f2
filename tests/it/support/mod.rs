//! Real services for the tests: Apache Kafka ([`kafka`]), Redis and the `lagscaler` binary
//! on free loopback ports, the daemon in-process with a real gRPC client, and a test PKI.
//! Everything started here is stopped by its guard's `Drop`, and every wait has a deadline.

mod kafka;
// Helpers only the benchmarks use (the integration tests compile them too).
#[allow(dead_code)]
pub mod bench;
pub mod container;
pub mod kerberos;
pub mod oauth;
pub mod prometheus;
pub mod wire;

pub use kafka::*;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, Environment, RpcStatus};
use lagscaler::config::{Config, KafkaConfig, RedisConfig};
use lagscaler::grpc::proto;
use lagscaler::grpc::proto::health::health_check_response::ServingStatus;
use lagscaler::grpc::proto::health::HealthCheckRequest;
use lagscaler::grpc::proto::health_grpc::METHOD_CHECK;
use lagscaler::Daemon;

/// Deadline for any single RPC a test makes; KEDA's own is 3 s.
pub const RPC_DEADLINE: Duration = Duration::from_secs(3);

/// A thread of the test's that runs until told to stop: [`Background::finish`], or dropping
/// it (also when an assertion fails), raises its stop flag and joins it.
pub struct Background<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Starts `body` on a thread named `name`, with the stop flag it must watch.
    pub fn spawn(name: &str, body: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || body(&stop))
                .unwrap_or_else(|err| panic!("start thread {name}: {err}"))
        };
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns what it returned.
    pub fn finish(mut self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined only here or in Drop");
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends test logs to the test harness's captured output.
pub fn init_logging() {
    let _ = env_logger::builder()
        .is_test(true)
        .parse_filters("info,lagscaler=debug,librdkafka=warn")
        .try_init();
}

/// GETs `path` with a bare HTTP/1.0 request: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// What a finished command printed: its stdout, then its stderr.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A port nobody listens on right now, and never handed out before in this process: the
/// kernel may give the same ephemeral port to two binds in a row once the first is closed,
/// and a node given one port for two listeners does not start (seen in CI, Kafka 3.9's
/// format refused `PLAINTEXT` and `SSL` on one port).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("bind an ephemeral loopback port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no loopback port not handed out before in 1000 binds");
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server of the test's own on a free loopback port, keeping nothing on disk.
pub struct Redis {
    server: LoggedChild,
    /// Whether it speaks only TLS.
    tls: bool,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts it and waits until it accepts connections.
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Starts it on `port` (e.g. the port of one that was stopped), empty.
    pub fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    /// Starts it on `port` with extra configuration, e.g. `["--requirepass", "pw"]`.
    pub fn start_with(port: u16, config: &[&str]) -> Redis {
        Redis::launch(&["--port", &port.to_string()], port, config, false)
    }

    /// Starts one that speaks only TLS, with `pki`'s server certificate. Clients need no
    /// certificate of their own (`tls-auth-clients no`).
    pub fn start_tls(pki: &TestPki) -> Redis {
        let port = free_port();
        let port_text = port.to_string();
        let file = |name: &str| pki.path(name).display().to_string();
        let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
        let listen = [
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-auth-clients",
            "no",
        ];
        let files = [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
        ];
        Redis::launch(&listen, port, &files, true)
    }

    fn launch(listen: &[&str], port: u16, config: &[&str], tls: bool) -> Redis {
        // A directory of its own: a replica writes the RDB of its full sync to its
        // directory, and a Redis started in a directory with one would load it.
        let dir = tempfile::tempdir().expect("temp dir for Redis");
        let mut command = Command::new("redis-server");
        command
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(config);
        Redis {
            server: LoggedChild::start(command, port, Duration::from_secs(10)),
            tls,
            _dir: dir,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `127.0.0.1:<port>`, as SCALER_REDIS_URL (no scheme, no database: Azul's style).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// A connection to database 2, where the dispatcher keeps plugin keys.
    pub fn dispatcher_db(&self) -> redis::Connection {
        self.dispatcher_db_as("")
    }

    /// As [`Redis::dispatcher_db`], with `credentials` such as `:password@` or
    /// `user:password@`.
    /// Over TLS, it does not check the server's certificate (`#insecure`): this is the
    /// test's own connection, not the one under test.
    pub fn dispatcher_db_as(&self, credentials: &str) -> redis::Connection {
        let (scheme, insecure) = if self.tls {
            ("rediss", "#insecure")
        } else {
            ("redis", "")
        };
        redis::Client::open(format!(
            "{scheme}://{credentials}127.0.0.1:{}/2{insecure}",
            self.server.port
        ))
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to the test Redis")
    }

    /// Settings pointing lagscaler at it, with `topic_prefix`.
    pub fn config(&self, topic_prefix: &str) -> RedisConfig {
        RedisConfig {
            connection: lagscaler::config::redis_connection("127.0.0.1", self.server.port),
            topic_prefix: topic_prefix.to_owned(),
        }
    }
}

/// A real Redis Sentinel (`redis-server --sentinel`) on a free loopback port, monitoring
/// the master `name` at a port, with a quorum; it declares the master down after 1 s.
pub struct Sentinel {
    server: LoggedChild,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// Starts it and waits until it accepts connections.
    pub fn start(name: &str, master_port: u16, quorum: u32) -> Sentinel {
        let dir = tempfile::tempdir().expect("temp dir for the sentinel's configuration");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display()
            ),
        )
        .expect("write the sentinel's configuration");
        let mut command = Command::new("redis-server");
        command.arg(&conf).arg("--sentinel");
        Sentinel {
            server: LoggedChild::start(command, port, Duration::from_secs(10)),
            _dir: dir,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The real `lagscaler` binary running as a child process on a free loopback port, with its
/// log in a temp dir. Killed in `Drop` if the test did not stop it.
pub struct Process {
    server: LoggedChild,
}

impl Process {
    /// Starts the binary with `env` on top of a loopback listener and debug logging, and
    /// waits until it listens.
    pub fn start(bootstrap: &str, env: &[(&str, &str)]) -> Process {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lagscaler"));
        command
            .env("SCALER_LISTEN_ADDR", "127.0.0.1")
            .env("SCALER_PORT", port.to_string())
            .env("SCALER_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("SCALER_DEBUG", "true")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied());
        Process {
            server: LoggedChild::start(command, port, Duration::from_secs(20)),
        }
    }

    /// A gRPC client connected to it.
    pub fn client(&self) -> GrpcClient {
        GrpcClient::connect(&format!("127.0.0.1:{}", self.server.port))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.server.child.id()
    }

    /// Its thread count and open file descriptors, from /proc.
    pub fn threads_and_fds(&self) -> (usize, usize) {
        let count = |dir: String| std::fs::read_dir(dir).map_or(0, |entries| entries.count());
        let pid = self.server.child.id();
        (
            count(format!("/proc/{pid}/task")),
            count(format!("/proc/{pid}/fd")),
        )
    }

    /// Waits up to `timeout` for it to exit by itself: the exit status, or `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.server.child;
        wait_for(timeout, || child.try_wait().ok().flatten())
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; `None` if it is still
    /// running then (it is killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.server.child;
        send_signal("TERM", child.id());
        let status = wait_for(timeout, || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

/// A child process serving on a loopback port, its output in a log file of its own temp
/// dir. Killed and reaped in `Drop`.
struct LoggedChild {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedChild {
    /// Spawns `command` with its output logged and waits up to `timeout` until something
    /// accepts connections on `port`; the log goes into the failure message otherwise.
    fn start(mut command: Command, port: u16, timeout: Duration) -> LoggedChild {
        let dir = tempfile::tempdir().expect("temp dir for the log");
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path).expect("create the log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start {:?}: {err}", command.get_program()));
        let server = LoggedChild {
            child,
            port,
            log_path,
            _dir: dir,
        };
        let listening = wait_for(timeout, || TcpStream::connect(("127.0.0.1", port)).ok());
        assert!(
            listening.is_some(),
            "{:?} did not listen on {port} within {timeout:?}; log:\n{}",
            command.get_program(),
            server.log()
        );
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
/// generated with the openssl CLI into a temp dir that lives as long as this.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates the keys (P-256) and certificates (valid for a day).
    pub fn generate() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (scripts/install-deps installs it)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "1",
            "-subj",
            "/CN=lagscaler test CA",
        ];
        ca.extend_from_slice(&new_key);
        ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&ca);
        for (name, subject, extensions) in [
            (
                "server",
                "/CN=localhost",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=keda-operator",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(dir.path().join(&ext), extensions).expect("write extensions");
            let mut request = vec!["req", "-subj", subject, "-keyout", &key, "-out", &csr];
            request.extend_from_slice(&new_key);
            openssl(&request);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        TestPki { dir }
    }

    /// The path of one of the files: `ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The contents of one of the files.
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read a generated certificate")
    }
}

/// VmRSS of process `pid` in kB, from /proc.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Sends `SIG<signal>` to `pid` with kill(1).
pub fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A real gRPC client for the daemon, as KEDA would be one.
pub struct GrpcClient {
    client: Client,
    _env: Arc<Environment>,
}

impl GrpcClient {
    /// Connects over TLS to `addr`, trusting `ca` (PEM), presenting `identity` (PEM
    /// certificate and key) when given, as KEDA's `enableTLS`/`caCert`/`tlsClientCert` do.
    pub fn connect_tls(addr: &str, ca: &[u8], identity: Option<(&[u8], &[u8])>) -> GrpcClient {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("test-grpc")
                .build(),
        );
        let mut credentials = grpcio::ChannelCredentialsBuilder::new().root_cert(ca.to_vec());
        if let Some((cert, key)) = identity {
            credentials = credentials.cert(cert.to_vec(), key.to_vec());
        }
        let channel = ChannelBuilder::new(Arc::clone(&env))
            .set_credentials(credentials.build())
            .connect(addr);
        GrpcClient {
            client: Client::new(channel),
            _env: env,
        }
    }

    /// Connects (lazily, as gRPC does) to `addr`, e.g. `127.0.0.1:8090`.
    pub fn connect(addr: &str) -> GrpcClient {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("test-grpc")
                .build(),
        );
        let channel = ChannelBuilder::new(Arc::clone(&env)).connect(addr);
        GrpcClient {
            client: Client::new(channel),
            _env: env,
        }
    }

    /// GetMetrics: the (int, float) value of the one metric.
    pub fn get_metrics(&self, metadata: &[(&str, &str)]) -> Result<(i64, f64), RpcStatus> {
        self.try_get_metrics(metadata).map_err(into_status)
    }

    /// GetMetrics, with any failure (also outside the protocol) as the error.
    pub fn try_get_metrics(&self, metadata: &[(&str, &str)]) -> grpcio::Result<(i64, f64)> {
        self.try_get_metrics_for(scaled_object(metadata))
    }

    /// GetMetrics for `object`, whatever its name and namespace.
    pub fn try_get_metrics_for(
        &self,
        object: proto::ScaledObjectRef,
    ) -> grpcio::Result<(i64, f64)> {
        let request = proto::GetMetricsRequest {
            scaledObjectRef: Some(object).into(),
            metricName: "unused".to_owned(),
            ..Default::default()
        };
        let response =
            self.client
                .unary_call(&proto::METHOD_GET_METRICS, &request, call_option())?;
        assert_eq!(response.metricValues.len(), 1, "{response:?}");
        let value = &response.metricValues[0];
        Ok((value.metricValue, value.metricValueFloat))
    }

    /// GetMetrics' integer value.
    pub fn lag(&self, metadata: &[(&str, &str)]) -> Result<i64, RpcStatus> {
        self.get_metrics(metadata).map(|(value, _)| value)
    }

    /// IsActive.
    pub fn is_active(&self, metadata: &[(&str, &str)]) -> Result<bool, RpcStatus> {
        self.is_active_for(&scaled_object(metadata))
    }

    /// IsActive for `object`, whatever its name and namespace.
    pub fn is_active_for(&self, object: &proto::ScaledObjectRef) -> Result<bool, RpcStatus> {
        self.client
            .unary_call(&proto::METHOD_IS_ACTIVE, object, call_option())
            .map(|response| response.result)
            .map_err(into_status)
    }

    /// GetMetricSpec: the one spec's (name, int target, float target).
    pub fn metric_spec(&self, metadata: &[(&str, &str)]) -> Result<(String, i64, f64), RpcStatus> {
        let response = self
            .client
            .unary_call(
                &proto::METHOD_GET_METRIC_SPEC,
                &scaled_object(metadata),
                call_option(),
            )
            .map_err(into_status)?;
        assert_eq!(response.metricSpecs.len(), 1, "{response:?}");
        let spec = &response.metricSpecs[0];
        Ok((
            spec.metricName.clone(),
            spec.targetSize,
            spec.targetSizeFloat,
        ))
    }

    /// Opens StreamIsActive; its messages arrive on the returned stream.
    pub fn stream_is_active(&self, metadata: &[(&str, &str)]) -> Stream<bool> {
        self.stream_is_active_for(&scaled_object(metadata))
    }

    /// Opens StreamIsActive for `object`, whatever its name and namespace.
    pub fn stream_is_active_for(&self, object: &proto::ScaledObjectRef) -> Stream<bool> {
        let receiver = self
            .client
            .server_streaming(
                &proto::METHOD_STREAM_IS_ACTIVE,
                object,
                CallOption::default(),
            )
            .expect("start StreamIsActive");
        Stream::read(receiver, |response: proto::IsActiveResponse| {
            response.result
        })
    }

    /// Opens StreamMetricSpec; each message's first spec (name, float target) arrives on the
    /// returned stream.
    pub fn stream_metric_spec(&self, metadata: &[(&str, &str)]) -> Stream<(String, f64)> {
        let receiver = self
            .client
            .server_streaming(
                &proto::METHOD_STREAM_METRIC_SPEC,
                &scaled_object(metadata),
                CallOption::default(),
            )
            .expect("start StreamMetricSpec");
        Stream::read(receiver, |response: proto::GetMetricSpecResponse| {
            let spec = &response.metricSpecs[0];
            (spec.metricName.clone(), spec.targetSizeFloat)
        })
    }

    /// grpc.health.v1 Check of `service`.
    pub fn health(&self, service: &str) -> Result<ServingStatus, RpcStatus> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
            ..Default::default()
        };
        let response = self
            .client
            .unary_call(&METHOD_CHECK, &request, call_option())
            .map_err(into_status)?;
        Ok(response.status.enum_value_or_default())
    }

    /// Waits until GetMetrics answers `expected`, returning how long that took; `None` if it
    /// did not within `timeout`.
    pub fn wait_for_lag(
        &self,
        metadata: &[(&str, &str)],
        expected: i64,
        timeout: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        wait_for(timeout, || {
            (self.lag(metadata).ok() == Some(expected)).then(|| started.elapsed())
        })
    }
}

/// What a server stream delivered.
#[derive(Debug, PartialEq)]
pub enum StreamEvent<T> {
    /// A message, and when it arrived.
    Message(T, Instant),
    /// The stream ended with status OK.
    Ended,
    /// The stream failed (the server's status, or cancelled by this client).
    Failed(String),
}

/// A server stream read by a thread of its own, so that a test can wait for messages with a
/// deadline and cancel the call.
pub struct Stream<T> {
    events: crossbeam_channel::Receiver<StreamEvent<T>>,
    cancel: Option<futures::channel::oneshot::Sender<()>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Stream<T> {
    fn read<R: Send + 'static>(
        mut receiver: grpcio::ClientSStreamReceiver<R>,
        convert: impl Fn(R) -> T + Send + 'static,
    ) -> Stream<T> {
        use futures::future::{select, Either};
        use futures::StreamExt;

        let (events_tx, events) = crossbeam_channel::unbounded();
        let (cancel, mut cancelled) = futures::channel::oneshot::channel::<()>();
        let reader = std::thread::Builder::new()
            .name("test-stream".to_owned())
            .spawn(move || loop {
                let next = futures::executor::block_on(select(receiver.next(), &mut cancelled));
                let item = match next {
                    Either::Left((item, _)) => Some(item),
                    Either::Right(_) => None,
                };
                let event = match item {
                    Some(Some(Ok(message))) => {
                        let _ =
                            events_tx.send(StreamEvent::Message(convert(message), Instant::now()));
                        continue;
                    }
                    Some(Some(Err(err))) => StreamEvent::Failed(err.to_string()),
                    Some(None) => StreamEvent::Ended,
                    None => {
                        receiver.cancel();
                        StreamEvent::Failed("cancelled by the test".to_owned())
                    }
                };
                let _ = events_tx.send(event);
                break;
            })
            .expect("start the stream reader");
        Stream {
            events,
            cancel: Some(cancel),
            reader: Some(reader),
        }
    }

    /// The next event, or `None` if nothing arrives within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<StreamEvent<T>> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Cancels the call (as KEDA does when a ScaledObject goes away) and waits for the reader.
    pub fn cancel(self) {
        drop(self);
    }
}

impl<T> Drop for Stream<T> {
    /// Cancels the call unless it ended, and waits for the reader.
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(());
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The daemon running in this test process, with a gRPC client connected to it. The
/// client's calls are available directly on it.
pub struct Scaler {
    daemon: Option<Daemon>,
    client: GrpcClient,
}

impl Scaler {
    /// Starts the daemon on a free loopback port against `bootstrap`.
    pub fn start(bootstrap: &str, poll_interval: Duration, watch_ttl: Duration) -> Scaler {
        Scaler::start_with(Scaler::config(bootstrap, poll_interval, watch_ttl))
    }

    /// The settings [`Scaler::start`] uses, to adjust before [`Scaler::start_with`].
    pub fn config(bootstrap: &str, poll_interval: Duration, watch_ttl: Duration) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            kafka: KafkaConfig {
                bootstrap_servers: vec![bootstrap.to_owned()],
                request_timeout: Duration::from_secs(5),
                stats_interval: None,
                sasl: None,
                tls: None,
                commit_source: lagscaler::config::CommitSource::Fetch,
                commit_reader_idle: Duration::from_secs(10),
            },
            poll_interval,
            watch_ttl,
            ..Config::default()
        }
    }

    /// Starts the daemon with `config`.
    pub fn start_with(config: Config) -> Scaler {
        init_logging();
        let daemon = Daemon::start(&config).expect("start the daemon");
        let client = GrpcClient::connect(&daemon.addr().to_string());
        Scaler {
            daemon: Some(daemon),
            client,
        }
    }

    /// The running daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Shuts the daemon down and checks that it stopped cleanly.
    pub fn stop(self) {
        self.shutdown().expect("clean shutdown");
    }

    /// Shuts the daemon down and returns how that went.
    pub fn shutdown(mut self) -> Result<(), lagscaler::daemon::StopError> {
        match self.daemon.take() {
            Some(daemon) => daemon.shutdown(Duration::from_secs(10)),
            None => Ok(()),
        }
    }
}

impl Deref for Scaler {
    type Target = GrpcClient;

    fn deref(&self) -> &GrpcClient {
        &self.client
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        // A test that failed before `stop` still stops what it started.
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.shutdown(Duration::from_secs(10));
        }
    }
}

/// A ScaledObjectRef carrying `metadata`.
pub fn scaled_object(metadata: &[(&str, &str)]) -> proto::ScaledObjectRef {
    let scaler_metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    proto::ScaledObjectRef {
        name: "test-object".to_owned(),
        namespace: "test".to_owned(),
        scalerMetadata: scaler_metadata,
        ..Default::default()
    }
}

fn call_option() -> CallOption {
    CallOption::default().timeout(RPC_DEADLINE)
}

/// The status of a failed call; a transport failure is a test failure.
pub fn into_status(err: grpcio::Error) -> RpcStatus {
    match err {
        grpcio::Error::RpcFailure(status) => status,
        other => panic!("gRPC call failed outside the protocol: {other}"),
    }
}

/// Names of this process's threads, as the kernel has them (15 bytes at most).
pub fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}
