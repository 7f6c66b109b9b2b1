//! Exchanges through the bus: a registry and three agencies on loopback,
//! real mutual TLS, real signatures, real logs.

#[path = "support/tamper.rs"]
mod tamper;

use std::time::Duration;

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::{PATIENCE, refuses_connections, wait_for, wait_until};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_exchanges_succeed() {
    let f = Federation::start().await;
    let is = f.business.client().await;

    let person = is
        .business_gets_person()
        .await
        .expect("the exchange succeeds")
        .into_inner();
    assert_eq!(person.personal_id, "001099012345");
    assert_eq!(person.full_name, "Nguyễn Văn An");
    assert_eq!(
        person.seen_client,
        business().to_string(),
        "the backend learns the verified client"
    );

    let relatives = is
        .stream(call_metadata(&business(), &population()), "001099012345")
        .await
        .expect("the streaming exchange succeeds");
    assert_eq!(relatives.len(), 3);
    assert_eq!(relatives[2].personal_id, "001099012345-3");
    assert_eq!(f.backend_calls(), 2);

    // The backend's own status and metadata pass through unchanged.
    let missing = is
        .unary("Missing", call_metadata(&business(), &population()), "x")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "no such person");
    assert_eq!(fault_of(&missing), "<none>");
    assert_eq!(
        missing.metadata().get("x-registry-note").unwrap(),
        "checked 2026 archive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_second_provider_server() {
    let mut f = Federation::start().await;
    let is = f.business.client().await;
    for _ in 0..4 {
        is.unary("GetPerson", call_metadata(&business(), &population()), "1")
            .await
            .expect("both provider servers answer");
    }
    f.population[0].stop();
    let gone = f.population[0].provider_addr;
    wait_until(PATIENCE, "the stopped server's port to close", || {
        refuses_connections(gone)
    })
    .await;
    for _ in 0..4 {
        is.unary("GetPerson", call_metadata(&business(), &population()), "1")
            .await
            .expect("the second provider server answers");
    }
    f.population[1].stop();
    let err = is
        .unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&err),
        "server.clientproxy.provider_unreachable",
        "{err:?}"
    );
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_bounds_every_hop() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    // The backend answers `Slow` after 3 s: an error, not its answer, says
    // the 300 ms deadline ended the call at the servers.
    let err = is
        .unary_with_deadline(
            "Slow",
            call_metadata(&business(), &population()),
            "1",
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_information_system_gave_up_on_is_still_in_the_consumers_log() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let mut m = call_metadata(&business(), &population());
    m.insert("lt-message-id", "hung-up-1".parse().unwrap());
    // The backend answers `Slow` after 3 s; the caller goes away once the
    // request has reached it, before any answer.
    let call = tokio::spawn(async move { is.unary("Slow", m, "1").await });
    wait_until(PATIENCE, "the request to reach the backend", || {
        f.backend_calls() == 1
    })
    .await;
    call.abort();
    let reader = f.business.server().log_reader().clone();
    wait_until(PATIENCE, "the consumer to log the request", || {
        !reader.by_message("hung-up-1").unwrap().is_empty()
    })
    .await;
    let records = reader.by_message("hung-up-1").unwrap();
    assert_eq!(records.len(), 1, "the request only: there was no outcome");
    let leaf = reader.leaf(records[0]).unwrap().expect("a leaf");
    let leaf = <lienthong_proto::pb::trace::v1::LogLeaf as prost::Message>::decode(&*leaf).unwrap();
    assert_eq!(
        leaf.phase(),
        lienthong_proto::pb::trace::v1::Phase::Request,
        "{leaf:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn information_systems_over_mutual_tls_are_pinned_per_subsystem() {
    use lienthong_integration_tests::TestPki;
    use lienthong_security_server::consumer::tls::ConsumerTransport;

    let mut f = Federation::start().await;
    f.business.start_with(ConsumerTransport::MutualTls).await;
    let pki = TestPki::new("VN");
    let (system, system_fp) = pki.server_identity("VN/GOV/000305/is1");
    f.business
        .server()
        .pin_client(&business(), &system_fp)
        .unwrap();

    let is = f
        .business
        .tls_client(&f.registry, Some(&system))
        .await
        .unwrap();
    is.unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect("a pinned information system calls as its subsystem");
    assert_eq!(f.backend_calls(), 1);

    let as_other = is
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&as_other),
        "client.unauthenticated",
        "{as_other:?}"
    );

    let (stranger, _) = pki.server_identity("VN/GOV/000305/is2");
    let refused = match f.business.tls_client(&f.registry, Some(&stranger)).await {
        Err(_) => true,
        Ok(is) => is
            .unary("GetPerson", call_metadata(&business(), &population()), "1")
            .await
            .is_err(),
    };
    assert!(refused, "an unpinned certificate is refused");
    let anonymous = match f.business.tls_client(&f.registry, None).await {
        Err(_) => true,
        Ok(is) => is
            .unary("GetPerson", call_metadata(&business(), &population()), "1")
            .await
            .is_err(),
    };
    assert!(anonymous, "no certificate, no call");
    assert_eq!(f.backend_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_restart_from_their_cached_configuration_during_an_outage() {
    let mut f = Federation::start().await;
    f.registry.stop().await;
    f.business.stop();
    f.business.start().await;
    for p in f.population.iter_mut() {
        p.stop();
        p.start().await;
    }
    f.business
        .client()
        .await
        .unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect("restarted servers work from their cached configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_change_takes_effect_without_restarting_consumers() {
    use lienthong_proto::pb::registry::v1::registration_client::RegistrationClient;
    use lienthong_registry_client as client;

    let mut f = Federation::start().await;
    let is = f.business.client().await;
    // Only ss2 serves from now on, and it moves.
    f.population[0].stop();
    let (moved_listener, moved) = reserve_port();
    let ss2 = &mut f.population[1];
    let dir = lienthong_security_server::keys::ServerDir(ss2.dir.path().to_owned());
    let keys = lienthong_security_server::keys::Keys::load(
        &dir,
        &ss2.id,
        &f.registry.anchor.instance_ca_certificate,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let request = client::server_request(
        &ss2.id,
        Some(&moved.to_string()),
        keys.signer(&member("000102")).unwrap(),
    )
    .unwrap();
    let identity = lienthong_certs::tls::Identity {
        chain: keys.auth.chain.clone(),
        key: lienthong_certs::pem::read_key(&dir.auth_key()).unwrap(),
    };
    RegistrationClient::new(f.registry.channel_as(&identity).await)
        .submit(request)
        .await
        .expect("address change approved (auto-approve)");
    ss2.stop();
    ss2.provider_addr = moved;
    ss2.reserve(moved_listener);
    ss2.start().await;
    f.refresh_all().await;
    is.unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .expect("the consumer follows the new address from the configuration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_logged_sealed_only_for_subsystems_that_opt_in() {
    let f = Federation::start().await;
    f.business
        .server()
        .set_body_logging(&business(), true)
        .unwrap();
    for p in &f.population {
        p.server().set_body_logging(&population(), true).unwrap();
    }
    let is = f.business.client().await;
    let mut m = call_metadata(&business(), &population());
    m.insert("lt-message-id", "body-1".parse().unwrap());
    is.unary("GetPerson", m, "001099012345").await.unwrap();

    let reader = f.business.server().log_reader();
    let records = reader.by_message("body-1").unwrap();
    assert_eq!(records.len(), 2, "request and response");
    let request = reader
        .body_of(records[0])
        .unwrap()
        .expect("request body logged");
    assert!(request.windows(12).any(|w| w == b"001099012345"));
    let response = reader
        .body_of(records[1])
        .unwrap()
        .expect("response body logged");
    assert!(
        response
            .windows("Nguyễn Văn An".len())
            .any(|w| w == "Nguyễn Văn An".as_bytes())
    );

    // Sealed at rest: the name is nowhere in the log's files in plain text.
    for entry in std::fs::read_dir(tamper::log_dir(&f.business)).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !bytes
                .windows("Nguyễn Văn An".len())
                .any(|w| w == "Nguyễn Văn An".as_bytes())
        );
    }

    // A subsystem that did not opt in leaves no body.
    f.business
        .server()
        .set_body_logging(&business(), false)
        .unwrap();
    let mut m = call_metadata(&business(), &population());
    m.insert("lt-message-id", "body-2".parse().unwrap());
    is.unary("GetPerson", m, "1").await.unwrap();
    for r in reader.by_message("body-2").unwrap() {
        assert!(reader.body_of(r).unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_reports_health_and_metrics_and_drains() {
    let f = Federation::start().await;
    let admin = f.business.server().admin_addr().expect("admin port");
    let (status, body) = admin_request(admin, "GET", "/health", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"status\":\"ok\"") && body.contains("\"configuration\""),
        "{body}"
    );

    let is = f.business.client().await;
    is.unary("GetPerson", call_metadata(&business(), &population()), "1")
        .await
        .unwrap();
    f.tax
        .client()
        .await
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await
        .unwrap_err();
    let (_, metrics) = admin_request(admin, "GET", "/metrics", "").await;
    assert!(
        metrics.contains(&format!(
            "lienthong_exchanges_total{{side=\"consumer\",client=\"{}\",service=\"{}/{PERSON_REGISTRY}\",fault=\"\"}} 1",
            business(),
            population()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("lienthong_exchange_seconds_count{side=\"consumer\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lienthong_configuration_expires_in_seconds"),
        "{metrics}"
    );
    // Group commit: batch sizes and commit times; every commit is counted
    // in the +Inf bucket of both.
    let commits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lienthong_log_commits_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("commits are counted");
    assert!(commits >= 1);
    // Commits made on the threads of the calls awaiting them (the log
    // being quiet) are some of them, their CPU timed one by one.
    let appender_commits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lienthong_log_appender_commit_cpu_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("commits on appenders' threads are timed");
    assert!(appender_commits <= commits, "{metrics}");
    // The log's CPU (its threads and those commits), in whole seconds (a
    // few exchanges take well under one).
    let log_cpu = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lienthong_log_cpu_seconds_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the log's CPU is read");
    assert!(log_cpu <= 5, "{log_cpu} s of CPU for a few exchanges");
    for histogram in [
        "lienthong_log_commit_seconds",
        "lienthong_log_commit_records",
    ] {
        assert!(
            metrics.contains(&format!("{histogram}_bucket{{le=\"+Inf\"}} {commits}\n")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("{histogram}_count {commits}\n")),
            "{metrics}"
        );
    }
    let provider_admin = f.population[0].server().admin_addr().unwrap();
    let (_, denied) = admin_request(provider_admin, "GET", "/metrics", "").await;
    let other = f.population[1].server().admin_addr().unwrap();
    let (_, denied2) = admin_request(other, "GET", "/metrics", "").await;
    assert!(
        (denied + &denied2).contains("fault=\"server.serverproxy.access_denied\""),
        "the provider counts its refusals"
    );

    let (status, ops) = admin_request(admin, "GET", "/operational-data?since_hours=1", "").await;
    assert_eq!(status, 200, "{ops}");
    assert!(ops.starts_with('[') && ops.ends_with(']'), "{ops}");
    assert!(
        ops.contains("\"side\":\"consumer\",\"phase\":\"response\"")
            && ops.contains("\"method\":\"GetPerson\""),
        "{ops}"
    );
    let (status, _) = admin_request(admin, "GET", "/operational-data?limit=x", "").await;
    assert_eq!(status, 400);

    // Maintenance mode is an admin operator's: not anyone's who reaches
    // the port, not an observer's.
    let (status, _) = admin_request(admin, "POST", "/maintenance", "on").await;
    assert_eq!(status, 401);
    use lienthong_security_server::admin::operators::Role;
    let observer = f.business.operator_token("watch", Role::Observer);
    let (status, _) = admin_request_as(admin, Some(&observer), "POST", "/maintenance", "on").await;
    assert_eq!(status, 403);
    assert_eq!(admin_request(admin, "GET", "/health", "").await.0, 200);
    let token = f.business.operator_token("ops", Role::Admin);
    let (status, _) = admin_request_as(admin, Some(&token), "POST", "/maintenance", "on").await;
    assert_eq!(status, 200);
    let (status, body) = admin_request(admin, "GET", "/health", "").await;
    assert_eq!(status, 503);
    assert!(body.contains("maintenance"), "{body}");
    admin_request_as(admin, Some(&token), "POST", "/maintenance", "off").await;
    assert_eq!(admin_request(admin, "GET", "/health", "").await.0, 200);
    assert_eq!(admin_request(admin, "GET", "/nope", "").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_the_backend_without_span_export() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut md = call_metadata(&business(), &population());
    md.insert("traceparent", traceparent.parse().unwrap());
    md.insert("tracestate", "agency=business".parse().unwrap());
    let answer = is
        .unary("GetPerson", md, "001099012345")
        .await
        .expect("the exchange succeeds");
    assert_eq!(
        f.backend.traceparents.lock().unwrap().as_slice(),
        [traceparent],
        "signed into the envelope and handed to the backend unchanged"
    );
    assert!(
        answer.metadata().get("traceresponse").is_none(),
        "no span of ours to name"
    );
    is.business_gets_person()
        .await
        .expect("the exchange succeeds");
    assert_eq!(
        f.backend.traceparents.lock().unwrap()[1],
        "",
        "no context is made up"
    );
}

/// Asks `server` for its operational data, as `client`, through `is`.
async fn operational_data(
    is: &InformationSystem,
    client: &lienthong_proto::id::SubsystemId,
    server: &lienthong_proto::id::ServerId,
    query: lienthong_proto::pb::operational::v1::OperationalQuery,
) -> Result<lienthong_proto::pb::operational::v1::OperationalReport, tonic::Status> {
    use lienthong_proto::pb::operational::v1::operational_data_client::OperationalDataClient;
    let mut req = tonic::Request::new(query);
    req.metadata_mut()
        .insert("lt-client", client.to_string().parse().unwrap());
    req.metadata_mut()
        .insert("lt-server", server.to_string().parse().unwrap());
    OperationalDataClient::new(is.channel.clone())
        .query(req)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_data_over_the_bus_shows_each_member_its_own_exchanges() {
    use lienthong_proto::pb::operational::v1::{OperationalQuery, OperationalRecord};
    use lienthong_proto::pb::trace::v1::Phase;
    let f = Federation::start().await;
    let business_is = f.business.client().await;
    let answer = business_is
        .business_gets_person()
        .await
        .expect("the exchange succeeds");
    let message_id = answer
        .metadata()
        .get("lt-message-id")
        .and_then(|v| v.to_str().ok())
        .expect("the consumer names the message")
        .to_owned();
    // Tax may call nothing: the population servers refuse and log it.
    let tax_is = f.tax.client().await;
    let denied = tax_is
        .unary("GetPerson", call_metadata(&tax(), &population()), "1")
        .await
        .unwrap_err();
    assert_eq!(fault_of(&denied), "server.serverproxy.access_denied");

    let everything = OperationalQuery::default();
    let mut seen: Vec<OperationalRecord> = Vec::new();
    for ss in &f.population {
        let report = operational_data(&business_is, &business(), &ss.id, everything.clone())
            .await
            .expect("any member may ask");
        assert!(!report.truncated);
        seen.extend(report.records);
    }
    assert!(
        seen.iter().any(|r| r.message_id == message_id
            && r.phase == Phase::Response as i32
            && r.method == "GetPerson"
            && r.peer == f.business.id.to_string()
            && r.payload_size > 0),
        "business sees its exchange on the provider's side: {seen:#?}"
    );
    let business_member = format!("{}/", business().member);
    assert!(
        seen.iter()
            .all(|r| r.client.starts_with(&business_member)
                || r.service.starts_with(&business_member)),
        "and nothing else: {seen:#?}"
    );

    // The owner (a subsystem of the member in the server's id) sees all.
    let population_is = f.population[0].client().await;
    let mut all: Vec<OperationalRecord> = Vec::new();
    for ss in &f.population {
        all.extend(
            operational_data(&population_is, &population(), &ss.id, everything.clone())
                .await
                .expect("the owner may ask")
                .records,
        );
    }
    assert!(
        all.iter().any(|r| r.client == tax().to_string()
            && r.fault == "server.serverproxy.access_denied"
            && r.phase == Phase::Fault as i32),
        "{all:#?}"
    );
    assert!(all.len() > seen.len());

    // One exchange by its message id; a bounded page; bad input refused.
    let mut one = Vec::new();
    for ss in &f.population {
        one.extend(
            operational_data(
                &business_is,
                &business(),
                &ss.id,
                OperationalQuery {
                    message_id: message_id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .records,
        );
    }
    assert_eq!(one.len(), 2, "request and response: {one:#?}");
    assert!(one.iter().all(|r| r.message_id == message_id));
    let page = operational_data(
        &population_is,
        &population(),
        &f.population[0].id,
        OperationalQuery {
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.records.len(), 1);
    assert!(page.truncated);
    let bad = operational_data(
        &business_is,
        &business(),
        &f.population[0].id,
        OperationalQuery {
            message_id: "'; DROP TABLE records".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
}

/// The refusal of a call expected to be refused (without printing a huge
/// answer when it was not).
fn refused(r: Result<tonic::Response<Person>, tonic::Status>) -> tonic::Status {
    match r {
        Ok(answer) => panic!(
            "expected a refusal, got an answer of {} bytes",
            answer.into_inner().full_name.len()
        ),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_messages_are_bounded_on_both_servers() {
    let mut f = Federation::start().await;
    let is = f.business.client().await;
    let huge = |bytes: usize| {
        let is = &is;
        async move {
            is.unary(
                "Huge",
                call_metadata(&business(), &population()),
                &bytes.to_string(),
            )
            .await
        }
    };
    let fine = huge(1_000_000).await.expect("1 MB is within 4 MiB");
    assert_eq!(fine.into_inner().full_name.len(), 1_000_000);

    // Over the provider's limit (4 MiB): its server cuts the response off.
    let err = refused(huge(5_000_000).await);
    assert_eq!(
        fault_of(&err),
        "server.serverproxy.message_too_large",
        "{err:?}"
    );
    assert_eq!(err.code(), Code::ResourceExhausted);

    // Over the consumer's own, smaller limit: the consumer's server cuts it.
    f.business
        .restart_with(|o| o.max_message_bytes = 512 * 1024)
        .await;
    let is = f.business.client().await;
    let err = is
        .unary("Huge", call_metadata(&business(), &population()), "1000000")
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&err),
        "server.clientproxy.response_too_large",
        "{err:?}"
    );
    assert_eq!(err.code(), Code::ResourceExhausted);
    let small = is
        .unary("Huge", call_metadata(&business(), &population()), "1000")
        .await
        .expect("small answers still pass");
    assert_eq!(small.into_inner().full_name.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_audit_reports_a_record_edited_in_place() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    for _ in 0..4 {
        is.business_gets_person()
            .await
            .expect("the exchange succeeds");
    }
    let server = f.business.server();
    let clean = server.audit_now().await.expect("the audit runs");
    assert!(clean.mismatches.is_empty(), "{clean:?}");
    assert!(clean.checked >= 8, "two records per exchange: {clean:?}");
    let admin = server.admin_addr().unwrap();
    let (status, _) = admin_request(admin, "GET", "/health", "").await;
    assert_eq!(status, 200);

    // Someone with the log's files edits a record's bytes in place.
    tamper::flip_record_byte(&f.business, 2);

    let found = server.audit_now().await.expect("the audit runs");
    assert_eq!(found.found, 1, "{found:?}");
    let again = server.audit_now().await.expect("the audit runs");
    assert_eq!(again.found, 1, "found again, counted once: {again:?}");
    assert!(found.mismatches[0].starts_with("record 2:"), "{found:?}");
    let (status, body) = admin_request(admin, "GET", "/health", "").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("log_audit") && body.contains("record 2"),
        "{body}"
    );
    let (_, metrics) = admin_request(admin, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("lienthong_log_audit_mismatches 1\n"),
        "{metrics}"
    );
}

/// The log edited behind a server's back, with it stopped and with it
/// running — an exchange's lookup entries deleted (the citizen's trace
/// would lose it), a record's bytes changed — is found by the self-audit
/// the server runs by itself (no audit asked for), and `/health` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_self_audit_finds_edits_made_stopped_or_running() {
    let mut f = Federation::start().await;
    let is = f.business.client().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = is
            .business_gets_person()
            .await
            .expect("the exchange succeeds");
        let id = response.metadata().get("lt-message-id").expect("an id");
        ids.push(id.to_str().unwrap().to_owned());
    }
    let unhealthy = |agency: &Agency, says: &'static str| {
        let admin = agency.server().admin_addr().unwrap();
        wait_for(PATIENCE, says, move || async move {
            let (status, body) = admin_request(admin, "GET", "/health", "").await;
            (status == 503 && body.contains("log_audit") && body.contains(says)).then_some(())
        })
    };

    // Stopped: the consumer's entries of the first exchange deleted (once
    // its index holds them: it follows the commits a moment later).
    let reader = f.business.server().log_reader().clone();
    wait_until(PATIENCE, "the exchange indexed", || {
        reader
            .by_message(&ids[0])
            .is_ok_and(|found| found.len() == 2)
    })
    .await;
    drop(reader);
    f.business.stop();
    assert_eq!(tamper::delete_exchange_from_index(&f.business, &ids[0]), 2);
    f.business.start().await;
    unhealthy(&f.business, "index entry is missing").await;

    // Running: a record of the provider's flipped in its segment.
    let provider = f
        .population
        .iter()
        .find(|p| {
            let r = p.server().log_reader();
            r.by_message(&ids[1]).is_ok_and(|found| !found.is_empty())
        })
        .expect("a population server served it");
    let (status, _) = admin_request(
        provider.server().admin_addr().unwrap(),
        "GET",
        "/health",
        "",
    )
    .await;
    assert_eq!(status, 200);
    tamper::flip_record_byte(provider, 0);
    unhealthy(provider, "record 0").await;
}
