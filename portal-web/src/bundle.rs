//! The downloadable trace: what every server answered (records, leaf bytes,
//! inclusion proofs, signed and witnessed checkpoints) and the signed global
//! configuration the portal judged them by, as one JSON file.
//!
//! [`verify`] checks such a file offline against an anchor the *verifier*
//! supplies: the configuration must be signed by the anchor's key for the
//! anchor's instance, and every answer is then verified exactly as the
//! portal does ([`portal::fan_out`]). Nothing in the file is trusted on its
//! own word — an anchor or a verdict inside it would prove nothing, so the
//! file carries neither.
//!
//! Format (`"format": "lienthong-access-trace/1"`):
//!
//! ```json
//! { "format": "lienthong-access-trace/1",
//!   "data_subject": "001099012345",
//!   "traced_at_unix_ms": 1780000000000,
//!   "configuration": "<base64 SignedConfiguration>",
//!   "servers": [ { "server": "VN/GOV/000102/ss1", "replies": ["<base64 FindUsageReply>", …] },
//!                { "server": "VN/GOV/000103/ss1", "unanswered": "no answer within 5s" } ] }
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lienthong_certs::conf::ConfError;
use lienthong_proto::id::ServerId;
use lienthong_proto::pb::globalconf::v1::{Anchor, SignedConfiguration};
use lienthong_proto::pb::trace::v1 as pb;
use lienthong_security_server::conf_client::ConfView;
use lienthong_security_server::conf_client::view::ViewError;
use lienthong_security_server::trace::portal::{self, TraceError, TraceReport};
use prost::Message;
use serde::{Deserialize, Serialize};

/// The format's name and version.
pub const FORMAT: &str = "lienthong-access-trace/1";
/// The largest file [`verify`] reads (a trace of tens of thousands of
/// records with their proofs stays well below).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// What one server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer {
    /// Its `FindUsageReply` pages, encoded.
    Replies(Vec<Vec<u8>>),
    /// Why it gave none.
    Unanswered(String),
}

/// A citizen's trace as downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub data_subject: String,
    pub traced_at_ms: i64,
    /// A `SignedConfiguration`, encoded.
    pub configuration: Vec<u8>,
    pub servers: BTreeMap<ServerId, ServerAnswer>,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    format: String,
    data_subject: String,
    traced_at_unix_ms: i64,
    configuration: String,
    servers: Vec<WireServer>,
}

#[derive(Serialize, Deserialize)]
struct WireServer {
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unanswered: Option<String>,
}

/// Why a file is no trace.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the file is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    #[error("not a trace file: {0}")]
    Malformed(String),
    #[error("the configuration in the file does not verify against the anchor: {0}")]
    Configuration(#[source] ConfError),
    #[error(
        "the configuration in the file does not verify against the anchor: the file is about instance {file}, the anchor names {anchor}"
    )]
    OtherInstance {
        /// Printable: it is the file's, not trusted.
        file: String,
        anchor: String,
    },
    #[error("the configuration in the file does not verify against the anchor: {0}")]
    UnusableConfiguration(#[source] ViewError),
    #[error(transparent)]
    Verify(#[from] TraceError),
}

impl Bundle {
    pub fn new(
        data_subject: &str,
        traced_at_ms: i64,
        configuration: Vec<u8>,
        servers: BTreeMap<ServerId, ServerAnswer>,
    ) -> Self {
        Bundle {
            data_subject: data_subject.to_owned(),
            traced_at_ms,
            configuration,
            servers,
        }
    }

    /// The file's bytes (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            format: FORMAT.into(),
            data_subject: self.data_subject.clone(),
            traced_at_unix_ms: self.traced_at_ms,
            configuration: B64.encode(&self.configuration),
            servers: self
                .servers
                .iter()
                .map(|(server, answer)| match answer {
                    ServerAnswer::Replies(r) => WireServer {
                        server: server.to_string(),
                        replies: Some(r.iter().map(|b| B64.encode(b)).collect()),
                        unanswered: None,
                    },
                    ServerAnswer::Unanswered(why) => WireServer {
                        server: server.to_string(),
                        replies: None,
                        unanswered: Some(why.clone()),
                    },
                })
                .collect(),
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec_pretty(&wire).unwrap_or_default()
    }

    /// Reads a file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge);
        }
        let bad = |m: String| BundleError::Malformed(m);
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if wire.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                wire.format.chars().take(64).collect::<String>()
            )));
        }
        let decode = |s: &str| B64.decode(s).map_err(|e| bad(format!("base64: {e}")));
        let mut servers = BTreeMap::new();
        for s in wire.servers {
            let id: ServerId = s
                .server
                .parse()
                .map_err(|e| bad(format!("server {:?}: {e}", s.server)))?;
            let answer = match (s.replies, s.unanswered) {
                (Some(r), None) => {
                    ServerAnswer::Replies(r.iter().map(|p| decode(p)).collect::<Result<_, _>>()?)
                }
                (None, Some(why)) => ServerAnswer::Unanswered(why),
                _ => return Err(bad(format!("server {id}: give replies or unanswered"))),
            };
            if servers.insert(id.clone(), answer).is_some() {
                return Err(bad(format!("server {id} appears twice")));
            }
        }
        Ok(Bundle {
            data_subject: wire.data_subject,
            traced_at_ms: wire.traced_at_unix_ms,
            configuration: decode(&wire.configuration)?,
            servers,
        })
    }
}

