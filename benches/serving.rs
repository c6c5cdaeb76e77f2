//! Serving benchmark: real gRPC clients ask lagscaler KEDA's three questions about many warm
//! watches, and, in the same run, ask a minimal grpcio server that answers the same RPCs
//! with constants (the floor cost of gRPC here). Reports requests/s at saturation, latency
//! percentiles at a fixed 5,000 requests/s, and lagscaler/floor.
//!
//! `cargo bench --bench serving` runs it in full (release); `cargo test --benches` runs a
//! seconds-long smoke version (debug, no thresholds) so that it never rots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use grpcio::{
    CallOption, ChannelBuilder, Client, EnvBuilder, Environment, RpcContext, Server, ServerBuilder,
    ServerCredentials, ServiceBuilder, UnarySink,
};
use lagscaler::grpc::proto;
use lagscaler::{Config, Daemon};

// The integration tests' broker guard and Kafka helpers; the bench uses a few of them.
#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::Kafka;

/// Shape of one run.
struct Plan {
    watches: usize,
    clients: usize,
    saturate_for: Duration,
    fixed_rate: f64,
    fixed_for: Duration,
    rounds: usize,
}

fn main() {
    // lagscaler at its default log level, as deployed (the test harness's logger, which
    // would otherwise be installed first, logs every call at debug level; the floor logs
    // nothing).
    let _ = env_logger::builder()
        .parse_filters("info,librdkafka=warn")
        .try_init();
    // `cargo bench` passes --bench; `cargo test --benches` does not: that is the smoke run.
    let full = std::env::args().any(|arg| arg == "--bench");
    let plan = if full {
        Plan {
            watches: 200,
            clients: 8,
            saturate_for: Duration::from_secs(5),
            fixed_rate: 5_000.0,
            fixed_for: Duration::from_secs(5),
            rounds: 3,
        }
    } else {
        Plan {
            watches: 5,
            clients: 2,
            saturate_for: Duration::from_millis(300),
            fixed_rate: 200.0,
            fixed_for: Duration::from_millis(300),
            rounds: 1,
        }
    };

    let broker = Kafka::shared();
    broker.create_topic("bench", 4);
    for partition in 0..4 {
        broker.produce("bench", partition, 5);
    }
    let groups: Vec<String> = (0..plan.watches).map(|i| format!("bench-{i}")).collect();
    for group in &groups {
        broker.commit(group, &[("bench", 0, 1), ("bench", 2, 3)]);
    }
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("loopback"),
        ..support::Scaler::config(
            &broker.bootstrap(),
            Duration::from_secs(5),
            Duration::from_secs(600),
        )
    };
    let daemon = Daemon::start(&config).expect("start lagscaler");
    let floor = Floor::start();

    let lagscaler_addr = daemon.addr().to_string();
    let floor_addr = floor.addr.clone();
    // Warm every watch: the benchmark measures answers from memory, as KEDA gets them.
    let warm = Caller::connect(&lagscaler_addr);
    for group in &groups {
        warm.spec(group);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !warm.metrics(group) {
            assert!(Instant::now() < deadline, "watch {group} never answered");
            thread::sleep(Duration::from_millis(20));
        }
    }

    println!(
        "serving benchmark: {} warm watches, {} client threads (own channel each), {} round(s)",
        plan.watches, plan.clients, plan.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=plan.rounds {
        // Side by side in the same round, alternating which goes first.
        let (ours, theirs) = if round % 2 == 1 {
            let ours = measure(&lagscaler_addr, &groups, &plan);
            (ours, measure(&floor_addr, &groups, &plan))
        } else {
            let theirs = measure(&floor_addr, &groups, &plan);
            (measure(&lagscaler_addr, &groups, &plan), theirs)
        };
        println!("round {round}: lagscaler {ours}");
        println!("round {round}: floor     {theirs}");
        let ratio = ours.saturated_rps / theirs.saturated_rps;
        println!("round {round}: throughput lagscaler/floor {ratio:.3}");
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "throughput lagscaler/floor: min {:.3} median {:.3} max {:.3}",
        ratios[0],
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
    daemon
        .shutdown(Duration::from_secs(10))
        .expect("clean shutdown");
    floor.stop();
}

/// What one measurement found.
struct Figures {
    saturated_rps: f64,
    saturated_errors: usize,
    fixed_rps: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "saturated {:>8.0} req/s ({} errors); at {:>5.0} req/s p50 {:>4} us p99 {:>4} us \
             p999 {:>5} us",
            self.saturated_rps,
            self.saturated_errors,
            self.fixed_rps,
            self.p50.as_micros(),
            self.p99.as_micros(),
            self.p999.as_micros()
        )
    }
}

