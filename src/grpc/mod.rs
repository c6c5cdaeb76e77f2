//! The KEDA external-scaler gRPC service. The only module that sees protobuf types: it turns
//! requests into [`Trigger`]s, asks the watch registry, and turns what module `answer`
//! decides into protobuf messages and status codes.
//!
//! Handlers run on grpcio's completion-queue threads and never touch Kafka: they read the
//! store, and only for a watch's very first reading wait (briefly, well inside KEDA's 3 s
//! deadline) for its first poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, Service, ServiceBuilder, UnarySink};
use log::{debug, warn};

use crate::answer::{self, Freshness, Served};
use crate::config::ClusterSet;
use crate::estimate::Decision;
use crate::trigger::Trigger;
use crate::watch::{Registry, WatchLimit};

mod health;
mod push;
pub mod stats;

pub use health::{health_service, Health};
pub use push::{Pusher, KEEPALIVE};
pub use stats::RpcStats;

/// Generated from `proto/` by build.rs: messages, and a `METHOD_*` table per file.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
    pub use externalscaler::*;
    pub use externalscaler_grpc::*;
}

use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The name gRPC clients use for this service, e.g. in health checks.
pub const SERVICE_NAME: &str = "externalscaler.ExternalScaler";

/// How long a handler waits for a new watch's first poll before answering UNAVAILABLE.
pub const FIRST_SAMPLE_WAIT: Duration = Duration::from_millis(1500);

/// The push thread never waits for a first poll: it decides again when the poll is in.
const NO_WAIT: Duration = Duration::ZERO;

/// Builds the ExternalScaler service over `registry`, with the `push` thread that serves its
/// streams; `updates` carries the ids of watches with a new reading. `cluster` is the
/// configured Kafka cluster, the only one triggers may name.
///
/// While polls fail, or once the next poll's sample is overdue, the last good sample is
/// served until it is `freshness.stale_after` old, as it stood when the next poll was due (IsActive
/// included: missing data neither completes an idle window nor wakes an idle workload). An
/// older sample is not served: KEDA must fall back rather than scale on old data.
pub fn external_scaler(
    registry: Arc<Registry>,
    clusters: ClusterSet,
    freshness: Freshness,
    updates: Receiver<u64>,
    stats: Arc<RpcStats>,
) -> std::io::Result<(Service, Arc<Pusher>)> {
    let scaler = Scaler {
        registry,
        clusters: Arc::new(clusters),
        freshness,
        stats,
    };
    let pusher = Arc::new(Pusher::start(scaler.clone(), updates)?);
    let is_active = scaler.clone();
    let get_metric_spec = scaler.clone();
    let stream_spec = (scaler.clone(), Arc::clone(&pusher));
    let stream_active = (scaler.clone(), Arc::clone(&pusher));
    let get_metrics = scaler;
    let service = ServiceBuilder::new()
        .add_server_streaming_handler(
            &proto::METHOD_STREAM_IS_ACTIVE,
            move |ctx, request: ScaledObjectRef, sink| {
                let (scaler, pusher) = &stream_active;
                let started = Instant::now();
                let opened = caller(&request).and_then(|caller| {
                    let trigger = scaler.trigger(&request.scalerMetadata)?;
                    scaler.registry.watch(&trigger).map_err(exhausted)?;
                    Ok((caller, trigger))
                });
                scaler
                    .stats
                    .record("StreamIsActive", &opened, started.elapsed());
                match opened {
                    Ok((caller, trigger)) => pusher.stream_is_active(&ctx, caller, trigger, sink),
                    Err(status) => {
                        let caller = caller(&request).unwrap_or_else(|_| INVALID_CALLER.into());
                        refuse_stream(&ctx, sink, "StreamIsActive", &caller, status)
                    }
                }
            },
        )
        .add_server_streaming_handler(
            &proto::METHOD_STREAM_METRIC_SPEC,
            move |ctx, request: ScaledObjectRef, sink| {
                let (scaler, pusher) = &stream_spec;
                let started = Instant::now();
                let opened = caller(&request).and_then(|caller| {
                    let trigger = scaler.trigger(&request.scalerMetadata)?;
                    let spec = scaler.metric_spec(&request, &caller)?;
                    Ok((caller, trigger, spec))
                });
                scaler
                    .stats
                    .record("StreamMetricSpec", &opened, started.elapsed());
                match opened {
                    Ok((caller, trigger, spec)) => {
                        pusher.stream_metric_spec(&ctx, caller, trigger, spec, sink)
                    }
                    Err(status) => {
                        let caller = caller(&request).unwrap_or_else(|_| INVALID_CALLER.into());
                        refuse_stream(&ctx, sink, "StreamMetricSpec", &caller, status)
                    }
                }
            },
        )
        .add_unary_handler(
            &proto::METHOD_IS_ACTIVE,
            move |ctx, request: ScaledObjectRef, sink| {
                let started = Instant::now();
                let caller = caller(&request);
                let answer = caller
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|caller| is_active.is_active(&request, caller));
                is_active
                    .stats
                    .record("IsActive", &answer, started.elapsed());
                let caller = caller.as_deref().unwrap_or(INVALID_CALLER);
                reply(&ctx, sink, "IsActive", caller, answer);
            },
        )
        .add_unary_handler(
            &proto::METHOD_GET_METRIC_SPEC,
            move |ctx, request: ScaledObjectRef, sink| {
                let started = Instant::now();
                let caller = caller(&request);
                let answer = caller
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|caller| get_metric_spec.metric_spec(&request, caller));
                get_metric_spec
                    .stats
                    .record("GetMetricSpec", &answer, started.elapsed());
                let caller = caller.as_deref().unwrap_or(INVALID_CALLER);
                reply(&ctx, sink, "GetMetricSpec", caller, answer);
            },
        )
        .add_unary_handler(
            &proto::METHOD_GET_METRICS,
            move |ctx, request: GetMetricsRequest, sink| {
                let started = Instant::now();
                let caller = request.scaledObjectRef.as_ref().map(caller);
                let answer = match &caller {
                    Some(Err(status)) => Err(status.clone()),
                    Some(Ok(caller)) => get_metrics.metrics(&request, caller),
                    None => get_metrics.metrics(&request, INVALID_CALLER),
                };
                get_metrics
                    .stats
                    .record("GetMetrics", &answer, started.elapsed());
                let caller = match &caller {
                    Some(Ok(caller)) => caller.as_str(),
                    _ => INVALID_CALLER,
                };
                reply(&ctx, sink, "GetMetrics", caller, answer);
            },
        )
        .build();
    Ok((service, pusher))
}

