//! Where the page's answers come from: the trace portal's fan-out over the
//! bus ([`BusSource`]), keeping every server's raw answer so the citizen can
//! download the trace with its proofs ([`crate::bundle`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lienthong_certs::conf::ConfError;
use lienthong_proto::fields::{DataSubjectFormats, FieldError};
use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_security_server::conf_client::ConfView;
use lienthong_security_server::conf_client::view::ViewError;
use lienthong_security_server::trace::portal::{self, TraceError, TraceReport, Witnessed};
use prost::Message;
use tonic::transport::Channel;

use crate::bundle::{Bundle, ServerAnswer};

/// Why the page has no trace to show.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "the portal's security server holds no configuration ({})",
        unusable_files(.0)
    )]
    NoConfiguration(Vec<ConfFileError>),
    #[error(transparent)]
    Configuration(#[from] ViewError),
    #[error(
        "the portal's configuration has expired; is its security server running and in touch with the registry?"
    )]
    Expired,
    /// The personal id is in none of the instance's formats.
    #[error(transparent)]
    Subject(#[from] FieldError),
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the portal is shutting down")]
    ShuttingDown,
}

/// Why one configuration file was not used.
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{}: {source}", .path.display())]
    Verify {
        path: PathBuf,
        #[source]
        source: ConfError,
    },
}

fn unusable_files(why: &[ConfFileError]) -> String {
    why.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A boxed future, as the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One citizen's answer: the verified report, what each server said (for
/// the download), and the member names the configuration gives.
#[derive(Debug, Clone)]
pub struct Traced {
    pub report: TraceReport,
    pub bundle: Bundle,
    /// Legal names by member id (`VN/GOV/000102`), from the configuration.
    pub member_names: BTreeMap<String, String>,
    /// When the answer was gathered (Unix ms).
    pub at_ms: i64,
}

/// What the page asks of the bus.
pub trait TraceSource: Send + Sync + 'static {
    /// The canonical form of a personal id the login gave, by the instance's
    /// data-subject formats; an error says why it is none.
    fn canonical_subject(&self, claimed: &str) -> Result<String, SourceError>;
    /// Asks every server about `subject` (canonical) and verifies the answers.
    fn trace<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Traced, SourceError>>;
}

/// The trace portal over the bus: asks through the portal's own security
/// server, as the portal subsystem the configuration names.
pub struct BusSource {
    consumer: Channel,
    portal: SubsystemId,
    anchor: Anchor,
    identity: Option<Arc<lienthong_certs::tls::Identity>>,
    timeout: Duration,
    /// Signed configuration files to read, newest version wins (the
    /// portal's own cache, kept current by its configuration client, and the
    /// server's copy).
    configurations: Vec<PathBuf>,
}

impl std::fmt::Debug for BusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusSource")
            .field("portal", &self.portal)
            .finish_non_exhaustive()
    }
}

impl BusSource {
    pub fn new(
        consumer: Channel,
        portal: SubsystemId,
        anchor: Anchor,
        identity: Option<Arc<lienthong_certs::tls::Identity>>,
        timeout: Duration,
        configurations: Vec<PathBuf>,
    ) -> Self {
        BusSource {
            consumer,
            portal,
            anchor,
            identity,
            timeout,
            configurations,
        }
    }

    /// The newest signed configuration on disk that the anchor's key signed,
    /// with its verified contents.
    fn configuration(&self) -> Result<(SignedConfiguration, GlobalConfiguration), SourceError> {
        let mut best: Option<(SignedConfiguration, GlobalConfiguration)> = None;
        let mut why = Vec::new();
        for path in &self.configurations {
            match self.read_configuration(path) {
                Ok((s, c)) if best.as_ref().is_none_or(|(_, b)| c.version > b.version) => {
                    best = Some((s, c))
                }
                Ok(_) => {}
                Err(e) => why.push(e),
            }
        }
        best.ok_or(SourceError::NoConfiguration(why))
    }

    /// One signed configuration file, if the anchor's key signed it.
    fn read_configuration(
        &self,
        path: &std::path::Path,
    ) -> Result<(SignedConfiguration, GlobalConfiguration), ConfFileError> {
        let path = path.to_owned();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(source) => return Err(ConfFileError::Read { path, source }),
        };
        let signed = match SignedConfiguration::decode(bytes.as_slice()) {
            Ok(s) => s,
            Err(source) => return Err(ConfFileError::Decode { path, source }),
        };
        match lienthong_certs::conf::verify_signature_and_decode(&self.anchor, &signed) {
            Ok(c) => Ok((signed, c)),
            Err(source) => Err(ConfFileError::Verify { path, source }),
        }
    }
}

/// Legal names by member id.
pub fn member_names(conf: &GlobalConfiguration) -> BTreeMap<String, String> {
    conf.members
        .iter()
        .filter_map(|m| {
            let id = lienthong_proto::id::MemberId::try_from(m.id.as_ref()?).ok()?;
            Some((id.to_string(), m.name.clone()))
        })
        .collect()
}

impl TraceSource for BusSource {
    fn canonical_subject(&self, claimed: &str) -> Result<String, SourceError> {
        let formats = match self.configuration() {
            Ok((_, conf)) => ConfView::build(&conf, SystemTime::now())?
                .subject_formats()
                .clone(),
            Err(_) => DataSubjectFormats::default(),
        };
        Ok(formats.canonical(claimed)?.to_owned())
    }

    fn trace<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Traced, SourceError>> {
        Box::pin(async move {
            let (signed, conf) = self.configuration()?;
            let now = SystemTime::now();
            let view = ConfView::build(&conf, now)?;
            if view.is_expired(now) {
                return Err(SourceError::Expired);
            }
            view.subject_formats().canonical(subject)?;
            let witnessed = match &self.identity {
                Some(i) => Witnessed::ask(&self.anchor, i, &view).await,
                None => Witnessed::unknown(),
            };
            let answers: Arc<Mutex<BTreeMap<ServerId, ServerAnswer>>> = Default::default();
            let report = {
                let answers = answers.clone();
                let (consumer, portal_id) = (self.consumer.clone(), self.portal.clone());
                let subject = subject.to_owned();
                portal::fan_out_witnessed(
                    &view,
                    &self.anchor,
                    &subject.clone(),
                    self.timeout,
                    &witnessed,
                    move |server| {
                        let (consumer, portal_id, subject) =
                            (consumer.clone(), portal_id.clone(), subject.clone());
                        let answers = answers.clone();
                        async move {
                            let got = portal::ask(consumer, &portal_id, &server, &subject).await;
                            let kept = match &got {
                                Ok(replies) => ServerAnswer::Replies(
                                    replies.iter().map(Message::encode_to_vec).collect(),
                                ),
                                Err(e) => ServerAnswer::Unanswered(e.to_string()),
                            };
                            if let Ok(mut a) = answers.lock() {
                                a.insert(server, kept);
                            }
                            got
                        }
                    },
                )
                .await?
            };
            let at_ms = lienthong_proto::time::unix_ms(now);
            let servers = answers.lock().map(|a| a.clone()).unwrap_or_default();
            Ok(Traced {
                report,
                bundle: Bundle::new(subject, at_ms, signed.encode_to_vec(), servers),
                member_names: member_names(&conf),
                at_ms,
            })
        })
    }
}
