//! One process per server directory: a second `lienthong server serve` on
//! a directory already served is refused, naming the process that serves
//! it, and the directory is free again once that process is gone.

use std::process::{Command, Stdio};

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::{PATIENCE, wait_until};
use lienthong_security_server::LOCK_FILE;

fn serve(dir: &std::path::Path, provider_listen: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lienthong"));
    c.args([
        "server",
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--consumer-listen",
        "127.0.0.1:0",
        "--provider-listen",
        provider_listen,
        "--admin-listen",
        "off",
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_directory_is_refused_naming_the_first() {
    let mut f = Federation::start().await;
    f.business.stop();
    let dir = f.business.dir.path().to_owned();
    let mut first = serve(&dir, &f.business.provider_addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first server starts");
    let pid = first.id().to_string();
    wait_until(PATIENCE, "the first server to take the lock", || {
        std::fs::read_to_string(dir.join(LOCK_FILE))
            .unwrap_or_default()
            .trim()
            == pid
    })
    .await;

    // Other ports, so the lock is the only reason to refuse.
    let second = serve(&dir, "127.0.0.1:0").output().expect("second runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second serve must fail");
    assert!(
        stderr.contains(&format!("already served by process {pid}")),
        "the error names the running process: {stderr}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first keeps serving"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    f.business.start().await; // the OS released the lock with the process
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("served again after the first process is gone");
}
