//! `lagscaler check key=value ...`: one trigger's answers, from two real polls, for a person.
//!
//! It takes the metadata a ScaledObject's trigger would carry, checks it exactly as the
//! gRPC service does, runs the same watcher the daemon runs (same Kafka client, same plugin
//! directory, same settings) for two polls one `SCALER_POLL_INTERVAL` apart, and prints each
//! partition's offsets, lag and time lag, then what KEDA would get: the metric spec,
//! GetMetrics' value and IsActive.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::directory::Directory;
use crate::estimate::Estimate;
use crate::kafka::{Clients, CommitsFrom};
use crate::lag::Isolation;
use crate::store::{Reading, View};
use crate::trigger::Trigger;
use crate::watch::{Registry, WatchSettings};

/// The usage line, for `--help` and errors.
pub const USAGE: &str = "lagscaler check key=value [key=value ...]\n  e.g. lagscaler check \
     consumerGroup=orders topic=orders metric=eta targetEtaSeconds=60\n       lagscaler check \
     entityType=plugin pluginName=plugin-tika targetSize=5\nSettings (SCALER_*) come from the \
     environment, as for the daemon.";

/// Why a check gave no report; the text is what to tell the user.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The arguments or the trigger metadata are wrong.
    #[error("{0}")]
    Usage(String),
    /// Kafka (or the plugin directory) could not be read.
    #[error("{0}")]
    Failed(String),
}

/// Runs the check, printing to `out`.
pub fn run(args: &[String], config: &Config, out: &mut dyn Write) -> Result<(), CheckError> {
    let metadata = parse_args(args).map_err(CheckError::Usage)?;
    let trigger = Trigger::parse(&metadata, &config.cluster_set())
        .map_err(|err| CheckError::Usage(format!("invalid trigger metadata: {err}")))?;
    let clients = Clients::connect(&config.cluster_set())
        .map_err(|err| CheckError::Failed(err.to_string()))?;
    let clients = Arc::new(clients);
    let directory = Arc::new(Directory::new(config.redis.clone()));
    let (updates, _updates_rx) = crossbeam_channel::bounded(16);
    let registry = Registry::start(
        Arc::clone(&clients),
        directory,
        WatchSettings {
            poll_interval: config.poll_interval,
            ttl: Duration::from_secs(3600),
            rate_window: config.rate_window,
            stale_after: config.stale_after,
            max_watches: 1,
        },
        updates,
        // `check` reads Kafka itself, never the fleet's samples.
        None,
    )
    .map_err(|err| CheckError::Failed(format!("cannot start the watch: {err}")))?;
    let result = two_polls(&registry, &trigger, config)
        .and_then(|estimate| {
            let from = clients
                .get(trigger.watch.cluster.as_deref())
                .map(|client| client.commits_from());
            report(out, &trigger, &estimate, from).map_err(|err| err.to_string())
        })
        .map_err(CheckError::Failed);
    let deadline = Instant::now() + Duration::from_secs(4);
    if let Err(err) = registry.shutdown(deadline) {
        log::warn!("stopping the watch: {err}");
    }
    let _ = clients.shutdown();
    result
}

/// `key=value` arguments as a metadata map; a repeated key or an argument without `=` is
/// refused.
fn parse_args(args: &[String]) -> Result<HashMap<String, String>, String> {
    if args.is_empty() {
        return Err(format!("no trigger metadata given\nusage: {USAGE}"));
    }
    let mut metadata = HashMap::new();
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!("argument {arg:?} is not key=value\nusage: {USAGE}"));
        };
        if metadata.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("key {key:?} is given twice"));
        }
    }
    Ok(metadata)
}

