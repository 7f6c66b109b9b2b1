//! The free-form fields of an exchange (official, purpose, data subject,
//! trace context) in the one canonical form both security servers enforce
//! ([`lienthong_proto::fields`]): the consumer's server brings an
//! information system's values into it or refuses them
//! ([`metadata::parse_call`], [`check_call`]); the provider's server refuses a signed envelope
//! whose values are not already in it ([`check_header`]), before its
//! backend or its log sees them. A member signs its own envelopes, so the
//! provider's check is the one that protects the citizen's trace.

use lienthong_proto::fields;
use lienthong_proto::pb::exchange::v1::RequestHeader;

use crate::conf_client::ConfView;
use crate::faults::{Fault, FaultError};
use crate::metadata::{self, CallMetadata, Target};

/// Whether a W3C trace-context value can travel: printable ASCII, bounded.
pub fn trace_context_ok(value: &str) -> bool {
    value.len() <= metadata::MAX_TRACE_CONTEXT && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// What is wrong with the fields of a call to `service` of `target`, as
/// the instance's rules say: the data subject in one of the instance's
/// formats (required when the service handles personal data).
fn subject_rules(
    view: &ConfView,
    target: &Target,
    service: &str,
    data_subject: &str,
) -> Result<(), SubjectError> {
    if data_subject.is_empty() {
        if let Target::Provider(p) = target
            && view.handles_personal_data(p, service)
        {
            return Err(SubjectError::Required {
                provider: p.clone(),
                service: service.to_owned(),
            });
        }
        return Ok(());
    }
    view.subject_formats().canonical(data_subject)?;
    Ok(())
}

/// Why a call's data subject breaks the instance's rules.
#[derive(Debug, thiserror::Error)]
enum SubjectError {
    #[error(
        "{provider}/{service} handles personal data: name the data subject ({})",
        metadata::DATA_SUBJECT
    )]
    Required {
        provider: lienthong_proto::id::SubsystemId,
        service: String,
    },
    #[error(transparent)]
    Format(#[from] lienthong_proto::fields::FieldError),
}

/// Checks an information system's call against the instance's rules: its
/// free text is already canonical ([`metadata::parse_call`] made it so),
/// and its data subject must be in one of the instance's formats
/// (and present, for a service that handles personal data).
pub fn check_call(view: &ConfView, call: &CallMetadata, service: &str) -> Result<(), FaultError> {
    debug_assert!(
        fields::check_canonical_text("", &call.user_id, fields::MAX_USER_ID).is_ok()
            && fields::check_canonical_text("", &call.purpose, fields::MAX_PURPOSE).is_ok()
    );
    subject_rules(view, &call.target, service, &call.data_subject).map_err(|e| match e {
        SubjectError::Required { .. } => Fault::DataSubjectRequired.with(e.to_string()),
        SubjectError::Format(_) => {
            Fault::BadRequest.with(format!("{}: {e}", metadata::DATA_SUBJECT))
        }
    })
}

/// Refuses a signed header whose fields are not canonical, naming the
/// field but never echoing its value raw.
pub fn check_header(
    view: &ConfView,
    header: &RequestHeader,
    target: &Target,
    service: &str,
) -> Result<(), FaultError> {
    let bad = |m: String| Fault::BadField.with(m);
    fields::check_canonical_text("user_id", &header.user_id, fields::MAX_USER_ID)
        .map_err(|e| bad(e.to_string()))?;
    fields::check_canonical_text("purpose", &header.purpose, fields::MAX_PURPOSE)
        .map_err(|e| bad(e.to_string()))?;
    subject_rules(view, target, service, &header.data_subject)
        .map_err(|m| bad(format!("data_subject: {m}")))?;
    for (name, value) in [
        ("traceparent", &header.traceparent),
        ("tracestate", &header.tracestate),
    ] {
        if !trace_context_ok(value) {
            return Err(bad(format!(
                "{name} must be at most {} printable ASCII characters",
                metadata::MAX_TRACE_CONTEXT
            )));
        }
    }
    if header.withheld_until_unix_ms < 0 {
        return Err(bad("withheld_until_unix_ms is negative".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context() {
        assert!(trace_context_ok(""));
        assert!(trace_context_ok(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!trace_context_ok("a\u{1b}b"));
        assert!(!trace_context_ok("ệ"));
        assert!(!trace_context_ok(
            &"a".repeat(metadata::MAX_TRACE_CONTEXT + 1)
        ));
    }
}