/// Verifies a trace file against `anchor` (the verifier's own copy), as of
/// `now`: the configuration's signature and instance, then every server's
/// answer as the portal verifies them. Servers the configuration lists but
/// the file lacks count as unanswered; answers from servers it does not
/// list are ignored.
///
/// Members' signing certificates are checked as of `now`: a file is
/// verified while the certificates that signed its checkpoints are valid.
pub async fn verify(
    bundle: &Bundle,
    anchor: &Anchor,
    now: SystemTime,
) -> Result<TraceReport, BundleError> {
    let signed = SignedConfiguration::decode(bundle.configuration.as_slice())
        .map_err(|e| BundleError::Malformed(format!("configuration: {e}")))?;
    let conf = lienthong_certs::conf::verify_signature_and_decode(anchor, &signed)
        .map_err(BundleError::Configuration)?;
    if conf.instance != anchor.instance {
        return Err(BundleError::OtherInstance {
            file: lienthong_proto::fields::printable(&conf.instance).into_owned(),
            anchor: anchor.instance.clone(),
        });
    }
    let view = ConfView::build(&conf, now).map_err(BundleError::UnusableConfiguration)?;
    let answers = bundle.servers.clone();
    portal::fan_out(
        &view,
        anchor,
        &bundle.data_subject,
        Duration::from_secs(60),
        move |server| {
            let answer = answers.get(&server).cloned();
            async move {
                match answer {
                    None => Err("the file holds no answer from this server".to_string()),
                    Some(ServerAnswer::Unanswered(why)) => Err(why),
                    Some(ServerAnswer::Replies(pages)) => pages
                        .iter()
                        .map(|p| {
                            pb::FindUsageReply::decode(p.as_slice())
                                .map_err(|e| format!("an answer that is not a FindUsageReply: {e}"))
                        })
                        .collect(),
                }
            }
        },
    )
    .await
    .map_err(BundleError::Verify)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        let mut servers = BTreeMap::new();
        servers.insert(
            "VN/GOV/000102/ss1".parse().unwrap(),
            ServerAnswer::Replies(vec![vec![1, 2, 3], vec![]]),
        );
        servers.insert(
            "VN/GOV/000103/ss1".parse().unwrap(),
            ServerAnswer::Unanswered("no answer within 5s".into()),
        );
        Bundle::new("001099012345", 1_780_000_000_000, vec![9, 9], servers)
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let b = sample();
        assert_eq!(Bundle::from_json(&b.to_json()).unwrap(), b);
    }

    #[test]
    fn files_that_are_not_traces_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("{}", "missing field"),
            (
                r#"{"format":"other/1","data_subject":"","traced_at_unix_ms":0,"configuration":"","servers":[]}"#,
                "format",
            ),
            (
                r#"{"format":"lienthong-access-trace/1","data_subject":"","traced_at_unix_ms":0,"configuration":"!!","servers":[]}"#,
                "base64",
            ),
            (
                r#"{"format":"lienthong-access-trace/1","data_subject":"","traced_at_unix_ms":0,"configuration":"","servers":[{"server":"VN/GOV/1/ss1"}]}"#,
                "give replies or unanswered",
            ),
            (
                r#"{"format":"lienthong-access-trace/1","data_subject":"","traced_at_unix_ms":0,"configuration":"","servers":[{"server":"not a server","unanswered":"x"}]}"#,
                "server",
            ),
        ];
        for (json, why) in cases {
            let e = Bundle::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
    }

    #[tokio::test]
    async fn a_configuration_not_signed_by_the_anchor_is_refused() {
        let anchor = Anchor {
            instance: "VN".into(),
            ..Default::default()
        };
        let mut b = sample();
        b.configuration = SignedConfiguration {
            configuration: vec![],
            signature: None,
        }
        .encode_to_vec();
        let e = verify(&b, &anchor, SystemTime::now()).await.unwrap_err();
        assert!(matches!(e, BundleError::Configuration(_)), "{e}");
    }
}
