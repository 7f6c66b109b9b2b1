//! The configuration client: downloads the global configuration with only
//! the anchor, verifies it, keeps the last good copy on disk, and polls for
//! newer versions (every `poll_interval_seconds` of the configuration,
//! default 60 s; after a failure it retries from 1 s, doubling up to the
//! poll interval). A server serves from its cached copy across its own
//! restarts and across registry outages until the copy expires.
//!
//! Each new version replaces the indexed [`ConfView`] and the mutual-TLS
//! [`TrustStore`] at once, so new pins, revocations and addresses apply to
//! the next handshake and exchange without a restart. Downloads fail over
//! between the registry addresses of the anchor and of the configuration
//! in force (a registry's nodes), starting with the one that answered last.
//!
//! The services' descriptor sets that the configuration names by digest
//! (the service catalogue) are kept beside the cached configuration, in
//! [`CATALOGUE_DIR`], one file per digest: after each poll the client
//! downloads those it lacks, checks each against its digest, and republishes
//! the view holding them, so reflection on the consumer port lists them. A
//! set the registry cannot give is asked for again at the next poll; it
//! never holds up the configuration itself.
//!
//! A poll can also be asked for ([`ConfClient::poll_now`]): the provider
//! side asks when a peer presents a certificate the configuration does not
//! pin, which is what a server that joined since the last poll looks like.
//! Asked-for polls are at most one per [`MIN_ASKED_POLL_INTERVAL`], so
//! strangers knocking cannot turn the server against the registry.

pub mod view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lienthong_certs::CertError;
use lienthong_certs::conf::ConfError;
use lienthong_certs::tls::{Trust, TrustStore};
use lienthong_proto::catalogue::DescriptorSet;
use lienthong_proto::pb::globalconf::v1::{Anchor, SignedConfiguration};
use lienthong_registry_client::catalogue::CatalogueError;
use lienthong_registry_client::configuration::CacheError;
use lienthong_registry_client::{ClientError, Registries, catalogue, configuration};
use tokio::sync::{Notify, watch};

use self::view::ViewError;

pub use view::ConfView;

/// The directory, beside the cached configuration, of the catalogue's
/// descriptor sets (`<sha256 hex>.binpb`).
pub const CATALOGUE_DIR: &str = "catalogue";

