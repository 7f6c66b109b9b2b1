//! Replay protection: a message id may be used once per client within the
//! replay window; requests older than the window (or from the future beyond
//! the clock skew) are refused by their timestamp, so the cache only ever
//! needs to hold one window of ids.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How far a request's creation time may differ from this server's clock.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most ids held; above this the oldest are dropped early (and their
/// timestamps still refuse replays older than the skew window).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Whether a request created at `created_ms` is acceptable at `now_ms`.
pub fn fresh(created_ms: i64, now_ms: i64, max_skew_ms: i64) -> bool {
    (created_ms - now_ms).abs() <= max_skew_ms
}

/// Message ids seen within the window.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<(String, String), i64>,
    order: VecDeque<(i64, (String, String))>,
}

impl ReplayCache {
    /// Records `(client, message_id)` at `now_ms`; false if it was already
    /// seen within `window_ms`.
    pub fn first_use(&self, client: &str, message_id: &str, now_ms: i64, window_ms: i64) -> bool {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some((at, _)) = g.order.front() {
            if *at + window_ms >= now_ms && g.order.len() < MAX_ENTRIES {
                break;
            }
            if let Some((at, key)) = g.order.pop_front()
                && g.seen.get(&key) == Some(&at)
            {
                g.seen.remove(&key);
            }
        }
        let key = (client.to_owned(), message_id.to_owned());
        if g.seen.contains_key(&key) {
            return false;
        }
        g.seen.insert(key.clone(), now_ms);
        g.order.push_back((now_ms, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_use_within_the_window() {
        let c = ReplayCache::default();
        assert!(c.first_use("a", "m1", 1000, 600));
        assert!(!c.first_use("a", "m1", 1100, 600));
        assert!(c.first_use("b", "m1", 1100, 600), "per client");
        assert!(c.first_use("a", "m1", 1700, 600), "after the window");
    }

    #[test]
    fn freshness() {
        assert!(fresh(1000, 1000, 10));
        assert!(fresh(990, 1000, 10));
        assert!(!fresh(989, 1000, 10));
        assert!(!fresh(1011, 1000, 10));
    }
}
