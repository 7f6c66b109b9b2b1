//! A citizen's trace, gathered by the citizens' page from a whole
//! federation, downloaded, and checked offline by `lienthong trace verify`
//! against an anchor the verifier holds: it verifies as it came, and a
//! changed record, a missing server or another instance's anchor do not.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_portal_web::bundle::{Bundle, ServerAnswer};
use lienthong_portal_web::source::{BusSource, TraceSource};
use lienthong_proto::pb::trace::v1 as pb;
use lienthong_security_server::keys::{self, ServerDir};
use lienthong_security_server::trace::portal::Outcome;
use prost::Message;

const CITIZEN: &str = "001099012345";

fn verify(file: &Path, anchor: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["trace", "verify"])
        .arg(file)
        .arg("--anchor")
        .arg(anchor)
        .output()
        .expect("binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Changes the purpose in the first record of `bundle`'s answers.
fn change_a_record(bundle: &mut Bundle) {
    for answer in bundle.servers.values_mut() {
        let ServerAnswer::Replies(pages) = answer else {
            continue;
        };
        for page in pages.iter_mut() {
            let mut reply = pb::FindUsageReply::decode(page.as_slice()).unwrap();
            if let Some(r) = reply.records.first_mut() {
                let mut leaf = pb::LogLeaf::decode(r.leaf.as_slice()).unwrap();
                leaf.purpose = "nothing to see here".into();
                r.leaf = leaf.encode_to_vec();
                *page = reply.encode_to_vec();
                return;
            }
        }
    }
    panic!("no record to change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaded_trace_verifies_offline_and_changes_to_it_show() {
    let f = Federation::start().await;
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .unwrap();
    f.checkpoint_all().await;

    let home = ServerDir(f.portal.dir.path().to_owned());
    let source = BusSource::new(
        f.portal.client().await.channel,
        portal(),
        f.registry.anchor.clone(),
        keys::auth_identity(&home).ok().map(Arc::new),
        Duration::from_secs(5),
        vec![home.configuration()],
    );
    let traced = source.trace(CITIZEN).await.unwrap();
    assert_eq!(
        traced.report.outcome(),
        Outcome::Complete,
        "{:?}",
        traced.report
    );
    assert_eq!(traced.report.exchanges.len(), 1);

    let tmp = tempfile::tempdir().unwrap();
    let anchor = tmp.path().join("anchor.bin");
    lienthong_registry_client::write_anchor(&anchor, &f.registry.anchor).unwrap();
    let file = tmp.path().join("trace.json");
    std::fs::write(&file, traced.bundle.to_json()).unwrap();
    let (code, out) = tokio::task::block_in_place(|| verify(&file, &anchor));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("every exchange is verified at both ends"),
        "{out}"
    );
    assert!(out.contains("GetPerson"), "{out}");

    // A record changed after the fact no longer hashes into the
    // witnessed tree.
    let mut changed = traced.bundle.clone();
    change_a_record(&mut changed);
    std::fs::write(&file, changed.to_json()).unwrap();
    let (code, out) = tokio::task::block_in_place(|| verify(&file, &anchor));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("VERIFICATION FAILED"), "{out}");
    assert!(!out.contains("nothing to see here  verified"), "{out}");

    // A server left out of the file is a server that did not answer.
    let mut partial = traced.bundle.clone();
    let provider = f.population[0].server().id.clone();
    assert!(partial.servers.remove(&provider).is_some());
    std::fs::write(&file, partial.to_json()).unwrap();
    let (code, out) = tokio::task::block_in_place(|| verify(&file, &anchor));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("no answer from {provider}")), "{out}");

    // Another instance's anchor: nothing in the file is trusted.
    std::fs::write(&file, traced.bundle.to_json()).unwrap();
    let other = TestRegistry::start(true).await;
    let other_anchor = tmp.path().join("other-anchor.bin");
    lienthong_registry_client::write_anchor(&other_anchor, &other.anchor).unwrap();
    let (code, out) = tokio::task::block_in_place(|| verify(&file, &other_anchor));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("does not verify against the anchor"), "{out}");
}
