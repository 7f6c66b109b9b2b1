//! The README's run command, `lienthong demo`, end to end: a whole
//! federation, the business-registration scenario, the founder's trace.

use std::process::Command;

#[test]
fn demo_plays_the_scenario_and_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["--log", "debug", "demo", "--once", "--dir"])
        .arg(dir.path())
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in 1..=6 {
        assert!(
            stdout.contains(&format!("[{step}/6]")),
            "step {step}: {stdout}"
        );
    }
    // The two exchanges of the scenario, with the source registries' data.
    assert!(stdout.contains("← OK in"), "{stdout}");
    assert!(
        stdout.contains("Nguyễn Thị Lan, Nữ, born 1990-05-14"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tax code 8012345678, outstanding 0 VND"),
        "{stdout}"
    );
    // The ungranted call is refused by the provider's server.
    assert!(
        stdout.contains("server.serverproxy.access_denied"),
        "{stdout}"
    );
    // The trace shows all three, verified, logged at both ends.
    assert!(stdout.contains("3 exchanges touched her data"), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("consumer+provider") && l.trim_end().ends_with("yes"))
        .collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    // Every server's files are where the operator guide says.
    for code in ["000102", "000305", "000201", "000001"] {
        let home = dir.path().join(format!("{code}-ss1"));
        for f in [
            "auth.pem",
            "auth.key",
            "server.db",
            "messagelog",
            "configuration.bin",
        ] {
            assert!(home.join(f).exists(), "{code}-ss1/{f} missing");
        }
        // The services' descriptor set, from the registry's catalogue.
        let catalogue: Vec<_> = std::fs::read_dir(home.join("catalogue"))
            .unwrap_or_else(|e| panic!("{code}-ss1/catalogue: {e}"))
            .collect();
        assert_eq!(catalogue.len(), 1, "{code}-ss1/catalogue");
    }
    // The services' .proto files and descriptor set, for clients.
    for f in [
        "population/v1/population.proto",
        "tax/v1/tax.proto",
        "demo.binpb",
    ] {
        assert!(
            dir.path().join("proto").join(f).exists(),
            "proto/{f} missing"
        );
    }
    // No private key material reaches the terminal, and the logs (here at
    // debug level) carry no personal ID and no key material either.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DEBUG") || stderr.contains("INFO"),
        "logs were written"
    );
    for code in ["000102", "000305", "000201", "000001"] {
        let home = dir.path().join(format!("{code}-ss1"));
        let key = std::fs::read_to_string(home.join("auth.key")).unwrap();
        let secret = key.lines().nth(1).unwrap();
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{code} key leaked"
        );
    }
    assert!(
        !stderr.contains("001190012345"),
        "a personal ID reached the logs"
    );

    // The business registry's operational data: every exchange, no personal ID.
    let log = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["server", "log", "--dir"])
        .arg(dir.path().join("000305-ss1"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("population.v1.PersonRegistry/GetPerson"),
        "{log}"
    );
    assert!(log.contains("tax.v1.TaxRegistry/GetTaxStatus"), "{log}");
    assert!(!log.contains("001190012345"), "{log}");
}
