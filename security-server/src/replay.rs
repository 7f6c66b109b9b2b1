//! Replay protection: a message id may be used once per client while a
//! request carrying it could be fresh; requests created further than the
//! clock skew from this server's clock are refused by their timestamp, so
//! the cache only holds ids until their creation time plus the skew.
//!
//! In a cluster (several servers of one member sharing a PostgreSQL
//! store) each node's cache sees only the requests that reached it, so a
//! request replayed to another node would succeed once per node: after
//! its own check, the provider asks the cluster
//! ([`ReplayCache::first_use_in_cluster`]), which claims the id in the
//! shared store — exactly one node's claim wins. A single server keeps
//! using its cache alone (the cluster check is then free).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use crate::store::{ServerStore, StoreError};

/// How far a request's creation time may differ from this server's clock.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most ids held by default: about 56 MiB, enough for a sustained 3,300
/// new requests a second at the default skew (each id is held for about
/// the skew, 300 s). When it is full the provider refuses new requests
/// (`server.serverproxy.replay_capacity`) instead of forgetting an id
/// that could still be replayed.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// What the cache says of a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// First use: now remembered.
    First,
    /// Already used within its window.
    Replay,
    /// Not seen, but the cache is full of ids still in their window.
    Full,
}

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
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

/// SHA-256 of (client, message id), truncated: 128 bits keep accidental
/// and crafted collisions out of reach.
type Key = [u8; 16];

