//! `lienthong demo --help` describes the federation the demo starts.

use std::process::Command;

#[test]
fn demo_help_counts_the_agencies_the_demo_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--help"])
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // The demo joins four agencies (cli/src/demo) and says so when run.
    assert!(help.contains("four agencies"), "{help}");
    assert!(!help.contains("three agencies"), "{help}");
}