/// Saturation (every client calls as fast as answers come) and a fixed total rate.
fn measure(addr: &str, groups: &[String], plan: &Plan) -> Figures {
    let (count, errors, _) = run_clients(addr, groups, plan.clients, None, plan.saturate_for);
    let saturated_rps = count as f64 / plan.saturate_for.as_secs_f64();
    let per_client = plan.fixed_rate / plan.clients as f64;
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let (count, _, mut latencies) =
        run_clients(addr, groups, plan.clients, Some(interval), plan.fixed_for);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        saturated_rps,
        saturated_errors: errors,
        fixed_rps: count as f64 / plan.fixed_for.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// Runs `clients` threads for `duration`, each cycling through the groups with KEDA's
/// calls (GetMetricSpec, GetMetrics, IsActive). With `interval`, each thread sends on a
/// fixed schedule (open loop); without, back to back. Returns calls, errors, latencies.
fn run_clients(
    addr: &str,
    groups: &[String],
    clients: usize,
    interval: Option<Duration>,
    duration: Duration,
) -> (usize, usize, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|idx| {
            let caller = Caller::connect(addr);
            let groups = groups.to_vec();
            let stop = Arc::clone(&stop);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                // Connected before the clock starts.
                caller.spec(&groups[0]);
                start.wait();
                let began = Instant::now();
                let (mut calls, mut errors) = (0usize, 0usize);
                let mut latencies = Vec::new();
                let mut turn = idx;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        let due = began + interval * calls as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                    }
                    let group = &groups[turn % groups.len()];
                    let sent = Instant::now();
                    let ok = match turn % 3 {
                        0 => caller.spec(group),
                        1 => caller.metrics(group),
                        _ => caller.active(group),
                    };
                    latencies.push(sent.elapsed());
                    calls += 1;
                    errors += usize::from(!ok);
                    turn += 1;
                }
                (calls, errors, latencies)
            })
        })
        .collect();
    start.wait();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0, Vec::new());
    for handle in handles {
        let (calls, errors, latencies) = handle.join().expect("client thread");
        total.0 += calls;
        total.1 += errors;
        total.2.extend(latencies);
    }
    total
}

/// One gRPC channel asking KEDA's questions about a consumer group.
struct Caller {
    client: Client,
    _env: Arc<Environment>,
}

impl Caller {
    fn connect(addr: &str) -> Caller {
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let channel = ChannelBuilder::new(Arc::clone(&env)).connect(addr);
        Caller {
            client: Client::new(channel),
            _env: env,
        }
    }

    fn object(group: &str) -> proto::ScaledObjectRef {
        proto::ScaledObjectRef {
            name: group.to_owned(),
            namespace: "bench".to_owned(),
            scalerMetadata: [("consumerGroup", group), ("topic", "bench")]
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn option() -> CallOption {
        CallOption::default().timeout(Duration::from_secs(3))
    }

    fn spec(&self, group: &str) -> bool {
        self.client
            .unary_call(
                &proto::METHOD_GET_METRIC_SPEC,
                &Caller::object(group),
                Caller::option(),
            )
            .is_ok()
    }

    fn metrics(&self, group: &str) -> bool {
        let request = proto::GetMetricsRequest {
            scaledObjectRef: Some(Caller::object(group)).into(),
            ..Default::default()
        };
        self.client
            .unary_call(&proto::METHOD_GET_METRICS, &request, Caller::option())
            .is_ok()
    }

    fn active(&self, group: &str) -> bool {
        self.client
            .unary_call(
                &proto::METHOD_IS_ACTIVE,
                &Caller::object(group),
                Caller::option(),
            )
            .is_ok()
    }
}

/// A unary handler that answers every request with (a copy of) `answer`.
fn constant<Req, Resp>(answer: Resp) -> impl Fn(RpcContext<'_>, Req, UnarySink<Resp>) + Clone
where
    Resp: Clone + Send + 'static,
{
    move |ctx, _request, sink| {
        let answer = answer.clone();
        ctx.spawn(async move {
            let _ = sink.success(answer).await;
        });
    }
}

/// The floor: a grpcio server with the same completion-queue count as lagscaler, answering
/// the same three RPCs with constants.
struct Floor {
    server: Server,
    addr: String,
    _env: Arc<Environment>,
}

impl Floor {
    fn start() -> Floor {
        let cq_count = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let env = Arc::new(EnvBuilder::new().cq_count(cq_count).build());
        let service = ServiceBuilder::new()
            .add_unary_handler(
                &proto::METHOD_IS_ACTIVE,
                constant::<proto::ScaledObjectRef, _>(proto::IsActiveResponse {
                    result: true,
                    ..Default::default()
                }),
            )
            .add_unary_handler(
                &proto::METHOD_GET_METRIC_SPEC,
                constant::<proto::ScaledObjectRef, _>(proto::GetMetricSpecResponse {
                    metricSpecs: vec![proto::MetricSpec {
                        metricName: "constant".to_owned(),
                        targetSize: 10,
                        targetSizeFloat: 10.0,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            )
            .add_unary_handler(
                &proto::METHOD_GET_METRICS,
                constant::<proto::GetMetricsRequest, _>(proto::GetMetricsResponse {
                    metricValues: vec![proto::MetricValue {
                        metricName: "constant".to_owned(),
                        metricValue: 3,
                        metricValueFloat: 3.0,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            )
            .build();
        let mut server = ServerBuilder::new(Arc::clone(&env))
            .register_service(service)
            .build()
            .expect("build the floor server");
        let port = server
            .add_listening_port("127.0.0.1:0", ServerCredentials::insecure())
            .expect("bind the floor server");
        server.start();
        Floor {
            server,
            addr: format!("127.0.0.1:{port}"),
            _env: env,
        }
    }

    fn stop(mut self) {
        let _ = futures::executor::block_on(self.server.shutdown());
    }
}