#[derive(Clone)]
struct Scaler {
    registry: Arc<Registry>,
    clusters: Arc<ClusterSet>,
    freshness: Freshness,
    stats: Arc<RpcStats>,
}

impl Scaler {
    fn is_active(
        &self,
        request: &ScaledObjectRef,
        caller: &str,
    ) -> Result<IsActiveResponse, RpcStatus> {
        let trigger = self.trigger(&request.scalerMetadata)?;
        let (active, _) = self.activity(&trigger, caller, FIRST_SAMPLE_WAIT)?;
        Ok(IsActiveResponse {
            result: active,
            ..Default::default()
        })
    }

    /// The trigger's activity and its watch's id, waiting up to `wait` for a new watch's
    /// first poll. While polls fail, the activity of the last good sample as it stood.
    fn activity(
        &self,
        trigger: &Trigger,
        caller: &str,
        wait: Duration,
    ) -> Result<(bool, u64), RpcStatus> {
        let (served, watch_id) = self.current_estimate(trigger, caller, wait)?;
        Ok((served.active(&trigger.rules), watch_id))
    }

    fn metric_spec(
        &self,
        request: &ScaledObjectRef,
        caller: &str,
    ) -> Result<GetMetricSpecResponse, RpcStatus> {
        let trigger = self.trigger(&request.scalerMetadata)?;
        // KEDA asks for the spec first: registering the watch here starts its first poll
        // before the GetMetrics call that needs it.
        let slot = self.registry.watch(&trigger).map_err(exhausted)?;
        slot.note_trigger(caller, &trigger.rules);
        let target = trigger.target();
        let spec = MetricSpec {
            metricName: trigger.metric_name(),
            // Older KEDA reads only the integer; it must not round a small target to 0.
            targetSize: (target.ceil() as i64).max(1),
            targetSizeFloat: target,
            ..Default::default()
        };
        Ok(GetMetricSpecResponse {
            metricSpecs: vec![spec],
            ..Default::default()
        })
    }

    fn metrics(
        &self,
        request: &GetMetricsRequest,
        caller: &str,
    ) -> Result<GetMetricsResponse, RpcStatus> {
        let Some(object) = request.scaledObjectRef.as_ref() else {
            return Err(RpcStatus::with_message(
                RpcStatusCode::INVALID_ARGUMENT,
                "scaledObjectRef is missing: expected the ScaledObject and its trigger metadata"
                    .to_owned(),
            ));
        };
        let trigger = self.trigger(&object.scalerMetadata)?;
        let decision = self.decide(&trigger, caller)?;
        let mode = trigger.rules.metric;
        debug!(
            "GetMetrics {caller}: {} {}: {decision}",
            trigger.watch, mode
        );
        let value = decision.metric_value(mode).map_err(|why| {
            RpcStatus::with_message(
                RpcStatusCode::UNAVAILABLE,
                format!("{} of {}: {why}", mode, trigger.watch),
            )
        })?;
        let value = MetricValue {
            metricName: trigger.metric_name(),
            metricValue: decision.metric_int(mode, value),
            metricValueFloat: value,
            ..Default::default()
        };
        Ok(GetMetricsResponse {
            metricValues: vec![value],
            ..Default::default()
        })
    }

