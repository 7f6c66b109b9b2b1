use std::fmt;
use std::str::FromStr;

/// The SHA-256 fingerprint of a certificate's DER encoding: how the global
/// configuration pins certificates. Displayed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(lienthong_proto::sha256(der))
    }

    /// Parses 32 raw bytes, e.g. from a protobuf field.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Fingerprint)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a text is no fingerprint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FingerprintError {
    #[error("fingerprint is not hexadecimal: {0}")]
    NotHex(#[source] hex::FromHexError),
    #[error("fingerprint has {0} bytes; SHA-256 has 32")]
    WrongLength(usize),
}

/// Accepts 64 hex digits, optionally in `AA:BB:…` form or prefixed `sha256:`.
impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, FingerprintError> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let clean: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&clean).map_err(FingerprintError::NotHex)?;
        Fingerprint::from_slice(&bytes).ok_or(FingerprintError::WrongLength(bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_roundtrip_and_forms() {
        let fp = Fingerprint::of(b"x");
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(colons.join(":").parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("sha256:{text}").parse::<Fingerprint>().unwrap(), fp);
        let short = "abcd".parse::<Fingerprint>().unwrap_err();
        assert_eq!(short, FingerprintError::WrongLength(2));
        assert!(short.to_string().contains("2 bytes"), "{short}");
        assert!(matches!(
            "zz".parse::<Fingerprint>(),
            Err(FingerprintError::NotHex(_))
        ));
    }
}
