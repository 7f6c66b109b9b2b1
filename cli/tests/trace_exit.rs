//! `lienthong trace` run as an operator would: its exit status says whether
//! the trace is complete and verified, and it fails loudly when one end of
//! an exchange has lost its records.

use lienthong_integration_tests::federation::*;
use lienthong_security_server::keys::ServerDir;

const CITIZEN: &str = "001099012345";

fn trace(f: &Federation, extra: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .arg("trace")
        .arg(CITIZEN)
        .arg("--dir")
        .arg(f.portal.dir.path())
        .args(["--portal", &portal().to_string()])
        .args(["--consumer", &f.portal.server().consumer_addr().to_string()])
        .args(extra)
        .output()
        .expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_status_tells_complete_from_discrepancy_from_incomplete() {
    let mut f = Federation::start().await;
    let reply = f
        .business
        .client()
        .await
        .business_gets_person()
        .await
        .unwrap();
    let message_id = reply
        .metadata()
        .get("lt-message-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    f.checkpoint_all().await;

    let (code, out) = tokio::task::block_in_place(|| trace(&f, &[]));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("consumer+provider"), "{out}");

    // The provider's rows of the exchange deleted: a discrepancy, exit 1.
    let provider = f
        .population
        .iter()
        .find(|p| {
            p.server()
                .log_reader()
                .by_message(&message_id)
                .is_ok_and(|r| !r.is_empty())
        })
        .expect("a provider logged it");
    // Its records deleted from the provider's index (their lookup entries).
    let records = provider
        .server()
        .log_reader()
        .by_message(&message_id)
        .unwrap();
    let db = rusqlite::Connection::open(
        ServerDir(provider.dir.path().to_owned())
            .message_log()
            .join("index.db"),
    )
    .unwrap();
    for leaf in records {
        assert!(
            db.execute("DELETE FROM runs WHERE leaf_index = ?1", [leaf as i64])
                .unwrap()
                > 0
        );
    }
    let (code, out) = tokio::task::block_in_place(|| trace(&f, &[]));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DISCREPANCY"), "{out}");
    assert!(out.contains(&provider.id.to_string()), "{out}");
    let (code, json) = tokio::task::block_in_place(|| trace(&f, &["--json"]));
    assert_eq!(code, Some(1), "{json}");
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["exchanges"][0]["status"], "discrepancy");
    assert_eq!(v["exchanges"][0]["verified"], false);

    // A server that does not answer: incomplete, exit 2 (the discrepancy
    // gone with the business server's records out of reach).
    f.business.stop();
    let (code, out) = tokio::task::block_in_place(|| trace(&f, &[]));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no answer from"), "{out}");
}
