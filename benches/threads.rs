//! The floor of one OS thread per watch: what W threads cost that do nothing but what every
//! watcher does around its poll. Each waits for the next tick of a shared schedule on a
//! stop channel of its own (as `watch::watcher` does), then sends one small message over a
//! bounded channel to one receiving thread (as a watcher sends its result to the
//! registry). No Kafka, no estimate: whatever lagscaler spends beyond this at the same W
//! and interval is its per-poll work. Reports CPU (% of one core) and RSS for: waiting
//! only; waiting and sending with the channel's capacity 1,024 (lagscaler's before
//! 2026-12-03); waiting and sending with a capacity of W (since).
//!
//! `cargo bench --bench threads` runs it in full (W = 1,000 and 10,000, 5 s ticks, 60 s
//! measured each); `THREADS_WATCHES` (comma-separated) narrows it. `cargo test --bench
//! threads` runs a seconds-long smoke version. It borrows the integration tests' `support`
//! module for its `/proc` readings and `THREADS_WATCHES`.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError};

#[allow(dead_code)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use support::bench::{clock_ticks_per_second, cpu_ticks, watches_from_env};

/// What each thread does on a tick.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// Wakes, and waits for the next tick.
    WaitOnly,
    /// Wakes and sends one message over a channel of this capacity.
    Send { capacity: usize },
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (watches, interval, measured): (Vec<usize>, _, _) = if full {
        let watches = watches_from_env("THREADS_WATCHES", &[1_000, 10_000]);
        (watches, Duration::from_secs(5), Duration::from_secs(60))
    } else {
        (
            vec![100],
            Duration::from_millis(100),
            Duration::from_millis(500),
        )
    };
    println!(
        "threads benchmark: one thread per watch, ticks every {interval:?}, {measured:?} measured"
    );
    for &w in &watches {
        for variant in [
            Variant::WaitOnly,
            Variant::Send { capacity: 1024 },
            Variant::Send { capacity: w },
        ] {
            run(w, variant, interval, measured);
        }
    }
}

/// Starts `w` threads doing `variant` on ticks every `interval`, measures the process for
/// `measured` after one tick of warm-up, then stops and joins them.
fn run(w: usize, variant: Variant, interval: Duration, measured: Duration) {
    let origin = Instant::now();
    let capacity = match variant {
        Variant::WaitOnly => 1,
        Variant::Send { capacity } => capacity,
    };
    let (results_tx, results_rx) = bounded::<(usize, Instant)>(capacity);
    let mut stops = Vec::with_capacity(w);
    let mut threads = Vec::with_capacity(w);
    for index in 0..w {
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let results = results_tx.clone();
        let thread = thread::Builder::new()
            .name(format!("watch-{index}"))
            .spawn(move || {
                let mut tick = 1u32;
                loop {
                    match stop_rx.recv_deadline(origin + interval * tick) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    tick += 1;
                    if let Variant::Send { .. } = variant {
                        if results.send((index, Instant::now())).is_err() {
                            return;
                        }
                    }
                }
            })
            .expect("spawn a thread");
        stops.push(stop_tx);
        threads.push(thread);
    }
    drop(results_tx);
    let receiver = thread::spawn(move || results_rx.iter().count());

    let pid = std::process::id();
    thread::sleep(interval);
    let ticks_before = cpu_ticks(pid);
    let started = Instant::now();
    thread::sleep(measured);
    let cpu = (cpu_ticks(pid) - ticks_before) as f64 / clock_ticks_per_second();
    let wall = started.elapsed().as_secs_f64();
    let rss_mb = support::rss_kb(pid) / 1024;

    drop(stops);
    for thread in threads {
        thread.join().expect("a thread panicked");
    }
    let received = receiver.join().expect("the receiver panicked");
    println!(
        "W={w} {variant:?}: CPU {:.2} % of one core over {wall:.0} s; RSS {rss_mb} MB; {received} \
         messages",
        100.0 * cpu / wall
    );
}