#[derive(Debug, Default)]
struct Inner {
    /// Key → when it may be forgotten (Unix ms).
    seen: HashMap<Key, i64>,
    /// (expiry, key), soonest first: an id created far ahead of the clock
    /// must not hold back the expiry of those behind it.
    order: BinaryHeap<Reverse<(i64, Key)>>,
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
    /// A cache that holds at most `capacity` ids.
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayCache {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// Records `(client, message_id)` at `now_ms`, to be remembered until
    /// `expires_ms`, unless it is already remembered or the cache is full.
    /// Nothing is forgotten before its expiry.
    pub fn first_use(&self, client: &str, message_id: &str, now_ms: i64, expires_ms: i64) -> Use {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while let Some(Reverse((expiry, _))) = g.order.peek() {
            if *expiry >= now_ms {
                break;
            }
            if let Some(Reverse((expiry, k))) = g.order.pop()
                && g.seen.get(&k) == Some(&expiry)
            {
                g.seen.remove(&k);
            }
        }
        let k = key(client, message_id);
        if g.seen.contains_key(&k) {
            return Use::Replay;
        }
        if g.seen.len() >= self.capacity {
            return Use::Full;
        }
        g.seen.insert(k, expires_ms);
        g.order.push(Reverse((expires_ms, k)));
        Use::First
    }

    /// The cluster's check, after this node's [`first_use`](Self::first_use)
    /// said [`Use::First`]: claims `(client, message_id)` until
    /// `expires_ms` in the store the cluster's nodes share. [`Use::Replay`]
    /// when another node (or this one, earlier) holds the claim unexpired;
    /// [`Use::First`] when this call took it, and at once, without asking
    /// anything, when the store is this server's own (no cluster).
    ///
    /// An error means the shared store could not be asked: the request
    /// must be refused (not accepted unchecked), as when the cache is full.
    pub async fn first_use_in_cluster(
        &self,
        store: &Arc<ServerStore>,
        client: &str,
        message_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Use, StoreError> {
        if !store.is_clustered() {
            return Ok(Use::First);
        }
        let k = key(client, message_id);
        let store = store.clone();
        let first = tokio::task::spawn_blocking(move || {
            crate::store::on_blocking_thread(|| store.claim_message_id(&k, now_ms, expires_ms))
        })
        .await
        .map_err(|e| StoreError(format!("the cluster's replay check stopped: {e}")))??;
        Ok(if first { Use::First } else { Use::Replay })
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
        assert_eq!(c.first_use("a", "m1", 1000, 1600), Use::First);
        assert_eq!(c.first_use("a", "m1", 1100, 1700), Use::Replay);
        assert_eq!(
            c.first_use("a", "m1", 1600, 2200),
            Use::Replay,
            "still remembered at expiry"
        );
        assert_eq!(c.first_use("b", "m1", 1100, 1700), Use::First, "per client");
        assert_eq!(c.first_use("a", "m2", 1100, 1700), Use::First, "per id");
        assert_eq!(
            c.first_use("a", "m1", 1601, 2201),
            Use::First,
            "forgotten after expiry"
        );
        // (client, id) pairs that concatenate alike are different keys.
        assert_eq!(c.first_use("ab", "c", 1700, 2000), Use::First);
        assert_eq!(c.first_use("a", "bc", 1700, 2000), Use::First);
    }

    #[test]
    fn a_full_cache_sheds_instead_of_forgetting() {
        // The first request, then 1,100,000 others within the window,
        // against a capacity of a million: the replay is still refused,
        // and the requests over capacity are shed, not accepted.
        let c = ReplayCache::with_capacity(1_000_000);
        let window = 300_000;
        assert_eq!(c.first_use("a", "first", 0, window), Use::First);
        let mut shed = 0;
        for i in 0..1_100_000i64 {
            let now = i / 10; // 10 per ms: all within the window
            match c.first_use("a", &format!("m{i}"), now, now + window) {
                Use::First => {}
                Use::Full => shed += 1,
                Use::Replay => panic!("m{i} is new"),
            }
        }
        assert_eq!(shed, 100_001);
        assert_eq!(c.first_use("a", "first", 110_000, window), Use::Replay);
        // Once the window has passed, ids expire and room returns.
        assert_eq!(
            c.first_use("a", "later", 2 * window, 3 * window),
            Use::First
        );
        assert!(c.len() < 1000, "{} ids held", c.len());
    }

    #[test]
    fn an_id_from_the_future_does_not_hold_back_expiry() {
        let c = ReplayCache::with_capacity(3);
        // Created a full skew ahead: kept until far later.
        assert_eq!(c.first_use("a", "future", 0, 600_000), Use::First);
        assert_eq!(c.first_use("a", "m1", 0, 100), Use::First);
        assert_eq!(c.first_use("a", "m2", 0, 100), Use::First);
        assert_eq!(c.first_use("a", "m3", 50, 150), Use::Full);
        // m1 and m2 expire at 100 although "future" arrived before them.
        assert_eq!(c.first_use("a", "m3", 101, 200), Use::First);
        assert_eq!(c.first_use("a", "future", 101, 600_000), Use::Replay);
    }

    #[test]
    fn expired_ids_are_dropped() {
        let c = ReplayCache::default();
        for i in 0..1000 {
            assert_eq!(c.first_use("a", &format!("m{i}"), i, i + 100), Use::First);
        }
        assert!(c.len() <= 101, "{} ids held", c.len());
        assert!(!c.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_server_asks_no_one_and_a_cluster_claims_once() {
        let dir = tempfile::tempdir().unwrap();
        let solo = Arc::new(ServerStore::open(&dir.path().join("server.db")).unwrap());
        let c = ReplayCache::default();
        for _ in 0..2 {
            // Its own cache is the check; the cluster's is not asked.
            let u = c.first_use_in_cluster(&solo, "a", "m1", 1000, 1600).await;
            assert_eq!(u.unwrap(), Use::First);
        }

        let pair = tokio::task::spawn_blocking(crate::store::tests::cluster_pair)
            .await
            .unwrap();
        let Some((a, b)) = pair else { return };
        let (a, b) = (Arc::new(a.store), Arc::new(b.store));
        let (on_a, on_b) = (ReplayCache::default(), ReplayCache::default());
        // The same request reaches both nodes: each node's own cache says
        // first; the cluster lets one through.
        assert_eq!(on_a.first_use("a", "m1", 1000, 1600), Use::First);
        assert_eq!(on_b.first_use("a", "m1", 1000, 1600), Use::First);
        let (x, y) = tokio::join!(
            on_a.first_use_in_cluster(&a, "a", "m1", 1000, 1600),
            on_b.first_use_in_cluster(&b, "a", "m1", 1000, 1600),
        );
        let mut got = [x.unwrap(), y.unwrap()];
        got.sort_by_key(|u| *u == Use::Replay);
        assert_eq!(got, [Use::First, Use::Replay]);
        assert_eq!(
            on_b.first_use_in_cluster(&b, "b", "m1", 1000, 1600)
                .await
                .unwrap(),
            Use::First,
            "per client"
        );
    }

    #[test]
    fn freshness() {
        assert!(fresh(1000, 1000, 10));
        assert!(fresh(990, 1000, 10));
        assert!(!fresh(989, 1000, 10));
        assert!(!fresh(1011, 1000, 10));
    }
}
