//! The registry console's pages over a real registry: an officer adds a
//! member and a subsystem and sees them listed, adds a subsystem to a
//! global group and removes it, issues an enrollment token that is shown
//! once and then listed without it; an observer reads every page and is
//! refused every action (the registry audits the refusals); a form without
//! its anti-forgery token is refused; markup in a name is text.

mod common;

use std::sync::Arc;

use common::{Browserless, pending_server};
use lienthong_central_registry::init;
use lienthong_central_registry::model::Role;
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_portal_web::console::{RegistryConsole, router};
use lienthong_proto::id::{GlobalGroupId, MemberId};
use lienthong_proto::pb::registry::v1 as pb;

fn csrf_of(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form token")
        .to_owned()
}

async fn console(reg: &TestRegistry) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(lienthong_portal_web::serve::serve(
        listener,
        None,
        router(Arc::new(RegistryConsole::new(reg.anchor.clone(), false))),
        std::future::pending(),
    ));
    url
}

async fn signed_in(url: &str, token: &str) -> Browserless {
    let mut b = Browserless::new();
    let (status, _, body) = b.post(&format!("{url}/login"), &[("token", token)]).await;
    assert_eq!(status, 303, "{body}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officers_keep_members_groups_and_tokens_and_observers_only_read() {
    let reg = TestRegistry::start(false).await;
    // A member with a server that joined, a service, and a group.
    let id = pending_server(&reg).await;
    let mut op = reg.officer().await;
    op.approve_request(pb::DecideRequest {
        id,
        note: "ok".into(),
    })
    .await
    .unwrap();
    let member = MemberId::new("VN", "GOV", "000102").unwrap();
    op.add_subsystem(pb::AddSubsystemRequest {
        id: Some((&member.subsystem("population").unwrap()).into()),
    })
    .await
    .unwrap();
    let group = GlobalGroupId::new("VN", "investigators").unwrap();
    op.add_global_group(pb::AddGlobalGroupRequest {
        id: Some((&group).into()),
        description: "Điều tra <b>viên</b>".into(),
    })
    .await
    .unwrap();
    let observer = init::add_operator(&reg.path(), "auditor", Role::Observer).unwrap();
    let url = console(&reg).await;

    // The observer reads every page.
    let mut o = signed_in(&url, &observer).await;
    for (page, expect) in [
        ("/members", "VN/GOV/000102/population"),
        ("/servers", "127.0.0.1:5500"),
        ("/services", "VN/investigators"),
        ("/trust", "SHA-256"),
        ("/tokens", "Mã còn hiệu lực"),
        ("/alarms", "No alarms"),
        ("/audit", "AddGlobalGroup"),
    ] {
        let (status, _, body) = o.get(&format!("{url}{page}")).await;
        assert_eq!(status, 200, "{page}: {body}");
        assert!(body.contains(expect), "{page}: {body}");
        // Every page leads to every other.
        for other in [
            "/members",
            "/servers",
            "/services",
            "/trust",
            "/tokens",
            "/alarms",
        ] {
            assert!(
                body.contains(&format!("href=\"{other}\"")),
                "{page}: {body}"
            );
        }
    }
    // The server's auth certificate, with its validity (issued here).
    let (_, _, body) = o.get(&format!("{url}/servers")).await;
    assert!(!body.contains("not issued by this registry"), "{body}");
    assert!(body.contains(" – "), "{body}");
    // A group's description with markup is text.
    let (_, _, body) = o.get(&format!("{url}/services")).await;
    assert!(body.contains("Điều tra &lt;b&gt;viên&lt;/b&gt;"), "{body}");

    // Every action of the observer is refused by the registry.
    let (_, _, body) = o.get(&format!("{url}/members")).await;
    let csrf = csrf_of(&body);
    let actions: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "/members/add",
            vec![("class", "GOV"), ("code", "000777"), ("name", "Nobody")],
        ),
        (
            "/members/subsystem",
            vec![("member", "VN/GOV/000102"), ("subsystem", "tax")],
        ),
        (
            "/groups/change",
            vec![
                ("action", "add"),
                ("group", "VN/investigators"),
                ("subsystem", "VN/GOV/000102/population"),
            ],
        ),
        (
            "/tokens",
            vec![
                ("member", "VN/GOV/000102"),
                ("server", "ss2"),
                ("hours", "1"),
            ],
        ),
    ];
    for (path, fields) in &actions {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields.iter().copied());
        let (status, _, body) = o.post(&format!("{url}{path}"), &form).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("PermissionDenied"), "{path}: {body}");
    }

    // The officer: a form without its token, or another session's, is refused.
    let mut b = signed_in(&url, &reg.officer_token).await;
    let (_, _, body) = b.get(&format!("{url}/members")).await;
    let csrf = csrf_of(&body);
    let add = [
        ("class", "GOV"),
        ("code", "000555"),
        ("name", "Sở <script>alert('name')</script>"),
    ];
    let (status, _, body) = b.post(&format!("{url}/members/add"), &add).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("anti-forgery"), "{body}");
    let mut observers = vec![("csrf", csrf_of(&o.get(&format!("{url}/members")).await.2))];
    observers.extend(add.iter().map(|(k, v)| (*k, v.to_string())));
    let observers: Vec<(&str, &str)> = observers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = b.post(&format!("{url}/members/add"), &observers).await;
    assert_eq!(status, 403);

    // With it: the member and then its subsystem are added and listed;
    // the name's markup is text.
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend(add);
    let (status, headers, body) = b.post(&format!("{url}/members/add"), &form).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(headers["location"], "/members");
    let subsystem = [
        ("csrf", csrf.as_str()),
        ("member", "VN/GOV/000555"),
        ("subsystem", "registry"),
    ];
    let (status, _, body) = b
        .post(&format!("{url}/members/subsystem"), &subsystem)
        .await;
    assert_eq!(status, 303, "{body}");
    let (_, _, body) = b.get(&format!("{url}/members")).await;
    assert!(body.contains("VN/GOV/000555/registry"), "{body}");
    assert!(
        body.contains("Sở &lt;script&gt;alert('name')&lt;/script&gt; · VN/GOV/000555"),
        "{body}"
    );
    assert!(!body.contains("<script>"), "{body}");
    // An identifier outside the strict set is refused before the registry.
    let bad = [
        ("csrf", csrf.as_str()),
        ("member", "VN/GOV/000555"),
        ("subsystem", "<b>x</b>"),
    ];
    let (status, _, body) = b.post(&format!("{url}/members/subsystem"), &bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("<b>x</b>"), "{body}");

    // A group member added, then removed.
    let change = |action: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("action", action.to_owned()),
            ("group", "VN/investigators".to_owned()),
            ("subsystem", "VN/GOV/000555/registry".to_owned()),
        ]
    };
    for (action, listed) in [("add", true), ("remove", false)] {
        let form = change(action);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, body) = b.post(&format!("{url}/groups/change"), &form).await;
        assert_eq!(status, 303, "{action}: {body}");
        let (_, _, body) = b.get(&format!("{url}/services")).await;
        assert_eq!(
            body.contains("value=\"VN/GOV/000555/registry\""),
            listed,
            "{action}: {body}"
        );
    }

    // A token for a new server: shown once, then listed without it.
    let issue = [
        ("csrf", csrf.as_str()),
        ("member", "VN/GOV/000555"),
        ("server", "ss9"),
        ("hours", "2"),
    ];
    let (status, headers, body) = b.post(&format!("{url}/tokens"), &issue).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let token = body
        .split("id=\"token\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the token on the page")
        .to_owned();
    assert!(token.starts_with("lt_"), "{token}");
    let (_, _, body) = b.get(&format!("{url}/tokens")).await;
    assert!(body.contains("VN/GOV/000555/ss9"), "{body}");
    assert!(!body.contains(&token), "{body}");
    assert!(!body.contains(&token[3..]), "{body}");
    let hours = [
        ("csrf", csrf.as_str()),
        ("member", "VN/GOV/000555"),
        ("server", "ss8"),
        ("hours", "100000"),
    ];
    let (status, _, _) = b.post(&format!("{url}/tokens"), &hours).await;
    assert_eq!(status, 400);

    // The registry's audit log has each action and the observer's refusals.
    let (_, _, audit) = b.get(&format!("{url}/audit")).await;
    for action in [
        "AddMember · ok",
        "AddSubsystem · ok",
        "AddGroupMember · ok",
        "RemoveGroupMember · ok",
        "CreateEnrollmentToken · ok",
        "which may not call AddMember",
        "which may not call CreateEnrollmentToken",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
    assert!(!audit.contains(&token), "{audit}");
}
