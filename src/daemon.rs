//! The running daemon: the Kafka client, the watch registry and the gRPC server, started in
//! order and stopped in reverse. Tests run it in-process; `main` runs it until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{
    CertificateRequestType, EnvBuilder, Environment, Server, ServerBuilder, ServerCredentials,
    ServerCredentialsBuilder, ServerCredentialsFetcher,
};
use log::{info, warn};
use parking_lot::Mutex;

use crate::config::{Config, TlsConfig};
use crate::directory::Directory;
use crate::file_stamp::{self, FileStamp};
use crate::fleet::{Fleet, FleetSettings};
use crate::grpc;
use crate::http::HttpServer;
use crate::kafka::{Clients, KafkaError};
use crate::watch::{Registry, ShutdownError, WatchSettings};

/// How long calls in flight get to finish at shutdown; a new watch's first answer may wait
/// up to [`grpc::FIRST_SAMPLE_WAIT`].
const GRPC_GRACE: Duration = Duration::from_secs(2);

/// Watch updates the push thread may be behind by.
const UPDATES_CAPACITY: usize = 4096;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The Kafka client could not be created.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A TLS file could not be read.
    #[error("{variable}={path:?}: cannot read it: {cause}")]
    TlsFile {
        /// The setting naming the file.
        variable: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The HTTP listener could not be bound.
    #[error("cannot serve HTTP on {addr}: {cause}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        cause: String,
    },
    /// The gRPC server could not be built or bound.

    #[error("cannot serve gRPC on {addr}: {cause}")]
    Grpc {
        /// The address asked for.
        addr: SocketAddr,
        /// grpcio's reason.
        cause: String,
    },
}

/// Why the daemon did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The gRPC server reported a failed shutdown.
    #[error("gRPC server shutdown failed: {0}")]
    Grpc(String),
    /// Watcher threads panicked or did not stop in time.
    #[error(transparent)]
    Watches(#[from] ShutdownError),
    /// The Kafka client's event thread panicked.
    #[error("the kafka-events thread panicked")]
    KafkaEvents,
}

/// A started daemon. Call [`Daemon::shutdown`] to stop it; dropping it does not wait.
pub struct Daemon {
    server: Server,
    // Kept so that the completion queues outlive the server; dropped last.
    _env: Arc<Environment>,
    health: grpc::Health,
    pusher: Arc<grpc::Pusher>,
    http: Option<HttpServer>,
    registry: Arc<Registry>,
    kafka: Arc<Clients>,
    fleet: Option<Arc<Fleet>>,
    addr: SocketAddr,
}

