//! A plugin trigger, as the Azul scaler reads one: `pluginName`, `targetSize`,
//! `includeHistoric`, plus lagscaler's metric modes and activation keys.

use std::collections::{BTreeSet, HashMap};

use super::keys::{KEDA_KEYS, PLUGIN_KEYS};
use super::rules::{check_target_eta, parse_common, CommonRules};
use super::values::{invalid, parse_plugin_name, parse_target, quote};
use super::{Entity, Source, Trigger, TriggerError, WatchKey};
use crate::estimate::{MetricMode, Rules};
use crate::lag::LagRule;
use crate::spelling::{parse_bool, BoolSpelling};

/// A plugin trigger, as the Azul scaler's: `pluginName`, `targetSize`, `includeHistoric`, plus
/// lagscaler's metric modes and activation keys.
pub(super) fn parse(metadata: &HashMap<String, String>) -> Result<Trigger, TriggerError> {
    let keys: BTreeSet<&str> = metadata.keys().map(String::as_str).collect();
    for key in keys {
        if PLUGIN_KEYS.contains(&key) || KEDA_KEYS.contains(&key) {
            continue;
        }
        return Err(TriggerError::UnknownKey {
            key: quote(key),
            accepted: format!(
                "nothing else with entityType=plugin (its groups come from the \
                 dispatcher): one of the keys {}",
                PLUGIN_KEYS.join(", ")
            ),
        });
    }
    let get = |key: &str| metadata.get(key).map(String::as_str);
    let name = match get("pluginName") {
        None => {
            return Err(TriggerError::Missing {
                key: "pluginName",
                accepted: "the plugin's deployment key in the dispatcher's Redis, e.g. \
                           plugin-tika",
            })
        }
        Some(name) => parse_plugin_name(name)?,
    };
    let include_historic = match get("includeHistoric") {
        None => false,
        Some(value) => parse_bool(value, BoolSpelling::Word).ok_or_else(|| {
            invalid(
                "includeHistoric",
                value,
                "true or false (any case, spaces around allowed)",
            )
        })?,
    };
    let CommonRules {
        metric,
        activation_lag_threshold,
        activation_time_lag,
        time_lag_threshold,
        target_eta,
        idle_window,
    } = parse_common(get, Entity::Plugin)?;
    let target_size = match (get("targetSize"), metric) {
        (Some(value), MetricMode::Backlog | MetricMode::Lag) => Some(parse_target(
            "targetSize",
            value,
            "an integer from 1 to 9000000000000000: backlog minutes (or records, with \
             metric=lag) per replica",
        )?),
        (None, MetricMode::Backlog | MetricMode::Lag) => {
            return Err(TriggerError::Missing {
                key: "targetSize",
                accepted: "an integer > 0: backlog minutes (or records, with metric=lag) per \
                           replica",
            })
        }
        (Some(value), MetricMode::Eta | MetricMode::Replicas) => {
            return Err(invalid(
                "targetSize",
                value,
                "no targetSize with metric=eta or metric=replicas: targetEtaSeconds is their \
                 target",
            ))
        }
        (Some(value), MetricMode::TimeLag) => {
            return Err(invalid(
                "targetSize",
                value,
                "no targetSize with metric=timeLag: timeLagThreshold is its target",
            ))
        }
        (None, _) => None,
    };
    check_target_eta(metric, target_eta)?;
    let rules = Rules {
        metric,
        lag_threshold: target_size.unwrap_or(Rules::default().lag_threshold),
        activation_lag_threshold,
        activation_time_lag,
        time_lag_threshold,
        target_eta,
        idle_window,
        // A plugin's replicas are not its groups' members (the dispatcher consumes for
        // them), so the partition count is no cap.
        allow_idle_consumers: true,
        ..Rules::default()
    };
    Ok(Trigger {
        watch: WatchKey {
            cluster: None,
            source: Source::Plugin {
                name,
                include_historic,
            },
            topic: None,
            topic_pattern: None,
            partitions: None,
            lag_rule: LagRule::DEFAULT,
        },
        rules,
        target_size,
    })
}
