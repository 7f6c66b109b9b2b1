//! Fixtures of the page's tests: canned traces, the page on a loopback
//! port, the standard OpenID provider (npm `oidc-provider`, started with
//! node), a small cookie-keeping HTTP client, and Chromium's driver.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lienthong_portal_web::app::{Portal, router};
use lienthong_portal_web::bundle::Bundle;
use lienthong_portal_web::http_client::HttpClient;
use lienthong_portal_web::oidc::{Oidc, OidcConfig};
use lienthong_portal_web::source::{BoxFuture, SourceError, TraceSource, Traced};
use lienthong_portal_web::state::Limits;
use lienthong_proto::fields::DataSubjectFormats;
use lienthong_proto::pb::trace::v1::Side;
use lienthong_security_server::trace::pairing::Status;
use lienthong_security_server::trace::portal::{TraceReport, TracedExchange};

pub const FOUNDER: &str = "001099012345";
pub const SECOND: &str = "001099099999";
pub const NOBODY: &str = "001099000001";
pub const CLIENT_ID: &str = "lienthong-portal-test";
pub const CLIENT_SECRET: &str = "test-secret-not-for-production";

fn exchange(
    id: &str,
    at_ms: i64,
    client: &str,
    method: &str,
    purpose: &str,
    official: &str,
    fault: &str,
) -> TracedExchange {
    TracedExchange {
        message_id: id.into(),
        at_ms,
        client: client.into(),
        service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
        method: method.into(),
        purpose: purpose.into(),
        user_id: official.into(),
        grpc_status: if fault.is_empty() { 0 } else { 7 },
        fault: fault.into(),
        logged_by: vec![
            ("VN/GOV/000305/ss1".parse().unwrap(), Side::Consumer),
            ("VN/GOV/000102/ss1".parse().unwrap(), Side::Provider),
        ],
        status: Status::Verified,
        verified: true,
    }
}

/// The founder's three accesses; the second citizen's one access whose
/// every field is markup; nobody's none.
pub fn reports() -> HashMap<String, TraceReport> {
    let mut founder = TraceReport {
        exchanges: vec![
            exchange(
                "m-3",
                1_780_000_300_000,
                "VN/GOV/000201/tax",
                "GetPerson",
                "curiosity",
                "canbo.thue",
                "server.serverproxy.access_denied",
            ),
            exchange(
                "m-2",
                1_780_000_200_000,
                "VN/GOV/000305/business",
                "GetTaxStatus",
                "Đăng ký doanh nghiệp - hồ sơ 2026-114",
                "chuyenvien.hoa",
                "",
            ),
            exchange(
                "m-1",
                1_780_000_100_000,
                "VN/GOV/000305/business",
                "GetPerson",
                "Đăng ký doanh nghiệp - hồ sơ 2026-114",
                "chuyenvien.hoa",
                "",
            ),
        ],
        ..Default::default()
    };
    founder.withheld.insert(1_790_000_000_000, 2);
    let second = TraceReport {
        exchanges: vec![exchange(
            "<img src=x onerror=alert(1)>",
            1_780_000_000_000,
            "VN/GOV/000305/business",
            "<script>alert('method')</script>",
            "<script>alert('purpose')</script>",
            "<b onmouseover=alert(1)>official</b>",
            "\"><script>alert('fault')</script>",
        )],
        unanswered: vec![(
            "VN/GOV/000201/ss1".parse().unwrap(),
            "<script>alert('unanswered')</script>".into(),
        )],
        failures: vec![(
            "VN/GOV/000102/ss1".parse().unwrap(),
            "<iframe src=//evil>failure</iframe>".into(),
        )],
        ..Default::default()
    };
    let mut m = HashMap::new();
    m.insert(FOUNDER.to_owned(), founder);
    m.insert(SECOND.to_owned(), second);
    m
}

/// Canned answers, counting how often it was asked.
pub struct FakeSource {
    pub reports: HashMap<String, TraceReport>,
    pub asked: std::sync::atomic::AtomicUsize,
}

impl FakeSource {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeSource {
            reports: reports(),
            asked: Default::default(),
        })
    }
}

impl TraceSource for FakeSource {
    fn canonical_subject(&self, claimed: &str) -> Result<String, SourceError> {
        Ok(DataSubjectFormats::default().canonical(claimed)?.to_owned())
    }

    fn trace<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Traced, SourceError>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let report = self.reports.get(subject).cloned().unwrap_or_default();
        let mut names = BTreeMap::new();
        names.insert(
            "VN/GOV/000305".to_owned(),
            "Sở Kế hoạch và Đầu tư Hà Nội".to_owned(),
        );
        names.insert(
            "VN/GOV/000201".to_owned(),
            "Cục Thuế <i>Hà Nội</i>".to_owned(),
        );
        Box::pin(async move {
            Ok(Traced {
                report,
                bundle: Bundle::new(subject, 1_780_000_400_000, Vec::new(), BTreeMap::new()),
                member_names: names,
                at_ms: 1_780_000_400_000,
            })
        })
    }
}