impl Daemon {
    /// Starts everything and marks the health service SERVING.
    pub fn start(config: &Config) -> Result<Daemon, StartError> {
        // First, so that a bad file fails the start before any thread runs.
        let credentials = match &config.tls {
            Some(tls) => tls_credentials(tls)?,
            None => ServerCredentials::insecure(),
        };
        let kafka = Arc::new(Clients::connect(&config.cluster_set())?);
        let directory = Arc::new(Directory::new(config.redis.clone()));
        // Ids of watches with a new reading, for the push thread; bounded so that a stuck
        // listener cannot grow it (it re-reads every stream once a second anyway).
        let (updates_tx, updates_rx) = crossbeam_channel::bounded(UPDATES_CAPACITY);
        let fleet = match &config.fleet {
            None => None,
            Some(fleet_config) => {
                let member = fleet_config
                    .member
                    .clone()
                    .unwrap_or_else(|| default_member(config.listen.port()));
                let fleet = Fleet::start(
                    fleet_config,
                    FleetSettings {
                        member,
                        member_ttl: fleet_config.member_ttl,
                        watch_ttl: config.watch_ttl,
                        poll_interval: config.poll_interval,
                        keep: config.rate_window + config.stale_after + config.poll_interval,
                    },
                    config.cluster_set(),
                )?;
                info!(
                    "fleet {} on {}: member {}, {} member(s) now",
                    fleet_config.name,
                    fleet_config.describe(),
                    fleet.member(),
                    fleet.members().len()
                );
                Some(fleet)
            }
        };
        let registry = Arc::new(Registry::start(
            Arc::clone(&kafka),
            directory,
            WatchSettings {
                poll_interval: config.poll_interval,
                ttl: config.watch_ttl,
                rate_window: config.rate_window,
                stale_after: config.stale_after,
                max_watches: config.max_watches,
            },
            updates_tx,
            fleet.clone(),
        )?);
        let cq_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(cq_count)
                .name_prefix("grpc-cq")
                .build(),
        );
        let health = grpc::Health::default();
        let grpc_failed = |cause: String| StartError::Grpc {
            addr: config.listen,
            cause,
        };
        let rpc_stats = Arc::new(grpc::RpcStats::default());
        let (scaler, pusher) = grpc::external_scaler(
            Arc::clone(&registry),
            config.cluster_set(),
            crate::answer::Freshness::new(config.poll_interval, config.stale_after),
            updates_rx,
            Arc::clone(&rpc_stats),
        )?;
        let mut builder = ServerBuilder::new(Arc::clone(&env));
        if let Some(age) = config.max_connection_age {
            // gRPC core's own server arguments: GOAWAY after the age, so that new calls go
            // over a new connection (and KEDA resolves the Service again), and no grace
            // limit (gRPC core's INT_MAX): the calls in flight finish on the old one. Unary
            // calls take milliseconds; a StreamIsActive stream goes on until it ends, since
            // KEDA's push client backs off up to a minute after a cut stream and keeps that
            // backoff after a good one.
            let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
            let args = grpcio::ChannelBuilder::new(Arc::clone(&env))
                .raw_cfg_int(c"grpc.max_connection_age_ms".into(), millis(age))
                .raw_cfg_int(c"grpc.max_connection_age_grace_ms".into(), i32::MAX)
                .build_args();
            builder = builder.channel_args(args);
        }
        let mut server = builder
            .register_service(scaler)
            .register_service(grpc::health_service(health.clone()))
            .build()
            .map_err(|err| grpc_failed(err.to_string()))?;
        let port = server
            .add_listening_port(config.listen.to_string(), credentials)
            .map_err(|err| grpc_failed(err.to_string()))?;
        let http = match config.http {
            None => None,
            Some(http_addr) => {
                let observed = crate::http::Observed {
                    registry: Arc::clone(&registry),
                    health: health.clone(),
                    rpc: rpc_stats,
                    pusher: Arc::clone(&pusher),
                    poll_interval: config.poll_interval,
                    stale_after: config.stale_after,
                    watch_ttl: config.watch_ttl,
                    clients: Arc::clone(&kafka),
                    fleet: fleet.clone(),
                };
                let http =
                    HttpServer::start(http_addr, observed).map_err(|err| StartError::Http {
                        addr: http_addr,
                        cause: err.to_string(),
                    })?;
                info!(
                    "serving /metrics, /healthz and /readyz on http://{}",
                    http.addr()
                );
                Some(http)
            }
        };
        server.start();
        health.set_serving(true);
        let addr = SocketAddr::new(config.listen.ip(), port);
        match &config.tls {
            None => info!(
                "serving KEDA external scaler on {addr} in plaintext (set SCALER_TLS_CERT_FILE \
                 and SCALER_TLS_KEY_FILE for TLS)"
            ),
            Some(tls) => info!(
                "serving KEDA external scaler on {addr} over {} (certificate {})",
                TlsConfig::describe(Some(tls)),
                tls.cert_file.display()
            ),
        }
        Ok(Daemon {
            server,
            _env: env,
            health,
            pusher,
            http,
            registry,
            kafka,
            fleet,
            addr,
        })
    }

    /// Fleet mode: this replica's handle on its fleet.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// The HTTP listener's address, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// The address the gRPC server is bound to (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kafka requests sent so far by API, as of librdkafka's latest statistics report
    /// (`None` before the first, or when statistics are off).
    pub fn kafka_requests(&self) -> Option<crate::kafka::RequestCounts> {
        self.kafka.default_client().request_counts()
    }

    /// Where the default cluster's committed offsets come from now.
    pub fn commits_from(&self) -> crate::kafka::CommitsFrom {
        self.kafka.default_client().commits_from()
    }

    /// [`Daemon::kafka_requests`] by broker node id (empty before the first report).
    pub fn kafka_requests_by_broker(
        &self,
    ) -> std::collections::BTreeMap<i32, crate::kafka::RequestCounts> {
        self.kafka.default_client().request_counts_by_broker()
    }

    /// Number of live watches.
    pub fn watch_count(&self) -> usize {
        self.registry.len()
    }

    /// Watcher threads that died and were restarted since the start.
    pub fn watcher_panics(&self) -> usize {
        self.registry.watcher_panics()
    }

    /// `Err` naming the first of the daemon's own threads (`registry`, `push`, `http`, `fleet`) that
    /// died; the daemon cannot serve as documented without it, and the caller should stop
    /// it and exit with a failure so that systemd or Kubernetes restarts it. (A dead watcher
    /// is restarted by the registry instead.)
    pub fn check_threads(&self) -> Result<(), String> {
        let dead = if self.registry.is_dead() {
            "registry"
        } else if self.pusher.is_dead() {
            "push"
        } else if self.http.as_ref().is_some_and(HttpServer::is_dead) {
            "http"
        } else if self
            .fleet
            .as_ref()
            .is_some_and(|fleet| !fleet.threads_alive())
        {
            "fleet"
        } else {
            return Ok(());
        };
        Err(format!("the {dead} thread died"))
    }

    /// Stops serving and joins every thread the daemon started, giving up after `grace`:
    /// health NOT_SERVING, the gRPC server (in-flight calls finish), the watchers, the Kafka
    /// client's event thread.
    pub fn shutdown(self, grace: Duration) -> Result<(), StopError> {
        let deadline = Instant::now() + grace;
        info!("shutting down");
        let Daemon {
            server,
            _env,
            health,
            pusher,
            http,
            registry,
            kafka,
            fleet,
            addr: _,
        } = self;
        health.set_serving(false);
        // Polls waiting on Kafka give up within a slice: nobody will read their answers.
        kafka.stop_calls();
        if let Some(http) = http {
            http.shutdown();
        }
        // Streams end first, with status OK, so that they do not hold the server's grace.
        pusher.shutdown();
        let server_result = stop_server(server, Instant::now() + GRPC_GRACE.min(grace / 2));
        let watches_result = registry.shutdown(deadline);
        let kafka_result = kafka.shutdown().map_err(|_| StopError::KafkaEvents);
        if let Some(fleet) = fleet {
            if !fleet.shutdown(deadline) {
                warn!("a fleet thread did not stop before the deadline");
            }
        }
        if let Err(err) = &watches_result {
            warn!("stopping watches: {err}");
        }
        server_result?;
        watches_result?;
        kafka_result?;
        info!("stopped");
        Ok(())
    }
}

