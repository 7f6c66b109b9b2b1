//! Runs every `sh` block of docs/operator-guide.md, in order, as one
//! script against the real binary: the guide cannot rot.

use std::path::Path;
use std::process::Command;

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The `sh` blocks of a Markdown document, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_command_of_the_operator_guide_works() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md"),
    )
    .unwrap();
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() >= 10, "the guide has its command blocks");
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        blocks.join("\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_lienthong")).parent().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("REGISTRY", free_addr())
        .env("SS1", free_addr())
        .env("SS1_SYSTEMS", free_addr())
        .env("SS1_ADMIN", free_addr())
        .env_remove("LIENTHONG_TOKEN")
        .env_remove("LIENTHONG_ANCHOR")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide failed:\n{stdout}\n{stderr}"
    );
    // What the guide promises along the way.
    for expected in [
        "the registration: approved",
        "client VN/GOV/000102/population: approved",
        "granted: VN/GOV/000305/business may call",
        "configuration version",
        "certificate revoked",
        "RevokeCertificate",
        "\"status\":\"ok\"",
        "lienthong_configuration_version",
        "503",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
