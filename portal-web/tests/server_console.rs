//! A security server's operator console over a real federation: the admin
//! port refuses actions without an operator token; an observer reads
//! every page and is refused (and audited) when acting; an admin's grant
//! without the form's token is refused, with it the next call succeeds;
//! markup typed into a form comes back as text; an expired session goes
//! back to sign-in.

mod common;

use std::time::Duration;

use common::{Browserless, server_console, tax_gets_person};
use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::PATIENCE;
use lienthong_security_server::admin::operators::Role;

fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form token")
        .to_owned()
}

async fn signed_in(url: &str, token: &str) -> Browserless {
    let mut b = Browserless::new();
    let (status, headers, body) = b.post(&format!("{url}/login"), &[("token", token)]).await;
    assert_eq!(status, 303, "{body}");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    b
}

fn grant_form(csrf: &str, subject: &str) -> Vec<(String, String)> {
    [
        ("csrf", csrf),
        ("action", "grant"),
        ("subject", subject),
        (
            "service",
            "VN/GOV/000102/population/population.v1.PersonRegistry",
        ),
        ("method", "GetPerson"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pairs(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_grants_access_and_the_next_call_succeeds() {
    let f = Federation::start().await;
    assert_eq!(
        tax_gets_person(&f).await,
        Err("server.serverproxy.access_denied".into())
    );

    // The admin port itself: no token, no action.
    let admin = f.population[0].server().admin_addr().unwrap();
    let (status, _) = admin_request(admin, "GET", "/api/access", "").await;
    assert_eq!(status, 401);
    let (status, _) = admin_request(
        admin,
        "POST",
        "/api/access",
        r#"{"action":"grant","subject":"VN/GOV/000201/tax","service":"VN/GOV/000102/population/population.v1.PersonRegistry"}"#,
    )
    .await;
    assert_eq!(status, 401);

    let url = server_console(&f.population[0], None).await;
    // A token the server does not know cannot sign in.
    let mut nobody = Browserless::new();
    let (status, _, _) = nobody
        .post(&format!("{url}/login"), &[("token", "lts_not-a-token")])
        .await;
    assert_eq!(status, 401);
    assert_eq!(nobody.get(&format!("{url}/access")).await.0, 303);

    // The observer reads every page, and may not grant.
    let observer = f.population[0].operator_token("auditor", Role::Observer);
    let mut b = signed_in(&url, &observer).await;
    for (page, expect) in [
        ("/status", "VN/GOV/000102/ss1"),
        ("/clients", "VN/GOV/000102/population"),
        ("/services", "population.v1.PersonRegistry"),
        ("/access", "VN/GOV/000305/business may call"),
        ("/audit", "No operator action yet."),
    ] {
        let (status, _, body) = b.get(&format!("{url}{page}")).await;
        assert_eq!(status, 200, "{page}: {body}");
        assert!(body.contains(expect), "{page}: {body}");
    }
    let (_, _, body) = b.get(&format!("{url}/status")).await;
    assert!(body.contains("Global configuration"), "{body}");
    assert!(body.contains("log_audit"), "{body}");
    let (_, _, body) = b.get(&format!("{url}/access")).await;
    let form = grant_form(&csrf_of(&body), "VN/GOV/000201/tax");
    let (status, _, body) = b.post(&format!("{url}/access/change"), &pairs(&form)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auditor is an observer"), "{body}");
    assert_eq!(
        tax_gets_person(&f).await,
        Err("server.serverproxy.access_denied".into())
    );

    // The admin: a grant without the form's token is refused.
    let token = f.population[0].operator_token("lan.nguyen", Role::Admin);
    let mut a = signed_in(&url, &token).await;
    let (_, _, body) = a.get(&format!("{url}/access")).await;
    let csrf = csrf_of(&body);
    let forged = grant_form("not-the-token", "VN/GOV/000201/tax");
    let (status, _, body) = a
        .post(&format!("{url}/access/change"), &pairs(&forged))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("anti-forgery"), "{body}");
    let mut missing = grant_form("", "VN/GOV/000201/tax");
    missing.remove(0);
    let (status, _, _) = a
        .post(&format!("{url}/access/change"), &pairs(&missing))
        .await;
    assert_eq!(status, 403);

    // Markup typed as the subject is refused, and shown as text.
    let bad = grant_form(&csrf, "<script>alert('subject')</script>");
    let (status, _, body) = a.post(&format!("{url}/access/change"), &pairs(&bad)).await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert('subject')&lt;/script&gt;"),
        "{body}"
    );

    // With it, on both of the population's servers: the next call succeeds.
    let (status, _, body) = a
        .post(&format!("{url}/access/change"), &pairs(&form_with(&csrf)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("granted: VN/GOV/000201/tax may call"),
        "{body}"
    );
    assert!(body.contains("VN/GOV/000201/tax may call VN/GOV/000102/population/population.v1.PersonRegistry/GetPerson"), "{body}");
    let url2 = server_console(&f.population[1], None).await;
    let token2 = f.population[1].operator_token("lan.nguyen", Role::Admin);
    let mut a2 = signed_in(&url2, &token2).await;
    let (_, _, body) = a2.get(&format!("{url2}/access")).await;
    let (status, _, _) = a2
        .post(
            &format!("{url2}/access/change"),
            &pairs(&form_with(&csrf_of(&body))),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(tax_gets_person(&f).await, Ok(()));
    // The exchange is in the operations page of one of the two servers.
    let mut seen = String::new();
    for (b, u) in [(&mut a, &url), (&mut a2, &url2)] {
        let (status, _, body) = b.get(&format!("{u}/operations")).await;
        assert_eq!(status, 200, "{body}");
        seen.push_str(&body);
    }
    assert!(
        seen.contains("VN/GOV/000201/tax")
            && seen.contains("population.v1.PersonRegistry/GetPerson"),
        "{seen}"
    );
    assert!(
        seen.contains("server.serverproxy.access_denied"),
        "the refusals too: {seen}"
    );

    // The audit log names who did what, the observer's refusal and the
    // markup as text.
    let (status, _, audit) = a.get(&format!("{url}/audit")).await;
    assert_eq!(status, 200, "{audit}");
    assert!(audit.contains("grant access · ok"), "{audit}");
    assert!(audit.contains("lan.nguyen"), "{audit}");
    assert!(
        audit.contains("auditor is an observer and may not grant access"),
        "{audit}"
    );
    assert!(audit.contains("&lt;script&gt;"), "{audit}");
    assert!(!audit.contains("<script>"), "{audit}");

    // Revoked: refused again.
    let (_, _, body) = a.get(&format!("{url}/access")).await;
    let revoke: Vec<(String, String)> = [
        ("csrf", csrf.as_str()),
        ("action", "revoke"),
        ("subject", "VN/GOV/000201/tax"),
        (
            "service",
            "VN/GOV/000102/population/population.v1.PersonRegistry",
        ),
        ("method", "GetPerson"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert!(body.contains("Revoke"), "{body}");
    let (status, _, body) = a
        .post(&format!("{url}/access/change"), &pairs(&revoke))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, body) = a2.get(&format!("{url2}/access")).await;
    let mut revoke2 = revoke.clone();
    revoke2[0].1 = csrf_of(&body);
    a2.post(&format!("{url2}/access/change"), &pairs(&revoke2))
        .await;
    assert_eq!(
        tax_gets_person(&f).await,
        Err("server.serverproxy.access_denied".into())
    );

    // Maintenance mode from the status page: health drains.
    let (_, _, body) = a.get(&format!("{url}/status")).await;
    let (status, _, _) = a
        .post(
            &format!("{url}/maintenance"),
            &[("csrf", &csrf_of(&body)), ("mode", "on")],
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(admin_request(admin, "GET", "/health", "").await.0, 503);
    let (_, _, body) = a.get(&format!("{url}/status")).await;
    assert!(body.contains("ON: health answers 503"), "{body}");
}

fn form_with(csrf: &str) -> Vec<(String, String)> {
    grant_form(csrf, "VN/GOV/000201/tax")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in() {
    let f = Federation::start().await;
    let url = server_console(&f.population[0], Some(Duration::from_secs(3))).await;
    let token = f.population[0].operator_token("lan.nguyen", Role::Admin);
    let mut a = signed_in(&url, &token).await;
    assert_eq!(a.get(&format!("{url}/status")).await.0, 200);
    // Sessions end a fixed time after sign-in, however often they are used.
    let deadline = std::time::Instant::now() + PATIENCE;
    let (status, headers, _) = loop {
        let answer = a.get(&format!("{url}/status")).await;
        if answer.0 != 200 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/?expired=1");
    let (status, _, body) = a.get(&format!("{url}/?expired=1")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Your session expired"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_a_backend_and_reads_keys_and_the_log() {
    let f = Federation::start().await;
    let agency = &f.population[0];
    let admin = agency.server().admin_addr().unwrap();
    let url = server_console(agency, None).await;
    let service = "VN/GOV/000102/population/population.v1.PersonRegistry";

    // The observer reads the clients' signing certificates and the log,
    // and may not set a backend.
    let observer = agency.operator_token("auditor", Role::Observer);
    let mut b = signed_in(&url, &observer).await;
    let (status, _, body) = b.get(&format!("{url}/clients")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Chứng thư ký"), "{body}");
    assert!(!body.contains("none in the configuration"), "{body}");
    let (status, _, body) = b.get(&format!("{url}/log")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Records checked"), "{body}");
    let (_, _, body) = b.get(&format!("{url}/services")).await;
    let set = |csrf: &str, url: &str, timeout: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf),
            ("service", service),
            ("url", url),
            ("timeout_ms", timeout),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let form = set(&csrf_of(&body), "http://127.0.0.1:9", "1000");
    let (status, _, body) = b
        .post(&format!("{url}/services/backend"), &pairs(&form))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auditor is an observer"), "{body}");

    // The admin: the tax department may call; the backend it reaches is
    // the one set here, in force when the page comes back.
    let token = agency.operator_token("lan.nguyen", Role::Admin);
    for (i, a) in f.population.iter().enumerate() {
        let t = if i == 0 {
            token.clone()
        } else {
            a.operator_token("lan.nguyen", Role::Admin)
        };
        let (status, body) = admin_request_as(
            a.server().admin_addr().unwrap(),
            Some(&t),
            "POST",
            "/api/access",
            &format!(r#"{{"action":"grant","subject":"VN/GOV/000201/tax","service":"{service}"}}"#),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(tax_gets_person(&f).await, Ok(()));
    let (_, services) = admin_request_as(admin, Some(&token), "GET", "/api/services", "").await;
    let services: Vec<lienthong_security_server::admin::api::ServiceView> =
        serde_json::from_str(&services).unwrap();
    let original = services
        .iter()
        .find(|s| s.service == service)
        .and_then(|s| s.backend_url.clone())
        .expect("the population service has a backend");

    let mut a = signed_in(&url, &token).await;
    let (_, _, body) = a.get(&format!("{url}/services")).await;
    let csrf = csrf_of(&body);
    // Without the form's token: refused, nothing changed.
    let mut missing = set("", "http://127.0.0.1:9", "1000");
    missing.remove(0);
    let (status, _, body) = a
        .post(&format!("{url}/services/backend"), &pairs(&missing))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("anti-forgery"), "{body}");
    // Markup as the URL: refused, shown as text.
    let bad = set(&csrf, "<script>alert('url')</script>", "1000");
    let (status, _, body) = a
        .post(&format!("{url}/services/backend"), &pairs(&bad))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(body.contains("&lt;script&gt;alert('url')"), "{body}");

    // Both population servers' backends moved to a closed port: calls fail;
    // moved back: they succeed.
    let urls = [url.clone(), server_console(&f.population[1], None).await];
    let mut consoles = vec![a];
    consoles.push(
        signed_in(
            &urls[1],
            &f.population[1].operator_token("lan.nguyen", Role::Admin),
        )
        .await,
    );
    for (target, timeout) in [("http://127.0.0.1:9", "1000"), (original.as_str(), "5000")] {
        for (c, u) in consoles.iter_mut().zip(&urls) {
            let (_, _, body) = c.get(&format!("{u}/services")).await;
            let form = set(&csrf_of(&body), target, timeout);
            let (status, _, body) = c
                .post(&format!("{u}/services/backend"), &pairs(&form))
                .await;
            assert_eq!(status, 200, "{body}");
            assert!(
                body.contains(&format!("is served by {target} (timeout {timeout} ms)")),
                "{body}"
            );
        }
        let called = tax_gets_person(&f).await;
        if target == original {
            assert_eq!(called, Ok(()));
        } else {
            assert!(called.is_err(), "a closed backend port answered");
            assert_ne!(called, Err("server.serverproxy.access_denied".into()));
        }
    }

    // The audit log shows the changes and the refusals, with who.
    let (_, _, audit) = consoles[0].get(&format!("{url}/audit")).await;
    assert!(audit.contains("set backend · ok"), "{audit}");
    assert!(audit.contains("lan.nguyen"), "{audit}");
    assert!(
        audit.contains("auditor is an observer and may not set backend"),
        "{audit}"
    );
}
