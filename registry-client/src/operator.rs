//! The operator client: officers and observers, authenticated by a bearer
//! token over TLS pinned to the anchor's CA.

use lienthong_proto::pb::registry::v1::registry_operator_client::RegistryOperatorClient;
use tonic::metadata::{Ascii, Binary, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::ClientError;

/// The metadata key naming the person an operator token acts for (UTF-8,
/// base64 on the wire as every `-bin` key): a console that signs people in
/// by OpenID Connect and acts with a shared token sends it, and the
/// registry writes the person into the audit record of every action.
pub const ON_BEHALF_OF: &str = "lt-on-behalf-of-bin";

/// Adds `authorization: Bearer <token>` to every call, and the person the
/// call is made for ([`ON_BEHALF_OF`]) when there is one.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>, Option<MetadataValue<Binary>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        if let Some(person) = &self.1 {
            request
                .metadata_mut()
                .insert_bin(ON_BEHALF_OF, person.clone());
        }
        Ok(request)
    }
}

/// The operator client with its token.
pub type OperatorClient = RegistryOperatorClient<InterceptedService<Channel, BearerToken>>;

/// An operator client over `channel` authenticated by `token`.
pub fn operator_client(channel: Channel, token: &str) -> Result<OperatorClient, ClientError> {
    operator_client_for(channel, token, None)
}

/// An operator client over `channel` authenticated by `token`, acting for
/// `person` (see [`ON_BEHALF_OF`]) when given.
pub fn operator_client_for(
    channel: Channel,
    token: &str,
    person: Option<&str>,
) -> Result<OperatorClient, ClientError> {
    let value = bearer(token)?;
    let person = person.map(|p| MetadataValue::from_bytes(p.as_bytes()));
    Ok(
        RegistryOperatorClient::with_interceptor(channel, BearerToken(value, person))
            .max_decoding_message_size(lienthong_certs::conf::MAX_CONFIGURATION_BYTES + 64 * 1024),
    )
}

/// The `authorization` value of `token` (surrounding blanks dropped),
/// marked sensitive so that it is never logged.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| ClientError::BadToken)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_carries_the_token_and_debug_hides_it() {
        let mut token = BearerToken(bearer("  lt_secret\n").unwrap(), None);
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let request = token.call(tonic::Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value, "Bearer lt_secret");
        assert!(value.is_sensitive());
    }

    #[test]
    fn a_person_travels_beside_the_token() {
        let person = MetadataValue::from_bytes("Nguyễn Lan".as_bytes());
        let mut token = BearerToken(bearer("lt_secret").unwrap(), Some(person));
        let request = token.call(tonic::Request::new(())).unwrap();
        let value = request.metadata().get_bin(ON_BEHALF_OF).unwrap();
        assert_eq!(value.to_bytes().unwrap().as_ref(), "Nguyễn Lan".as_bytes());
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        assert!(matches!(bearer("lt_\u{7f}x"), Err(ClientError::BadToken)));
    }
}