/// Stops accepting calls and lets calls in flight finish until `deadline`.
///
/// gRPC core's graceful shutdown also waits for every client to acknowledge its GOAWAY,
/// which a client may take up to 20 s to do (or never). A stopping daemon does not wait for
/// that: past the deadline it cancels what is left and lets go of the server, as the
/// process is about to exit.
/// The server's TLS credentials from the configured files; with a client CA, clients must
/// present a certificate it signed. The files are read now (a bad one fails the start) and
/// again whenever one of them changes (cert-manager rotating a Secret): gRPC asks
/// [`CertificateFiles`] before accepting each connection, so new connections get the new
/// certificate and connections already open keep theirs.
fn tls_credentials(tls: &TlsConfig) -> Result<ServerCredentials, StartError> {
    let files = CertificateFiles {
        tls: tls.clone(),
        seen: Mutex::new(None),
    };
    // The same read the fetcher makes, so that a bad file fails here with its setting named.
    files
        .builder()
        .map_err(|(variable, path, cause)| StartError::TlsFile {
            variable,
            path,
            cause,
        })?;
    let request = if tls.client_ca_file.is_some() {
        CertificateRequestType::RequestAndRequireClientCertificateAndVerify
    } else {
        CertificateRequestType::DontRequestClientCertificate
    };
    Ok(ServerCredentials::with_fetcher(Box::new(files), request))
}

/// The gRPC TLS files, and what they looked like when last read.
struct CertificateFiles {
    tls: TlsConfig,
    /// Each file's stamp when last read.
    seen: Mutex<Option<Vec<FileStamp>>>,
}

