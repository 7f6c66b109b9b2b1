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
//! * Reflection lists the health and reflection services, every service
//!   the configuration offers with a descriptor set in the registry's
//!   service catalogue (as the configuration client holds them: see
//!   [`crate::conf_client`]), and every service described by the
//!   descriptor sets in the server's [`DESCRIPTORS_DIR`]
//!   (`FileDescriptorSet` files, as `protoc --descriptor_set_out`,
//!   `buf build -o` or `lienthong demo` write them, read at start), so that
//!   `grpcurl list` and `describe` work through the consumer port with no
//!   `.proto` file at hand. It follows the configuration: a service the
//!   catalogue gains or loses is listed or not from the next version on.
//!   A name two providers offer is listed once, with the descriptor set of
//!   the first in configuration order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Why the consumer port's own services could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalServiceError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a protobuf descriptor set (FileDescriptorSet): {source}", .path.display())]
    NotADescriptorSet {
        path: PathBuf,
        #[source]
        source: tonic_reflection::server::Error,
    },
    #[error("server reflection: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

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
use crate::metadata;
use lienthong_proto::time::unix_ms;

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
    /// `grpc.health.v1.Health`.
    health_routes: Routes,
    /// Both reflection services, rebuilt when the catalogue changes.
    reflection: Arc<RwLock<Routes>>,
    /// Keeps the health status and reflection in step with the
    /// configuration.
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
    /// over `descriptor_sets` (encoded `FileDescriptorSet`s) and the
    /// catalogue's sets the views hold. Must run in a Tokio runtime: it
    /// starts the task that follows the configuration.
    pub fn start(
        views: watch::Receiver<Option<Arc<ConfView>>>,
        descriptor_sets: &[Vec<u8>],
    ) -> Result<Self, LocalServiceError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let local = LocalDescriptors::new(descriptor_sets)?;
        let (first, listed) = {
            let view = views.borrow();
            (
                local.reflection(view.as_deref())?,
                catalogue_key(view.as_deref()),
            )
        };
        let reflection = Arc::new(RwLock::new(first));
        Ok(LocalServices {
            health_routes: Routes::new(health),
            health: tokio::spawn(follow_configuration(
                reporter,
                views,
                local,
                (reflection.clone(), listed),
            )),
            reflection,
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
        let routes = if request.uri().path().starts_with("/grpc.health.v1.Health/") {
            self.health_routes.clone()
        } else {
            match self.reflection.read() {
                Ok(r) => r.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            }
        };
        match routes.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The encoded descriptor sets in `dir` (files ending `.binpb`, `.pb` or
/// `.protoset`), in file-name order; none when `dir` does not exist. A file
/// that is no descriptor set is refused, naming it.
pub fn read_descriptor_sets(dir: &Path) -> Result<Vec<Vec<u8>>, LocalServiceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| LocalServiceError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
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
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if let Err(source) = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(&bytes)
            .build_v1()
        {
            return Err(LocalServiceError::NotADescriptorSet { path, source });
        }
        sets.push(bytes);
    }
    Ok(sets)
}

/// The descriptor sets of the server's own [`DESCRIPTORS_DIR`], with the
/// services they define.
struct LocalDescriptors {
    sets: Vec<Vec<u8>>,
    services: BTreeSet<String>,
}

/// The fields of `google.protobuf.FileDescriptorSet` that name services.
#[derive(Clone, PartialEq, prost::Message)]
struct FileSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileNames>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileNames {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceName>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceName {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// What reflection lists from the catalogue: (service name, digest) of
/// each service offered with a descriptor set the server holds.
type CatalogueKey = Vec<(String, [u8; 32])>;

fn catalogue_key(view: Option<&ConfView>) -> CatalogueKey {
    let Some(view) = view else { return Vec::new() };
    let mut key: CatalogueKey = view
        .described()
        .iter()
        .filter(|d| view.descriptor_set(&d.sha256).is_some())
        .map(|d| (d.service.clone(), d.sha256))
        .collect();
    key.sort();
    key
}

impl LocalDescriptors {
    fn new(sets: &[Vec<u8>]) -> Result<Self, LocalServiceError> {
        let mut services = BTreeSet::new();
        for set in sets {
            let names = <FileSet as prost::Message>::decode(set.as_slice())?;
            for f in names.file {
                let package = f.package.unwrap_or_default();
                for s in f.service {
                    let name = s.name.unwrap_or_default();
                    services.insert(if package.is_empty() {
                        name
                    } else {
                        format!("{package}.{name}")
                    });
                }
            }
        }
        Ok(LocalDescriptors {
            sets: sets.to_vec(),
            services,
        })
    }

    /// Both reflection services over the local sets and the catalogue's
    /// sets that `view` holds, listing exactly the services they are for.
    fn reflection(&self, view: Option<&ConfView>) -> Result<Routes, LocalServiceError> {
        let mut names: BTreeSet<&str> = self.services.iter().map(String::as_str).collect();
        names.insert("grpc.health.v1.Health");
        let mut sets: Vec<&[u8]> = vec![tonic_health::pb::FILE_DESCRIPTOR_SET];
        sets.extend(self.sets.iter().map(Vec::as_slice));
        if let Some(view) = view {
            for d in view.described() {
                if let Some(set) = view.descriptor_set(&d.sha256) {
                    names.insert(d.service.as_str());
                    sets.push(set.bytes());
                }
            }
        }
        let builder = || {
            let mut b = tonic_reflection::server::Builder::configure();
            for set in &sets {
                b = b.register_encoded_file_descriptor_set(set);
            }
            for name in &names {
                b = b.with_service_name(*name);
            }
            b
        };
        let v1 = builder()
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()?;
        let v1alpha = builder()
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()?;
        Ok(Routes::new(v1).add_service(v1alpha))
    }
}

/// The server's health as the configuration in force makes it.
fn status(view: Option<&ConfView>, now: SystemTime) -> ServingStatus {
    match view {
        Some(v) if !v.is_expired(now) => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

/// Sets the overall status at every new configuration and at the expiry
/// of the one in force, and rebuilds reflection when the catalogue's
/// services change; ends when the configuration client goes away.
async fn follow_configuration(
    reporter: HealthReporter,
    mut views: watch::Receiver<Option<Arc<ConfView>>>,
    local: LocalDescriptors,
    (reflection, mut listed): (Arc<RwLock<Routes>>, CatalogueKey),
) {
    loop {
        let view = views.borrow_and_update().clone();
        let key = catalogue_key(view.as_deref());
        if key != listed {
            match local.reflection(view.as_deref()) {
                Ok(routes) => {
                    match reflection.write() {
                        Ok(mut r) => *r = routes,
                        Err(poisoned) => *poisoned.into_inner() = routes,
                    }
                    tracing::info!(
                        services = key.len(),
                        "server reflection follows the service catalogue"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "server reflection kept as it was"),
            }
            listed = key;
        }
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
