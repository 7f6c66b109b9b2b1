//! Citizens sign in through a standard OpenID provider (npm
//! `oidc-provider`) and see their own accesses, and only theirs; codes,
//! states and sessions are bound to the browser that started the login.

mod common;

use common::*;
use lienthong_portal_web::state::Limits;

/// The page and the provider, or None where the provider is not installed.
async fn start(limits: Limits) -> Option<(Page, OidcProvider, std::sync::Arc<FakeSource>)> {
    let mut page = Page::bind().await;
    let provider = OidcProvider::start(&page.redirect_uri(), "substantial").await?;
    let source = FakeSource::new();
    page.serve(
        &provider.issuer,
        &["substantial", "high"],
        source.clone(),
        limits,
    );
    Some((page, provider, source))
}

#[tokio::test]
async fn the_founder_signs_in_and_sees_exactly_her_three_accesses() {
    let Some((page, _provider, _)) = start(Limits::default()).await else {
        return;
    };
    let mut b = Browserless::new();
    let (status, headers, body) = b.login(&page, FOUNDER).await;
    assert_eq!(status, 303, "{body}");
    assert!(headers["location"].to_str().unwrap().starts_with("/trace"));
    let session = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("lt_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );

    let (status, headers, body) = b.get(&format!("{}/trace", page.url())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(accesses(&body), 3, "{body}");
    assert!(body.contains("lang=\"vi\""));
    assert!(body.contains("Sở Kế hoạch và Đầu tư Hà Nội"));
    assert!(body.contains("server.serverproxy.access_denied"));
    assert!(body.contains("Đã kiểm chứng"));
    assert!(
        body.contains("2 bản ghi đang được giữ kín"),
        "withheld counted"
    );
    assert!(body.contains(FOUNDER));
    // Scripts have nowhere to run, and the page is not kept by caches.
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["cache-control"], "no-store");

    // English, and the filters: one agency, then a day with nothing.
    let (_, _, en) = b
        .get(&format!(
            "{}/trace?lang=en&agency=VN%2FGOV%2F000201",
            page.url()
        ))
        .await;
    assert!(en.contains("lang=\"en\""));
    assert_eq!(accesses(&en), 1, "{en}");
    let (_, _, none) = b
        .get(&format!(
            "{}/trace?from=2020-01-01&to=2020-01-02",
            page.url()
        ))
        .await;
    assert_eq!(accesses(&none), 0);

    // One access in detail, with where each end logged it.
    let (status, _, detail) = b
        .get(&format!(
            "{}/trace/access?client=VN%2FGOV%2F000305%2Fbusiness&id=m-1&lang=en",
            page.url()
        ))
        .await;
    assert_eq!(status, 200, "{detail}");
    assert!(detail.contains("VN/GOV/000102/ss1 — provider"), "{detail}");
    assert!(detail.contains("VN/GOV/000305/ss1 — caller"), "{detail}");
}

#[tokio::test]
async fn a_second_citizen_sees_none_of_hers_and_markup_in_records_is_text() {
    let Some((page, _provider, _)) = start(Limits::default()).await else {
        return;
    };
    let mut b = Browserless::new();
    assert_eq!(b.login(&page, SECOND).await.0, 303);
    let (_, _, body) = b.get(&format!("{}/trace", page.url())).await;
    assert_eq!(accesses(&body), 1, "{body}");
    assert!(!body.contains("chuyenvien.hoa"), "another citizen's access");
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(!body.contains("<b onmouseover"), "{body}");
    assert!(!body.contains("<i>Hà Nội</i>"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert('purpose')&lt;/script&gt;"),
        "{body}"
    );
    assert!(
        body.contains("&lt;b onmouseover=alert(1)&gt;official&lt;/b&gt;"),
        "{body}"
    );
    // What servers say of themselves is text too.
    assert!(
        body.contains("&lt;script&gt;alert('unanswered')&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<iframe"), "{body}");
    assert!(
        body.contains("&lt;iframe src=//evil&gt;failure&lt;/iframe&gt;"),
        "{body}"
    );
    // The detail link carries the markup-laden id as a query value.
    assert!(
        body.contains("id=%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E"),
        "{body}"
    );

    let mut c = Browserless::new();
    assert_eq!(c.login(&page, NOBODY).await.0, 303);
    let (_, _, body) = c.get(&format!("{}/trace", page.url())).await;
    assert_eq!(accesses(&body), 0, "{body}");
    assert!(body.contains("Không có lần truy cập nào."));
}

#[tokio::test]
async fn a_replayed_code_and_a_state_mismatch_are_refused() {
    let Some((page, _provider, _)) = start(Limits::default()).await else {
        return;
    };
    let mut b = Browserless::new();
    let callback = b
        .walk(
            &format!("{}/login", page.url()),
            &page.redirect_uri(),
            FOUNDER,
        )
        .await;
    assert_eq!(b.get(&callback).await.0, 303, "the first use signs in");

    // The same callback again: that login is over.
    let (status, _, body) = b.get(&callback).await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown or expired"), "{body}");

    // The old code under a new login's state: the provider refuses it.
    let mut attacker = Browserless::new();
    let fresh = attacker
        .walk(
            &format!("{}/login", page.url()),
            &page.redirect_uri(),
            SECOND,
        )
        .await;
    let state = query(&fresh, "state");
    let code = query(&callback, "code");
    let replay = format!(
        "{}?{}",
        page.redirect_uri(),
        serde_urlencoded::to_string([("code", code.as_str()), ("state", state.as_str())]).unwrap()
    );
    let (status, headers, body) = attacker.get(&replay).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("refused the code"), "{body}");
    assert!(
        headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("lt_session="))
    );

    // A state that is not the login's.
    let mut c = Browserless::new();
    let cb = c
        .walk(
            &format!("{}/login", page.url()),
            &page.redirect_uri(),
            FOUNDER,
        )
        .await;
    let forged = cb.replace(&format!("state={}", query(&cb, "state")), "state=forged");
    let (status, _, body) = c.get(&forged).await;
    assert_eq!(status, 400);
    assert!(body.contains("state mismatch"), "{body}");
}

