//! What the consumer port answers itself instead of forwarding:
//! `grpc.health.v1.Health` and gRPC server reflection (`grpc.reflection.v1`
//! and `v1alpha`), the services that tools such as grpcurl, Kubernetes
//! probes and load balancers expect on any gRPC port.
//!
//! Only a call that names no `lt-service` is answered here; one that names
//! a provider travels over the bus like any other call, so a provider's own
//! Health or reflection service stays reachable through it.
//!
//! * Health: the server as a whole (service `""`) is `SERVING` while its
//!   global configuration is current and `NOT_SERVING` when it has none or
//!   it has expired — exactly when exchanges are refused with
//!   `conf_expired`. `Watch` streams follow the changes.
//! * Reflection lists the health and reflection services and every service
//!   described by the descriptor sets in the server's
//!   [`DESCRIPTORS_DIR`] (`FileDescriptorSet` files, as `protoc
//!   --descriptor_set_out`, `buf build -o` or `lienthong demo` write them),
//!   read at start, so that `grpcurl list` and `describe` work through the
//!   consumer port with no `.proto` file at hand.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::ServiceExt;

use crate::conf_client::ConfView;
use crate::conf_client::view::unix_ms;
use crate::metadata;

/// The directory, in a server's home, of the descriptor sets reflection
/// serves.
pub const DESCRIPTORS_DIR: &str = "descriptors";

/// The services answered here, by gRPC service name.
pub const LOCAL_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// See the module documentation.
pub struct LocalServices {
    routes: Routes,
    /// Keeps the health status in step with the configuration.
    health: JoinHandle<()>,
}

impl std::fmt::Debug for LocalServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServices").finish_non_exhaustive()
    }
}

impl Drop for LocalServices {
    fn drop(&mut self) {
        self.health.abort();
    }
}

impl LocalServices {
    /// Health following `views` (the configuration client's), reflection
    /// over `descriptor_sets` (encoded `FileDescriptorSet`s). Must run in a
    /// Tokio runtime: it starts the task that follows the configuration.
    pub fn start(
        views: watch::Receiver<Option<Arc<ConfView>>>,
        descriptor_sets: &[Vec<u8>],
    ) -> Result<Self, String> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        let v1 = v1
            .build_v1()
            .map_err(|e| format!("server reflection: {e}"))?;
        let v1alpha = v1alpha
            .build_v1alpha()
            .map_err(|e| format!("server reflection: {e}"))?;
        Ok(LocalServices {
            routes: Routes::new(health).add_service(v1).add_service(v1alpha),
            health: tokio::spawn(follow_configuration(reporter, views)),
        })
    }

    /// Whether `request` is for this server itself: a local service, and
    /// no `lt-service` named.
    pub fn claims<B>(request: &Request<B>) -> bool {
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        service.is_some_and(|s| LOCAL_SERVICES.contains(&s))
            && !request.headers().contains_key(metadata::SERVICE)
    }

    /// Answers a call [`claims`](Self::claims) accepted.
    pub async fn call<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The encoded descriptor sets in `dir` (files ending `.binpb`, `.pb` or
/// `.protoset`), in file-name order; none when `dir` does not exist. A file
/// that is no descriptor set is refused, naming it.
pub fn read_descriptor_sets(dir: &Path) -> Result<Vec<Vec<u8>>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "binpb" || x == "pb" || x == "protoset")
        })
        .collect();
    paths.sort();
    let mut sets = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(&bytes)
            .build_v1()
            .map_err(|e| {
                format!(
                    "{}: not a protobuf descriptor set (FileDescriptorSet): {e}",
                    path.display()
                )
            })?;
        sets.push(bytes);
    }
    Ok(sets)
}

/// The server's health as the configuration in force makes it.
fn status(view: Option<&ConfView>, now: SystemTime) -> ServingStatus {
    match view {
        Some(v) if !v.is_expired(now) => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

/// Sets the overall status at every new configuration and at the expiry
/// of the one in force; ends when the configuration client goes away.
async fn follow_configuration(
    reporter: HealthReporter,
    mut views: watch::Receiver<Option<Arc<ConfView>>>,
) {
    loop {
        let view = views.borrow_and_update().clone();
        let now = SystemTime::now();
        let serving = status(view.as_deref(), now);
        reporter.set_service_status("", serving).await;
        let expiry = match (&view, serving) {
            (Some(v), ServingStatus::Serving) => {
                let left = v.expires_at_ms.saturating_sub(unix_ms(now)).max(0) as u64;
                // A millisecond past the expiry, when is_expired holds.
                Some(Duration::from_millis(left + 1))
            }
            _ => None,
        };
        tokio::select! {
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(expiry.unwrap_or_default()), if expiry.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests;
