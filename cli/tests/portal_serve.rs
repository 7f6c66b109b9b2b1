//! `lienthong portal serve` refuses settings that would expose citizens:
//! plain HTTP on an address others reach, a personal id from a claim the
//! person edits, no authentication level, an issuer over plain HTTP.

use std::process::Command;

fn serve(extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["portal", "serve", "--dir"])
        .arg(dir.path())
        .args(["--portal", "VN/GOV/000001/portal", "--client-id", "portal"])
        .args(extra)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unsafe_settings_are_refused_before_anything_starts() {
    let good = [
        "--public-url",
        "https://tracuu.example.vn",
        "--issuer",
        "https://eid.example.vn",
        "--personal-id-claim",
        "personal_id",
        "--acr",
        "substantial",
    ];
    let (ok, err) = serve(&[&good[..], &["--listen", "0.0.0.0:0"]].concat());
    assert!(!ok && err.contains("HTTPS"), "{err}");

    let mut email = good.to_vec();
    email[5] = "email";
    let (ok, err) = serve(&[&email[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!ok && err.contains("never one a person edits"), "{err}");

    let mut plain = good.to_vec();
    plain[3] = "http://eid.example.vn";
    let (ok, err) = serve(&[&plain[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!ok && err.contains("must be https://"), "{err}");

    // Settings fine, but no security server in --dir: said plainly.
    let (ok, err) = serve(&[&good[..], &["--listen", "127.0.0.1:0"]].concat());
    assert!(!ok && err.contains("anchor"), "{err}");

    let without_acr: Vec<&str> = good[..6].to_vec();
    let (ok, err) = serve(&without_acr);
    assert!(!ok && err.contains("--acr"), "{err}");
}
