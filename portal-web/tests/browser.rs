//! The citizens' page in headless Chromium (Debian `chromium` and
//! `chromium-driver`, over WebDriver), signing in through the standard
//! OpenID provider: the founder sees exactly her three accesses, verified;
//! markup in records stays text; a form without its anti-forgery token is
//! refused; an expired session goes back to the sign-in page. The
//! operators' consoles: an officer approves a pending server registration
//! and the server then joins, adds a member and its subsystem and sees
//! them listed, issues an enrollment token; an operator sets a backend
//! and grants access on a security server's console and the next call
//! succeeds.
//!
//! With LIENTHONG_SCREENSHOTS=DIR set, each page is saved there at desktop
//! and phone width (the README's pictures come from `docs/screenshots`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use lienthong_portal_web::state::Limits;

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    /// A fresh browser profile per session under it.
    profile: tempfile::TempDir,
    sessions: std::sync::atomic::AtomicUsize,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Driver {
    /// None (saying why) where Chromium or its driver is not installed.
    async fn start() -> Option<Self> {
        if !found("chromedriver") || !found("chromium") {
            skip("chromium and chromium-driver are not installed (.ci/run installs them)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Driver {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
            sessions: Default::default(),
        };
        for _ in 0..100 {
            if Browserless::new()
                .get(&format!("http://127.0.0.1:{port}/status"))
                .await
                .0
                == 200
            {
                return Some(d);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    /// A new browser with an empty profile (no cookies at the provider).
    async fn browser(&self) -> Client {
        let n = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let profile = self.profile.path().join(format!("profile-{n}"));
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("an object literal")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

/// Saves the page at desktop and phone width, when asked to.
async fn screenshots(b: &Client, name: &str) {
    let Some(dir) = std::env::var_os("LIENTHONG_SCREENSHOTS").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for (suffix, w, h) in [("desktop", 1280, 1000), ("phone", 390, 844)] {
        b.set_window_size(w, h).await.unwrap();
        let png = b.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).unwrap();
    }
    b.set_window_size(1280, 1000).await.unwrap();
}

/// The page's text once it holds `needle` (the page a click leads to may
/// not have replaced the one clicked on yet), or as it is after ten
/// seconds, for the caller's assertion to show.
async fn text_with(b: &Client, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = text(b).await;
        if text.contains(needle) || std::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn text(b: &Client) -> String {
    // A page still loading after a navigation has no body yet, and a body
    // found just before the navigation ends is stale once it has: read
    // again until a body holds still long enough to be read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let body = b.wait().for_element(Locator::Css("body")).await.unwrap();
        match body.text().await {
            Ok(text) => return text,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reading the page again: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the page's text cannot be read: {e}"),
        }
    }
}

/// From the page's first screen through the provider's sign-in form.
async fn sign_in(b: &Client, page: &Page, personal_id: &str) {
    b.goto(&page.url()).await.unwrap();
    b.find(Locator::Css("a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let login = match b.wait().for_element(Locator::Id("login")).await {
        Ok(l) => l,
        Err(e) => panic!(
            "no sign-in form at {:?}: {e}: {}",
            b.current_url().await,
            b.source().await.unwrap_or_default()
        ),
    };
    login.send_keys(personal_id).await.unwrap();
    b.find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait().for_element(Locator::Css("main h1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_reads_her_trace_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let mut page = Page::bind().await;
    let Some(provider) = OidcProvider::start(&page.redirect_uri(), "substantial").await else {
        return;
    };
    page.serve(
        &provider.issuer,
        &["substantial", "high"],
        FakeSource::new(),
        Limits::default(),
    );
    let b = driver.browser().await;

    b.goto(&page.url()).await.unwrap();
    assert!(text(&b).await.contains("Ai đã xem dữ liệu của tôi?"));
    screenshots(&b, "portal-welcome").await;

    sign_in(&b, &page, FOUNDER).await;
    assert!(b.current_url().await.unwrap().path().starts_with("/trace"));
    let shown = b.find_all(Locator::Css("article.access")).await.unwrap();
    assert_eq!(shown.len(), 3);
    let body = text(&b).await;
    assert_eq!(body.matches("Đã kiểm chứng").count(), 3, "{body}");
    assert!(body.contains("Sở Kế hoạch và Đầu tư Hà Nội"), "{body}");
    assert!(body.contains("2 bản ghi đang được giữ kín"), "{body}");
    screenshots(&b, "portal-trace").await;

    // The detail of one access, in English.
    b.goto(&format!(
        "{}/trace/access?client=VN%2FGOV%2F000305%2Fbusiness&id=m-1&lang=en",
        page.url()
    ))
    .await
    .unwrap();
    let body = text(&b).await;
    assert!(body.contains("VN/GOV/000102/ss1 — provider"), "{body}");
    screenshots(&b, "portal-access").await;

    // Logout with the form's token removed: refused, still signed in.
    b.goto(&format!("{}/trace", page.url())).await.unwrap();
    b.execute(
        "document.querySelector('input[name=csrf]').remove()",
        vec![],
    )
    .await
    .unwrap();
    b.find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        text_with(&b, "thiếu mã chống giả mạo")
            .await
            .contains("thiếu mã chống giả mạo")
    );
    b.goto(&format!("{}/trace", page.url())).await.unwrap();
    assert_eq!(
        b.find_all(Locator::Css("article.access"))
            .await
            .unwrap()
            .len(),
        3
    );
    // With it: signed out.
    b.find(Locator::Css("form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Css("a.button"))
        .await
        .unwrap();
    b.goto(&format!("{}/trace", page.url())).await.unwrap();
    assert_eq!(b.current_url().await.unwrap().path(), "/");

    b.close().await.unwrap();

    // The second citizen, in a browser of her own: none of the founder's,
    // and markup as text.
    let b = driver.browser().await;
    sign_in(&b, &page, SECOND).await;
    assert_eq!(
        b.find_all(Locator::Css("article.access"))
            .await
            .unwrap()
            .len(),
        1
    );
    let body = text(&b).await;
    assert!(!body.contains("chuyenvien.hoa"), "{body}");
    assert!(body.contains("<script>alert('purpose')</script>"), "{body}");
    assert!(
        body.contains("<b onmouseover=alert(1)>official</b>"),
        "{body}"
    );
    assert!(
        b.find_all(Locator::Css("main script, main b, main img"))
            .await
            .unwrap()
            .is_empty()
    );
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let mut page = Page::bind().await;
    let Some(provider) = OidcProvider::start(&page.redirect_uri(), "substantial").await else {
        return;
    };
    let limits = Limits {
        session_ttl: Duration::from_secs(8),
        ..Limits::default()
    };
    page.serve(
        &provider.issuer,
        &["substantial"],
        FakeSource::new(),
        limits,
    );
    let b = driver.browser().await;
    sign_in(&b, &page, FOUNDER).await;
    assert_eq!(
        b.find_all(Locator::Css("article.access"))
            .await
            .unwrap()
            .len(),
        3
    );
    // The session ends a fixed time after sign-in: reloading the page
    // meanwhile keeps showing the trace, then the sign-in page.
    let deadline = std::time::Instant::now() + lienthong_integration_tests::wait::PATIENCE;
    loop {
        b.refresh().await.unwrap();
        if b.current_url().await.unwrap().path() == "/" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let body = text(&b).await;
    assert!(body.contains("Phiên đăng nhập đã hết hạn"), "{body}");
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_approves_a_server_in_the_registry_console() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let reg = lienthong_integration_tests::registry::TestRegistry::start(false).await;
    let (home, id) = pending_join(&reg).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let console = lienthong_portal_web::console::RegistryConsole::new(reg.anchor.clone(), false);
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        lienthong_portal_web::console::router(std::sync::Arc::new(console)),
        std::future::pending(),
    ));
    let b = driver.browser().await;
    b.goto(&url).await.unwrap();
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&reg.officer_token)
        .await
        .unwrap();
    b.find(Locator::Css("main button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Css("article.access"))
        .await
        .unwrap();
    let body = text_with(&b, &format!("Request {id} · new server · pending")).await;
    assert!(
        body.contains(&format!("Request {id} · new server · pending")),
        "{body}"
    );
    screenshots(&b, "console-requests").await;
    b.find(Locator::Id(&format!("note{id}")))
        .await
        .unwrap()
        .send_keys("checked by phone with the agency")
        .await
        .unwrap();
    b.find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Css("article.access"))
        .await
        .unwrap();
    let body = text_with(&b, &format!("Request {id} · new server · approved")).await;
    assert!(
        body.contains(&format!("Request {id} · new server · approved")),
        "{body}"
    );
    assert!(body.contains("checked by phone with the agency"), "{body}");
    b.goto(&format!("{url}/audit")).await.unwrap();
    assert!(text(&b).await.contains("ApproveRequest"));
    screenshots(&b, "console-audit").await;

    // The officer adds a member, then a subsystem of it, and sees both.
    b.goto(&format!("{url}/members")).await.unwrap();
    for (field, value) in [
        ("class", "GOV"),
        ("code", "000305"),
        ("name", "Sở Kế hoạch và Đầu tư"),
    ] {
        b.find(Locator::Id(field))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    b.find(Locator::Id("add-member"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Id("add-subsystem"))
        .await
        .unwrap();
    assert!(
        text(&b)
            .await
            .contains("Sở Kế hoạch và Đầu tư · VN/GOV/000305")
    );
    b.find(Locator::Id("member"))
        .await
        .unwrap()
        .select_by_value("VN/GOV/000305")
        .await
        .unwrap();
    b.find(Locator::Id("subsystem"))
        .await
        .unwrap()
        .send_keys("business")
        .await
        .unwrap();
    b.find(Locator::Id("add-subsystem"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Id("add-subsystem"))
        .await
        .unwrap();
    let body = text_with(&b, "VN/GOV/000305/business").await;
    assert!(body.contains("VN/GOV/000305/business"), "{body}");
    screenshots(&b, "console-members").await;
    // A token for the new member's server, shown once.
    b.goto(&format!("{url}/tokens")).await.unwrap();
    b.find(Locator::Id("member"))
        .await
        .unwrap()
        .select_by_value("VN/GOV/000305")
        .await
        .unwrap();
    b.find(Locator::Id("server"))
        .await
        .unwrap()
        .send_keys("ss1")
        .await
        .unwrap();
    b.find(Locator::Id("issue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let token = b.wait().for_element(Locator::Id("token")).await.unwrap();
    assert!(token.text().await.unwrap().starts_with("lt_"));
    screenshots(&b, "console-tokens").await;
    for page in ["servers", "services", "trust", "alarms"] {
        b.goto(&format!("{url}/{page}")).await.unwrap();
        b.wait().for_element(Locator::Css("main h1")).await.unwrap();
        screenshots(&b, &format!("console-{page}")).await;
    }
    b.close().await.unwrap();

    // The server then joins: it fetches its certificates and starts on
    // the configuration that now lists it.
    use lienthong_security_server::join::{JoinState, poll_join};
    assert_eq!(poll_join(home.path()).await.unwrap(), JoinState::Approved);
    let mut opts = lienthong_security_server::ServerOptions::new(home.path());
    opts.consumer_listen = "127.0.0.1:0".parse().unwrap();
    opts.provider_listen = "127.0.0.1:0".parse().unwrap();
    let server = lienthong_security_server::SecurityServer::start(opts)
        .await
        .expect("the approved server starts");
    let view = server.conf().view().expect("a configuration");
    assert!(view.server(&ss1()).is_some(), "ss1 is in the configuration");
    server.shutdown();
}

/// Signs in to a security server's console with `token`.
async fn server_sign_in(b: &Client, url: &str, token: &str) {
    b.goto(url).await.unwrap();
    b.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Css("main button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_element(Locator::Css("table.checks"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_grants_access_and_the_next_call_succeeds() {
    use lienthong_security_server::admin::operators::Role;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let f = lienthong_integration_tests::federation::Federation::start().await;
    assert_eq!(
        tax_gets_person(&f).await,
        Err("server.serverproxy.access_denied".into())
    );
    // The population registry has two servers; each one's operator grants.
    for (i, agency) in f.population.iter().enumerate() {
        let url = server_console(agency, None).await;
        let token = agency.operator_token("lan.nguyen", Role::Admin);
        let b = driver.browser().await;
        server_sign_in(&b, &url, &token).await;
        let body = text(&b).await;
        assert!(body.contains(&agency.id.to_string()), "{body}");
        assert!(body.contains("Global configuration"), "{body}");
        if i == 0 {
            screenshots(&b, "server-status").await;
            for page in ["clients", "log"] {
                b.goto(&format!("{url}/{page}")).await.unwrap();
                b.wait().for_element(Locator::Css("main h1")).await.unwrap();
                screenshots(&b, &format!("server-{page}")).await;
            }
            // The operator sets the population service's backend (where it
            // is, with a shorter timeout); calls keep reaching it.
            let backend = lienthong_security_server::store::ServerStore::open(
                &lienthong_security_server::keys::ServerDir(agency.dir.path().to_owned()).store(),
            )
            .unwrap()
            .backends()
            .unwrap()
            .into_iter()
            .find(|b| b.service == "population.v1.PersonRegistry")
            .expect("the population service has a backend")
            .url;
            b.goto(&format!("{url}/services")).await.unwrap();
            for (field, value) in [
                (
                    "service",
                    "VN/GOV/000102/population/population.v1.PersonRegistry",
                ),
                ("url", backend.as_str()),
            ] {
                b.find(Locator::Id(field))
                    .await
                    .unwrap()
                    .send_keys(value)
                    .await
                    .unwrap();
            }
            let timeout = b.find(Locator::Id("timeout")).await.unwrap();
            timeout.clear().await.unwrap();
            timeout.send_keys("5000").await.unwrap();
            b.find(Locator::Id("set-backend"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            b.wait()
                .for_element(Locator::Css("p.notice"))
                .await
                .unwrap();
            let served = format!("is served by {backend} (timeout 5000 ms)");
            let body = text_with(&b, &served).await;
            assert!(body.contains(&served), "{body}");
            screenshots(&b, "server-services").await;
        }
        b.goto(&format!("{url}/access")).await.unwrap();
        b.find(Locator::Id("subject"))
            .await
            .unwrap()
            .send_keys("VN/GOV/000201/tax")
            .await
            .unwrap();
        b.find(Locator::Id("method"))
            .await
            .unwrap()
            .send_keys("GetPerson")
            .await
            .unwrap();
        b.find(Locator::Id("grant"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        b.wait()
            .for_element(Locator::Css("p.notice"))
            .await
            .unwrap();
        let granted = "granted: VN/GOV/000201/tax may call VN/GOV/000102/population/population.v1.PersonRegistry/GetPerson";
        let body = text_with(&b, granted).await;
        assert!(body.contains(granted), "{body}");
        if i == 0 {
            screenshots(&b, "server-access").await;
            b.goto(&format!("{url}/audit")).await.unwrap();
            assert!(text(&b).await.contains("grant access · ok"));
            screenshots(&b, "server-audit").await;
        }
        b.close().await.unwrap();
    }
    assert_eq!(tax_gets_person(&f).await, Ok(()));
}
