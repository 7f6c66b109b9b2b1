//! The README's run command, `lienthong demo`, end to end.

use std::process::Command;

#[test]
fn demo_sets_up_pki_and_shows_mtls_and_signed_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("VN/GOV/000305/ss1 reached VN/GOV/000102/ss1")
            && stdout.contains("it sees the caller as VN/GOV/000305/ss1"),
        "{stdout}"
    );
    assert!(stdout.contains("bound to that request"), "{stdout}");
    assert!(
        stdout.contains("purpose altered is refused: true"),
        "{stdout}"
    );
    for agency in ["000102", "000305", "000201"] {
        for f in ["auth.pem", "auth.key", "sign.pem", "sign.key"] {
            assert!(
                dir.path().join(agency).join(f).exists(),
                "{agency}/{f} missing"
            );
        }
    }
    // No private key material reaches the terminal.
    let key = std::fs::read_to_string(dir.path().join("000102/auth.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!stdout.contains(body));
}