    fn trigger(&self, metadata: &HashMap<String, String>) -> Result<Trigger, RpcStatus> {
        Trigger::parse(metadata, &self.clusters).map_err(|err| {
            RpcStatus::with_message(RpcStatusCode::INVALID_ARGUMENT, err.to_string())
        })
    }

    /// The trigger's decision from its watch's latest good estimate.
    fn decide(&self, trigger: &Trigger, caller: &str) -> Result<Decision, RpcStatus> {
        let (served, _) = self.current_estimate(trigger, caller, FIRST_SAMPLE_WAIT)?;
        Ok(served.decide(&trigger.rules))
    }

    /// What the trigger's watch may serve (see [`answer::serve`]) and the watch's id, or
    /// UNAVAILABLE saying why there is nothing. Waits up to `wait` for a new watch's first
    /// poll. `caller`'s trigger is noted on the watch, for `/metrics`.
    fn current_estimate(
        &self,
        trigger: &Trigger,
        caller: &str,
        wait: Duration,
    ) -> Result<(Served, u64), RpcStatus> {
        let slot = self.registry.watch(trigger).map_err(exhausted)?;
        slot.note_trigger(caller, &trigger.rules);
        let served = answer::serve(slot.first_view(wait), self.freshness, Instant::now()).map_err(
            |unavailable| {
                RpcStatus::with_message(
                    RpcStatusCode::UNAVAILABLE,
                    unavailable.message(&trigger.watch),
                )
            },
        )?;
        Ok((served, slot.id))
    }
}

/// The answer to a trigger that would need a watch beyond `SCALER_MAX_WATCHES`.
fn exhausted(limit: WatchLimit) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::RESOURCE_EXHAUSTED, limit.to_string())
}

/// `namespace/name` of the ScaledObject asking, for logs and `/metrics` labels, once both
/// are valid Kubernetes names: they are kept with the watch, so a caller must not be able to
/// make lagscaler keep (or log) megabytes. The values are never echoed back.
fn caller(object: &ScaledObjectRef) -> Result<String, RpcStatus> {
    let refuse = |field: &str, accepted: &str| {
        RpcStatus::with_message(
            RpcStatusCode::INVALID_ARGUMENT,
            format!("scaledObjectRef.{field} is not valid: expected {accepted}"),
        )
    };
    if !crate::trigger::is_dns_label(&object.namespace) {
        return Err(refuse(
            "namespace",
            "a Kubernetes namespace name (1 to 63 of a-z, 0-9 and '-', starting and ending \
             with a letter or digit)",
        ));
    }
    if !crate::trigger::is_dns_subdomain(&object.name) {
        return Err(refuse(
            "name",
            "a Kubernetes object name (1 to 253 of a-z, 0-9, '-' and '.', each \
             dot-separated part starting and ending with a letter or digit)",
        ));
    }
    Ok(format!("{}/{}", object.namespace, object.name))
}

/// The caller of a request whose ScaledObjectRef is invalid, for the log line of its refusal.
const INVALID_CALLER: &str = "(invalid scaledObjectRef)";

/// Ends a stream that cannot be served with `status`, logged as a unary error is.
fn refuse_stream<T: Send + 'static>(
    ctx: &RpcContext<'_>,
    sink: grpcio::ServerStreamingSink<T>,
    rpc: &str,
    caller: &str,
    status: RpcStatus,
) {
    log_refusal(rpc, caller, &status);
    let failed = sink.fail(status);
    ctx.spawn(async move {
        if let Err(err) = failed.await {
            debug!("refusal not delivered: {err}");
        }
    });
}

/// Logs an error answer: bad metadata needs the operator, anything else is KEDA's fallback
/// to handle.
fn log_refusal(rpc: &str, caller: &str, status: &RpcStatus) {
    if status.code() == RpcStatusCode::INVALID_ARGUMENT {
        warn!("{rpc} {caller}: {}", status.message());
    } else {
        debug!("{rpc} {caller}: {:?} {}", status.code(), status.message());
    }
}

/// Sends the answer (or the error) and logs what `caller` gets.
fn reply<T: Send + 'static>(
    ctx: &RpcContext<'_>,
    sink: UnarySink<T>,
    rpc: &str,
    caller: &str,
    answer: Result<T, RpcStatus>,
) {
    let sent = match answer {
        Ok(response) => {
            debug!("{rpc} {caller}: ok");
            sink.success(response)
        }
        Err(status) => {
            log_refusal(rpc, caller, &status);
            sink.fail(status)
        }
    };
    ctx.spawn(async move {
        // The client may have gone (deadline, cancel); there is nobody left to tell.
        if let Err(err) = sent.await {
            debug!("answer not delivered: {err}");
        }
    });
}
