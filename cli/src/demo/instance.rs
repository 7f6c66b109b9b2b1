//! Building the demo's instance through the real APIs: the officer
//! registers members and services with the operator API, each agency's
//! security server joins with an enrollment token and is approved, access
//! rights are granted by the providers. No back doors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_proto::id::{MemberId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_registry_client::{self as client, OperatorClient};
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::join::{self, JoinState};
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::store::{Backend, ServerStore};
use lienthong_security_server::{SecurityServer, ServerOptions};

use super::Result;

/// One agency of the demo.
pub struct Agency {
    pub name: &'static str,
    pub subsystem: SubsystemId,
    pub dir: PathBuf,
    pub server: Option<SecurityServer>,
}

impl Agency {
    pub fn server(&self) -> &SecurityServer {
        self.server.as_ref().expect("started")
    }
}

/// The running instance.
pub struct Instance {
    pub registry: Registry,
    pub registry_dir: PathBuf,
    pub anchor: Anchor,
    pub officer_token: String,
    /// population, business, tax, portal.
    pub agencies: Vec<Agency>,
}

impl Instance {
    pub fn agency(&self, subsystem_code: &str) -> &Agency {
        self.agencies
            .iter()
            .find(|a| a.subsystem.code.as_str() == subsystem_code)
            .expect("known agency")
    }
}

fn member(code: &str) -> MemberId {
    MemberId::new("VN", "GOV", code).expect("valid member")
}

/// The demo's agencies: member code, legal name, subsystem.
pub const AGENCIES: &[(&str, &str, &str)] = &[
    (
        "000102",
        "Bộ Công an (Cơ sở dữ liệu quốc gia về dân cư)",
        "population",
    ),
    ("000305", "Sở Kế hoạch và Đầu tư Hà Nội", "business"),
    ("000201", "Tổng cục Thuế", "tax"),
    ("000001", "Cổng Dịch vụ công Quốc gia", "portal"),
];

async fn approve(officer: &mut OperatorClient, id: u64, note: &str) -> Result<()> {
    officer
        .approve_request(pb::DecideRequest {
            id,
            note: note.into(),
        })
        .await?;
    Ok(())
}

/// Registry, members, subsystems and services.
pub async fn registry(dir: &Path) -> Result<(Registry, Anchor, String, OperatorClient)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    let done = init::initialise(
        &dir.join("registry"),
        &InitOptions::new("VN", &addr.to_string()),
    )?;
    client::write_anchor(&dir.join("registry").join("anchor.bin"), &done.anchor)?;
    let registry = Registry::start(RegistryOptions::new(dir.join("registry"), addr)).await?;
    let mut officer = client::operator_client(
        client::connect(&done.anchor, None).await?,
        &done.officer_token,
    )?;
    officer
        .add_member_class(pb::AddMemberClassRequest {
            code: "GOV".into(),
            description: "Cơ quan nhà nước".into(),
        })
        .await?;
    for (code, name, subsystem) in AGENCIES {
        officer
            .add_member(pb::AddMemberRequest {
                id: Some((&member(code)).into()),
                name: (*name).into(),
            })
            .await?;
        officer
            .add_subsystem(pb::AddSubsystemRequest {
                id: Some((&member(code).subsystem(subsystem)?).into()),
            })
            .await?;
    }
    for (code, subsystem, service, about) in [
        (
            "000102",
            "population",
            super::backends::PERSON_REGISTRY,
            "Tra cứu công dân theo số CCCD",
        ),
        (
            "000201",
            "tax",
            super::backends::TAX_REGISTRY,
            "Tình trạng nghĩa vụ thuế",
        ),
    ] {
        officer
            .add_service(pb::AddServiceRequest {
                id: Some((&member(code).subsystem(subsystem)?.service(service, None)?).into()),
                description: about.into(),
                personal_data: true,
            })
            .await?;
        // Its descriptor set in the service catalogue: every server's
        // consumer port then lists and describes it (server reflection),
        // so grpcurl needs no file.
        officer
            .describe_service(pb::DescribeServiceRequest {
                id: Some((&member(code).subsystem(subsystem)?.service(service, None)?).into()),
                descriptor_set: super::backends::DESCRIPTOR_SET.to_vec(),
            })
            .await?;
    }
    officer
        .set_trace_portal(pb::SetTracePortalRequest {
            portal: Some((&member("000001").subsystem("portal")?).into()),
        })
        .await?;
    Ok((registry, done.anchor, done.officer_token, officer))
}

/// Joins one agency's server: enrollment token, CSRs, officer approval,
/// certificates, client registration.
pub async fn join_agency(
    dir: &Path,
    anchor: &Anchor,
    officer: &mut OperatorClient,
    code: &str,
    subsystem: &str,
) -> Result<(PathBuf, std::net::TcpListener)> {
    let server = member(code).server("ss1")?;
    let provider = std::net::TcpListener::bind("127.0.0.1:0")?;
    let home = dir.join(format!("{code}-ss1"));
    let token = officer
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some((&server).into()),
            valid_seconds: 3600,
        })
        .await?
        .into_inner()
        .token;
    let id = join::submit_join(
        &home,
        anchor,
        &server,
        &provider.local_addr()?.to_string(),
        &token,
    )
    .await?;
    approve(officer, id, "verified with the agency by phone").await?;
    if join::poll_join(&home).await? != JoinState::Approved {
        return Err(format!("{server} was not approved").into());
    }
    let client = member(code).subsystem(subsystem)?;
    let id = join::submit_client(&home, &client).await?;
    approve(officer, id, "client of its own agency").await?;
    if join::poll_client(&home, id).await? != JoinState::Approved {
        return Err(format!("{client} was not approved").into());
    }
    Ok((home, provider))
}

/// A provider's operator: where its backend is, and who may call it.
pub fn provide(
    home: &Path,
    provider: &SubsystemId,
    service: &str,
    backend: SocketAddr,
    grant: (&SubsystemId, &str),
) -> Result<()> {
    let store = ServerStore::open(&ServerDir(home.to_owned()).store())?;
    store.set_backend(&Backend {
        provider: provider.clone(),
        service: service.into(),
        url: format!("http://{backend}"),
        timeout: Duration::from_secs(5),
    })?;
    store.grant(&AccessRule {
        subject: Subject::Subsystem(grant.0.clone()),
        provider: provider.clone(),
        service: service.into(),
        method: Some(grant.1.into()),
    })?;
    Ok(())
}

/// Starts a joined server.
pub async fn start(home: &Path, provider: std::net::TcpListener) -> Result<SecurityServer> {
    let mut opts = ServerOptions::new(home);
    opts.consumer_listen = "127.0.0.1:0".parse()?;
    opts.provider_listen = provider.local_addr()?;
    // The admin port, for the operator's console the demo prints.
    opts.admin_listen = Some("127.0.0.1:0".parse()?);
    Ok(SecurityServer::start_on(opts, Some(provider)).await?)
}
