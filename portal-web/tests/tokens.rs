//! ID tokens a provider could be made to hand over, or an attacker could
//! forge, are refused: expired, for another audience, signed by a key the
//! provider does not publish, with a broken signature, another nonce, or
//! an authentication level below the minimum. (A standard provider never
//! issues these; the development provider can be told to.)

mod common;

use common::*;
use lienthong_portal_web::dev_provider::{DevProvider, DevProviderConfig, Tamper};
use lienthong_portal_web::state::Limits;

#[tokio::test]
async fn tampered_id_tokens_are_refused_and_an_honest_one_signs_in() {
    let mut page = Page::bind().await;
    let idp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", idp.local_addr().unwrap());
    let provider = DevProvider::new(DevProviderConfig {
        issuer: issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uri: page.redirect_uri(),
        personal_id_claim: "personal_id".into(),
        acr: "substantial".into(),
        suggested_personal_id: FOUNDER.into(),
    })
    .unwrap();
    tokio::spawn(lienthong_portal_web::serve::serve(
        idp,
        None,
        provider.router(),
        std::future::pending(),
    ));
    page.serve(
        &issuer,
        &["substantial"],
        FakeSource::new(),
        Limits::default(),
    );

    let cases = [
        (Tamper::Expired, "expired"),
        (Tamper::OtherAudience, "audience"),
        (Tamper::ForeignKey, "signature"),
        (Tamper::BrokenSignature, "signature"),
        (Tamper::WrongNonce, "nonce"),
        (Tamper::LowAcr, "authentication level"),
    ];
    for (tamper, why) in cases {
        provider.set_tamper(tamper);
        let mut b = Browserless::new();
        let (status, headers, body) = dev_login(&mut b, &page, &issuer).await;
        assert_eq!(status, 400, "{tamper:?}: {body}");
        assert!(body.to_lowercase().contains(why), "{tamper:?}: {body}");
        assert!(
            headers
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("lt_session=")),
            "{tamper:?} opened a session"
        );
        assert_eq!(b.get(&format!("{}/trace", page.url())).await.0, 303);
    }
    provider.set_tamper(Tamper::None);
    let mut b = Browserless::new();
    assert_eq!(dev_login(&mut b, &page, &issuer).await.0, 303);
    let (_, _, body) = b.get(&format!("{}/trace", page.url())).await;
    assert_eq!(accesses(&body), 3, "{body}");
}

/// Through the development provider's form, as the founder.
async fn dev_login(b: &mut Browserless, page: &Page, issuer: &str) -> Answer {
    let (status, headers, _) = b.get(&format!("{}/login", page.url())).await;
    assert_eq!(status, 303);
    let auth = headers["location"].to_str().unwrap().to_owned();
    let (status, _, form) = b.get(&auth).await;
    assert_eq!(status, 200, "{form}");
    assert!(form.contains("DEVELOPMENT IDENTITY PROVIDER"));
    let q = auth.split_once('?').unwrap().1;
    let mut fields: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap();
    fields.push(("personal_id".into(), FOUNDER.into()));
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, headers, _) = b.post(&format!("{issuer}/authorize"), &fields).await;
    assert_eq!(status, 303);
    b.get(headers["location"].to_str().unwrap()).await
}