/// Why a configuration could not be downloaded, loaded or kept.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    /// The registries could not be reached, or refused.
    #[error(transparent)]
    Download(#[from] ClientError),
    /// The document's signature, instance or version is not acceptable.
    #[error(transparent)]
    Verify(#[from] ConfError),
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("configuration trust: {0}")]
    Trust(#[source] CertError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot keep the configuration on disk: {0}")]
    KeepOnDisk(#[source] CertError),
    #[error(transparent)]
    Catalogue(CatalogueError),
    #[error("cannot keep it in {}: {source}", .dir.display())]
    KeepDescriptorSet {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// First retry delay after a failed download; each further failure
/// doubles it, up to the poll interval, with random jitter (up to the
/// delay itself) so that an instance's servers do not retry in step
/// after the registry comes back.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Shortest time between two polls asked for with [`ConfClient::poll_now`].
pub const MIN_ASKED_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What the configuration client knows about its own health.
#[derive(Debug, Clone, Default)]
pub struct ConfStatus {
    pub version: Option<u64>,
    pub expires_at_ms: Option<i64>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// See the module documentation.
pub struct ConfClient {
    anchor: Anchor,
    registries: Arc<Registries>,
    cache: PathBuf,
    trust: TrustStore,
    current: watch::Sender<Option<Arc<ConfView>>>,
    status: Mutex<ConfStatus>,
    poll_interval: Option<Duration>,
    /// Wakes the polling loop before its time.
    asked: Notify,
    /// When a poll was last asked for and granted.
    last_asked: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ConfClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfClient")
            .field("instance", &self.anchor.instance)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl ConfClient {
    /// A client for the instance of `anchor`, caching in `cache` and
    /// keeping `trust` in step with the configuration.
    pub fn new(anchor: Anchor, cache: PathBuf, trust: TrustStore) -> Self {
        ConfClient {
            registries: Arc::new(Registries::new(anchor.clone())),
            anchor,
            cache,
            trust,
            current: watch::Sender::new(None),
            status: Mutex::new(ConfStatus::default()),
            poll_interval: None,
            asked: Notify::new(),
            last_asked: Mutex::new(None),
        }
    }

    /// Polls at `interval` instead of the configuration's own setting
    /// (tests, and operators who know better).
    pub fn with_poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.poll_interval = interval;
        self
    }

    /// An empty trust: nothing is accepted until a configuration is loaded.
    pub fn empty_trust() -> TrustStore {
        // No CAs and no pins cannot fail to build.
        TrustStore::new(Trust::new(&[], []).expect("an empty trust is valid"))
    }

    /// The configuration in force, if any.
    pub fn view(&self) -> Option<Arc<ConfView>> {
        self.current.borrow().clone()
    }

    /// The registry's addresses as this client knows them (the anchor's
    /// and the configuration's), for other calls that must fail over.
    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ConfView>>> {
        self.current.subscribe()
    }

    pub fn status(&self) -> ConfStatus {
        match self.status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut ConfStatus)) {
        let mut g = match self.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g);
    }

    fn install(
        &self,
        signed: &SignedConfiguration,
        held: Option<u64>,
    ) -> Result<u64, ConfigurationError> {
        let now = SystemTime::now();
        // A cached copy may have expired: it is still loaded (so `status`
        // can say so and exchanges fail with conf_expired), never used.
        let decoded = configuration::verify(&self.anchor, signed, held, now)?;
        let view = ConfView::build(&decoded, now)?;
        let held = read_descriptor_sets(&self.catalogue_dir(), &view);
        let view = view.with_descriptor_sets(&held);
        for s in &view.skipped {
            tracing::warn!(version = view.version, entry = %s, "configuration entry skipped");
        }
        self.trust
            .replace(view.trust().map_err(ConfigurationError::Trust)?);
        self.registries.learn(&view.registry_addresses);
        let version = view.version;
        let expires = view.expires_at_ms;
        self.current.send_replace(Some(Arc::new(view)));
        self.set_status(|s| {
            s.version = Some(version);
            s.expires_at_ms = Some(expires);
        });
        Ok(version)
    }

    /// Uses a view another client already verified (e.g. a server's copy).
    pub fn install_view(&self, view: Option<Arc<ConfView>>) {
        if let Some(v) = view {
            if let Ok(trust) = v.trust() {
                self.trust.replace(trust);
            }
            self.registries.learn(&v.registry_addresses);
            self.set_status(|s| {
                s.version = Some(v.version);
                s.expires_at_ms = Some(v.expires_at_ms);
            });
            self.current.send_replace(Some(v));
        }
    }

    /// Loads the cached copy, if there is one (signature and instance
    /// checked; an expired copy is loaded but refuses every exchange).
    pub fn load_cached(&self) -> Result<Option<u64>, ConfigurationError> {
        match configuration::read_cached(&self.cache)? {
            Some(signed) => self.install(&signed, None).map(Some),
            None => Ok(None),
        }
    }

    /// Where the catalogue's descriptor sets are kept.
    pub fn catalogue_dir(&self) -> PathBuf {
        self.cache.with_file_name(CATALOGUE_DIR)
    }

    /// Downloads the descriptor sets the configuration in force names and
    /// this server lacks, keeps them on disk, and republishes the view
    /// holding them. What cannot be downloaded is said and asked for again
    /// at the next poll.
    pub async fn complete_catalogue(&self) {
        let Some(view) = self.view() else { return };
        let missing = view.missing_descriptor_sets();
        if missing.is_empty() {
            // What a newer version no longer names (a service withdrawn
            // or described anew) is not kept.
            forget_unnamed(&self.catalogue_dir(), &view);
            return;
        }
        let channel = match self.registries.connect(None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, missing = missing.len(), "service catalogue: descriptor sets not downloaded");
                return;
            }
        };
        let dir = self.catalogue_dir();
        let mut fetched = 0;
        for digest in &missing {
            let kept = match catalogue::download(channel.clone(), digest).await {
                Ok(set) => keep_descriptor_set(&dir, digest, set.bytes()),
                Err(e) => Err(ConfigurationError::Catalogue(e)),
            };
            match kept {
                Ok(()) => fetched += 1,
                Err(e) => tracing::warn!(
                    sha256 = %hex::encode(digest),
                    error = %e,
                    "service catalogue: a descriptor set was not downloaded; asked for again at the next poll"
                ),
            }
        }
        if fetched == 0 {
            return;
        }
        let held = read_descriptor_sets(&dir, &view);
        let completed = Arc::new((*view).clone().with_descriptor_sets(&held));
        // Only onto the version it completes: a newer one read its own sets.
        self.current.send_if_modified(|current| match current {
            Some(c) if c.version == completed.version => {
                *current = Some(completed.clone());
                true
            }
            _ => false,
        });
        tracing::info!(
            version = view.version,
            downloaded = fetched,
            "service catalogue: descriptor sets downloaded"
        );
        forget_unnamed(&dir, &view);
    }

    /// Downloads a newer configuration if there is one; returns whether
    /// one was installed.
    pub async fn refresh(&self) -> Result<bool, ConfigurationError> {
        let held = self.view().map(|v| v.version);
        let reply = configuration::download_from(&self.registries, None, held).await?;
        self.set_status(|s| {
            s.last_success = Some(SystemTime::now());
            s.last_error = None;
        });
        let Some(signed) = reply else {
            self.complete_catalogue().await;
            return Ok(false);
        };
        let version = self.install(&signed, held)?;
        configuration::write_cached(&self.cache, &signed)
            .map_err(ConfigurationError::KeepOnDisk)?;
        tracing::info!(version, "global configuration installed");
        self.complete_catalogue().await;
        Ok(true)
    }

    /// Asks the polling loop ([`run`](Self::run)) to poll now, `why` said
    /// in the log; returns whether it will. Granted at most once per
    /// [`MIN_ASKED_POLL_INTERVAL`].
    pub fn poll_now(&self, why: &str) -> bool {
        let mut last = match self.last_asked.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MIN_ASKED_POLL_INTERVAL) {
            return false;
        }
        *last = Some(now);
        tracing::info!(why, "configuration poll asked for");
        // Stored if the loop is busy downloading: it polls again at once.
        self.asked.notify_one();
        true
    }

    /// The configuration in force once one newer than `version` is,
    /// waiting at most `within` for it after asking for a poll (which is
    /// rate-limited: see [`poll_now`](Self::poll_now)); the one in force
    /// then, whichever it is.
    pub async fn newer_than(
        &self,
        version: u64,
        why: &str,
        within: Duration,
    ) -> Option<Arc<ConfView>> {
        let newer = |v: &Option<Arc<ConfView>>| v.as_ref().is_some_and(|v| v.version > version);
        let mut views = self.subscribe();
        if !newer(&views.borrow_and_update()) {
            self.poll_now(why);
            let _ = tokio::time::timeout(within, views.wait_for(newer)).await;
        }
        self.view()
    }

    /// Polls until dropped: every poll interval while downloads succeed,
    /// backing off from [`FIRST_RETRY`] while they fail.
    pub async fn run(self: Arc<Self>) {
        let mut retries: Option<backon::ExponentialBackoff> = None;
        loop {
            let interval = self.poll_interval.unwrap_or_else(|| {
                Duration::from_secs(self.view().map_or(60, |v| v.poll_interval_secs.into()))
            });
            let wait = match self.refresh().await {
                Ok(_) => {
                    retries = None;
                    interval
                }
                Err(e) => {
                    let wait = retries
                        .get_or_insert_with(|| retry_schedule(interval))
                        .next()
                        .unwrap_or(interval);
                    tracing::warn!(error = %e, retry_in = ?wait, "configuration download failed");
                    self.set_status(|s| s.last_error = Some(e.to_string()));
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.asked.notified() => {}
            }
        }
    }
}

/// The delays between failed downloads: from [`FIRST_RETRY`], doubling,
/// never beyond `interval` (plus jitter), for as long as they fail.
fn retry_schedule(interval: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(interval.max(FIRST_RETRY))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The file of the descriptor set named `sha256`.
fn descriptor_file(dir: &Path, sha256: &[u8; 32]) -> PathBuf {
    dir.join(format!("{}.binpb", hex::encode(sha256)))
}

/// Writes a checked descriptor set where [`read_descriptor_sets`] finds it
/// (through a temporary file, so a crash leaves no half-written set).
fn keep_descriptor_set(
    dir: &Path,
    sha256: &[u8; 32],
    bytes: &[u8],
) -> Result<(), ConfigurationError> {
    let keep = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = descriptor_file(dir, sha256);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    };
    keep().map_err(|source| ConfigurationError::KeepDescriptorSet {
        dir: dir.to_owned(),
        source,
    })
}

/// The descriptor sets `view` names that `dir` holds, each checked against
/// its digest again (a damaged file is removed, and downloaded anew).
fn read_descriptor_sets(dir: &Path, view: &ConfView) -> BTreeMap<[u8; 32], DescriptorSet> {
    let mut held = BTreeMap::new();
    for d in view.described() {
        if held.contains_key(&d.sha256) {
            continue;
        }
        let path = descriptor_file(dir, &d.sha256);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "service catalogue: a descriptor set cannot be read");
                continue;
            }
        };
        match catalogue::accept(&d.sha256, bytes) {
            Ok(set) => {
                held.insert(d.sha256, set);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "service catalogue: a damaged descriptor set removed; it is downloaded again");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    held
}

