//! The instance certificate authority: issues auth and signing certificates
//! from verified CSRs.

use std::net::IpAddr;
use std::time::Duration;

use lienthong_proto::id::{Instance, MemberId, ServerId};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::csr::VerifiedCsr;
use crate::{CertError, PrivateKey};

/// Default lifetime of an instance CA certificate.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of auth and signing certificates.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far `not_before` is set in the past, to tolerate clock skew between
/// the CA and the servers that will check the certificate.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate's validity window.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago ([`BACKDATE`]) until `lifetime` from now.
    pub fn from_now(lifetime: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - BACKDATE,
            not_after: now + lifetime,
        }
    }

    /// From a few minutes ago until `days` days from now.
    pub fn days(days: u32) -> Self {
        Self::from_now(Duration::from_secs(u64::from(days) * 24 * 3600))
    }
}

/// The instance CA: its certificate and the key that signs certificates.
pub struct InstanceCa {
    instance: Instance,
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
}

impl std::fmt::Debug for InstanceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceCa")
            .field("instance", &self.instance)
            .field("fingerprint", &crate::Fingerprint::of(&self.certificate))
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing system RNG leaves no safe way to issue certificates at all.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("system random number generator is available");
    bytes[0] &= 0x7f; // keep the serial positive
    bytes[0] |= 0x01; // and of fixed length
    SerialNumber::from_slice(&bytes)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The common name of an instance CA certificate.
pub fn ca_common_name(instance: &Instance) -> String {
    format!("{instance} Lienthong instance CA")
}

impl InstanceCa {
    /// Creates a self-signed CA for `instance` with `key` (P-256 by default).
    pub fn create(instance: &str, key: PrivateKey, validity: Validity) -> Result<Self, CertError> {
        let instance = Instance::new(instance).map_err(|e| CertError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&ca_common_name(&instance));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key.pair)?;
        Ok(InstanceCa {
            instance,
            issuer: Issuer::new(params, key.pair),
            certificate: cert.der().clone(),
        })
    }

    /// Loads a CA from its certificate and key, checking that they belong together.
    pub fn load(certificate: CertificateDer<'static>, key: PrivateKey) -> Result<Self, CertError> {
        let info = crate::verify::parse(&certificate)?;
        if !info.is_ca {
            return Err(CertError::WrongKeyUsage(
                "not a CA certificate (basic constraints CA:FALSE)".into(),
            ));
        }
        if info.public_key_der != key.public_key_der() {
            return Err(CertError::BadKey(
                "the key does not belong to the CA certificate".into(),
            ));
        }
        let instance = info
            .common_name
            .strip_suffix(" Lienthong instance CA")
            .and_then(|i| Instance::new(i).ok())
            .ok_or_else(|| CertError::NoIdentity(info.common_name.clone()))?;
        let issuer = Issuer::from_ca_cert_der(&certificate, key.pair)?;
        Ok(InstanceCa {
            instance,
            issuer,
            certificate,
        })
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The instance the CA serves.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    fn check_instance(&self, found: &Instance) -> Result<(), CertError> {
        if found != &self.instance {
            return Err(CertError::WrongIdentity {
                expected: format!("an identity of instance {}", self.instance),
                found: format!("instance {found}"),
            });
        }
        Ok(())
    }

    /// Issues a security server's auth (TLS) certificate: client and server
    /// auth, subject CN = the server id, SAN = the host of `address`
    /// (`host` or `host:port`).
    pub fn issue_auth(
        &self,
        csr: &VerifiedCsr,
        server: &ServerId,
        address: &str,
        validity: Validity,
    ) -> Result<CertificateDer<'static>, CertError> {
        self.check_instance(&server.owner.instance)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&server.to_string());
        params.subject_alt_names = vec![san_for(address)?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        self.sign(params, csr, validity)
    }

    /// Issues a member's signing certificate: digital signature only, no
    /// extended key usage (so it cannot serve as a TLS identity), subject
    /// CN = the member id.
    pub fn issue_signing(
        &self,
        csr: &VerifiedCsr,
        member: &MemberId,
        validity: Validity,
    ) -> Result<CertificateDer<'static>, CertError> {
        self.check_instance(&member.instance)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&member.to_string());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        self.sign(params, csr, validity)
    }

    /// Issues the registry's configuration-signing certificate: digital
    /// signature only, no extended key usage. Servers trust it because the
    /// anchor names it, not because of its subject.
    pub fn issue_configuration_signing(
        &self,
        csr: &VerifiedCsr,
        validity: Validity,
    ) -> Result<CertificateDer<'static>, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!(
            "{} Lienthong configuration signing",
            self.instance
        ));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        self.sign(params, csr, validity)
    }

    /// Issues a TLS server certificate for the registry's own endpoints,
    /// naming the host of every address it is reached at.
    pub fn issue_registry_tls(
        &self,
        csr: &VerifiedCsr,
        addresses: &[String],
        validity: Validity,
    ) -> Result<CertificateDer<'static>, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("{} Lienthong registry", self.instance));
        params.subject_alt_names = addresses
            .iter()
            .map(|a| san_for(a))
            .collect::<Result<_, _>>()?;
        params.subject_alt_names.dedup();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.is_ca = IsCa::ExplicitNoCa;
        self.sign(params, csr, validity)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        csr: &VerifiedCsr,
        validity: Validity,
    ) -> Result<CertificateDer<'static>, CertError> {
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.params.public_key, &self.issuer)?;
        Ok(cert.der().clone())
    }
}

/// The subject alternative name for an address: an IP SAN for an IP
/// address, a DNS SAN otherwise; a `:port` suffix is dropped.
fn san_for(address: &str) -> Result<SanType, CertError> {
    let host = match address.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(CertError::Generate(format!(
            "address {address:?} is neither an IP address nor a DNS name"
        )));
    }
    let dns = host
        .to_owned()
        .try_into()
        .map_err(|e: rcgen::Error| CertError::Generate(e.to_string()))?;
    Ok(SanType::DnsName(dns))
}
