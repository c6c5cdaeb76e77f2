//! The rule keys both kinds of trigger read (`metric`, `activationLagThreshold`,
//! `activationTimeLagThreshold`, `idleWindow`, `targetEtaSeconds`, `timeLagThreshold`),
//! parsed in one place.

use std::time::Duration;

use super::values::{invalid, parse_idle_window, parse_integer, parse_target_eta, parse_time_lag};
use super::{Entity, TriggerError};
use crate::estimate::MetricMode;

/// The rule keys both kinds of trigger read.
pub(super) struct CommonRules {
    /// `metric`.
    pub(super) metric: MetricMode,
    /// `activationLagThreshold`, 0 when unset.
    pub(super) activation_lag_threshold: i64,
    /// `activationTimeLagThreshold`.
    pub(super) activation_time_lag: Option<Duration>,
    /// `timeLagThreshold`.
    pub(super) time_lag_threshold: Option<Duration>,
    /// `targetEtaSeconds`.
    pub(super) target_eta: Option<Duration>,
    /// `idleWindow`, none when unset.
    pub(super) idle_window: Duration,
}

/// Reads the rule keys both kinds of trigger share, through `get`. The metric modes differ:
/// a consumer group's default is KEDA's `lag` and `backlog` is not one of its modes; a
/// plugin's default is the Azul scaler's `backlog`.
pub(super) fn parse_common<'m>(
    get: impl Fn(&str) -> Option<&'m str>,
    entity: Entity,
) -> Result<CommonRules, TriggerError> {
    let activation_lag_threshold = match get("activationLagThreshold") {
        None => 0,
        Some(value) => parse_integer("activationLagThreshold", value, 0, "an integer >= 0")?,
    };
    let metric = match (get("metric").map(str::trim), entity) {
        (None | Some("lag"), Entity::ConsumerGroup) | (Some("lag"), Entity::Plugin) => {
            MetricMode::Lag
        }
        (None | Some("backlog"), Entity::Plugin) => MetricMode::Backlog,
        (Some("eta"), _) => MetricMode::Eta,
        (Some("replicas"), _) => MetricMode::Replicas,
        (Some("timeLag"), _) => MetricMode::TimeLag,
        (Some(other), Entity::ConsumerGroup) => {
            return Err(invalid(
                "metric",
                other,
                "lag, eta, replicas or timeLag (backlog is for entityType=plugin)",
            ))
        }
        (Some(other), Entity::Plugin) => {
            return Err(invalid(
                "metric",
                other,
                "backlog, lag, eta, replicas or timeLag",
            ))
        }
    };
    let time_lag_threshold = get("timeLagThreshold")
        .map(|value| parse_time_lag("timeLagThreshold", value, false))
        .transpose()?;
    let activation_time_lag = get("activationTimeLagThreshold")
        .map(|value| parse_time_lag("activationTimeLagThreshold", value, true))
        .transpose()?;
    if metric == MetricMode::TimeLag && time_lag_threshold.is_none() {
        return Err(TriggerError::Missing {
            key: "timeLagThreshold",
            accepted: "the seconds the oldest record not consumed may wait (a number > 0), \
                       required by metric=timeLag",
        });
    }
    if metric != MetricMode::TimeLag && time_lag_threshold.is_some() {
        return Err(invalid(
            "timeLagThreshold",
            get("timeLagThreshold").unwrap_or_default(),
            "nothing unless metric=timeLag: it is that metric's target",
        ));
    }
    let target_eta = get("targetEtaSeconds").map(parse_target_eta).transpose()?;
    let idle_window = match get("idleWindow") {
        None => Duration::ZERO,
        Some(value) => parse_idle_window(value)?,
    };
    Ok(CommonRules {
        metric,
        activation_lag_threshold,
        activation_time_lag,
        time_lag_threshold,
        target_eta,
        idle_window,
    })
}

/// `eta` and `replicas` need `targetEtaSeconds`.
pub(super) fn check_target_eta(
    metric: MetricMode,
    target_eta: Option<Duration>,
) -> Result<(), TriggerError> {
    if matches!(metric, MetricMode::Eta | MetricMode::Replicas) && target_eta.is_none() {
        return Err(TriggerError::Missing {
            key: "targetEtaSeconds",
            accepted: "seconds to drain the lag in (a number > 0), required by metric=eta \
                       and metric=replicas",
        });
    }
    Ok(())
}
