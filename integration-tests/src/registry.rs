//! A real registry on a loopback socket, in a fresh temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_certs::tls::Identity;
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_registry_client::{self as client, OperatorClient};
use tonic::transport::Channel;

/// A running registry, its anchor and its first officer's token.
pub struct TestRegistry {
    pub registry: Option<Registry>,
    pub publish_interval: std::time::Duration,
    pub dir: tempfile::TempDir,
    pub anchor: Anchor,
    pub officer_token: String,
    pub addr: SocketAddr,
}

impl TestRegistry {
    /// Initialises instance `VN` and starts serving on `127.0.0.1:0`.
    pub async fn start(auto_approve: bool) -> Self {
        Self::start_with(auto_approve, 600, std::time::Duration::from_secs(60)).await
    }

    /// As [`start`](Self::start), with the configuration's validity and the
    /// publication interval chosen (tests of expiry).
    pub async fn start_with(
        auto_approve: bool,
        validity_secs: u32,
        publish_interval: std::time::Duration,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut opts = InitOptions::new("VN", "127.0.0.1:4400");
        opts.auto_approve = auto_approve;
        opts.configuration_validity_secs = validity_secs;
        let done = init::initialise(dir.path(), &opts).expect("registry init works");
        let mut t = TestRegistry {
            registry: None,
            publish_interval,
            dir,
            anchor: done.anchor,
            officer_token: done.officer_token,
            addr: "127.0.0.1:0".parse().expect("valid address"),
        };
        t.restart().await;
        t
    }

    /// (Re)starts the registry on its directory.
    pub async fn restart(&mut self) {
        if let Some(r) = self.registry.take() {
            r.shutdown().await;
        }
        // A restart binds the same port again, so the anchor stays true.
        let mut opts = RegistryOptions::new(self.path(), self.addr);
        opts.publish_interval = self.publish_interval;
        // The home's lock is an OS lock on an open file: a child another
        // test of this process forks in that instant holds a copy of the
        // stopped registry's descriptor until it execs, and with it the
        // lock. Only that refusal, naming this very process, is waited out.
        let ours = format!("already served by process {}", std::process::id());
        let mut tries = 0;
        let r = loop {
            match Registry::start(opts.clone()).await {
                Err(e) if tries < 50 && e.to_string().contains(&ours) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                r => break r.expect("registry starts"),
            }
        };
        self.addr = r.local_addr();
        // The anchor names the address actually bound.
        self.anchor.registry_addresses = vec![self.addr.to_string()];
        self.registry = Some(r);
    }

    /// Stops the registry (an outage); `restart` brings it back.
    pub async fn stop(&mut self) {
        if let Some(r) = self.registry.take() {
            r.shutdown().await;
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().expect("registry is running")
    }

    /// An anonymous TLS channel (configuration download, first contact).
    pub async fn channel(&self) -> Channel {
        client::connect(&self.anchor, None)
            .await
            .expect("registry reachable")
    }

    /// A channel presenting a security server's auth certificate.
    pub async fn channel_as(&self, identity: &Identity) -> Channel {
        client::connect(&self.anchor, Some(identity))
            .await
            .expect("registry reachable")
    }

    /// An anonymous TLS channel from the local address `local` (any of
    /// 127.0.0.0/8 on Linux): calls from several sources.
    pub async fn channel_from(&self, local: std::net::IpAddr) -> Channel {
        let ca =
            rustls_pki_types::CertificateDer::from(self.anchor.instance_ca_certificate.clone());
        let config = std::sync::Arc::new(
            lienthong_certs::tls::registry_client_config(&ca, None).expect("client config"),
        );
        let registry = self.addr;
        let connector = tower::service_fn(move |_uri: http::Uri| {
            let config = config.clone();
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(std::net::SocketAddr::new(local, 0))?;
                let tcp = socket.connect(registry).await?;
                tcp.set_nodelay(true)?;
                let name = rustls_pki_types::ServerName::IpAddress(registry.ip().into());
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        });
        tonic::transport::Endpoint::from_shared(format!("http://{registry}"))
            .expect("endpoint")
            .connect_with_connector(connector)
            .await
            .expect("registry reachable")
    }

    /// The operator client of the first officer.
    pub async fn officer(&self) -> OperatorClient {
        self.operator(&self.officer_token).await
    }

    /// An operator client with `token`.
    pub async fn operator(&self, token: &str) -> OperatorClient {
        client::operator_client(self.channel().await, token).expect("token is ASCII")
    }
}
