//! What the page keeps in memory: sessions, logins in progress, each
//! citizen's rate limit and the short cache of answers.
//!
//! # Defaults
//! * A session lasts [`DEFAULT_SESSION_TTL`] from login (no sliding renewal).
//! * A login must come back from the provider within [`LOGIN_TTL`].
//! * An answer is reused for [`DEFAULT_CACHE_TTL`]: every fresh answer is
//!   signed exchanges and log records at every server of the instance. At
//!   most [`MAX_CACHED`] answers are held.
//! * A citizen gets at most [`DEFAULT_TRACES_PER_WINDOW`] fresh answers per
//!   [`DEFAULT_RATE_WINDOW`], and at most [`DEFAULT_CONCURRENT_TRACES`] are
//!   gathered at once for everyone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::i18n::Lang;
use crate::oidc::PendingLogin;
use crate::source::Traced;

pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 60);
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_TRACES_PER_WINDOW: usize = 10;
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_CONCURRENT_TRACES: usize = 8;
/// Most answers cached at once.
pub const MAX_CACHED: usize = 1_000;
/// Most sessions (and logins in progress) held at once; beyond, the oldest
/// expired ones go first, then new logins are refused.
pub const MAX_SESSIONS: usize = 100_000;

/// A random token: 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // The system's random source failing leaves no safe way on.
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source works");
    URL_SAFE_NO_PAD.encode(b)
}

/// Equal, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in citizen.
#[derive(Debug, Clone)]
pub struct Session {
    /// The canonical personal id.
    pub subject: String,
    /// The anti-forgery token of this session's forms.
    pub csrf: String,
    pub expires: Instant,
}

/// A login in progress, with the language to come back to.
#[derive(Debug)]
pub struct Pending {
    pub login: PendingLogin,
    pub lang: Lang,
}

/// Limits and lifetimes.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session_ttl: Duration,
    pub cache_ttl: Duration,
    pub traces_per_window: usize,
    pub rate_window: Duration,
    pub concurrent_traces: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session_ttl: DEFAULT_SESSION_TTL,
            cache_ttl: DEFAULT_CACHE_TTL,
            traces_per_window: DEFAULT_TRACES_PER_WINDOW,
            rate_window: DEFAULT_RATE_WINDOW,
            concurrent_traces: DEFAULT_CONCURRENT_TRACES,
        }
    }
}

/// Sessions and logins in progress.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Sessions {
    /// A new session for `subject`: its id (for the cookie) and itself.
    pub fn open(&self, subject: String, ttl: Duration) -> Option<(String, Session)> {
        let mut map = self.sessions.lock().ok()?;
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let id = random_token();
        let s = Session {
            subject,
            csrf: random_token(),
            expires: Instant::now() + ttl,
        };
        map.insert(id.clone(), s.clone());
        Some((id, s))
    }

    /// The live session of `id`.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.sessions.lock().ok()?;
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        if let Ok(mut map) = self.sessions.lock() {
            map.remove(id);
        }
    }

    /// Keeps a login in progress; returns the id its cookie carries.
    pub fn start_login(&self, p: Pending) -> Option<String> {
        let mut map = self.pending.lock().ok()?;
        map.retain(|_, p| p.login.started.elapsed() < LOGIN_TTL);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let id = random_token();
        map.insert(id.clone(), p);
        Some(id)
    }

    /// Takes the login in progress of `id` (once: a second callback with
    /// the same login finds nothing).
    pub fn take_login(&self, id: &str) -> Option<Pending> {
        let p = self.pending.lock().ok()?.remove(id)?;
        (p.login.started.elapsed() < LOGIN_TTL).then_some(p)
    }
}

/// Why no answer is given now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many fresh answers; try again after this long.
    TooMany(Duration),
}

/// Each citizen's recent answers and fresh-answer times.
#[derive(Debug, Default)]
pub struct Answers {
    cache: Mutex<HashMap<String, (Instant, Arc<Traced>)>>,
    fresh: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Answers {
    /// A cached answer younger than `ttl`.
    pub fn cached(&self, subject: &str, ttl: Duration) -> Option<Arc<Traced>> {
        let map = self.cache.lock().ok()?;
        map.get(subject)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, t)| t.clone())
    }

    /// Counts a fresh answer for `subject`, or says when one may be had.
    pub fn admit(&self, subject: &str, limits: &Limits) -> Result<(), Refusal> {
        let mut map = self
            .fresh
            .lock()
            .map_err(|_| Refusal::TooMany(limits.rate_window))?;
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, q| q.back().is_some_and(|t| now - *t < limits.rate_window));
        }
        let q = map.entry(subject.to_owned()).or_default();
        while q.front().is_some_and(|t| now - *t >= limits.rate_window) {
            q.pop_front();
        }
        if q.len() >= limits.traces_per_window {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(Refusal::TooMany(
                limits.rate_window.saturating_sub(now - oldest),
            ));
        }
        q.push_back(now);
        Ok(())
    }

    /// Keeps `traced` for `ttl`; answers past their time are dropped here
    /// (an answer with its proofs can be megabytes), and beyond
    /// [`MAX_CACHED`] answers nothing more is kept.
    pub fn keep(&self, subject: &str, traced: Arc<Traced>, ttl: Duration) {
        if let Ok(mut map) = self.cache.lock() {
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() < MAX_CACHED {
                map.insert(subject.to_owned(), (Instant::now(), traced));
            }
        }
    }

    /// How many answers are held.
    pub fn held(&self) -> usize {
        self.cache.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_citizen_gets_a_bounded_number_of_fresh_answers() {
        let limits = Limits {
            traces_per_window: 2,
            ..Default::default()
        };
        let a = Answers::default();
        assert!(a.admit("001099012345", &limits).is_ok());
        assert!(a.admit("001099012345", &limits).is_ok());
        let Err(Refusal::TooMany(wait)) = a.admit("001099012345", &limits) else {
            panic!("a third fresh answer within the window");
        };
        assert!(wait > Duration::from_secs(500), "{wait:?}");
        // Another citizen is not held back.
        assert!(a.admit("001099099999", &limits).is_ok());
    }

    #[test]
    fn answers_past_their_time_are_not_held() {
        let a = Answers::default();
        let traced = || {
            Arc::new(Traced {
                report: Default::default(),
                bundle: crate::bundle::Bundle::new("", 0, Vec::new(), Default::default()),
                member_names: Default::default(),
                at_ms: 0,
            })
        };
        a.keep("001099012345", traced(), Duration::ZERO);
        a.keep("001099099999", traced(), Duration::ZERO);
        assert_eq!(a.held(), 1, "the first answer was past its time");
        assert!(a.cached("001099099999", Duration::ZERO).is_none());
        a.keep("001099012345", traced(), Duration::from_secs(60));
        assert!(a.cached("001099012345", Duration::from_secs(60)).is_some());
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::default();
        let (id, _) = s
            .open("001099012345".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(s.get(&id).unwrap().subject, "001099012345");
        assert!(s.get("someone else's guess").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        let (short, _) = s.open("001099012345".into(), Duration::ZERO).unwrap();
        assert!(s.get(&short).is_none(), "an expired session is no session");
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..42]));
    }
}