/// A page on a loopback port, its listener bound before the provider
/// starts (the provider needs the redirect URI).
pub struct Page {
    pub listener: Option<tokio::net::TcpListener>,
    pub addr: SocketAddr,
}

impl Page {
    pub async fn bind() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Page {
            listener: Some(listener),
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/auth/callback", self.url())
    }

    /// Serves with login at `issuer` and answers from `source`.
    pub fn serve(
        &mut self,
        issuer: &str,
        acr: &[&str],
        source: Arc<dyn TraceSource>,
        limits: Limits,
    ) {
        let oidc = Oidc::new(
            OidcConfig {
                issuer: issuer.into(),
                client_id: CLIENT_ID.into(),
                client_secret: Some(CLIENT_SECRET.into()),
                redirect_url: self.redirect_uri(),
                personal_id_claim: "personal_id".into(),
                accepted_acr: acr.iter().map(|s| s.to_string()).collect(),
                scopes: Vec::new(),
            },
            HttpClient::new().unwrap(),
        )
        .unwrap();
        let portal = Portal::new(oidc, source, limits, false, None);
        let listener = self.listener.take().expect("served once");
        tokio::spawn(lienthong_portal_web::serve::serve(
            listener,
            None,
            router(Arc::new(portal)),
            std::future::pending(),
        ));
    }
}

