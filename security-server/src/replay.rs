//! Replay protection: a message id may be used once per client while a
//! request carrying it could be fresh; requests created further than the
//! clock skew from this server's clock are refused by their timestamp, so
//! the cache only holds ids until their creation time plus the skew.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How far a request's creation time may differ from this server's clock.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most ids held (about 50 MiB); above this the oldest are dropped early,
/// which a sustained rate of over 3,000 new ids a second at the default
/// skew would need.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Whether a request created at `created_ms` is acceptable at `now_ms`.
pub fn fresh(created_ms: i64, now_ms: i64, max_skew_ms: i64) -> bool {
    (created_ms - now_ms).abs() <= max_skew_ms
}

/// Message ids seen and not yet expired.
///
/// An id is kept only while a request carrying it could still be fresh
/// (until its creation time plus the clock skew), and as a 16-byte digest
/// of (client, message id) rather than the strings: about 50 bytes an id
/// and no allocation per request, so a server taking 1,000 requests a
/// second holds about 15 MiB of ids at the default skew.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
}

/// SHA-256 of (client, message id), truncated: 128 bits keep accidental
/// and crafted collisions out of reach.
type Key = [u8; 16];

#[derive(Debug, Default)]
struct Inner {
    /// Key → when it may be forgotten (Unix ms).
    seen: HashMap<Key, i64>,
    /// (expiry, key), in arrival order: expiries follow it closely, and an
    /// entry kept a little longer behind a later one only errs on the
    /// safe side.
    order: VecDeque<(i64, Key)>,
}

fn key(client: &str, message_id: &str) -> Key {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(&(client.len() as u32).to_be_bytes());
    d.update(client.as_bytes());
    d.update(message_id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.finish().as_ref()[..16]);
    k
}

impl ReplayCache {
    /// Records `(client, message_id)` at `now_ms`, to be remembered until
    /// `expires_ms`; false if it is already remembered.
    pub fn first_use(&self, client: &str, message_id: &str, now_ms: i64, expires_ms: i64) -> bool {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some((expiry, _)) = g.order.front() {
            if *expiry >= now_ms && g.order.len() < MAX_ENTRIES {
                break;
            }
            if let Some((expiry, k)) = g.order.pop_front()
                && g.seen.get(&k) == Some(&expiry)
            {
                g.seen.remove(&k);
            }
        }
        let k = key(client, message_id);
        if g.seen.contains_key(&k) {
            return false;
        }
        g.seen.insert(k, expires_ms);
        g.order.push_back((expires_ms, k));
        true
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        match self.inner.lock() {
            Ok(g) => g.seen.len(),
            Err(p) => p.into_inner().seen.len(),
        }
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_use_until_they_expire() {
        let c = ReplayCache::default();
        assert!(c.first_use("a", "m1", 1000, 1600));
        assert!(!c.first_use("a", "m1", 1100, 1700));
        assert!(
            !c.first_use("a", "m1", 1600, 2200),
            "still remembered at expiry"
        );
        assert!(c.first_use("b", "m1", 1100, 1700), "per client");
        assert!(c.first_use("a", "m2", 1100, 1700), "per id");
        assert!(c.first_use("a", "m1", 1601, 2201), "forgotten after expiry");
        // (client, id) pairs that concatenate alike are different keys.
        assert!(c.first_use("ab", "c", 1700, 2000));
        assert!(c.first_use("a", "bc", 1700, 2000));
    }

    #[test]
    fn expired_ids_are_dropped() {
        let c = ReplayCache::default();
        for i in 0..1000 {
            assert!(c.first_use("a", &format!("m{i}"), i, i + 100));
        }
        assert!(c.len() <= 101, "{} ids held", c.len());
        assert!(!c.is_empty());
    }

    #[test]
    fn freshness() {
        assert!(fresh(1000, 1000, 10));
        assert!(fresh(990, 1000, 10));
        assert!(!fresh(989, 1000, 10));
        assert!(!fresh(1011, 1000, 10));
    }
}