#[tokio::test]
async fn logout_needs_the_forms_token_and_an_old_session_goes_back_to_login() {
    let Some((page, _provider, _)) = start(Limits::default()).await else {
        return;
    };
    let mut b = Browserless::new();
    assert_eq!(b.login(&page, FOUNDER).await.0, 303);
    let (_, _, body) = b.get(&format!("{}/trace", page.url())).await;
    let token = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the logout form's token")
        .to_owned();

    let (status, _, body) = b.post(&format!("{}/logout", page.url()), &[]).await;
    assert_eq!(status, 403, "{body}");
    let (status, _, _) = b
        .post(
            &format!("{}/logout", page.url()),
            &[("csrf", "not-the-token")],
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        b.get(&format!("{}/trace", page.url())).await.0,
        200,
        "still signed in"
    );

    let session = b.cookies[&page.addr.to_string()]["lt_session"].clone();
    let (status, _, _) = b
        .post(&format!("{}/logout", page.url()), &[("csrf", &token)])
        .await;
    assert_eq!(status, 303);
    // The old cookie, replayed, is no session: back to the sign-in page.
    b.cookies
        .get_mut(&page.addr.to_string())
        .unwrap()
        .insert("lt_session".into(), session);
    let (status, headers, _) = b.get(&format!("{}/trace", page.url())).await;
    assert_eq!(status, 303);
    assert!(
        headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/?expired=1")
    );
}

#[tokio::test]
async fn answers_are_cached_and_each_citizen_is_rate_limited() {
    let limits = Limits {
        cache_ttl: std::time::Duration::ZERO,
        traces_per_window: 2,
        ..Limits::default()
    };
    let Some((page, _provider, source)) = start(limits).await else {
        return;
    };
    let mut b = Browserless::new();
    assert_eq!(b.login(&page, FOUNDER).await.0, 303);
    let url = format!("{}/trace", page.url());
    assert_eq!(b.get(&url).await.0, 200);
    assert_eq!(b.get(&url).await.0, 200);
    let (status, headers, body) = b.get(&url).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(source.asked.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The second citizen is not held back by the first.
    let mut c = Browserless::new();
    assert_eq!(c.login(&page, SECOND).await.0, 303);
    assert_eq!(c.get(&url).await.0, 200);
}

#[tokio::test]
async fn a_cached_answer_spares_the_bus() {
    let Some((page, _provider, source)) = start(Limits::default()).await else {
        return;
    };
    let mut b = Browserless::new();
    assert_eq!(b.login(&page, FOUNDER).await.0, 303);
    for _ in 0..5 {
        assert_eq!(b.get(&format!("{}/trace", page.url())).await.0, 200);
    }
    assert_eq!(
        b.get(&format!("{}/trace/download", page.url())).await.0,
        200
    );
    assert_eq!(source.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_authentication_level_below_the_minimum_is_refused() {
    let mut page = Page::bind().await;
    let Some(provider) = OidcProvider::start(&page.redirect_uri(), "low").await else {
        return;
    };
    page.serve(
        &provider.issuer,
        &["substantial", "high"],
        FakeSource::new(),
        Limits::default(),
    );
    let (status, _, body) = Browserless::new().login(&page, FOUNDER).await;
    assert_eq!(status, 400);
    assert!(body.contains("authentication level"), "{body}");
}

fn query(url: &str, name: &str) -> String {
    let q = url.split_once('?').unwrap().1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap()
        .1
}
