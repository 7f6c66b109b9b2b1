//! The registry officers' console over a real registry: an observer signs
//! in and reads but cannot decide; an officer approves a pending server
//! registration, which the registry then reports approved; a decision
//! without the form's token is refused; a wrong token cannot sign in.

mod common;

use std::sync::Arc;

use common::{Browserless, pending_server};
use lienthong_central_registry::init;
use lienthong_central_registry::model::Role;
use lienthong_integration_tests::registry::TestRegistry;
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
            ("note".to_owned(), "checked by phone".to_owned()),
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
    let form = decide(csrf_of(&body));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, body) = officer.post(&format!("{url}/requests/decide"), &form).await;
    assert_eq!(status, 303, "{body}");
    let (_, _, body) = officer.get(&format!("{url}/requests")).await;
    assert!(
        body.contains(&format!("Request {id} · new server · approved")),
        "{body}"
    );
    assert!(body.contains("checked by phone"), "{body}");

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
