//! A server that joins while the federation runs: its calls are not
//! refused until the providers' next poll.

use std::time::{Duration, Instant};

use lienthong_integration_tests::federation::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_joined_consumer_is_served_without_waiting_for_the_providers_poll() {
    let mut f = Federation::start().await;
    // The providers would not poll again for an hour.
    for p in &mut f.population {
        p.restart_with(|o| o.poll_interval = Some(Duration::from_secs(3600)))
            .await;
    }
    // A second server of the business registry joins, serving the same
    // client, which the providers' access rights already allow.
    let ss2 = join(
        &f.registry,
        &member("000305").server("ss2").expect("valid"),
        &[business()],
    )
    .await;
    let is = ss2.client().await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refusals = Vec::new();
    loop {
        match is.business_gets_person().await {
            Ok(person) => {
                assert_eq!(person.into_inner().personal_id, "001099012345");
                break;
            }
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "still refused after 20 s: {refusals:#?}"
                );
                refusals.push(status);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // A refusal before the providers caught up says why, and what to do.
    for status in &refusals {
        assert_eq!(
            fault_of(status),
            "server.clientproxy.provider_unreachable",
            "{status:?}"
        );
        assert!(
            status
                .message()
                .contains("does not know this server's certificate"),
            "{status:?}"
        );
    }
}
