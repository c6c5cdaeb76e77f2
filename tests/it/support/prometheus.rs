//! A real Prometheus server (Debian's `prometheus`) of the test's own on a free loopback
//! port: it scrapes one target every second under the job name `lagscaler`, evaluates rule
//! files every second, and answers the HTTP API.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{free_port, http_get, wait_for, LoggedChild};

/// The running server; stopped (killed) in `Drop`, its data in a temp dir.
pub struct Prometheus {
    server: LoggedChild,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it scraping `target` (host:port of a `/metrics`) with `rule_files`, and waits
    /// until it is ready.
    pub fn start(target: SocketAddr, rule_files: &[&Path]) -> Prometheus {
        let data = tempfile::tempdir().expect("temp dir for Prometheus");
        let rules: Vec<String> = rule_files
            .iter()
            .map(|file| format!("  - {}\n", file.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: lagscaler\n    static_configs:\n      \
             - targets: ['{target}']\n",
            rules.concat()
        );
        let config_path = data.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let port = free_port();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let server = Prometheus {
            server: LoggedChild::start(command, port, Duration::from_secs(30)),
            _data: data,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            (server.get("/-/ready").0 == 200).then_some(())
        });
        assert!(ready.is_some(), "Prometheus not ready:\n{}", server.log());
        server
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(SocketAddr::from(([127, 0, 0, 1], self.server.port)), path)
    }

    /// `data` of a successful API answer at `path`; a failed one panics with its error.
    fn api(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|err| panic!("GET {path}: {status}, not JSON ({err}): {body}"));
        assert_eq!(answer["status"], "success", "GET {path}: {status} {body}");
        answer["data"].clone()
    }

    /// The result of the instant query `promql` now: one element per series.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every rule of every group, as `/api/v1/rules` gives them (health, lastError, query).
    pub fn rules(&self) -> Vec<Value> {
        let data = self.api("/api/v1/rules");
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// Percent-encodes `text` for a URL's query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
