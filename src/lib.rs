//! lagscaler: a KEDA external scaler that watches Kafka consumer-group lag with plain OS
//! threads, a blocking Kafka client and grpcio. See ARCHITECTURE.md for the map.

pub mod answer;
pub mod check;
pub mod config;
pub mod consumer_offsets;
pub mod daemon;
pub mod directory;
pub mod estimate;
pub mod file_stamp;
pub mod fleet;
pub mod grpc;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod http;
pub mod kafka;
pub mod lag;
pub mod plugin;
pub mod sd_notify;
pub mod spelling;
pub mod store;
pub mod trigger;
pub mod watch;

pub use config::Config;
pub use daemon::Daemon;
