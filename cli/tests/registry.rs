//! `lienthong registry …` as an operator uses it: init, serve as a real
//! process, operate through the anchor and a token, restart.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use lienthong_integration_tests::nodes::free_addresses;
use lienthong_integration_tests::wait::{PATIENCE, wait_until_blocking};

fn lienthong(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LIENTHONG_TOKEN")
        .env_remove("LIENTHONG_ANCHOR")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

/// A registry process, killed on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(d: &Path, addr: &str) -> Serving {
    let child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["registry", "serve", "--dir", "reg", "--listen", addr])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("registry starts");
    Serving(child)
}

#[test]
fn init_serve_operate_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [addr] = free_addresses();
    let addr = addr.to_string();
    let out = lienthong(
        &[
            "registry",
            "init",
            "--dir",
            "reg",
            "--instance",
            "VN",
            "--address",
            &addr,
        ],
        d,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().unwrap().trim().to_owned();
    assert!(token.starts_with("lt_"), "{stdout}");
    let env = [
        ("LIENTHONG_ANCHOR", "reg/anchor.bin"),
        ("LIENTHONG_TOKEN", token.as_str()),
    ];

    // A second init refuses to overwrite the registry.
    let again = lienthong(
        &[
            "registry",
            "init",
            "--dir",
            "reg",
            "--instance",
            "VN",
            "--address",
            &addr,
        ],
        d,
        &[],
    );
    assert!(!again.status.success());

    let mut server = serve(d, &addr);
    wait_until_blocking(PATIENCE, "the registry to come up", || {
        lienthong(&["registry", "conf"], d, &env).status.success()
    });

    let run = |args: &[&str]| {
        let out = lienthong(args, d, &env);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    assert!(
        run(&[
            "registry",
            "member-class",
            "GOV",
            "--description",
            "Government"
        ])
        .0
    );
    let (ok, text) = run(&[
        "registry",
        "member",
        "VN/GOV/000102",
        "--name",
        "Bộ Công an",
    ]);
    assert!(ok && text.contains("configuration version"), "{text}");
    let (ok, text) = run(&["registry", "member", "VN/GOV/000102", "--name", "again"]);
    assert!(!ok && text.contains("already exists"), "{text}");
    let (ok, text) = run(&["registry", "member", "VN/GOV/00_1", "--name", "x"]);
    assert!(!ok && text.contains("'_'"), "{text}");
    assert!(run(&["registry", "subsystem", "VN/GOV/000102/population"]).0);
    let (ok, text) = run(&["registry", "token", "VN/GOV/000102/ss1"]);
    assert!(ok && text.contains("lt_"), "{text}");
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("lt_"))
        .unwrap()
        .to_owned();
    // Listed as usable, without the token.
    let (ok, text) = run(&["registry", "tokens"]);
    assert!(ok && text.contains("VN/GOV/000102/ss1  expires "), "{text}");
    assert!(!text.contains(&token) && !text.contains("lt_"), "{text}");
    let (ok, text) = run(&["registry", "audit"]);
    assert!(
        ok && text.contains("AddMember") && text.contains("already exists"),
        "{text}"
    );
    let (_, conf) = run(&["registry", "conf"]);
    assert!(conf.contains("1 members"), "{conf}");

    // Neither a second node on this home nor moving its store while it
    // serves: both are refused, naming the serving process.
    let (ok, text) = run(&[
        "registry",
        "move-store",
        "--dir",
        "reg",
        "--database-url",
        "postgres://lienthong@127.0.0.1:1/registry",
    ]);
    assert!(
        !ok && text.contains("is already served by process") && text.contains("stop it first"),
        "{text}"
    );
    assert!(d.join("reg/registry.db").exists(), "left in place");
    let [other] = free_addresses();
    let (ok, text) = run(&[
        "registry",
        "serve",
        "--dir",
        "reg",
        "--listen",
        &other.to_string(),
    ]);
    assert!(
        !ok && text.contains("is already served by process"),
        "{text}"
    );

    let bad = lienthong(
        &["registry", "conf"],
        d,
        &[
            ("LIENTHONG_ANCHOR", "reg/anchor.bin"),
            ("LIENTHONG_TOKEN", "lt_wrong"),
        ],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Unauthenticated"));

    // A restart keeps the state; the version keeps increasing.
    let version = |text: &str| -> u64 {
        text.split("configuration version ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = version(&conf);
    drop(server);
    server = serve(d, &addr);
    let mut after = String::new();
    wait_until_blocking(PATIENCE, "the registry to come back", || {
        let (ok, text) = run(&["registry", "conf"]);
        after = text;
        ok
    });
    assert!(version(&after) > before, "{before} then {after}");
    assert!(after.contains("1 members"), "{after}");
    drop(server);
}

#[test]
fn logs_can_be_json_for_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let out = lienthong(
        &[
            "--log",
            "info",
            "--log-format",
            "json",
            "registry",
            "init",
            "--dir",
            "reg",
            "--instance",
            "VN",
            "--address",
            "127.0.0.1:4400",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "init logs its migrations at info");
    for l in lines {
        assert!(
            l.starts_with('{') && l.ends_with('}') && l.contains("\"level\""),
            "{l}"
        );
    }
    // The officer's token goes to stdout once, never to the logs.
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert!(!stderr.contains(&token));
}

/// Host names are accepted where addresses are, and the admin port answers
/// health and metrics for load balancers and Prometheus.
#[test]
fn serve_takes_host_names_and_answers_on_its_admin_port() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [addr] = free_addresses();
    let port = addr.port();
    let out = lienthong(
        &[
            "registry",
            "init",
            "--dir",
            "reg",
            "--instance",
            "VN",
            "--address",
            &format!("127.0.0.1:{port}"),
        ],
        d,
        &[],
    );
    assert!(out.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["registry", "serve", "--dir", "reg", "--listen"])
        .arg(format!("localhost:{port}"))
        .args(["--admin-listen", "localhost:0"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("registry starts");
    let stderr = child.stderr.take().unwrap();
    let mut serving = Serving(child);
    let mut said = Vec::new();
    let mut admin = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("admin port (health, metrics) on ") {
            admin = Some(a.to_owned());
            said.push(line);
            break;
        }
        said.push(line);
    }
    let admin = admin.unwrap_or_else(|| panic!("no admin port said: {said:#?}"));
    assert!(
        said.iter()
            .any(|l| l.starts_with(&format!("--listen localhost:{port}: the name resolves to"))),
        "{said:#?}"
    );
    let get = |path: &str| {
        let mut tcp = std::net::TcpStream::connect(&admin).unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    };
    let health = get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let metrics = get("/metrics");
    assert!(
        metrics.contains("lienthong_registry_publishing 1"),
        "{metrics}"
    );
    let _ = serving.0.kill();
}
