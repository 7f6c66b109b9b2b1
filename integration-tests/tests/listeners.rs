//! Listeners that cannot be held open: connections that send no request,
//! too many connections, peers that stop reading, calls past a peer's
//! limit, oversized header lists, refused TLS peers — and the message log
//! that cannot append showing in `/health`. All over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_integration_tests::TestPki;
use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::{PATIENCE, wait_until};
use lienthong_security_server::ServerOptions;
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::limits::ListenerLimits;
use lienthong_security_server::store::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;

/// The admin port of an agency's running server.
fn admin(agency: &Agency) -> SocketAddr {
    agency
        .server()
        .admin_addr()
        .expect("the fixture opens an admin port")
}

/// The value of the `/metrics` sample starting with `series`, if any.
async fn metric(agency: &Agency, series: &str) -> Option<f64> {
    let (_, text) = admin_request(admin(agency), "GET", "/metrics", "").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (up to `within`) until `series` reads `value`; says what it read.
async fn metric_reaches(agency: &Agency, series: &str, value: f64, within: Duration) {
    let started = Instant::now();
    loop {
        let now = metric(agency, series).await;
        if now == Some(value) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{series} is {now:?}, not {value}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the server closes the connection; the time it took, or
/// `None` if it still held it open after `within`.
async fn closed_within(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
) -> Option<Duration> {
    closed_since(io, Instant::now(), within).await
}

/// Reads until the server closes the connection; the time since `started`
/// (when the connection was made), or `None` if it was still open
/// `within` after.
async fn closed_since(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
    started: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), io.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn limits(configure: impl FnOnce(&mut ListenerLimits)) -> impl FnOnce(&mut ServerOptions) {
    move |o| configure(&mut o.listener_limits)
}

/// `from`'s auth identity, trusting `to`'s provider side.
fn peer_tls(
    f: &Federation,
    from: &Agency,
    to: &Agency,
) -> lienthong_certs::net::TlsConnectorService {
    let dir = ServerDir(from.dir.path().to_owned());
    let identity = lienthong_certs::tls::Identity {
        chain: lienthong_certs::pem::read_certs(&dir.auth_cert()).unwrap(),
        key: lienthong_certs::pem::read_key(&dir.auth_key()).unwrap(),
    };
    tls_to(f, to, &identity)
}

fn tls_to(
    f: &Federation,
    to: &Agency,
    identity: &lienthong_certs::tls::Identity,
) -> lienthong_certs::net::TlsConnectorService {
    let trust = lienthong_certs::tls::TrustStore::new(
        lienthong_certs::tls::Trust::new(&[anchor_ca(&f.registry)], [auth_fingerprint(to)])
            .unwrap(),
    );
    let config = lienthong_certs::tls::client_config(identity, trust, Some(to.id.clone())).unwrap();
    lienthong_certs::net::TlsConnectorService::new(Arc::new(config))
}

// === raw HTTP/2, for peers no well-behaved client library imitates ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2).
fn header_block(fields: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend(value.as_bytes());
    }
    out
}

/// The bytes of a unary call of `method` with `personal_id` on stream 1,
/// as an information system sends it to `addr`.
fn raw_call(addr: SocketAddr, method: &str, personal_id: &str) -> Vec<u8> {
    let mut fields: Vec<(String, String)> = [
        (":method", "POST".to_owned()),
        (":scheme", "http".to_owned()),
        (":path", format!("/{PERSON_REGISTRY}/{method}")),
        (":authority", addr.to_string()),
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    for (name, value) in call_metadata(&business(), &population())
        .into_headers()
        .iter()
    {
        fields.push((name.to_string(), value.to_str().unwrap().to_owned()));
    }
    let body = prost::Message::encode_to_vec(&PersonRequest {
        personal_id: personal_id.into(),
    });
    let mut data = vec![0];
    data.extend((body.len() as u32).to_be_bytes());
    data.extend(body);
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[])); // SETTINGS
    out.extend(frame(1, 0x4, 1, &header_block(&fields))); // HEADERS, END_HEADERS
    out.extend(frame(0, 0x1, 1, &data)); // DATA, END_STREAM
    out
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_no_request_are_closed_after_the_deadline() {
    let mut f = Federation::start().await;
    let deadline = Duration::from_secs(1);
    f.business
        .restart_with(limits(|l| l.header_timeout = deadline))
        .await;
    f.population[0]
        .restart_with(limits(|l| l.header_timeout = deadline))
        .await;
    let consumer = f.business.server().consumer_addr();

    // h2c: nothing at all; a preface without a request; half a preface.
    // Each is timed from when it was made (the server's deadline runs from
    // its accept, which is before), so a slow machine cannot make one
    // look closed early.
    let connect = || async {
        let at = Instant::now();
        (TcpStream::connect(consumer).await.unwrap(), at)
    };
    let (mut silent, silent_at) = connect().await;
    let (mut preface_only, preface_only_at) = connect().await;
    preface_only.write_all(PREFACE).await.unwrap();
    preface_only.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let (mut half, half_at) = connect().await;
    half.write_all(&PREFACE[..10]).await.unwrap();
    // TLS: a registered server that finishes its handshake, then idles.
    let tls = peer_tls(&f, &f.business, &f.population[0]);
    let idle_tls_at = Instant::now();
    let mut idle_tls = tls
        .connect("127.0.0.1", f.population[0].provider_addr.port())
        .await
        .expect("the handshake of a registered server succeeds");

    // Closing one takes the deadline; the patience only catches one left open.
    let within = PATIENCE;
    let (a, b, c, d) = tokio::join!(
        closed_since(&mut silent, silent_at, within),
        closed_since(&mut preface_only, preface_only_at, within),
        closed_since(&mut half, half_at, within),
        closed_since(&mut idle_tls, idle_tls_at, within),
    );
    for (what, took) in [
        ("silent", a),
        ("preface only", b),
        ("half a preface", c),
        ("idle TLS", d),
    ] {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after {within:?}"));
        assert!(
            took >= deadline - Duration::from_millis(100),
            "{what}: closed after {took:?}, before the deadline"
        );
    }
    let timed_out =
        "lienthong_connections_refused_total{listener=\"consumer\",reason=\"header_timeout\"}";
    assert_eq!(metric(&f.business, timed_out).await, Some(3.0));
    metric_reaches(
        &f.business,
        "lienthong_open_connections{listener=\"consumer\"}",
        0.0,
        within,
    )
    .await;

    // A connection that does call is served, and stays open after it:
    // once a silent connection made after it has been closed at the
    // deadline, the calling one's deadline has passed too.
    let is = f.business.client().await;
    is.business_gets_person()
        .await
        .expect("a calling connection is served");
    let mut later = TcpStream::connect(consumer).await.unwrap();
    closed_within(&mut later, within)
        .await
        .expect("the silent connection is closed at the deadline");
    is.business_gets_person()
        .await
        .expect("a calling connection is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_are_refused_while_calls_go_on() {
    let mut f = Federation::start().await;
    f.business
        .restart_with(limits(|l| {
            l.max_connections = 20;
            l.max_connections_per_peer = 15;
            l.header_timeout = Duration::from_secs(60);
        }))
        .await;
    let consumer = f.business.server().consumer_addr();
    let is = f.business.client().await;
    is.business_gets_person().await.expect("first call");

    // 30 idle connections from 127.0.0.1 (which already holds one), then
    // 30 from 127.0.0.2: 14 + 5 are held, the rest closed at once.
    let mut idle = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2"] {
        for _ in 0..30 {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            idle.push((source, socket.connect(consumer).await.unwrap()));
        }
    }
    let mut held = std::collections::BTreeMap::<&str, usize>::new();
    let mut checks = tokio::task::JoinSet::new();
    for (source, mut tcp) in idle {
        checks.spawn(async move {
            let closed = closed_within(&mut tcp, Duration::from_secs(2)).await;
            (source, closed.is_none(), tcp)
        });
    }
    let mut keep = Vec::new();
    while let Some(r) = checks.join_next().await {
        let (source, open, tcp) = r.unwrap();
        *held.entry(source).or_default() += usize::from(open);
        keep.push(tcp);
    }
    assert_eq!(held.get("127.0.0.1"), Some(&14), "{held:?}");
    assert_eq!(held.get("127.0.0.2"), Some(&5), "{held:?}");
    let refused = |reason: &str| {
        format!("lienthong_connections_refused_total{{listener=\"consumer\",reason=\"{reason}\"}}")
    };
    assert_eq!(metric(&f.business, &refused("peer_full")).await, Some(16.0));
    assert_eq!(
        metric(&f.business, &refused("listener_full")).await,
        Some(25.0)
    );

    // The connection admitted before still carries calls.
    is.business_gets_person()
        .await
        .expect("existing connections keep working at the cap");
    // Closing the idle ones makes room for new connections.
    drop(keep);
    metric_reaches(
        &f.business,
        "lienthong_open_connections{listener=\"consumer\"}",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("a new connection once there is room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_disconnected() {
    let mut f = Federation::start().await;
    f.business
        .restart_with(limits(|l| {
            l.keep_alive_interval = Duration::from_millis(500);
            l.keep_alive_timeout = Duration::from_millis(500);
        }))
        .await;
    let consumer = f.business.server().consumer_addr();
    // Asks for a 3 MB answer, then never reads a byte (nor answers pings).
    let mut tcp = TcpStream::connect(consumer).await.unwrap();
    tcp.write_all(&raw_call(consumer, "Huge", "3000000"))
        .await
        .unwrap();
    let open = "lienthong_open_connections{listener=\"consumer\"}";
    wait_until(PATIENCE, "the call to reach the backend", || {
        f.backend_calls() > 0
    })
    .await;
    assert_eq!(metric(&f.business, open).await, Some(1.0));
    // Unanswered pings end the connection and free what it held.
    metric_reaches(&f.business, open, 0.0, Duration::from_secs(5)).await;
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("the server still serves others");
    drop(tcp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_a_peers_limit_are_shed_before_the_backend() {
    let mut f = Federation::start().await;
    // One provider server, allowing each calling server two calls at once.
    f.population[1].stop();
    f.population[0]
        .restart_with(|o| o.max_calls_per_peer = 2)
        .await;
    // Slow answers after 3 s; let it, so its calls stay in progress.
    f.population[0]
        .server()
        .set_backend(&Backend {
            provider: population(),
            service: PERSON_REGISTRY.into(),
            url: format!("http://{}", f.backend.addr),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
    let is = Arc::new(f.business.client().await);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let is = is.clone();
            tokio::spawn(async move {
                is.unary("Slow", call_metadata(&business(), &population()), "1")
                    .await
            })
        })
        .collect();
    wait_until(PATIENCE, "the slow calls to reach the backend", || {
        f.backend_calls() >= 2
    })
    .await;

    let shed = is.business_gets_person().await.unwrap_err();
    assert_eq!(
        fault_of(&shed),
        "server.serverproxy.too_many_calls",
        "{shed:?}"
    );
    assert_eq!(shed.code(), Code::ResourceExhausted);
    assert!(
        !slow.iter().any(tokio::task::JoinHandle::is_finished),
        "shed while the calls within the limit are in progress, not queued behind them"
    );
    assert_eq!(
        f.backend_calls(),
        2,
        "the shed call never reached the backend"
    );
    assert_eq!(
        metric(&f.population[0], "lienthong_calls_shed_total").await,
        Some(1.0)
    );

    for s in slow {
        s.await.unwrap().expect("calls within the limit finish");
    }
    is.business_gets_person()
        .await
        .expect("finished calls free their places");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_a_grpc_status_with_a_fault() {
    let f = Federation::start().await;
    let mut m = call_metadata(&business(), &population());
    m.insert("x-padding", "a".repeat(100 * 1024).parse().unwrap());
    let refused = f
        .business
        .client()
        .await
        .unary("GetPerson", m, "1")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&refused),
        "client.headers_too_large",
        "{refused:?}"
    );
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // The same from a peer server, straight to a provider.
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let refused = peer
        .send(Some(vec![7; 100 * 1024]), PersonRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&refused),
        "server.serverproxy.headers_too_large",
        "{refused:?}"
    );
    assert_eq!(f.backend_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tls_peer_is_counted_with_its_certificate() {
    let f = Federation::start().await;
    let stranger = TestPki::new("VN");
    let (identity, fp) = stranger.server_identity("VN/GOV/000305/ss1");
    let tls = tls_to(&f, &f.population[0], &identity);
    // TLS 1.3: the client learns of the refusal when it reads.
    let mut tcp = tls
        .connect("127.0.0.1", f.population[0].provider_addr.port())
        .await
        .unwrap();
    let _ = tcp.write_all(PREFACE).await;
    let _ = closed_within(&mut tcp, Duration::from_secs(5)).await;
    let series = format!(
        "lienthong_tls_refused_total{{listener=\"provider\",fault=\"server.serverproxy.unknown_peer\",certificate=\"{fp}\",peer=\"127.0.0.1\"}}"
    );
    metric_reaches(&f.population[0], &series, 1.0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_the_message_log_cannot_append() {
    let mut f = Federation::start().await;
    let is = f.business.client().await;
    is.business_gets_person().await.expect("first call");
    let (_, health) = admin_request(admin(&f.business), "GET", "/health", "").await;
    assert!(health.contains("\"message_log\":{\"ok\":true"), "{health}");

    // Each commit in a segment of its own; the next one's name taken by a
    // directory, as a full disk or a broken one would refuse it.
    f.business.restart_with(|o| o.log_segment_bytes = 1).await;
    let is = f.business.client().await;
    is.business_gets_person()
        .await
        .expect("a call after the restart");
    let log_dir = ServerDir(f.business.dir.path().to_owned()).message_log();
    let size = lienthong_security_server::message_log::segment::recover_tail(&log_dir, false)
        .unwrap()
        .size;
    let blocker = log_dir.join(lienthong_security_server::message_log::segment::file_name(
        size,
    ));
    std::fs::create_dir(&blocker).unwrap();
    let refused = is.business_gets_person().await.unwrap_err();
    assert_eq!(
        fault_of(&refused),
        "server.clientproxy.log_failed",
        "{refused:?}"
    );
    let (status, health) = admin_request(admin(&f.business), "GET", "/health", "").await;
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"message_log\":{\"ok\":false"), "{health}");

    // Once appends succeed again, so does the check.
    std::fs::remove_dir(&blocker).unwrap();
    is.business_gets_person()
        .await
        .expect("the log appends again");
    let (_, health) = admin_request(admin(&f.business), "GET", "/health", "").await;
    assert!(health.contains("\"message_log\":{\"ok\":true"), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_when_its_provider_stops() {
    let mut f = Federation::start().await;
    // One provider server, whose backend answers Slow after 3 s.
    f.population[1].stop();
    f.population[0]
        .server()
        .set_backend(&Backend {
            provider: population(),
            service: PERSON_REGISTRY.into(),
            url: format!("http://{}", f.backend.addr),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
    let provider = f.population[0].provider_addr;
    let is = f.business.client().await;
    let slow = tokio::spawn(async move {
        is.unary("Slow", call_metadata(&business(), &population()), "1")
            .await
    });
    let started = Instant::now();
    while f.backend_calls() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the slow call did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The provider stops while the call waits on its backend: it stops
    // accepting at once, and the call in flight still gets its answer.
    f.population[0].stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(provider).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the stopped provider still accepts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slow.await
        .unwrap()
        .expect("the call in flight finishes after the stop");
}
