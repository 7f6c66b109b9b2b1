//! The registry officers' console over a real registry: an observer signs
//! in and reads but cannot decide; an officer approves a pending server
//! registration, which the registry then reports approved; a decision
//! without the form's token is refused; a wrong token cannot sign in;
//! markup in a note is text; an expired session goes back to sign-in.

mod common;

use std::sync::Arc;

use common::{Browserless, pending_server};
use lienthong_central_registry::init;
use lienthong_central_registry::model::Role;
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_integration_tests::wait::PATIENCE;
use lienthong_portal_web::console::{RegistryConsole, router};
use lienthong_proto::pb::registry::v1 as pb;

fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_approves_a_pending_server_and_an_observer_cannot() {
    let reg = TestRegistry::start(false).await;
    let id = pending_server(&reg).await;
    let observer = init::add_operator(&reg.path(), "auditor", Role::Observer).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let console = Arc::new(RegistryConsole::new(reg.anchor.clone(), false));
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        router(console),
        std::future::pending(),
    ));

    // A token the registry does not know.
    let mut nobody = Browserless::new();
    let (status, _, _) = nobody
        .post(&format!("{url}/login"), &[("token", "lt_not-a-token")])
        .await;
    assert_eq!(status, 401);
    assert_eq!(nobody.get(&format!("{url}/requests")).await.0, 303);

    // The observer reads the request and its CSRs, and cannot approve.
    let mut b = Browserless::new();
    let (status, headers, _) = b
        .post(&format!("{url}/login"), &[("token", &observer)])
        .await;
    assert_eq!(status, 303);
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (status, _, body) = b.get(&format!("{url}/requests")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("Request {id} · new server · pending")),
        "{body}"
    );
    assert!(body.contains("VN/GOV/000102/ss1"), "{body}");
    assert!(body.contains("Auth key"), "{body}");
    let csrf = csrf_of(&body);
    let decide = |csrf: String| {
        vec![
            ("csrf".to_owned(), csrf),
            ("id".to_owned(), id.to_string()),
            (
                "note".to_owned(),
                "checked by phone <script>alert('note')</script>".to_owned(),
            ),
            ("decision".to_owned(), "approve".to_owned()),
        ]
    };
    let form = decide(csrf.clone());
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, body) = b.post(&format!("{url}/requests/decide"), &form).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("PermissionDenied"), "{body}");

    // The officer: without the form's token, refused; with it, approved.
    let mut officer = Browserless::new();
    let (status, _, _) = officer
        .post(&format!("{url}/login"), &[("token", &reg.officer_token)])
        .await;
    assert_eq!(status, 303);
    let (_, _, body) = officer.get(&format!("{url}/requests")).await;
    let forged = decide("not-the-token".into());
    let forged: Vec<(&str, &str)> = forged
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, _) = officer
        .post(&format!("{url}/requests/decide"), &forged)
        .await;
    assert_eq!(status, 403);
    let without: Vec<(&str, &str)> = forged.iter().skip(1).copied().collect();
    let (status, _, refusal) = officer
        .post(&format!("{url}/requests/decide"), &without)
        .await;
    assert_eq!(status, 403);
    assert!(refusal.contains("anti-forgery"), "{refusal}");
    let form = decide(csrf_of(&body));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, body) = officer.post(&format!("{url}/requests/decide"), &form).await;
    assert_eq!(status, 303, "{body}");
    let (_, _, body) = officer.get(&format!("{url}/requests")).await;
    assert!(
        body.contains(&format!("Request {id} · new server · approved")),
        "{body}"
    );
    // The note's markup is text.
    assert!(
        body.contains("checked by phone &lt;script&gt;alert('note')&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>"), "{body}");

    // The audit log shows the decision, the observer's refused try and the
    // wrong token's.
    let (status, _, audit) = officer.get(&format!("{url}/audit")).await;
    assert_eq!(status, 200, "{audit}");
    assert!(audit.contains("ApproveRequest"), "{audit}");
    assert!(
        audit.contains("which may not call ApproveRequest"),
        "the observer's try: {audit}"
    );
    assert!(
        audit.contains("unknown operator token"),
        "the wrong token's: {audit}"
    );

    // The registry itself says so.
    let listed = reg
        .officer()
        .await
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(listed[0].state, pb::RequestState::Approved as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in() {
    let reg = TestRegistry::start(false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let console = RegistryConsole::new(reg.anchor.clone(), false)
        .with_session_ttl(std::time::Duration::from_secs(3));
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        router(Arc::new(console)),
        std::future::pending(),
    ));
    let mut officer = Browserless::new();
    let (status, _, _) = officer
        .post(&format!("{url}/login"), &[("token", &reg.officer_token)])
        .await;
    assert_eq!(status, 303);
    assert_eq!(officer.get(&format!("{url}/requests")).await.0, 200);
    // Sessions end a fixed time after sign-in, however often they are used.
    let deadline = std::time::Instant::now() + PATIENCE;
    let (status, headers, _) = loop {
        let answer = officer.get(&format!("{url}/requests")).await;
        if answer.0 != 200 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/?expired=1");
    let (status, _, body) = officer.get(&format!("{url}/?expired=1")).await;
    assert_eq!(status, 200);
    assert!(body.contains("Your session expired"), "{body}");
    // And a form of the expired session does nothing: back to sign-in.
    let (status, _, _) = officer
        .post(
            &format!("{url}/requests/decide"),
            &[
                ("csrf", "x"),
                ("id", "1"),
                ("note", "n"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_sign_in_as_themselves_by_openid_connect() {
    use common::{CLIENT_ID, CLIENT_SECRET, OidcProvider};
    use lienthong_portal_web::console::OfficerOidc;
    use lienthong_portal_web::http_client::HttpClient;
    use lienthong_portal_web::oidc::{Oidc, OidcConfig};

    let reg = TestRegistry::start(false).await;
    let id = pending_server(&reg).await;
    let observer_token =
        init::add_operator(&reg.path(), "console-observer", Role::Observer).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let redirect = format!("{url}/auth/callback");
    let roles = r#"{"lan.officer":"officer","an.observer":["staff","observer"],"mallory":"admin"}"#;
    let Some(provider) = OidcProvider::start_with_roles(&redirect, "substantial", roles).await
    else {
        return;
    };
    let oidc = Oidc::new(
        OidcConfig {
            issuer: provider.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            redirect_url: redirect.clone(),
            personal_id_claim: "personal_id".into(),
            accepted_acr: vec!["substantial".into()],
            scopes: Vec::new(),
        },
        HttpClient::new().unwrap(),
    )
    .unwrap();
    let console = RegistryConsole::new(reg.anchor.clone(), false).with_oidc(OfficerOidc {
        oidc,
        role_claim: "lienthong_registry_role".into(),
        officer_token: reg.officer_token.clone(),
        observer_token,
    });
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        router(Arc::new(console)),
        std::future::pending(),
    ));
    let start = format!("{url}/oidc/start");
    let (_, _, body) = Browserless::new().get(&format!("{url}/")).await;
    assert!(body.contains("href=\"/oidc/start\""), "{body}");

    // Someone the provider gives no registry role: no session.
    let mut m = Browserless::new();
    let callback = m.walk(&start, &redirect, "mallory").await;
    let (status, _, body) = m.get(&callback).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("mallory holds no registry role"), "{body}");
    assert_eq!(m.get(&format!("{url}/requests")).await.0, 303);

    // A callback whose state is not the one this browser started.
    let mut x = Browserless::new();
    let callback = x.walk(&start, &redirect, "lan.officer").await;
    let (status, _, body) = x.get(&callback.replace("state=", "state=forged")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("state mismatch"), "{body}");
    assert_eq!(x.get(&format!("{url}/requests")).await.0, 303);

    // The observer (the role among others in a list) reads, cannot decide.
    let mut o = Browserless::new();
    let callback = o.walk(&start, &redirect, "an.observer").await;
    assert_eq!(o.get(&callback).await.0, 303);
    let (status, _, body) = o.get(&format!("{url}/requests")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("an.observer (observer)"), "{body}");
    let csrf = csrf_of(&body);
    let id_text = id.to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("id", id_text.as_str()),
        ("note", "looks fine"),
        ("decision", "approve"),
    ];
    let (status, _, body) = o.post(&format!("{url}/requests/decide"), &form).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("PermissionDenied"), "{body}");

    // The officer decides, and the note names her.
    let mut b = Browserless::new();
    let callback = b.walk(&start, &redirect, "lan.officer").await;
    assert_eq!(b.get(&callback).await.0, 303);
    let (_, _, body) = b.get(&format!("{url}/requests")).await;
    assert!(body.contains("lan.officer (officer)"), "{body}");
    let csrf = csrf_of(&body);
    let form = [
        ("csrf", csrf.as_str()),
        ("id", id_text.as_str()),
        ("note", "checked by phone"),
        ("decision", "approve"),
    ];
    let (status, _, body) = b.post(&format!("{url}/requests/decide"), &form).await;
    assert_eq!(status, 303, "{body}");
    let listed = reg
        .officer()
        .await
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(listed[0].state, pb::RequestState::Approved as i32);
    // The note is hers; the audit record of the decision, of her other
    // actions and of the observer's refused try name the person and the
    // token each acted with.
    assert_eq!(listed[0].decision_note, "checked by phone");
    let form = [
        ("csrf", csrf.as_str()),
        ("class", "GOV"),
        ("code", "000999"),
        ("name", "Sở Tư pháp"),
    ];
    let (status, _, body) = b.post(&format!("{url}/members/add"), &form).await;
    assert_eq!(status, 303, "{body}");
    let records = reg
        .officer()
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    let by = |action: &str, result_ok: bool| {
        records
            .iter()
            .rev()
            .find(|r| r.action == action && (r.result == "ok") == result_ok)
            .map(|r| r.actor.clone())
            .unwrap_or_else(|| panic!("no {action} in {records:?}"))
    };
    assert_eq!(by("ApproveRequest", true), "lan.officer (via admin)");
    assert_eq!(by("AddMember", true), "lan.officer (via admin)");
    assert_eq!(
        by("ApproveRequest", false),
        "an.observer (via console-observer)"
    );
    let (_, _, audit) = b.get(&format!("{url}/audit")).await;
    assert!(audit.contains("lan.officer (via admin)"), "{audit}");
}
