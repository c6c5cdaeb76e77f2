//! The HTTP listener (`SCALER_HTTP_PORT`): `/metrics` in Prometheus text format, `/healthz`
//! (the process is up) and `/readyz` (lagscaler can serve: gRPC serving, its own threads
//! alive).
//!
//! One named thread, `http`, serves the requests one at a time with tiny_http. Nothing it
//! answers waits on Kafka or Redis: `/metrics` reads the metric store and counters, and
//! readiness does not depend on any one cluster (a trigger on an unreachable cluster gets
//! UNAVAILABLE, and KEDA its fallback, from a pod that still serves every other trigger).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::answer;
use crate::estimate::Eta;
use crate::grpc::stats::BUCKETS;
use crate::grpc::{Health, Pusher, RpcStats};
use crate::kafka::{Clients, CommitsFrom};
use crate::store::Reading;
use crate::trigger::{metric_name, Source};
use crate::watch::Registry;

/// How often the thread looks for the stop flag while idle.
const IDLE_WAKE: Duration = Duration::from_millis(200);

/// What the listener reports on.
pub struct Observed {
    /// The watches.
    pub registry: Arc<Registry>,
    /// The gRPC server's serving status.
    pub health: Health,
    /// gRPC call counters.
    pub rpc: Arc<RpcStats>,
    /// The push thread, whose death makes the daemon unready.
    pub pusher: Arc<Pusher>,
    /// Time between the starts of two polls (`SCALER_POLL_INTERVAL`).
    pub poll_interval: Duration,
    /// Age beyond which a sample is not served (`SCALER_STALE_AFTER`): triggers' values
    /// are left out of `/metrics` then, as gRPC answers UNAVAILABLE.
    pub stale_after: Duration,
    /// Triggers not asked about for this long (`SCALER_WATCH_TTL`) are left out.
    pub watch_ttl: Duration,
    /// The Kafka clients, for where committed offsets come from.
    pub clients: Arc<Clients>,
    /// Fleet mode: the fleet, for its families.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// The running listener.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl HttpServer {
    /// Binds `addr` and starts the `http` thread.
    pub fn start(addr: SocketAddr, observed: Observed) -> std::io::Result<HttpServer> {
        let server = Server::http(addr).map_err(|err| std::io::Error::other(err.to_string()))?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("http".to_owned())
                .spawn(move || serve(&server, &observed, &stop))?
        };
        Ok(HttpServer {
            addr,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the thread ended without being told to (it panicked).
    pub fn is_dead(&self) -> bool {
        self.thread
            .lock()
            .as_ref()
            .is_some_and(JoinHandle::is_finished)
    }

    /// Stops and joins the thread. Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                warn!("the http thread panicked");
            }
        }
    }
}

fn serve(server: &Server, observed: &Observed, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match server.recv_timeout(IDLE_WAKE) {
            Ok(Some(request)) => {
                #[cfg(feature = "test-hooks")]
                if crate::hooks::take_thread_panic("http") {
                    panic!("panic injected by a test into the http thread");
                }
                answer(request, observed)
            }
            Ok(None) => {}
            Err(err) => {
                warn!("http listener: {err}");
                thread::sleep(IDLE_WAKE);
            }
        }
    }
    debug!("http thread stopped");
}

