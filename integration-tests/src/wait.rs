//! Waiting in tests for what they need, not for a guessed time: a
//! condition is polled until it holds, and only a generous deadline (the
//! patience) fails the test. A slow machine makes such a test slower,
//! never wrong; a fast one does not wait for nothing.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is asked again.
const POLL: Duration = Duration::from_millis(20);

/// Patience for what should happen at once on an idle machine (a closed
/// port refusing, a deadline passing): long enough for a loaded CI
/// runner, and only ever waited out when the test fails anyway.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Waits until `condition` holds; panics naming `what` once `patience`
/// has passed without it.
pub async fn wait_until(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {patience:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for a condition that must itself wait (a call, a
/// request); returns what the last attempt gave.
pub async fn wait_for<T, F, Fut>(patience: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + patience;
    loop {
        if let Some(t) = attempt().await {
            return t;
        }
        assert!(Instant::now() < deadline, "waited {patience:?} for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] on a plain thread (tests that drive processes).
pub fn wait_until_blocking(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {patience:?} for {what}");
        std::thread::sleep(POLL);
    }
}

/// Whether nothing accepts connections at `addr` any more (a stopped
/// server's listener is closed).
pub fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}
