//! Killing a security server (SIGKILL) under load loses no record of an
//! exchange whose client saw success: the response leaves only after its
//! log record is durable.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lienthong_integration_tests::federation::*;
use lienthong_proto::pb::trace::v1::{LogLeaf, Phase, Side};
use lienthong_security_server::keys::ServerDir;
use prost::Message;
use tonic::transport::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_exchange() {
    let mut f = Federation::start().await;
    // The business registry's server runs as a real process from now on.
    f.business.stop();
    let (_, consumer) = reserve_port(); // a free port for the consumer side
    let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args([
            "server",
            "serve",
            "--dir",
            f.business.dir.path().to_str().unwrap(),
            "--consumer-listen",
            &consumer.to_string(),
            "--provider-listen",
            &f.business.provider_addr.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server process starts");
    let started = Instant::now();
    let channel = loop {
        match Endpoint::from_shared(format!("http://{consumer}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("server process did not come up: {e}"),
        }
    };

    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for w in 0..16 {
        let is = InformationSystem {
            channel: channel.clone(),
        };
        let acknowledged = acknowledged.clone();
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("kill-{w}-{i}");
                let mut m = call_metadata(&business(), &population());
                m.insert("lt-message-id", id.parse().unwrap());
                match is.unary("GetPerson", m, "001099012345").await {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(id);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Let load build up, then kill the process without warning.
    while acknowledged.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for w in workers {
        let _ = w.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 200,
        "load ran: {}",
        acknowledged.len()
    );

    let dir = ServerDir(f.business.dir.path().to_owned());
    // The records are sealed at rest: read them as the server does.
    let owner = f.business.id.to_string();
    let reader = lienthong_security_server::message_log::LogReader::open(
        &dir.message_log(),
        lienthong_security_server::keys::log_keys(&dir, None, &owner).unwrap(),
    )
    .unwrap();
    let mut responded = HashSet::new();
    for i in 0..reader.tree_size().unwrap() {
        let leaf = reader.leaf(i).unwrap().unwrap();
        let leaf = LogLeaf::decode(leaf.as_slice()).unwrap();
        if leaf.side == Side::Consumer as i32 && leaf.phase == Phase::Response as i32 {
            responded.insert(leaf.message_id);
        }
    }
    let lost: Vec<_> = acknowledged.difference(&responded).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged exchanges have no durable record: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