/// Removes the kept descriptor sets `view` no longer names.
fn forget_unnamed(dir: &Path, view: &ConfView) {
    let named: std::collections::HashSet<String> = view
        .described()
        .iter()
        .map(|d| format!("{}.binpb", hex::encode(d.sha256)))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".binpb") && !named.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_downloads_back_off_with_jitter_up_to_the_interval() {
        let interval = Duration::from_secs(60);
        let delays: Vec<Duration> = retry_schedule(interval).take(12).collect();
        assert_eq!(delays.len(), 12, "retries never stop");
        // Jitter adds up to the delay itself: [d, 2d) for d = 1, 2, 4 … 60 s.
        let mut base = FIRST_RETRY;
        for d in &delays {
            assert!(
                *d >= base && *d < base * 2,
                "{d:?} outside [{base:?}, 2×{base:?}): {delays:?}"
            );
            base = (base * 2).min(interval);
        }
        // Two servers failing at once do not retry in step.
        let other: Vec<Duration> = retry_schedule(interval).take(12).collect();
        assert_ne!(delays, other, "jitter spreads the retries");
    }

    #[test]
    fn asked_polls_are_granted_at_most_once_per_interval() {
        let client = ConfClient::new(
            Anchor::default(),
            PathBuf::from("configuration.bin"),
            ConfClient::empty_trust(),
        );
        assert!(client.poll_now("a stranger's certificate"));
        assert!(!client.poll_now("the same stranger again"));
        // The interval runs from the last granted poll.
        *client.last_asked.lock().unwrap() = Some(Instant::now() - MIN_ASKED_POLL_INTERVAL);
        assert!(client.poll_now("later"));
    }
}
