//! A new operator's stumbles, recovered from with the real binary: a
//! refused `server init` retried with a new token, `--resume` with nothing
//! to resume, a damaged configuration cache replaced from the registry,
//! listen flags with host names, a port in use refused without unrelated
//! errors, and grants only for services the server provides — each change,
//! refused or done, audited under the Unix user like the console's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lienthong_integration_tests::federation::*;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_security_server::admin::operators;
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::store::ServerStore;

fn lienthong(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .env_remove("LIENTHONG_ENROLLMENT_TOKEN")
        .output()
        .expect("lienthong runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command an error tells the operator to run (between backticks after
/// "run `"), as arguments.
fn suggested(err: &str, starting: &str) -> Vec<String> {
    let from = err
        .find(&format!("run `{starting}"))
        .unwrap_or_else(|| panic!("the error suggests `{starting}…`: {err}"));
    let rest = &err[from + "run `".len()..];
    let cmd = &rest[..rest.find('`').expect("closing backtick")];
    cmd.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_init_is_retried_with_a_new_token_as_the_error_says() {
    let f = Federation::start().await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("ss9");
    let anchor = home.path().join("given-anchor.bin");
    lienthong_registry_client::write_anchor(&anchor, &f.registry.anchor).unwrap();
    let server = "VN/GOV/000102/ss9";
    let init = |token: &str| {
        lienthong(&[
            "server",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--anchor",
            anchor.to_str().unwrap(),
            "--server",
            server,
            "--address",
            "127.0.0.1:5599",
            "--token",
            token,
            "--wait",
            "20",
        ])
    };

    let refused = init("lt_not-a-token");
    let err = stderr(&refused);
    assert!(!refused.status.success(), "a bad token is refused: {err}");
    assert!(err.contains("nothing was registered"), "{err}");

    // --resume has nothing to wait for, and says what to run instead.
    let resume = lienthong(&["server", "init", "--dir", dir.to_str().unwrap(), "--resume"]);
    let resume_err = stderr(&resume);
    assert!(!resume.status.success());
    assert!(
        resume_err.contains("nothing to resume"),
        "--resume says why it cannot: {resume_err}"
    );
    suggested(&resume_err, "lienthong server init --dir");

    // The same command again with a token still refused keeps the retry open.
    let again = init("lt_still-not-a-token");
    assert!(!again.status.success());
    let retry = suggested(&stderr(&again), "lienthong server init --dir");

    // What the error said to run, with a real token, joins.
    let token = f
        .registry
        .officer()
        .await
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some((&server.parse::<lienthong_proto::id::ServerId>().unwrap()).into()),
            valid_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let args: Vec<String> = retry
        .iter()
        .skip(1)
        .map(|a| a.replace("NEW_TOKEN", &token))
        .chain(["--wait".into(), "20".into()])
        .collect();
    assert!(
        args.contains(&token),
        "the command takes the token: {args:?}"
    );
    let joined = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        joined.status.success(),
        "the suggested command joins: {}{}",
        String::from_utf8_lossy(&joined.stdout),
        stderr(&joined)
    );
    assert!(ServerDir(dir.clone()).auth_cert().exists());
    // And --resume on a joined server says it is done.
    let resumed = lienthong(&["server", "init", "--dir", dir.to_str().unwrap(), "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
}

/// Reads a child's stderr lines on a thread.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_recovers_a_damaged_cache_binds_host_names_and_fails_quietly_on_a_port_in_use() {
    let mut f = Federation::start().await;
    f.business.stop();
    let dir = f.business.dir.path().to_owned();
    let provider = f.business.provider_addr.to_string();

    // A port in use: refused, naming it, and nothing else goes wrong.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let busy = lienthong(&[
        "server",
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--consumer-listen",
        "127.0.0.1:0",
        "--provider-listen",
        &provider,
        "--admin-listen",
        &taken_addr,
    ]);
    let err = stderr(&busy);
    assert!(!busy.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {taken_addr}")),
        "{err}"
    );
    assert!(
        !err.contains("retention") && !err.contains("ERROR"),
        "no unrelated error lines: {err}"
    );
    drop(taken);

    // A damaged cache, and host names on every listen flag.
    let cache = ServerDir(dir.clone()).configuration();
    std::fs::write(&cache, b"not a configuration at all").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args([
            "server",
            "serve",
            "--dir",
            dir.to_str().unwrap(),
            "--consumer-listen",
            "localhost:0",
            "--provider-listen",
            &provider.replace("127.0.0.1", "localhost"),
            "--admin-listen",
            "localhost:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(" serving: ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("serve never said it serves: {seen:#?}");
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = seen.join("\n");
    assert!(
        seen.iter()
            .any(|l| l.contains("WARN") && l.contains("cached global configuration is unusable")),
        "the damaged cache is reported at warning level: {all}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("WARN") && l.contains("replaced by a fresh download")),
        "and its replacement too: {all}"
    );
    for flag in ["--consumer-listen", "--provider-listen", "--admin-listen"] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with(&format!("{flag} localhost:")) && l.contains("resolves to")),
            "{flag}: the address bound is said: {all}"
        );
    }
    let fresh = std::fs::read(&cache).unwrap();
    assert_ne!(
        fresh, b"not a configuration at all",
        "the cache was replaced"
    );

    // A later start uses the replaced cache without a warning.
    f.business.start().await;
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("serves from the fresh configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_only_for_services_this_server_provides_unless_forced() {
    let f = Federation::start().await;
    let dir = f.population[0].dir.path().to_str().unwrap().to_owned();
    let grant = |service: &str, force: bool| {
        let mut args = vec![
            "server",
            "acl",
            "grant",
            "--dir",
            &dir,
            "VN/GOV/000201/tax",
            service,
        ];
        if force {
            args.push("--force");
        }
        lienthong(&args)
    };
    let others = "VN/GOV/000305/business/population.v1.PersonRegistry";
    let refused = grant(others, false);
    let err = stderr(&refused);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains(
            "this server does not provide VN/GOV/000305/business/population.v1.PersonRegistry"
        ) && err.contains("is not a client of this server")
            && err.contains("--force"),
        "{err}"
    );
    let unregistered = grant(
        "VN/GOV/000102/population/population.v1.NoSuchService",
        false,
    );
    let err = stderr(&unregistered);
    assert!(!unregistered.status.success(), "{err}");
    assert!(
        err.contains("offers no service population.v1.NoSuchService"),
        "{err}"
    );

    let forced = grant(others, true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(stderr(&forced).contains("granting anyway (--force)"));

    let provided = grant(
        "VN/GOV/000102/population/population.v1.PersonRegistry",
        false,
    );
    assert!(provided.status.success(), "{}", stderr(&provided));
    let list = lienthong(&["server", "acl", "list", "--dir", &dir]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("VN/GOV/000305/business/population.v1.PersonRegistry"),
        "{list}"
    );

    // Every change made here, refusals included, is in the server's
    // operators' audit log under the Unix user, as the console's are.
    let revoked = lienthong(&[
        "server",
        "acl",
        "revoke",
        "--dir",
        &dir,
        "VN/GOV/000201/tax",
        others,
    ]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let tls_backend = lienthong(&[
        "server",
        "backend",
        "set",
        "--dir",
        &dir,
        "VN/GOV/000102/population/population.v1.PersonRegistry",
        "https://127.0.0.1:9",
    ]);
    assert!(!tls_backend.status.success());
    let store = ServerStore::open(&ServerDir(dir.clone().into()).store()).unwrap();
    let log = operators::audit_log(&store).unwrap();
    let actor = operators::cli_actor();
    let got: Vec<(&str, &str, bool)> = log
        .iter()
        .take(6)
        .map(|r| {
            assert_eq!(r.actor, actor);
            (r.action.as_str(), r.detail.as_str(), r.result == "ok")
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "set backend",
                "VN/GOV/000102/population/population.v1.PersonRegistry -> https://127.0.0.1:9 (timeout 30000 ms)",
                false
            ),
            (
                "revoke access",
                "revoke VN/GOV/000201/tax VN/GOV/000305/business/population.v1.PersonRegistry",
                true
            ),
            (
                "grant access",
                "grant VN/GOV/000201/tax VN/GOV/000102/population/population.v1.PersonRegistry",
                true
            ),
            (
                "grant access",
                "grant VN/GOV/000201/tax VN/GOV/000305/business/population.v1.PersonRegistry (--force)",
                true
            ),
            (
                "grant access",
                "grant VN/GOV/000201/tax VN/GOV/000102/population/population.v1.NoSuchService",
                false
            ),
            (
                "grant access",
                "grant VN/GOV/000201/tax VN/GOV/000305/business/population.v1.PersonRegistry",
                false
            ),
        ]
    );
    assert!(log[0].result.contains("https"), "{}", log[0].result);
}
