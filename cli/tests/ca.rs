//! `lienthong ca …` driven as an operator would, on files.

use std::path::Path;
use std::process::{Command, Output};

fn lienthong(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs")
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = lienthong(args, cwd);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = lienthong(args, cwd);
    assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_csr_issue_inspect_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&["ca", "init", "--dir", "ca", "--instance", "VN"], d);
    assert!(out.contains("created instance CA for VN"), "{out}");

    ok(
        &[
            "ca",
            "csr",
            "--key",
            "ss1.key",
            "--out",
            "ss1.csr",
            "--subject",
            "VN/GOV/000102/ss1",
        ],
        d,
    );
    let out = ok(
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--csr",
            "ss1.csr",
            "--auth",
            "VN/GOV/000102/ss1",
            "--address",
            "127.0.0.1:5500",
            "--out",
            "ss1.pem",
        ],
        d,
    );
    assert!(
        out.contains("issued auth certificate for VN/GOV/000102/ss1"),
        "{out}"
    );
    let out = ok(&["ca", "inspect", "ss1.pem", "--ca", "ca/ca.pem"], d);
    assert!(out.contains("subject      VN/GOV/000102/ss1"), "{out}");
    assert!(out.contains("auth (TLS) certificate"), "{out}");
    assert!(out.contains("verified     ok"), "{out}");

    ok(
        &[
            "ca",
            "csr",
            "--key",
            "sign.key",
            "--out",
            "sign.csr",
            "--subject",
            "VN/GOV/000102",
            "--key-algorithm",
            "ed25519",
        ],
        d,
    );
    ok(
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--csr",
            "sign.csr",
            "--signing",
            "VN/GOV/000102",
            "--out",
            "sign.pem",
        ],
        d,
    );
    let out = ok(&["ca", "inspect", "sign.pem", "--ca", "ca/ca.pem"], d);
    assert!(out.contains("signing certificate of a member"), "{out}");

    // The CA key is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second init never replaces the CA key.
    let err = fails(&["ca", "init", "--dir", "ca", "--instance", "VN"], d);
    assert!(err.contains("refusing to replace a CA key"), "{err}");
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&["ca", "init", "--dir", "ca", "--instance", "VN"], d);
    ok(&["ca", "init", "--dir", "other", "--instance", "VN"], d);
    ok(
        &[
            "ca",
            "csr",
            "--key",
            "k",
            "--out",
            "c.csr",
            "--subject",
            "x",
        ],
        d,
    );

    // An identifier with a space in a part.
    let err = fails(
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--csr",
            "c.csr",
            "--signing",
            "VN/GOV/00 102",
            "--out",
            "s.pem",
        ],
        d,
    );
    assert!(err.contains("member code \"00 102\" contains ' '"), "{err}");

    // A tampered CSR.
    let pem = std::fs::read_to_string(d.join("c.csr")).unwrap();
    let mut lines: Vec<String> = pem.lines().map(String::from).collect();
    let mid = lines.len() / 2;
    let flipped: String = lines[mid]
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    lines[mid] = flipped;
    std::fs::write(d.join("bad.csr"), lines.join("\n") + "\n").unwrap();
    let err = fails(
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--csr",
            "bad.csr",
            "--signing",
            "VN/GOV/000102",
            "--out",
            "s.pem",
        ],
        d,
    );
    assert!(err.contains("certificate signing request"), "{err}");

    // A certificate checked against another CA.
    ok(
        &[
            "ca",
            "issue",
            "--dir",
            "ca",
            "--csr",
            "c.csr",
            "--signing",
            "VN/GOV/000102",
            "--out",
            "s.pem",
        ],
        d,
    );
    let err = fails(&["ca", "inspect", "s.pem", "--ca", "other/ca.pem"], d);
    assert!(err.contains("not issued by a trusted CA"), "{err}");

    // A truncated certificate file.
    let pem = std::fs::read_to_string(d.join("s.pem")).unwrap();
    std::fs::write(d.join("cut.pem"), &pem[..pem.len() / 2]).unwrap();
    let err = fails(&["ca", "inspect", "cut.pem"], d);
    assert!(err.contains("cut.pem"), "{err}");
}

#[test]
fn help_explains_each_argument() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["ca", "issue", "--help"], dir.path());
    for arg in [
        "--dir",
        "--csr",
        "--auth",
        "--address",
        "--signing",
        "--out",
        "--days",
    ] {
        assert!(out.contains(arg), "help lacks {arg}: {out}");
    }
    assert!(out.contains("Example"), "{out}");
}
