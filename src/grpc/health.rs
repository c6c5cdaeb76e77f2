//! The standard gRPC health service (`grpc.health.v1.Health/Check`), as Kubernetes probes
//! and grpc_health_probe call it. Watch is not registered and answers UNIMPLEMENTED.

use std::collections::HashMap;
use std::sync::Arc;

use grpcio::{RpcStatus, RpcStatusCode, Service, ServiceBuilder};
use parking_lot::RwLock;

use super::proto::health::health_check_response::ServingStatus;
use super::proto::health::{HealthCheckRequest, HealthCheckResponse};
use super::proto::health_grpc::METHOD_CHECK;
use super::{reply, SERVICE_NAME};

/// The serving status of the whole server (`""`) and of the ExternalScaler service.
#[derive(Clone, Default)]
pub struct Health {
    serving: Arc<RwLock<HashMap<&'static str, bool>>>,
}

impl Health {
    /// Whether the server is marked SERVING.
    pub fn is_serving(&self) -> bool {
        self.serving.read().get("").copied().unwrap_or(false)
    }

    /// Marks the server and the ExternalScaler service SERVING or NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        let mut statuses = self.serving.write();
        statuses.insert("", serving);
        statuses.insert(SERVICE_NAME, serving);
    }

    /// The service's status; NOT_FOUND for a service this server does not have.
    fn check(&self, request: &HealthCheckRequest) -> Result<HealthCheckResponse, RpcStatus> {
        let Some(serving) = self.serving.read().get(request.service.as_str()).copied() else {
            return Err(RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!("unknown service {:?}", request.service),
            ));
        };
        let status = if serving {
            ServingStatus::SERVING
        } else {
            ServingStatus::NOT_SERVING
        };
        Ok(HealthCheckResponse {
            status: status.into(),
            ..Default::default()
        })
    }
}

/// Builds the grpc.health.v1.Health service over `health`.
pub fn health_service(health: Health) -> Service {
    ServiceBuilder::new()
        .add_unary_handler(
            &METHOD_CHECK,
            move |ctx, request: HealthCheckRequest, sink| {
                let answer = health.check(&request);
                reply(&ctx, sink, "Health/Check", &request.service, answer);
            },
        )
        .build()
}
