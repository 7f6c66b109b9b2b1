//! What a newcomer does: run `lienthong demo`, open the printed URL, sign
//! in as the founder through the development identity provider, and see
//! her three accesses verified; the download verifies offline against the
//! demo registry's anchor.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange (Connection: close): status, headers, body.
fn http(
    method: &str,
    url: &str,
    cookies: &BTreeMap<String, String>,
    form: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let cookie: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let body = form.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        cookie.join("; "),
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn keep_cookies(h: &[(String, String)], jar: &mut BTreeMap<String, String>) {
    for (_, v) in h.iter().filter(|(k, _)| k == "set-cookie") {
        let (k, val) = v.split(';').next().unwrap().split_once('=').unwrap();
        if v.contains("Max-Age=0") {
            jar.remove(k);
        } else {
            jar.insert(k.to_owned(), val.to_owned());
        }
    }
}

#[test]
fn the_demo_prints_a_page_where_the_founder_sees_her_verified_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary runs");
    let stdout = child.stdout.take().unwrap();
    let _demo = Demo(child);
    let started = Instant::now();
    let mut url = None;
    let mut seen = String::new();
    let mut lines = BufReader::new(stdout).lines();
    while url.is_none() && started.elapsed() < Duration::from_secs(120) {
        let Some(Ok(line)) = lines.next() else { break };
        if seen.contains("The citizens' page") && line.trim().starts_with("http://") {
            url = Some(line.trim().trim_end_matches('/').to_owned());
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let page = url.unwrap_or_else(|| panic!("no page URL printed:\n{seen}"));
    // The officers' console is printed next, with the token to sign in.
    let mut console = None;
    let mut token = None;
    while (console.is_none() || token.is_none()) && started.elapsed() < Duration::from_secs(120) {
        let Some(Ok(line)) = lines.next() else { break };
        if seen.contains("officers' console")
            && console.is_none()
            && line.trim().starts_with("http://")
        {
            console = Some(line.trim().trim_end_matches('/').to_owned());
        }
        if let Some(t) = line.split("LIENTHONG_TOKEN=").nth(1) {
            token = t.split_whitespace().next().map(str::to_owned);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let console = console.unwrap_or_else(|| panic!("no console URL printed:\n{seen}"));
    let token = token.unwrap_or_else(|| panic!("no officer token printed:\n{seen}"));
    let form = format!("token={token}");
    let (status, h, _) = http(
        "POST",
        &format!("{console}/login"),
        &BTreeMap::new(),
        Some(&form),
    );
    assert_eq!(status, 303, "the officer signs in");
    let mut officer = BTreeMap::new();
    keep_cookies(&h, &mut officer);
    let (status, _, body) = http("GET", &format!("{console}/requests"), &officer, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.matches("· new server · approved").count(),
        4,
        "the four agencies' servers: {body}"
    );

    let mut jar = BTreeMap::new();
    let (status, h, _) = http("GET", &format!("{page}/login"), &jar, None);
    assert_eq!(status, 303);
    keep_cookies(&h, &mut jar);
    let authorize = header(&h, "location").to_owned();
    let (status, _, form) = http("GET", &authorize, &BTreeMap::new(), None);
    assert_eq!(status, 200);
    assert!(form.contains("DEVELOPMENT IDENTITY PROVIDER"), "{form}");
    assert!(
        form.contains("value=\"001190012345\""),
        "the founder's CCCD is filled in: {form}"
    );
    let (issuer, query) = authorize.split_once("/authorize?").unwrap();
    let (status, h, _) = http(
        "POST",
        &format!("{issuer}/authorize"),
        &BTreeMap::new(),
        Some(&format!("{query}&personal_id=001190012345")),
    );
    assert_eq!(status, 303);
    let (status, h, body) = http("GET", header(&h, "location"), &jar, None);
    assert_eq!(status, 303, "{body}");
    keep_cookies(&h, &mut jar);

    let (status, _, body) = http("GET", &format!("{page}/trace"), &jar, None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("DEVELOPMENT IDENTITY PROVIDER"),
        "every page says so"
    );
    assert_eq!(
        body.matches("<article class=\"access\"").count(),
        3,
        "{body}"
    );
    assert_eq!(body.matches("✓ Đã kiểm chứng").count(), 3, "{body}");
    assert!(body.contains("server.serverproxy.access_denied"), "{body}");

    let (status, _, file) = http("GET", &format!("{page}/trace/download"), &jar, None);
    assert_eq!(status, 200);
    let saved = dir.path().join("trace.json");
    std::fs::write(&saved, file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["trace", "verify"])
        .arg(&saved)
        .arg("--anchor")
        .arg(dir.path().join("registry/anchor.bin"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("3 exchanges"), "{text}");
}
