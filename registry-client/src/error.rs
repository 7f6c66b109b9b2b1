//! Why talking to the registry failed, and printing a failure with its
//! causes.

use lienthong_certs::CertError;

/// Why talking to the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("anchor {path}: {detail}")]
    Anchor { path: String, detail: String },
    #[error("cannot reach the registry at any of {addresses:?}: {last}")]
    Unreachable {
        addresses: Vec<String>,
        last: String,
    },
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("operator token is not a valid header value")]
    BadToken,
    #[error(
        "the registry at {address} is not the one your anchor names: its TLS certificate is not issued by the anchor's instance CA ({detail}); check that the anchor file is this instance's"
    )]
    NotThisRegistry { address: String, detail: String },
    /// The registry answered a call with a refusal; `what` says which call
    /// in the words a person reads (`the registry refused the request`).
    #[error("{what}: {message}")]
    Refused {
        what: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl ClientError {
    /// The refusal of a call, in the words `what`.
    pub(crate) fn refused(what: &'static str, status: &tonic::Status) -> Self {
        ClientError::Refused {
            what,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An error with all its causes, `outer: inner: …` (transport errors hide
/// the useful part in their sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_outermost_first() {
        let e = Outer(Middle(std::io::Error::other("received fatal alert")));
        assert_eq!(error_chain(&e), "outer: middle: received fatal alert");
    }

    #[test]
    fn a_refusal_reads_as_what_was_refused_and_why() {
        let e = ClientError::refused(
            "the registry refused the request",
            &tonic::Status::permission_denied("the enrollment token has expired"),
        );
        assert_eq!(
            e.to_string(),
            "the registry refused the request: the enrollment token has expired"
        );
        assert!(matches!(
            e,
            ClientError::Refused {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ));
    }
}
