//! Loading and saving certificates and keys as PEM files.
//!
//! Private keys are written with mode 0600, atomically (temporary file,
//! fsync, rename), and never over an existing key: losing a key by a slip of
//! the command line would cut an agency off the bus.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{CertError, PrivateKey};

fn io_err(what: &Path, source: std::io::Error) -> CertError {
    CertError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Encodes DER certificates as PEM.
pub fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| encode("CERTIFICATE", c)).collect()
}

/// Encodes one DER object as a PEM block with `label`.
pub fn encode(label: &str, der: &[u8]) -> String {
    let mut out = format!("-----BEGIN {label}-----\n");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads a PKCS#10 certificate signing request from a PEM file.
pub fn read_csr(path: &Path) -> Result<Vec<u8>, CertError> {
    use rustls_pki_types::CertificateSigningRequestDer;
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    CertificateSigningRequestDer::from_pem_slice(&data)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertError::NoPemBlock {
                what: path.display().to_string(),
                label: "CERTIFICATE REQUEST",
            },
            other => CertError::BadPem {
                what: path.display().to_string(),
                detail: other.to_string(),
            },
        })
}

/// Parses every certificate in a PEM text; `what` names the source in errors.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadPem {
            what: what.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoPemBlock {
            what: what.to_owned(),
            label: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    certs_from_pem(&path.display().to_string(), &data)
}

/// Reads exactly one certificate from a PEM file.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = read_certs(path)?;
    if certs.len() != 1 {
        return Err(CertError::BadPem {
            what: path.display().to_string(),
            detail: format!("expected one certificate, found {}", certs.len()),
        });
    }
    Ok(certs.remove(0))
}

/// Writes certificates as a PEM file (mode 0644: certificates are public).
pub fn write_certs(path: &Path, certs: &[CertificateDer<'_>]) -> Result<(), CertError> {
    write_atomic(path, certs_to_pem(certs).as_bytes(), 0o644)
}

/// Reads a PKCS#8 PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKey, CertError> {
    let data = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    PrivateKey::from_pem(&data).map_err(|e| match e {
        CertError::NoPemBlock { label, .. } => CertError::NoPemBlock {
            what: path.display().to_string(),
            label,
        },
        other => other,
    })
}

/// Writes a private key with mode 0600, refusing to overwrite an existing file.
pub fn write_key(path: &Path, key: &PrivateKey) -> Result<(), CertError> {
    if path.exists() {
        return Err(CertError::KeyFileExists(path.display().to_string()));
    }
    write_atomic(path, key.to_pem().as_bytes(), 0o600)
}

/// Writes `data` to a temporary file with `mode`, fsyncs it, and renames it
/// into place, so a crash leaves either the old file or the whole new one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| io_err(path, std::io::Error::other("not a file path")))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(data).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    if let Some(dir) = dir {
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyAlgorithm;

    #[test]
    fn pem_blocks_read_back_as_the_der_they_encode() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = encode("CERTIFICATE", &der);
            assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
            if len > 0 {
                let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                assert_eq!(back.as_ref(), der.as_slice());
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_written_0600_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.key");
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        write_key(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(matches!(
            write_key(&path, &again),
            Err(CertError::KeyFileExists(_))
        ));
        assert_eq!(
            read_key(&path).unwrap().public_key_der(),
            key.public_key_der()
        );
    }

    #[test]
    fn truncated_certificate_pem_is_refused() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ca = crate::InstanceCa::create("VN", key, crate::Validity::days(1)).unwrap();
        let pem = certs_to_pem(&[ca.certificate().clone()]);
        assert_eq!(
            certs_from_pem("ca.pem", pem.as_bytes()).unwrap()[0],
            *ca.certificate()
        );
        let cut = &pem[..pem.len() - 40];
        let err = certs_from_pem("ca.pem", cut.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("ca.pem: "), "{err}");
    }
}