/// Which setting's file failed, the file, and why.
type FileError = (&'static str, PathBuf, String);

impl CertificateFiles {
    /// The files with the setting naming each.
    fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = vec![
            ("SCALER_TLS_CERT_FILE", self.tls.cert_file.as_path()),
            ("SCALER_TLS_KEY_FILE", self.tls.key_file.as_path()),
        ];
        if let Some(ca) = &self.tls.client_ca_file {
            files.push(("SCALER_TLS_CLIENT_CA_FILE", ca.as_path()));
        }
        files
    }

    /// Each file's stamp.
    fn stamp(&self) -> Result<Vec<FileStamp>, FileError> {
        self.files()
            .into_iter()
            .map(|(variable, path)| {
                file_stamp::stamp(path).map_err(|err| (variable, path.to_owned(), err.to_string()))
            })
            .collect()
    }

    /// The credentials from the files as they are now.
    fn builder(&self) -> Result<ServerCredentialsBuilder, FileError> {
        let read = |variable: &'static str, path: &Path| {
            let bytes =
                std::fs::read(path).map_err(|err| (variable, path.to_owned(), err.to_string()))?;
            if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
                return Err((
                    variable,
                    path.to_owned(),
                    "no PEM block (-----BEGIN ...) in it".to_owned(),
                ));
            }
            Ok(bytes)
        };
        let cert = read("SCALER_TLS_CERT_FILE", &self.tls.cert_file)?;
        let key = read("SCALER_TLS_KEY_FILE", &self.tls.key_file)?;
        let builder = ServerCredentialsBuilder::new().add_cert(cert.clone(), key);
        Ok(match &self.tls.client_ca_file {
            Some(ca_file) => builder.root_cert(
                read("SCALER_TLS_CLIENT_CA_FILE", ca_file)?,
                CertificateRequestType::RequestAndRequireClientCertificateAndVerify,
            ),
            // gRPC core insists on client roots for reloadable credentials (an assertion in
            // its debug builds) even when it asks clients for no certificate. Its own chain
            // serves: with no certificate asked for, the roots check nothing.
            None => builder.root_cert(cert, CertificateRequestType::DontRequestClientCertificate),
        })
    }
}

impl ServerCredentialsFetcher for CertificateFiles {
    /// New credentials when a file changed since the last read; `None` (keep the current
    /// ones) otherwise. A file that cannot be read, or a half-written one, is an error, and
    /// gRPC keeps the credentials it has.
    fn fetch(&self) -> Result<Option<ServerCredentialsBuilder>, Box<dyn std::error::Error>> {
        let describe =
            |(variable, path, cause): FileError| format!("{variable}={}: {cause}", path.display());
        let stamp = self.stamp().map_err(describe)?;
        let mut seen = self.seen.lock();
        if seen.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        let builder = self.builder().map_err(describe)?;
        if seen.is_some() {
            info!(
                "gRPC TLS files changed: new connections get certificate {}",
                self.tls.cert_file.display()
            );
        }
        *seen = Some(stamp);
        Ok(Some(builder))
    }
}

fn stop_server(mut server: Server, deadline: Instant) -> Result<(), StopError> {
    let shutdown = server.shutdown();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::Builder::new()
        .name("grpc-shutdown".to_owned())
        .spawn(move || {
            // The receiver may have given up waiting; then nobody needs the result.
            let _ = done_tx.send(futures::executor::block_on(shutdown));
        })
        .map_err(|err| StopError::Grpc(format!("cannot start a thread: {err}")))?;
    match done_rx.recv_deadline(deadline) {
        Ok(result) => {
            let _ = waiter.join();
            result.map_err(|err| StopError::Grpc(err.to_string()))
        }
        Err(_) => {
            warn!("gRPC clients still connected at the shutdown deadline: cancelling calls");
            server.cancel_all_calls();
            // Destroying a server whose shutdown has not completed aborts inside gRPC core;
            // the shutdown completes on its own (the grpc-shutdown thread sees it) unless
            // the process exits first, which is what it is about to do.
            std::mem::forget(server);
            Ok(())
        }
    }
}

/// A fleet member's default name: the host's name (a pod's name in Kubernetes) and the
/// gRPC port, unique per host and kept across restarts.
fn default_member(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| crate::config::is_fleet_name(name, false))
        .unwrap_or_else(|| "lagscaler".to_owned());
    format!("{host}:{port}")
}
