//! One client per configured cluster, replaced when its TLS files change.
//!
//! librdkafka reads a client's certificate, key and CA files once, when the client is made.
//! So that a rotated certificate (cert-manager renewing a Secret) is used without a restart,
//! [`Clients::get`] looks at the files' modification time, size and inode at most once per
//! [`FILE_CHECK`]; when they changed, it makes a new client from them and hands that out
//! from then on. A poll still using the old client finishes with it; the old client is shut
//! down once nothing uses it. A new client that cannot be made (a half-written file) leaves
//! the old one in place until the files change again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::{Mutex, RwLock};

use super::{KafkaClient, KafkaError};
use crate::config::{ClusterSet, KafkaConfig};
use crate::file_stamp::{self, FileStamp};

/// How often a cluster's TLS files are looked at, at most.
pub const FILE_CHECK: Duration = Duration::from_secs(1);

/// One client per configured cluster.
pub struct Clients {
    /// The default (`SCALER_KAFKA_*`) cluster.
    default: Cluster,
    /// `SCALER_KAFKA_CLUSTERS_FILE`'s, by name.
    named: BTreeMap<String, Cluster>,
}

struct Cluster {
    config: KafkaConfig,
    current: RwLock<Arc<KafkaClient>>,
    files: Mutex<Files>,
    /// Clients replaced by a newer one, shut down once nothing uses them.
    retired: Mutex<Vec<Arc<KafkaClient>>>,
}

/// The cluster's TLS files as last seen.
struct Files {
    paths: Vec<PathBuf>,
    /// Each file's stamp, `None` for one that could not be read.
    stamps: Vec<Option<FileStamp>>,
    checked: Instant,
}

impl Clients {
    /// A client for every cluster of `clusters` (connecting is lazy).
    pub fn connect(clusters: &ClusterSet) -> Result<Clients, KafkaError> {
        let mut named = BTreeMap::new();
        for (name, config) in &clusters.named {
            named.insert(name.clone(), Cluster::connect(config)?);
        }
        Ok(Clients {
            default: Cluster::connect(&clusters.default)?,
            named,
        })
    }

    /// Every cluster, the default first.
    fn all(&self) -> impl Iterator<Item = &Cluster> {
        std::iter::once(&self.default).chain(self.named.values())
    }

    /// Every cluster with its name, `default` first.
    fn by_name(&self) -> impl Iterator<Item = (String, &Cluster)> {
        std::iter::once(("default".to_owned(), &self.default)).chain(
            self.named
                .iter()
                .map(|(name, cluster)| (name.clone(), cluster)),
        )
    }

    /// The current client of cluster `name` (`None`: the default one), made anew first if
    /// its TLS files changed.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<KafkaClient>> {
        let cluster = match name {
            None => &self.default,
            Some(name) => self.named.get(name)?,
        };
        cluster.reload_if_changed(name.unwrap_or("default"));
        Some(Arc::clone(&cluster.current.read()))
    }

    /// Where each cluster's committed offsets come from now, by cluster name (`default`
    /// first).
    pub fn commit_sources(&self) -> Vec<(String, super::CommitsFrom)> {
        self.by_name()
            .map(|(name, cluster)| (name, cluster.current.read().commits_from()))
            .collect()
    }

    /// Each cluster's requests to Kafka since its current client started, by API, from
    /// librdkafka's statistics: `None` until the first report, and always with
    /// `SCALER_KAFKA_STATS_INTERVAL` off.
    pub fn request_counts(&self) -> Vec<(String, Option<super::RequestCounts>)> {
        self.by_name()
            .map(|(name, cluster)| (name, cluster.current.read().request_counts()))
            .collect()
    }

    /// The default cluster's current client.
    pub fn default_client(&self) -> Arc<KafkaClient> {
        Arc::clone(&self.default.current.read())
    }

    /// Makes every Kafka call in progress or to come give up within 100 ms:
    /// the daemon is stopping and nobody will read the answers.
    pub fn stop_calls(&self) {
        for cluster in self.all() {
            cluster.current.read().stop_calls();
            for client in cluster.retired.lock().iter() {
                client.stop_calls();
            }
        }
    }

    /// Stops every client's event thread; `Err` if any of them panicked.
    pub fn shutdown(&self) -> thread::Result<()> {
        let mut result = Ok(());
        for cluster in self.all() {
            let retired: Vec<_> = cluster.retired.lock().drain(..).collect();
            let current = Arc::clone(&cluster.current.read());
            for client in retired.iter().chain(std::iter::once(&current)) {
                let stopped = client.shutdown();
                if result.is_ok() {
                    result = stopped;
                }
            }
        }
        result
    }
}

impl Cluster {
    /// A client for `config` (connecting is lazy), with its TLS files' stamps.
    fn connect(config: &KafkaConfig) -> Result<Cluster, KafkaError> {
        let paths = tls_files(config);
        let files = Files {
            stamps: paths
                .iter()
                .map(|path| file_stamp::stamp(path).ok())
                .collect(),
            paths,
            checked: Instant::now(),
        };
        Ok(Cluster {
            current: RwLock::new(Arc::new(KafkaClient::connect(config)?)),
            config: config.clone(),
            files: Mutex::new(files),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// Makes a new client if the TLS files changed since the last look (at most one look per
    /// [`FILE_CHECK`]), and shuts down retired clients nothing uses any more.
    fn reload_if_changed(&self, name: &str) {
        let Some(mut files) = self.files.try_lock() else {
            return;
        };
        if files.paths.is_empty() || files.checked.elapsed() < FILE_CHECK {
            return;
        }
        files.checked = Instant::now();
        self.retire_unused();
        let stamps: Vec<Option<FileStamp>> = files
            .paths
            .iter()
            .map(|path| file_stamp::stamp(path).ok())
            .collect();
        if stamps == files.stamps {
            return;
        }
        if stamps.iter().any(Option::is_none) {
            // Mid-rotation, or gone: keep the current client and look again later.
            warn!("Kafka TLS files of cluster {name} changed, but one cannot be read; keeping the current client");
            files.stamps = stamps;
            return;
        }
        files.stamps = stamps;
        match KafkaClient::connect(&self.config) {
            Ok(client) => {
                info!("Kafka TLS files of cluster {name} changed: polls use a new client made from them");
                let old = std::mem::replace(&mut *self.current.write(), Arc::new(client));
                self.retired.lock().push(old);
            }
            Err(err) => warn!(
                "Kafka TLS files of cluster {name} changed, but no client can be made from them \
                 ({err}); keeping the current client"
            ),
        }
    }

    /// Shuts down the retired clients no poll holds any more.
    fn retire_unused(&self) {
        let mut retired = self.retired.lock();
        let (unused, used): (Vec<_>, Vec<_>) = retired
            .drain(..)
            .partition(|client| Arc::strong_count(client) == 1);
        *retired = used;
        drop(retired);
        for client in unused {
            if client.shutdown().is_err() {
                warn!("the kafka-events thread of a replaced client panicked");
            }
        }
    }
}

/// The cluster's TLS files: CA, client certificate and key, those configured.
fn tls_files(config: &KafkaConfig) -> Vec<PathBuf> {
    let Some(tls) = &config.tls else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = tls.ca_file.iter().cloned().collect();
    if let Some((cert, key)) = &tls.client {
        paths.push(cert.clone());
        paths.push(key.clone());
    }
    paths
}
