//! The global configuration from the registry's side of the wire:
//! downloading it with only the anchor, verifying it against the anchor's
//! configuration keys, and keeping the last good copy on disk. What a
//! party builds from a verified configuration is its own affair.

use std::path::Path;
use std::time::SystemTime;

use lienthong_certs::CertError;
use lienthong_certs::conf::{self, ConfError};
use lienthong_certs::tls::Identity;
use lienthong_proto::pb::globalconf::v1::{Anchor, GlobalConfiguration, SignedConfiguration};
use lienthong_proto::pb::registry::v1::GetConfigurationRequest;
use lienthong_proto::pb::registry::v1::configuration_distribution_client::ConfigurationDistributionClient;
use prost::Message;
use tonic::transport::Channel;

use crate::{ClientError, Registries, connect};

/// Why a kept copy of the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {detail}")]
    Read {
        path: String,
        detail: std::io::Error,
    },
    #[error("{path}: not a configuration: {detail}")]
    Decode {
        path: String,
        detail: prost::DecodeError,
    },
}

/// A configuration-download client that accepts documents up to the
/// verifier's limit (tonic's default of 4 MiB is below what 50,000 services
/// take).
pub fn distribution_client(channel: Channel) -> ConfigurationDistributionClient<Channel> {
    ConfigurationDistributionClient::new(channel)
        .max_decoding_message_size(conf::MAX_CONFIGURATION_BYTES + 64 * 1024)
}

/// Downloads the configuration from the anchor's registry if it is newer
/// than `held` (every version when `None`); `None` when the registry has
/// nothing newer. Not verified yet: see [`verify`].
pub async fn download(
    anchor: &Anchor,
    identity: Option<&Identity>,
    held: Option<u64>,
) -> Result<Option<SignedConfiguration>, ClientError> {
    fetch(connect(anchor, identity).await?, held).await
}

/// [`download`] from whichever of the registry's known addresses answers
/// (the anchor's and the newest configuration's).
pub async fn download_from(
    registries: &Registries,
    identity: Option<&Identity>,
    held: Option<u64>,
) -> Result<Option<SignedConfiguration>, ClientError> {
    fetch(registries.connect(identity).await?, held).await
}

async fn fetch(
    channel: Channel,
    held: Option<u64>,
) -> Result<Option<SignedConfiguration>, ClientError> {
    let reply = distribution_client(channel)
        .get_configuration(GetConfigurationRequest {
            if_newer_than: held.unwrap_or(0),
        })
        .await
        .map_err(|s| ClientError::refused("registry refused the download", &s))?
        .into_inner();
    Ok(reply.configuration)
}

/// Verifies `signed` against the anchor: signed by a key the anchor names,
/// for the anchor's instance, not from the future.
///
/// Replacing a `held` version, the new one must also be newer and not
/// expired. With none held (a copy read from disk, or the first download)
/// an expired configuration is returned all the same, so that the caller
/// can load it, say that it has expired, and refuse to use it.
pub fn verify(
    anchor: &Anchor,
    signed: &SignedConfiguration,
    held: Option<u64>,
    now: SystemTime,
) -> Result<GlobalConfiguration, ConfError> {
    match held {
        None => {
            conf::verify_signature_and_decode(anchor, signed).and_then(
                |c| match conf::check_current(anchor, &c, None, now) {
                    Ok(()) | Err(ConfError::Expired { .. }) => Ok(c),
                    Err(e) => Err(e),
                },
            )
        }
        Some(v) => conf::verify_configuration(anchor, signed, Some(v), now),
    }
}

/// The copy kept at `path`, if there is one (not verified yet).
pub fn read_cached(path: &Path) -> Result<Option<SignedConfiguration>, CacheError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(detail) => {
            return Err(CacheError::Read {
                path: path.display().to_string(),
                detail,
            });
        }
    };
    SignedConfiguration::decode(bytes.as_slice())
        .map(Some)
        .map_err(|detail| CacheError::Decode {
            path: path.display().to_string(),
            detail,
        })
}

/// Keeps `signed` at `path`, replacing the previous copy atomically.
pub fn write_cached(path: &Path, signed: &SignedConfiguration) -> Result<(), CertError> {
    lienthong_certs::pem::write_atomic(path, &signed.encode_to_vec(), 0o644)
}

#[cfg(test)]
mod tests;
