//! The `lagscaler` binary: read the config, start the daemon, wait for SIGTERM or SIGINT,
//! shut down.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use anyhow::Context;
use log::{debug, error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use lagscaler::{config, sd_notify, Config, Daemon};

/// jemalloc instead of glibc's malloc: with one thread per watch, glibc's arenas and
/// jemalloc's own per-thread caches both hold memory per thread (BENCHMARKS.md, §2).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: no per-thread cache (10,000 threads' caches
/// took the resident set from 0.9 to 2 GB at 10,000 watches), and freed pages given back
/// to the system within a second by its background thread. `_RJEM_MALLOC_CONF` in the
/// environment overrides them.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"tcache:false,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Time allowed from the signal to the last thread joined.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How often the main thread looks for a signal and for a dead daemon thread.
const WATCH_PERIOD: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => {}
        (Some("--help" | "-h"), None) => {
            print!("{}", config::help_text());
            return ExitCode::SUCCESS;
        }
        (Some("--version" | "-V"), None) => {
            println!("lagscaler {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        (Some("--check-config"), None) => return check_config(),
        (Some("check"), first) => {
            let rest: Vec<String> = first.into_iter().chain(args).collect();
            return check(&rest);
        }
        (Some(other), _) => {
            eprintln!("lagscaler: unexpected argument {other:?}; try --help");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("lagscaler: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.debug);
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `lagscaler --check-config`: the settings as the daemon would read them at start, without
/// starting it (a deployment's environment, checked before it is rolled out). Exit code 0,
/// or 2 with each problem on stderr, a `SCALER_` variable that is not a setting included.
fn check_config() -> ExitCode {
    match Config::from_env() {
        Err(err) => {
            eprintln!("lagscaler: invalid configuration: {err}");
            ExitCode::from(2)
        }
        Ok(config) if !config.unknown_vars.is_empty() => {
            for name in &config.unknown_vars {
                eprintln!("lagscaler: {name} is not a lagscaler setting (see --help)");
            }
            ExitCode::from(2)
        }
        Ok(_) => {
            println!("lagscaler: configuration ok");
            ExitCode::SUCCESS
        }
    }
}

/// `lagscaler check key=value ...`: exit code 0 with the report on stdout, 2 for bad
/// settings or metadata, 1 when Kafka could not be read.
fn check(args: &[String]) -> ExitCode {
    if matches!(args.first().map(String::as_str), Some("--help" | "-h")) {
        println!("usage: {}", lagscaler::check::USAGE);
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("lagscaler check: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    // Warnings only: the report is the output.
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Warn);
    if let Ok(filter) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filter);
    }
    builder.init();
    let mut out = std::io::stdout().lock();
    match lagscaler::check::run(args, &config, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lagscaler check: {err}");
            match err {
                lagscaler::check::CheckError::Usage(_) => ExitCode::from(2),
                lagscaler::check::CheckError::Failed(_) => ExitCode::FAILURE,
            }
        }
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    info!(
        "lagscaler {} starting: {}",
        env!("CARGO_PKG_VERSION"),
        config.summary()
    );
    for name in &config.unknown_vars {
        if name.eq_ignore_ascii_case("SCALER_BURROW_URL") {
            warn!(
                "ignoring {name}: lagscaler reads lag from Kafka itself, not from Burrow \
                 (SCALER_KAFKA_BOOTSTRAP_SERVERS)"
            );
        } else {
            warn!("ignoring unknown setting {name}; see lagscaler --help");
        }
    }
    // Registered before the server starts, so an early signal is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let daemon = Daemon::start(config).context("starting")?;
    tell_systemd("READY=1");
    let died = loop {
        if let Some(signal) = signals.pending().next() {
            info!("received signal {signal}");
            break None;
        }
        if let Err(dead) = daemon.check_threads() {
            error!("{dead}: stopping, to exit with a failure so that lagscaler is restarted");
            break Some(dead);
        }
        std::thread::sleep(WATCH_PERIOD);
    };
    tell_systemd("STOPPING=1");
    let stopped = daemon.shutdown(SHUTDOWN_GRACE);
    if let Some(dead) = died {
        bail!("{dead}");
    }
    stopped.context("shutting down")?;
    Ok(())
}

/// Tells systemd (a `Type=notify` unit) about a change of state; a failure is only logged,
/// since lagscaler serves either way and systemd's own timeout reports a unit never ready.
fn tell_systemd(state: &str) {
    match sd_notify::notify(state) {
        Ok(true) => debug!("told systemd {state}"),
        Ok(false) => {}
        Err(err) => warn!(
            "telling systemd {state} over {}: {err}",
            sd_notify::NOTIFY_SOCKET
        ),
    }
}

/// `RUST_LOG` wins when set; otherwise info, or debug for lagscaler with `SCALER_DEBUG`.
fn init_logging(debug: bool) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(log::LevelFilter::Info);
    if debug {
        builder.filter_module("lagscaler", log::LevelFilter::Debug);
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filter);
    }
    builder.init();
    grpcio::redirect_log();
}
