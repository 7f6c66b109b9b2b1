//! The agencies' own backend services, reached only through their security
//! servers: the population registry (`population.v1.PersonRegistry`) and
//! the tax registry (`tax.v1.TaxRegistry`), plain gRPC over h2c on
//! loopback, generated from the `.proto` files in `cli/proto/` — the files
//! the demo writes out for anyone calling them ([`write_protos`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::data::Citizen;

/// The generated code of `population/v1/population.proto`.
pub mod population {
    tonic::include_proto!("population.v1");
}

/// The generated code of `tax/v1/tax.proto`.
pub mod tax {
    tonic::include_proto!("tax.v1");
}

use population::person_registry_server::{PersonRegistry, PersonRegistryServer};
use population::{Person, PersonRequest};
use tax::tax_registry_server::{TaxRegistry, TaxRegistryServer};
use tax::{TaxStatus, TaxStatusRequest};

pub const PERSON_REGISTRY: &str = "population.v1.PersonRegistry";
pub const TAX_REGISTRY: &str = "tax.v1.TaxRegistry";

/// The `.proto` files of the demo's services, by path under an import root.
pub const PROTOS: &[(&str, &str)] = &[
    (
        "population/v1/population.proto",
        include_str!("../../proto/population/v1/population.proto"),
    ),
    (
        "tax/v1/tax.proto",
        include_str!("../../proto/tax/v1/tax.proto"),
    ),
];

/// The services' descriptor set (a `FileDescriptorSet`, as `protoc
/// --descriptor_set_out` writes it), for tools that take one instead of
/// the `.proto` files.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.binpb"));

/// Writes the `.proto` files under `root` (for `grpcurl -import-path`,
/// or a client's code generator) and the descriptor set beside them as
/// `demo.binpb` (for `grpcurl -protoset`); returns the descriptor set's
/// path.
pub fn write_protos(root: &Path) -> std::io::Result<PathBuf> {
    for (path, text) in PROTOS {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, text)?;
    }
    let set = root.join("demo.binpb");
    std::fs::write(&set, DESCRIPTOR_SET)?;
    Ok(set)
}

/// Citizens by personal ID.
type Records = Arc<HashMap<String, Citizen>>;

fn records(citizens: &[Citizen]) -> Records {
    Arc::new(
        citizens
            .iter()
            .map(|c| (c.personal_id.clone(), c.clone()))
            .collect(),
    )
}

fn lookup<'a>(records: &'a Records, id: &str) -> Result<&'a Citizen, Status> {
    records
        .get(id)
        .ok_or_else(|| Status::not_found(format!("no record for {id}")))
}

/// The population registry.
#[derive(Debug, Clone)]
pub struct Population(Records);

impl Population {
    pub fn new(citizens: &[Citizen]) -> Self {
        Population(records(citizens))
    }
}

#[tonic::async_trait]
impl PersonRegistry for Population {
    async fn get_person(&self, req: Request<PersonRequest>) -> Result<Response<Person>, Status> {
        let c = lookup(&self.0, &req.get_ref().personal_id)?;
        Ok(Response::new(Person {
            personal_id: c.personal_id.clone(),
            full_name: c.full_name.clone(),
            date_of_birth: c.date_of_birth.clone(),
            gender: c.gender.into(),
            permanent_address: c.permanent_address.clone(),
        }))
    }
}

/// The tax registry.
#[derive(Debug, Clone)]
pub struct Tax(Records);

impl Tax {
    pub fn new(citizens: &[Citizen]) -> Self {
        Tax(records(citizens))
    }
}

#[tonic::async_trait]
impl TaxRegistry for Tax {
    async fn get_tax_status(
        &self,
        req: Request<TaxStatusRequest>,
    ) -> Result<Response<TaxStatus>, Status> {
        let c = lookup(&self.0, &req.get_ref().personal_id)?;
        Ok(Response::new(TaxStatus {
            personal_id: c.personal_id.clone(),
            tax_code: c.tax_code.clone(),
            outstanding_vnd: c.outstanding_tax_vnd,
            in_good_standing: c.outstanding_tax_vnd == 0,
        }))
    }
}

/// Serves the population registry on a loopback port.
pub async fn serve_population(citizens: &[Citizen]) -> std::io::Result<SocketAddr> {
    let router = tonic::transport::Server::builder()
        .add_service(PersonRegistryServer::new(Population::new(citizens)));
    serve(router).await
}

/// Serves the tax registry on a loopback port.
pub async fn serve_tax(citizens: &[Citizen]) -> std::io::Result<SocketAddr> {
    let router =
        tonic::transport::Server::builder().add_service(TaxRegistryServer::new(Tax::new(citizens)));
    serve(router).await
}

/// Serves both registries on `addr` (port 0: any free port); returns the
/// bound address and the task serving them, which ends only on an error.
pub async fn serve_all(
    addr: SocketAddr,
    citizens: &[Citizen],
) -> std::io::Result<(
    SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let router = tonic::transport::Server::builder()
        .add_service(PersonRegistryServer::new(Population::new(citizens)))
        .add_service(TaxRegistryServer::new(Tax::new(citizens)));
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok((bound, tokio::spawn(router.serve_with_incoming(incoming))))
}

async fn serve(router: tonic::transport::server::Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // `serve_with_incoming` ignores the builder's nodelay: set it here.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "demo backend stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The fields of `google.protobuf.FileDescriptorSet` this test reads.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, tag = "2")]
        package: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Method {
        #[prost(string, tag = "1")]
        name: String,
    }

    #[test]
    fn the_descriptor_set_describes_the_services_the_demo_registers() {
        let set = FileSet::decode(DESCRIPTOR_SET).unwrap();
        let mut services = Vec::new();
        for file in &set.file {
            for s in &file.service {
                let methods: Vec<&str> = s.method.iter().map(|m| m.name.as_str()).collect();
                services.push(format!("{}.{} {methods:?}", file.package, s.name));
            }
        }
        services.sort();
        assert_eq!(
            services,
            [
                format!("{PERSON_REGISTRY} [\"GetPerson\"]"),
                format!("{TAX_REGISTRY} [\"GetTaxStatus\"]"),
            ]
        );
    }

    #[test]
    fn the_written_files_are_the_ones_compiled() {
        let dir = tempfile::tempdir().unwrap();
        let set = write_protos(dir.path()).unwrap();
        assert_eq!(std::fs::read(set).unwrap(), DESCRIPTOR_SET);
        for (path, _) in PROTOS {
            let written = std::fs::read_to_string(dir.path().join(path)).unwrap();
            let source = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("proto")
                    .join(path),
            )
            .unwrap();
            assert_eq!(written, source, "{path}");
        }
    }
}
