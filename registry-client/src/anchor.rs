//! The anchor file: which registry serves the instance and which keys sign
//! its configuration, handed to every server out of band.

use std::path::Path;

use lienthong_certs::CertError;
use lienthong_proto::pb::globalconf::v1::Anchor;
use prost::Message;

use crate::ClientError;

/// Largest anchor file read.
pub const MAX_ANCHOR_BYTES: u64 = 1024 * 1024;

/// Reads an anchor file (the protobuf `Anchor`, as `registry anchor` writes it).
pub fn read_anchor(path: &Path) -> Result<Anchor, ClientError> {
    let err = |detail: String| ClientError::Anchor {
        path: path.display().to_string(),
        detail,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_ANCHOR_BYTES {
        return Err(err(format!(
            "{} bytes; an anchor is at most {MAX_ANCHOR_BYTES}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let anchor =
        Anchor::decode(bytes.as_slice()).map_err(|e| err(format!("not an anchor: {e}")))?;
    if anchor.instance.is_empty()
        || anchor.registry_addresses.is_empty()
        || anchor.configuration_signing_certificates.is_empty()
        || anchor.instance_ca_certificate.is_empty()
    {
        return Err(err(
            "incomplete: instance, registry addresses, signing certificate and CA are all required"
                .into(),
        ));
    }
    Ok(anchor)
}

/// Writes an anchor file.
pub fn write_anchor(path: &Path, anchor: &Anchor) -> Result<(), CertError> {
    lienthong_certs::pem::write_atomic(path, &anchor.encode_to_vec(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Anchor {
        Anchor {
            instance: "VN-TEST".into(),
            registry_addresses: vec!["127.0.0.1:4400".into()],
            configuration_signing_certificates: vec![vec![1, 2, 3]],
            instance_ca_certificate: vec![4, 5, 6],
            ..Default::default()
        }
    }

    #[test]
    fn a_written_anchor_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.bin");
        write_anchor(&path, &complete()).unwrap();
        assert_eq!(read_anchor(&path).unwrap(), complete());
    }

    #[test]
    fn an_incomplete_anchor_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.bin");
        let mut anchor = complete();
        anchor.registry_addresses.clear();
        write_anchor(&path, &anchor).unwrap();
        let e = read_anchor(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("anchor {}", path.display())), "{e}");
        assert!(e.contains("incomplete"), "{e}");
    }

    #[test]
    fn bytes_that_are_no_anchor_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.bin");
        std::fs::write(&path, b"\xff\xff\xff").unwrap();
        let e = read_anchor(&path).unwrap_err().to_string();
        assert!(e.contains("not an anchor"), "{e}");
    }

    #[test]
    fn an_oversized_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.bin");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_ANCHOR_BYTES + 1).unwrap();
        let e = read_anchor(&path).unwrap_err().to_string();
        assert!(e.contains("an anchor is at most"), "{e}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.bin");
        let e = read_anchor(&path).unwrap_err().to_string();
        assert!(e.contains("absent.bin"), "{e}");
    }
}
