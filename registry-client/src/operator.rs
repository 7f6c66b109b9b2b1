//! The operator client: officers and observers, authenticated by a bearer
//! token over TLS pinned to the anchor's CA.

use lienthong_proto::pb::registry::v1::registry_operator_client::RegistryOperatorClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::ClientError;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

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
        Ok(request)
    }
}

/// The operator client with its token.
pub type OperatorClient = RegistryOperatorClient<InterceptedService<Channel, BearerToken>>;

/// An operator client over `channel` authenticated by `token`.
pub fn operator_client(channel: Channel, token: &str) -> Result<OperatorClient, ClientError> {
    let value = bearer(token)?;
    Ok(
        RegistryOperatorClient::with_interceptor(channel, BearerToken(value))
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
        let mut token = BearerToken(bearer("  lt_secret\n").unwrap());
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
        let request = token.call(tonic::Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value, "Bearer lt_secret");
        assert!(value.is_sensitive());
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        assert!(matches!(bearer("lt_\u{7f}x"), Err(ClientError::BadToken)));
    }
}