/// Waits for the watch's first good sample and for the next one, so that rates are known.
fn two_polls(
    registry: &Registry,
    trigger: &Trigger,
    config: &Config,
) -> Result<Arc<Estimate>, String> {
    let slot = registry.watch(trigger).map_err(|err| err.to_string())?;
    // The report shows every partition's time lag, whatever the trigger's metric; the second
    // poll, the one reported, reads what that needs.
    slot.want_time_lag();
    // A poll makes a few requests, each bounded by the Kafka timeout.
    let poll_budget = 4 * config.kafka.request_timeout;
    let first = good(slot.first_view(poll_budget))?;
    let deadline = Instant::now() + config.poll_interval + poll_budget;
    loop {
        let view = slot.first_view(Duration::ZERO);
        if let Some(estimate) = &view.last_good {
            if estimate.taken_at > first.taken_at {
                return Ok(Arc::clone(estimate));
            }
        }
        if let Some(cause) = view.reading.failure() {
            return Err(format!("the second poll failed: {cause}"));
        }
        if Instant::now() >= deadline {
            return Err("the second poll did not finish in time".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn good(view: View) -> Result<Arc<Estimate>, String> {
    match (view.reading, view.last_good) {
        (_, Some(estimate)) => Ok(estimate),
        (Reading::Failed(cause) | Reading::Gone(cause), None) => {
            Err(format!("polling Kafka failed: {cause}"))
        }
        _ => Err("the first poll did not finish in time".to_owned()),
    }
}

fn report(
    out: &mut dyn Write,
    trigger: &Trigger,
    estimate: &Estimate,
    from: Option<CommitsFrom>,
) -> std::io::Result<()> {
    writeln!(out, "watch: {}", trigger.watch)?;
    match from {
        Some(CommitsFrom::Stream) => writeln!(
            out,
            "committed offsets: the commit stream (__consumer_offsets)"
        )?,
        Some(CommitsFrom::Fetch) => writeln!(
            out,
            "committed offsets: OffsetFetch (SCALER_COMMIT_SOURCE=fetch)"
        )?,
        Some(CommitsFrom::FetchFallback(why)) => writeln!(
            out,
            "committed offsets: OffsetFetch, because the commit stream cannot be read: {why}"
        )?,
        None => {}
    }
    // Where lag is measured to: the high watermark, or under read_committed the last
    // stable offset.
    let end = match trigger.watch.lag_rule.isolation {
        Isolation::ReadUncommitted => "high mark",
        Isolation::ReadCommitted => "last stable",
    };
    writeln!(
        out,
        "{:<32} {:<32} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "group",
        "topic",
        "partition",
        "log start",
        "committed",
        end,
        "lag",
        "time lag",
        "produce/s",
        "consume/s"
    )?;
    let rate = |rate: Option<f64>| rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    let time_lag =
        |seconds: Option<f64>| seconds.map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1}s"));
    for partition in &estimate.partitions {
        let offsets = &partition.offsets;
        writeln!(
            out,
            "{:<32} {:<32} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
            offsets.group,
            offsets.topic,
            offsets.partition,
            offsets.log_start,
            offsets
                .committed
                .map_or_else(|| "none".to_owned(), |c| c.to_string()),
            offsets.high_watermark,
            partition.lag,
            time_lag(partition.time_lag),
            rate(partition.produce_rate),
            rate(partition.consume_rate),
        )?;
    }
    for partition in &estimate.partitions {
        let offsets = &partition.offsets;
        if let Some(unread) = &offsets.unread {
            let earlier = estimate.taken_at.saturating_duration_since(unread.read_at);
            writeln!(
                out,
                "note: {}[{}]: its leader did not answer this poll; the log start and end \
                 read {} earlier stand in ({})",
                offsets.topic,
                offsets.partition,
                humantime::format_duration(crate::answer::round_to_ms(earlier)),
                unread.cause
            )?;
        }
    }
    let decision = trigger.rules.decide(estimate, Instant::now());
    writeln!(out, "estimate: {decision}")?;
    let mode = trigger.rules.metric;
    writeln!(
        out,
        "GetMetricSpec: metricName={} target={}",
        trigger.metric_name(),
        trigger.target()
    )?;
    match decision.metric_value(mode) {
        Ok(value) => writeln!(
            out,
            "GetMetrics: {mode}={value} (integer {})",
            decision.metric_int(mode, value)
        )?,
        Err(why) => writeln!(out, "GetMetrics: UNAVAILABLE: {mode}: {why}")?,
    }
    writeln!(out, "IsActive: {}", decision.active)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn arguments_are_key_value_pairs() {
        let metadata = parse_args(&args(&["consumerGroup=orders", "topic=a=b"])).unwrap();
        assert_eq!(metadata["consumerGroup"], "orders");
        assert_eq!(metadata["topic"], "a=b");
        assert!(parse_args(&args(&["orders"]))
            .unwrap_err()
            .contains("\"orders\" is not key=value"));
        assert!(parse_args(&args(&["topic=a", "topic=b"]))
            .unwrap_err()
            .contains("given twice"));
        assert!(parse_args(&[]).unwrap_err().contains("usage"));
    }

    #[test]
    fn a_partition_whose_leader_did_not_answer_is_named_below_the_table() {
        let clusters = Config::default().cluster_set();
        let now = Instant::now();
        let offsets = |partition, unread| crate::lag::PartitionOffsets {
            group: "orders".into(),
            topic: "events".into(),
            topic_id: "id".into(),
            partition,
            log_start: 0,
            high_watermark: 10,
            committed: Some(5),
            nothing_to_read: false,
            unread,
            waited: None,
        };
        let unread = crate::lag::Unread {
            read_at: now - Duration::from_millis(4200),
            cause: "events[1]: no offset (offset -1001): its leader did not answer".into(),
        };
        let estimate =
            crate::estimate::Window::new(Duration::from_secs(60), Duration::from_secs(20)).record(
                now,
                vec![offsets(0, None), offsets(1, Some(unread))],
                Some(1),
                crate::lag::LagRule::DEFAULT,
            );
        let metadata = parse_args(&args(&["consumerGroup=orders", "topic=events"])).unwrap();
        let trigger = Trigger::parse(&metadata, &clusters).unwrap();
        let mut out = Vec::new();
        report(&mut out, &trigger, &estimate, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        let notes: Vec<&str> = text.lines().filter(|l| l.starts_with("note:")).collect();
        assert_eq!(notes.len(), 1, "{text}");
        assert!(
            notes[0].starts_with(
                "note: events[1]: its leader did not answer this poll; the log \
                 start and end read 4s 200ms earlier stand in (events[1]: no offset"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_end_column_names_the_end_lag_is_measured_to() {
        let clusters = Config::default().cluster_set();
        let estimate =
            crate::estimate::Window::new(Duration::from_secs(60), Duration::from_secs(20)).record(
                Instant::now(),
                Vec::new(),
                Some(0),
                crate::lag::LagRule::DEFAULT,
            );
        for (isolation, end) in [
            ("read_uncommitted", "high mark"),
            ("read_committed", "last stable"),
        ] {
            let metadata = parse_args(&args(&[
                "consumerGroup=orders",
                "topic=events",
                &format!("isolationLevel={isolation}"),
            ]))
            .unwrap();
            let trigger = Trigger::parse(&metadata, &clusters).unwrap();
            let mut out = Vec::new();
            report(&mut out, &trigger, &estimate, None).unwrap();
            let text = String::from_utf8(out).unwrap();
            let header = text.lines().nth(1).unwrap();
            assert!(header.contains(end), "{isolation}: {header}");
        }
    }
}
