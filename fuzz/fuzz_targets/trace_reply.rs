//! A trace portal's answers: `FindUsageReply` bytes from a server, as
//! `portal::fan_out` verifies (checkpoint signature, registry
//! countersignature, inclusion proofs) and merges them. Input: `mode: u8`,
//! then the reply. Mode 1 re-signs the reply's checkpoint with the owner's
//! and the registry's fixture keys; mode 2 also rebuilds the tree from the
//! leaves of every record the reply proves — visible, withheld and
//! retention records (indexes and proofs) — so every proof must hold.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::{Input, fixture};
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessReply};
use lienthong_proto::pb::trace::v1::{FindUsageReply, LogLeaf};
use lienthong_proto::{canonical, merkle};
use lienthong_security_server::conf_client::ConfView;
use lienthong_security_server::trace::portal;
use prost::Message;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fn view() -> &'static ConfView {
    static V: OnceLock<ConfView> = OnceLock::new();
    V.get_or_init(|| fixture().view())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte() % 3;
    let Ok(mut reply) = FindUsageReply::decode(input.rest()) else {
        return;
    };
    let f = fixture();
    if mode == 2 {
        // One tree of every record the reply proves: the visible ones, the
        // withheld ones and the retention record.
        let hashes: Vec<merkle::Hash> = reply
            .records
            .iter()
            .chain(&reply.withheld_records)
            .chain(&reply.retention_records)
            .map(|r| merkle::leaf_hash(&r.leaf))
            .collect();
        let proved = reply
            .records
            .iter_mut()
            .chain(reply.withheld_records.iter_mut())
            .chain(reply.retention_records.iter_mut());
        for (i, r) in proved.enumerate() {
            r.leaf_index = i as u64;
            r.inclusion_proof = merkle::inclusion_proof(&hashes, i)
                .expect("in range")
                .iter()
                .map(|h| h.to_vec())
                .collect();
        }
        let cp = reply.checkpoint.get_or_insert_with(Checkpoint::default);
        cp.tree_size = hashes.len() as u64;
        cp.root_hash = merkle::root(&hashes).to_vec();
    }
    if mode >= 1 {
        let cp = reply.checkpoint.get_or_insert_with(Checkpoint::default);
        cp.server = Some((&f.provider_server).into());
        cp.signature = None;
        let digest = canonical::digest(&canonical::checkpoint(cp));
        cp.signature = Some(f.provider.sign_digest(&digest).expect("signs"));
        reply.witness = Some(WitnessReply {
            countersignature: Some(f.registry.sign_digest(&digest).expect("signs")),
            witnessed_at_unix_ms: reply.witness.as_ref().map_or(0, |w| w.witnessed_at_unix_ms),
            ..Default::default()
        });
    }

    let asked = reply.clone();
    let report = runtime()
        .block_on(portal::fan_out(
            view(),
            &f.anchor,
            "001099012345",
            Duration::from_secs(5),
            move |server| {
                let answer = if server == fixture().provider_server {
                    Ok(vec![asked.clone()])
                } else {
                    Err("not asked".to_string())
                };
                async move { answer }
            },
        ))
        .expect("fan-out");

    assert_eq!(report.unanswered.len(), 1);
    let undecodable = reply
        .records
        .iter()
        .filter(|r| LogLeaf::decode(r.leaf.as_slice()).is_err())
        .count();
    assert!(report.exchanges.len() <= reply.records.len() - undecodable);
    assert!(report.unwitnessed as usize <= reply.records.len());
    let _ = report.outcome();
    if mode == 2 {
        // Rebuilt and re-signed: every decodable record (withheld and
        // retention records included) is in the tree.
        assert!(
            report
                .failures
                .iter()
                .all(|(_, f)| !f.contains("does not match the witnessed log")),
            "{:?}",
            report.failures
        );
    }
    for w in report.exchanges.windows(2) {
        assert!(w[0].at_ms >= w[1].at_ms, "newest first");
    }
});