/// Says why a test does not run, and lets it return.
pub fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// The npm package `oidc-provider`, run by node.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcProvider {
    /// Starts it for a client redirecting to `redirect_uri`, asserting
    /// `acr`; None (with the reason printed) where node or the package is
    /// not installed (.ci/run installs both).
    pub async fn start(redirect_uri: &str, acr: &str) -> Option<Self> {
        Self::start_with_roles(redirect_uri, acr, "{}").await
    }

    /// As [`Self::start`], asserting `lienthong_registry_role` for the
    /// accounts `roles` (JSON: account -> role) names.
    pub async fn start_with_roles(redirect_uri: &str, acr: &str, roles: &str) -> Option<Self> {
        let dir = provider_dir();
        if !dir.join("node_modules/oidc-provider").exists() {
            skip(&format!(
                "oidc-provider is not installed: run `npm ci` in {} (.ci/run does)",
                dir.display()
            ));
            return None;
        }
        if Command::new("node").arg("--version").output().is_err() {
            skip("node is not installed (.ci/run installs it)");
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let issuer = format!("http://127.0.0.1:{port}");
        let child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", redirect_uri)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("ACR", acr)
            .env("ROLES", roles)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let p = OidcProvider { child, issuer };
        let discovery = format!("{}/.well-known/openid-configuration", p.issuer);
        for _ in 0..100 {
            if Browserless::new().get(&discovery).await.0 == 200 {
                return Some(p);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("oidc-provider did not start on {}", p.issuer);
    }
}

/// An HTTP client that keeps cookies per host and follows no redirect by
/// itself.
pub struct Browserless {
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookies: HashMap<String, BTreeMap<String, String>>,
}

pub type Answer = (u16, http::HeaderMap, String);

impl Browserless {
    pub fn new() -> Self {
        Browserless {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, method: &str, url: &str, form: Option<String>) -> Answer {
        let uri: http::Uri = url.parse().unwrap();
        let host = uri.authority().unwrap().to_string();
        let mut req = http::Request::builder().method(method).uri(uri);
        let jar = self.cookies.entry(host.clone()).or_default();
        if !jar.is_empty() {
            let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", c.join("; "));
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let resp = match self.client.request(req.body(body).unwrap()).await {
            Ok(r) => r,
            // Status 0: nothing listens (yet).
            Err(e) => return (0, http::HeaderMap::new(), e.to_string()),
        };
        let (parts, body) = resp.into_parts();
        for v in parts.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            if let Some((k, val)) = first.split_once('=') {
                let jar = self.cookies.entry(host.clone()).or_default();
                if val.is_empty()
                    || v.contains("Max-Age=0")
                    || v.contains("expires=Thu, 01 Jan 1970")
                {
                    jar.remove(k);
                } else {
                    jar.insert(k.to_owned(), val.to_owned());
                }
            }
        }
        let text = String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned();
        (parts.status.as_u16(), parts.headers, text)
    }

    pub async fn get(&mut self, url: &str) -> Answer {
        self.send("GET", url, None).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        self.send(
            "POST",
            url,
            Some(serde_urlencoded::to_string(form).unwrap()),
        )
        .await
    }

    /// Follows redirects from `url` until one points at `stop` (returned
    /// without following it) or a page answers; at a login form of the
    /// test provider, signs in as `personal_id`.
    pub async fn walk(&mut self, url: &str, stop: &str, personal_id: &str) -> String {
        let mut url = url.to_owned();
        for _ in 0..20 {
            let (status, headers, body) = self.get(&url).await;
            let next = match status {
                300..=399 => headers["location"].to_str().unwrap().to_owned(),
                200 if body.contains("/login\"") && url.contains("/interaction/") => {
                    let (s, h, b) = self
                        .post(&format!("{url}/login"), &[("login", personal_id)])
                        .await;
                    assert!((300..400).contains(&s), "login form: {s} {b}");
                    h["location"].to_str().unwrap().to_owned()
                }
                _ => panic!("{url} answered {status}: {body}"),
            };
            let next = absolute(&url, &next);
            if next.starts_with(stop) {
                return next;
            }
            url = next;
        }
        panic!("too many redirects");
    }

    /// The whole login through the provider: returns the page's answer
    /// to the callback.
    pub async fn login(&mut self, page: &Page, personal_id: &str) -> Answer {
        let callback = self
            .walk(
                &format!("{}/login", page.url()),
                &page.redirect_uri(),
                personal_id,
            )
            .await;
        self.get(&callback).await
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let uri: http::Uri = base.parse().unwrap();
    format!("http://{}{location}", uri.authority().unwrap())
}

/// How many accesses a list page shows.
pub fn accesses(body: &str) -> usize {
    body.matches("<article class=\"access\"").count()
}

// === a registry with a server waiting for approval ===

use lienthong_certs::{KeyAlgorithm, PrivateKey};
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_proto::id::{MemberId, ServerId};
use lienthong_proto::pb::registry::v1 as regpb;
use lienthong_proto::pb::registry::v1::registration_client::RegistrationClient;

pub fn ss1() -> ServerId {
    MemberId::new("VN", "GOV", "000102")
        .unwrap()
        .server("ss1")
        .unwrap()
}

/// The member ss1 belongs to, and an enrollment token for ss1.
async fn member_and_token(reg: &TestRegistry) -> String {
    let mut op = reg.officer().await;
    op.add_member_class(regpb::AddMemberClassRequest {
        code: "GOV".into(),
        description: "Government".into(),
    })
    .await
    .unwrap();
    op.add_member(regpb::AddMemberRequest {
        id: Some((&MemberId::new("VN", "GOV", "000102").unwrap()).into()),
        name: "Bộ Công an".into(),
    })
    .await
    .unwrap();
    op.create_enrollment_token(regpb::CreateEnrollmentTokenRequest {
        server: Some((&ss1()).into()),
        valid_seconds: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

/// A member and a server asking to join with its enrollment token.
pub async fn pending_server(reg: &TestRegistry) -> u64 {
    let token = member_and_token(reg).await;
    let auth = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let owner = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let req =
        lienthong_registry_client::first_request(&ss1(), "127.0.0.1:5500", &token, &auth, &owner)
            .unwrap();
    RegistrationClient::new(reg.channel().await)
        .submit(req)
        .await
        .unwrap()
        .into_inner()
        .id
}

/// A security server's home that asked to join as ss1 (as `lienthong
/// server init` does), and its request's id.
pub async fn pending_join(reg: &TestRegistry) -> (tempfile::TempDir, u64) {
    let token = member_and_token(reg).await;
    let home = tempfile::tempdir().unwrap();
    let id = lienthong_security_server::join::submit_join(
        home.path(),
        &reg.anchor,
        &ss1(),
        "127.0.0.1:5500",
        &token,
    )
    .await
    .unwrap();
    (home, id)
}

// === a security server's console ===

/// The operator's console of `agency`'s server on a loopback port; its URL.
pub async fn server_console(
    agency: &lienthong_integration_tests::federation::Agency,
    ttl: Option<Duration>,
) -> String {
    let admin = agency.server().admin_addr().expect("an admin port");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut c =
        lienthong_portal_web::server_console::ServerConsole::new(&format!("http://{admin}"), false)
            .unwrap();
    if let Some(ttl) = ttl {
        c = c.with_session_ttl(ttl);
    }
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        lienthong_portal_web::server_console::router(Arc::new(c)),
        std::future::pending(),
    ));
    url
}

/// The tax department asks the population registry for a person: Ok, or
/// the refusal's fault code.
pub async fn tax_gets_person(
    f: &lienthong_integration_tests::federation::Federation,
) -> Result<(), String> {
    use lienthong_integration_tests::federation::{call_metadata, fault_of, population, tax};
    f.tax
        .client()
        .await
        .unary(
            "GetPerson",
            call_metadata(&tax(), &population()),
            "001099012345",
        )
        .await
        .map(|_| ())
        .map_err(|s| fault_of(&s))
}
