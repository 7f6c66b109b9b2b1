//! A server that joins while the federation runs: its calls are served at
//! once, not refused until the providers' next poll.

use std::time::Duration;

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

    // Its very first call is served: the provider's handshake admits the
    // instance's certificates, and its first check of the request finds
    // the new server in the configuration it asks the registry for.
    let person = is
        .business_gets_person()
        .await
        .expect("the first call of a newly joined server is served");
    assert_eq!(person.into_inner().personal_id, "001099012345");
}