fn answer(request: Request, observed: &Observed) {
    let (status, content_type, body) = match (request.method(), request.url()) {
        (Method::Get, "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render_metrics(observed),
        ),
        (Method::Get, "/healthz") => (200, "text/plain", "ok\n".to_owned()),
        (Method::Get, "/readyz") => match readiness(observed) {
            Ok(()) => (200, "text/plain", "ready\n".to_owned()),
            Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        (Method::Get, _) => (
            404,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
        _ => (405, "text/plain", "only GET\n".to_owned()),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response = response.with_header(header);
    }
    if let Err(err) = request.respond(response) {
        debug!("http answer not delivered: {err}");
    }
}

/// Ready when gRPC is serving and the threads that answer from memory are alive.
fn readiness(observed: &Observed) -> Result<(), String> {
    if !observed.health.is_serving() {
        return Err("gRPC is not serving".to_owned());
    }
    if observed.registry.is_dead() {
        return Err("the registry thread died; lagscaler is exiting".to_owned());
    }
    if observed.pusher.is_dead() {
        return Err("the push thread died; lagscaler is exiting".to_owned());
    }
    Ok(())
}

/// The fleet's families (fleet mode only).
fn render_fleet(out: &mut String, fleet: &crate::fleet::Fleet) {
    use std::sync::atomic::Ordering::Relaxed;
    family(
        out,
        "lagscaler_fleet_members",
        "gauge",
        "Live members of the fleet as this replica last read them (0 while it is alone).",
    );
    let _ = writeln!(out, "lagscaler_fleet_members {}", fleet.members().len());
    family(
        out,
        "lagscaler_fleet_alone",
        "gauge",
        "1 while this replica could not renew its fleet lease for the member TTL and polls \
         every watch it holds itself.",
    );
    let _ = writeln!(out, "lagscaler_fleet_alone {}", u8::from(fleet.is_alone()));
    family(
        out,
        "lagscaler_fleet_polls_cluster",
        "gauge",
        "1 for a Kafka cluster whose watches this replica polls for the fleet (it owns the \
         cluster, or it is alone), 0 for one another replica polls.",
    );
    for (cluster, polled) in fleet.polled_clusters() {
        let _ = writeln!(
            out,
            "lagscaler_fleet_polls_cluster{{cluster=\"{}\"}} {}",
            escape(&cluster),
            u8::from(polled)
        );
    }
    family(
        out,
        "lagscaler_fleet_samples_total",
        "counter",
        "Samples by outcome: written (this replica polled and shared them), refused (another \
         writer had the tick), ahead (the tick was later than the fleet Redis's clock: this \
         host's clock runs ahead), unwritten (Redis unreachable or the lease lapsed), received \
         (read from the fleet's feed, this replica's own included).",
    );
    let stats = &fleet.stats;
    for (outcome, count) in [
        ("written", &stats.written),
        ("refused", &stats.refused),
        ("ahead", &stats.ahead),
        ("unwritten", &stats.unwritten),
        ("received", &stats.received),
    ] {
        let _ = writeln!(
            out,
            "lagscaler_fleet_samples_total{{outcome=\"{outcome}\"}} {}",
            count.load(Relaxed)
        );
    }
    family(
        out,
        "lagscaler_fleet_lease_failures_total",
        "counter",
        "Lease renewals that failed (Redis unreachable or slow).",
    );
    let _ = writeln!(
        out,
        "lagscaler_fleet_lease_failures_total {}",
        stats.renew_failures.load(Relaxed)
    );
}

/// Every metric in Prometheus text format 0.0.4.
pub fn render_metrics(observed: &Observed) -> String {
    let mut out = String::new();
    let slots = observed.registry.slots();
    family(
        &mut out,
        "lagscaler_watches",
        "gauge",
        "Watches being polled.",
    );
    let _ = writeln!(out, "lagscaler_watches {}", slots.len());
    family(
        &mut out,
        "lagscaler_threads",
        "gauge",
        "OS threads of the process.",
    );
    let _ = writeln!(out, "lagscaler_threads {}", thread_count());
    family(
        &mut out,
        "lagscaler_max_watches",
        "gauge",
        "Most watches at once (SCALER_MAX_WATCHES); a trigger needing another is refused.",
    );
    let _ = writeln!(
        out,
        "lagscaler_max_watches {}",
        observed.registry.max_watches()
    );
    family(
        &mut out,
        "lagscaler_poll_interval_seconds",
        "gauge",
        "Time between the starts of two polls of a watch (SCALER_POLL_INTERVAL).",
    );
    let _ = writeln!(
        out,
        "lagscaler_poll_interval_seconds {}",
        observed.poll_interval.as_secs_f64()
    );
    family(
        &mut out,
        "lagscaler_stale_after_seconds",
        "gauge",
        "Age beyond which a sample is not served and triggers answer UNAVAILABLE \
         (SCALER_STALE_AFTER).",
    );
    let _ = writeln!(
        out,
        "lagscaler_stale_after_seconds {}",
        observed.stale_after.as_secs_f64()
    );
    family(
        &mut out,
        "lagscaler_poll_cycle_seconds",
        "gauge",
        "How long the latest complete poll cycle took, from its tick to the end of its \
         slowest poll; longer than the poll interval means polls fall behind.",
    );
    if let Some(cycle) = observed.registry.last_cycle() {
        let _ = writeln!(out, "lagscaler_poll_cycle_seconds {}", cycle.as_secs_f64());
    }

    if let Some(fleet) = &observed.fleet {
        render_fleet(&mut out, fleet);
    }

    let mut watches = WatchFamilies::new();
    let mut triggers = TriggerFamilies::new();
    let now = Instant::now();
    let freshness = answer::Freshness::new(observed.poll_interval, observed.stale_after);
    for slot in &slots {
        let (kind, name) = match &slot.key.source {
            Source::Group(group) => ("group", group.as_str()),
            Source::Plugin { name, .. } => ("plugin", name.as_str()),
        };
        let labels = format!(
            "watch=\"{}\",source=\"{kind}\",name=\"{}\",topic=\"{}\"",
            escape(&slot.key.to_string()),
            escape(name),
            escape(slot.key.topic.as_deref().unwrap_or(""))
        );
        let view = slot.view();
        if let Some(estimate) = &view.last_good {
            watches.lag.put(&labels, estimate.total_lag as f64);
            if let Some(rates) = estimate.rates {
                watches.produce_rate.put(&labels, rates.produce);
                watches.consume_rate.put(&labels, rates.consume);
            }
            match estimate.eta() {
                Eta::Zero => watches.eta_seconds.put(&labels, 0.0),
                Eta::InFlight(seconds) | Eta::Draining(seconds) => {
                    watches.eta_seconds.put(&labels, seconds)
                }
                Eta::Unknown | Eta::NotDraining(_) => {}
            }
            if let Some(seconds) = estimate.time_lag {
                watches.time_lag_seconds.put(&labels, seconds);
            }
            if let Some(members) = estimate.members {
                watches.members.put(&labels, members as f64);
            }
            let age = estimate.oldest_read.elapsed().as_secs_f64();
            watches.sample_age_seconds.put(&labels, age);
        }
        match view.reading {
            Reading::Pending => {}
            Reading::Fresh(_) => watches.up.put(&labels, 1.0),
            Reading::Failed(_) | Reading::Gone(_) => watches.up.put(&labels, 0.0),
        }
        let polls = slot.poll_stats();
        watches.polls_total.put(&labels, polls.polls as f64);
        watches.poll_errors_total.put(&labels, polls.failed as f64);
        watches
            .poll_duration_seconds
            .put(&labels, polls.latest.as_secs_f64());

        // Each trigger's answers, as gRPC gives them (module `answer`): none while the
        // watch has nothing to serve.
        let Ok(served) = answer::serve(view, freshness, now) else {
            continue;
        };
        for seen in slot.triggers(observed.watch_ttl) {
            let rules = &seen.rules;
            let decision = served.decide(rules);
            let labels = format!(
                "{labels},scaled_object=\"{}\",metric=\"{}\"",
                escape(&seen.scaled_object),
                escape(&metric_name(&slot.key, rules.metric))
            );
            if let Ok(value) = decision.metric_value(rules.metric) {
                triggers.value.put(&labels, value);
            }
            let active = if decision.active { 1.0 } else { 0.0 };
            triggers.active.put(&labels, active);
            if let Some(Ok(replicas)) = decision.replicas {
                triggers.replicas.put(&labels, replicas as f64);
            }
        }
    }
    for family in watches.all().into_iter().chain(triggers.all()) {
        family.write(&mut out);
    }

    family(
        &mut out,
        "lagscaler_commit_source",
        "gauge",
        "Where a cluster's committed offsets come from: 1 for the source in use (stream: \
         the __consumer_offsets reader; fetch: OffsetFetch per watch, configured or because \
         the stream cannot be read), 0 for the other.",
    );
    for (cluster, from) in observed.clients.commit_sources() {
        let stream = u8::from(from == CommitsFrom::Stream);
        let cluster = escape(&cluster);
        let _ = writeln!(
            out,
            "lagscaler_commit_source{{cluster=\"{cluster}\",source=\"stream\"}} {stream}"
        );
        let _ = writeln!(
            out,
            "lagscaler_commit_source{{cluster=\"{cluster}\",source=\"fetch\"}} {}",
            1 - stream
        );
    }
    family(
        &mut out,
        "lagscaler_kafka_requests_total",
        "counter",
        "Requests sent to a cluster's brokers by Kafka API, from librdkafka's statistics: \
         only with SCALER_KAFKA_STATS_INTERVAL set, as of its latest report.",
    );
    for (cluster, counts) in observed.clients.request_counts() {
        let cluster = escape(&cluster);
        for (api, count) in counts.iter().flatten() {
            let _ = writeln!(
                out,
                "lagscaler_kafka_requests_total{{cluster=\"{cluster}\",api=\"{}\"}} {count}",
                escape(api)
            );
        }
    }
    let calls = observed.rpc.snapshot();
    family(
        &mut out,
        "lagscaler_grpc_requests_total",
        "counter",
        "gRPC calls by method and status code.",
    );
    for ((method, code), counts) in &calls {
        let _ = writeln!(
            out,
            "lagscaler_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {}",
            counts.count
        );
    }
    family(
        &mut out,
        "lagscaler_grpc_request_duration_seconds",
        "histogram",
        "Time to handle a gRPC call, by method and status code.",
    );
    for ((method, code), counts) in &calls {
        let labels = format!("method=\"{method}\",code=\"{code}\"");
        for (bound, count) in BUCKETS.iter().zip(counts.at_most.iter()) {
            let _ = writeln!(
                out,
                "lagscaler_grpc_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "lagscaler_grpc_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            counts.count
        );
        let _ = writeln!(
            out,
            "lagscaler_grpc_request_duration_seconds_sum{{{labels}}} {}",
            counts.seconds
        );
        let _ = writeln!(
            out,
            "lagscaler_grpc_request_duration_seconds_count{{{labels}}} {}",
            counts.count
        );
    }
    out
}

/// A metric family of per-watch or per-trigger samples, written once all are in.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<String>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    /// Adds the sample `value` with `labels` (already escaped, comma-separated).
    fn put(&mut self, labels: &str, value: f64) {
        self.samples
            .push(format!("{}{{{labels}}} {value}", self.name));
    }

    fn write(&self, out: &mut String) {
        family(out, self.name, self.kind, self.help);
        for sample in &self.samples {
            out.push_str(sample);
            out.push('\n');
        }
    }
}

/// The per-watch families, in the order they are written.
struct WatchFamilies {
    lag: Family,
    produce_rate: Family,
    consume_rate: Family,
    eta_seconds: Family,
    time_lag_seconds: Family,
    members: Family,
    sample_age_seconds: Family,
    up: Family,
    polls_total: Family,
    poll_errors_total: Family,
    poll_duration_seconds: Family,
}

impl WatchFamilies {
    fn new() -> WatchFamilies {
        WatchFamilies {
            lag: Family::new(
                "lagscaler_watch_lag",
                "gauge",
                "Records the watch's groups have not consumed yet.",
            ),
            produce_rate: Family::new(
                "lagscaler_watch_produce_rate",
                "gauge",
                "Records produced per second over the rate window.",
            ),
            consume_rate: Family::new(
                "lagscaler_watch_consume_rate",
                "gauge",
                "Records consumed (committed) per second over the rate window.",
            ),
            eta_seconds: Family::new(
                "lagscaler_watch_eta_seconds",
                "gauge",
                "Time to drain the lag at the current rates, while it drains.",
            ),
            time_lag_seconds: Family::new(
                "lagscaler_watch_time_lag_seconds",
                "gauge",
                "How long the oldest record not consumed had waited at the latest sample, \
                 where known (record timestamps are read only for watches a time-lag trigger \
                 reads).",
            ),
            members: Family::new(
                "lagscaler_watch_members",
                "gauge",
                "Active members of the group (the largest of a plugin's groups).",
            ),
            sample_age_seconds: Family::new(
                "lagscaler_watch_sample_age_seconds",
                "gauge",
                "Age of the latest good sample (of its oldest offsets, where an earlier read \
                 stood in for a partition whose leader could not be reached).",
            ),
            up: Family::new(
                "lagscaler_watch_up",
                "gauge",
                "1 when the watch's latest poll succeeded, else 0.",
            ),
            polls_total: Family::new(
                "lagscaler_watch_polls_total",
                "counter",
                "Polls of the watch, failed or not.",
            ),
            poll_errors_total: Family::new(
                "lagscaler_watch_poll_errors_total",
                "counter",
                "Polls of the watch that failed.",
            ),
            poll_duration_seconds: Family::new(
                "lagscaler_watch_poll_duration_seconds",
                "gauge",
                "How long the watch's latest poll took.",
            ),
        }
    }

    fn all(&self) -> [&Family; 11] {
        [
            &self.lag,
            &self.produce_rate,
            &self.consume_rate,
            &self.eta_seconds,
            &self.time_lag_seconds,
            &self.members,
            &self.sample_age_seconds,
            &self.up,
            &self.polls_total,
            &self.poll_errors_total,
            &self.poll_duration_seconds,
        ]
    }
}

/// The per-trigger families: what KEDA gets, in the order they are written.
struct TriggerFamilies {
    value: Family,
    active: Family,
    replicas: Family,
}

impl TriggerFamilies {
    fn new() -> TriggerFamilies {
        TriggerFamilies {
            value: Family::new(
                "lagscaler_trigger_value",
                "gauge",
                "The metric value KEDA gets for the trigger (GetMetrics), by metric name.",
            ),
            active: Family::new(
                "lagscaler_trigger_active",
                "gauge",
                "1 when IsActive answers true for the trigger, else 0.",
            ),
            replicas: Family::new(
                "lagscaler_trigger_replicas",
                "gauge",
                "Consumers needed to drain within the trigger's targetEtaSeconds.",
            ),
        }
    }

    fn all(&self) -> [&Family; 3] {
        [&self.value, &self.active, &self.replicas]
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Threads of this process, from /proc (0 where there is none).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("line\nbreak"), "line\\nbreak");
    }
}
