//! The admin port as Prometheus sees it: the exposition's content type,
//! HELP and TYPE for every family, `HEAD`, and — when Prometheus's
//! `promtool` is installed (Debian `prometheus`; CI installs it) — its
//! lint of the exposition and its checks of the shipped alert rules.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use lienthong_integration_tests::federation::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange: (status, headers lower-cased, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// `promtool`, if this machine has it.
fn promtool() -> Option<Command> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("promtool not installed (Debian package `prometheus`): its checks are skipped");
    }
    found.then(|| Command::new("promtool"))
}

/// The family a sample belongs to, given the families' declared types.
fn family<'a>(sample: &'a str, types: &std::collections::HashMap<&str, &str>) -> &'a str {
    let name = sample.split(['{', ' ']).next().unwrap_or(sample);
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(types.get(base), Some(&"histogram") | Some(&"summary"))
        {
            return base;
        }
    }
    name
}

/// Checks that every sample of an exposition has its family's TYPE and
/// HELP, and returns the samples.
fn well_formed(text: &str) -> Vec<&str> {
    let mut types = std::collections::HashMap::new();
    let mut helped = std::collections::HashSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name)) => {
                types.insert(name, words.next().unwrap_or(""));
            }
            (Some("#"), Some("HELP"), Some(name)) => {
                helped.insert(name);
            }
            _ => {}
        }
    }
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for sample in &samples {
        let family = family(sample, &types);
        assert!(types.contains_key(family), "no TYPE for {sample}");
        assert!(helped.contains(family), "no HELP for {sample}");
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_prometheus_exposition_format() {
    let f = Federation::start().await;
    let admin = f.business.server().admin_addr().expect("admin port");
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("the exchange succeeds");
    // A refusal, so that labelled refusal series exist too.
    f.tax
        .client()
        .await
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await
        .unwrap_err();

    let (status, head, text) = http(admin, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );

    let samples = well_formed(&text);
    for expected in [
        "lienthong_build_info{",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "lienthong_auth_certificate_expires_in_seconds ",
        "lienthong_exchange_seconds_bucket{side=\"consumer\",le=\"+Inf\"} 1",
    ] {
        assert!(
            samples.iter().any(|s| s.starts_with(expected)),
            "{expected}: {text}"
        );
    }
    assert!(!text.contains("_days"), "base units only: {text}");

    let (status, head, body) = http(admin, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.is_empty(), "HEAD answers no body: {body}");

    // The alert rules shipped in docs/ name metrics the server exports
    // (some appear only once they have a sample, e.g. TLS refusals).
    let families: Vec<&str> = lienthong_security_server::admin::family_names()
        .chain(lienthong_central_registry::admin::family_names())
        .collect();
    let rules = std::fs::read_to_string(docs().join("alerts.yml")).unwrap();
    for name in rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lienthong_"))
    {
        assert!(
            families.contains(&name),
            "alerts.yml names {name}, which neither the server nor the registry exports"
        );
    }

    promtool_check_metrics(&text);
}

/// `promtool check metrics` finds nothing to say (when installed).
fn promtool_check_metrics(text: &str) {
    let Some(mut promtool) = promtool() else {
        return;
    };
    let mut child = promtool
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_admin_port_answers_health_and_metrics() {
    use lienthong_central_registry::init::{self, InitOptions};
    use lienthong_central_registry::{Registry, RegistryOptions};
    use lienthong_proto::pb::registry::v1 as pb;
    use lienthong_registry_client as client;

    let dir = tempfile::tempdir().unwrap();
    let done = init::initialise(dir.path(), &InitOptions::new("VN", "127.0.0.1:4400")).unwrap();
    let mut opts = RegistryOptions::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    opts.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let r = Registry::start(opts).await.unwrap();
    let admin = r.admin_addr().expect("admin port");
    let mut anchor = done.anchor;
    anchor.registry_addresses = vec![r.local_addr().to_string()];
    let channel = client::connect(&anchor, None).await.unwrap();
    let err = client::operator_client(channel, "lt_wrong")
        .unwrap()
        .list_alarms(pb::ListAlarmsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let (status, head, text) = http(admin, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let samples = well_formed(&text);
    for expected in [
        "lienthong_build_info{",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "lienthong_registry_refusals_total{method=\"/lienthong.registry.v1.RegistryOperator/ListAlarms\",code=\"Unauthenticated\"} 1",
        "lienthong_registry_publishing 1",
        "lienthong_registry_configuration_version 1",
        "lienthong_registry_configuration_expiry_seconds ",
    ] {
        assert!(
            samples.iter().any(|s| s.starts_with(expected)),
            "{expected}: {text}"
        );
    }
    promtool_check_metrics(&text);

    let (status, head, body) = http(admin, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.is_empty(), "HEAD answers no body: {body}");

    let (status, head, body) = http(admin, "GET", "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    for check in ["configuration", "store", "publisher"] {
        assert_eq!(health["checks"][check]["ok"], true, "{check}: {body}");
    }
    assert!(
        health["checks"]["configuration"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("version 1, valid for"),
        "{body}"
    );
    let (status, _, _) = http(admin, "HEAD", "/health").await;
    assert_eq!(status, 200);

    let (status, _, body) = http(admin, "GET", "/anything").await;
    assert_eq!(status, 404);
    assert!(body.contains("GET /health and GET /metrics"), "{body}");
    r.shutdown().await;
}

fn docs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs"))
}

#[test]
fn the_alert_rules_load_and_fire() {
    let Some(mut promtool) = promtool() else {
        return;
    };
    let out = promtool
        .args(["check", "rules"])
        .arg(docs().join("alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The unit tests feed series and expect the alerts (with their texts).
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(docs().join("alerts.test.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
