//! Slowing down and then refusing sources that keep failing, as a tower
//! layer in front of every registry API.
//!
//! Each source address has a token bucket ([`Bucket`], pure). A refused call
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`, `INVALID_ARGUMENT` or
//! `FAILED_PRECONDITION`) takes a token; tokens come back at a steady rate.
//! Below [`ThrottleConfig::slow_below`] tokens every call from the source
//! waits [`ThrottleConfig::slow_delay`] first; with none left the source is
//! refused for [`ThrottleConfig::block_for`] without its calls reaching the
//! registry: `RESOURCE_EXHAUSTED` with `lt-fault: registry.throttled`.
//! Successful calls cost nothing, so an operator's or a server's normal
//! work is never slowed.
//!
//! The layer also counts every refusal by API method and status code (the
//! metrics, [`RefusalCounts`]), and answers a request body that does not
//! decode as `INVALID_ARGUMENT` (`lt-fault: registry.bad_request_body`)
//! rather than tonic's `INTERNAL`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::refusals::{Caller, Refusals};

/// The fault code of a throttled call.
pub const FAULT_THROTTLED: &str = "registry.throttled";
/// The fault code of a request body that does not decode.
pub const FAULT_BAD_BODY: &str = "registry.bad_request_body";
/// Most sources tracked; idle, full buckets are forgotten beyond it.
const MAX_SOURCES: usize = 100_000;

/// The throttle's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// Refusals a source may have in a burst.
    /// # Default
    /// 30
    pub burst: f64,
    /// Refusals forgiven per second.
    /// # Default
    /// 0.5 (one every 2 s)
    pub refill_per_sec: f64,
    /// Below this many tokens, each call of the source waits `slow_delay`.
    /// # Default
    /// 10
    pub slow_below: f64,
    /// # Default
    /// 250 ms
    pub slow_delay: Duration,
    /// How long a source with no tokens left is refused.
    /// # Default
    /// 60 s
    pub block_for: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            burst: 30.0,
            refill_per_sec: 0.5,
            slow_below: 10.0,
            slow_delay: Duration::from_millis(250),
            block_for: Duration::from_secs(60),
        }
    }
}

/// What to do with a call from a source (pure: [`Bucket::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Pass,
    /// Pass after waiting this long.
    Slow(Duration),
    /// Refuse; the source is blocked for this much longer.
    Refuse(Duration),
}

/// One source's token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
    blocked_until: Option<Instant>,
}

impl Bucket {
    pub fn new(cfg: &ThrottleConfig, now: Instant) -> Self {
        Bucket {
            tokens: cfg.burst,
            at: now,
            blocked_until: None,
        }
    }

    fn refill(&mut self, cfg: &ThrottleConfig, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * cfg.refill_per_sec).min(cfg.burst);
        self.at = now;
    }

    /// Whether a call may go through now.
    pub fn admit(&mut self, cfg: &ThrottleConfig, now: Instant) -> Admission {
        if let Some(until) = self.blocked_until {
            if now < until {
                return Admission::Refuse(until - now);
            }
            self.blocked_until = None;
            self.at = now;
        }
        self.refill(cfg, now);
        if self.tokens < cfg.slow_below {
            Admission::Slow(cfg.slow_delay)
        } else {
            Admission::Pass
        }
    }

    /// Takes a token for a refused call; true when this blocks the source.
    pub fn refused(&mut self, cfg: &ThrottleConfig, now: Instant) -> bool {
        self.refill(cfg, now);
        self.tokens -= 1.0;
        if self.tokens < 1.0 && self.blocked_until.is_none() {
            self.blocked_until = Some(now + cfg.block_for);
            self.tokens = 0.0;
            return true;
        }
        false
    }

    fn idle(&self, cfg: &ThrottleConfig, now: Instant) -> bool {
        let mut b = *self;
        b.refill(cfg, now);
        b.blocked_until.is_none_or(|u| u <= now) && b.tokens >= cfg.burst
    }
}

/// Whether a call answered with `code` counts against its source.
pub fn counts_against(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::FailedPrecondition
    )
}

/// Refusals by API method and status code, and throttled calls.
#[derive(Debug, Default)]
pub struct RefusalCounts {
    by_method: Mutex<BTreeMap<(String, String), u64>>,
}

impl RefusalCounts {
    fn add(&self, method: &str, code: Code) {
        let mut m = match self.by_method.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *m.entry((method.to_owned(), format!("{code:?}")))
            .or_default() += 1;
    }

    /// `((method, code), count)`, sorted.
    pub fn snapshot(&self) -> Vec<((String, String), u64)> {
        let m = match self.by_method.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The shared state of the layer.
#[derive(Debug)]
pub struct Throttle {
    cfg: ThrottleConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    counts: Arc<RefusalCounts>,
    refusals: Arc<Refusals>,
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig, counts: Arc<RefusalCounts>, refusals: Arc<Refusals>) -> Self {
        Throttle {
            cfg,
            buckets: Mutex::new(HashMap::new()),
            counts,
            refusals,
        }
    }

    fn with_bucket<T>(&self, ip: IpAddr, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let now = Instant::now();
        let mut map = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_SOURCES && !map.contains_key(&ip) {
            map.retain(|_, b| !b.idle(&self.cfg, now));
        }
        let bucket = map.entry(ip).or_insert_with(|| Bucket::new(&self.cfg, now));
        f(bucket)
    }
}

/// The tower layer.
#[derive(Debug, Clone)]
pub struct ThrottleLayer(pub Arc<Throttle>);

impl<S> tower::Layer<S> for ThrottleLayer {
    type Service = ThrottleService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ThrottleService {
            inner,
            throttle: self.0.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct ThrottleService<S> {
    inner: S,
    throttle: Arc<Throttle>,
}

/// The source address of a call over the registry's TLS listener.
pub fn source<B>(req: &Request<B>) -> Option<SocketAddr> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
        })
}

/// The status of a trailers-only answer (every refusal of a unary call).
fn status_of(res: &Response<Body>) -> Option<(Code, String)> {
    let status = tonic::Status::from_header_map(res.headers())?;
    Some((status.code(), status.message().to_owned()))
}

fn refusal(code: Code, fault: &'static str, message: String) -> Response<Body> {
    let mut status = tonic::Status::new(code, message);
    status.metadata_mut().insert(
        "lt-fault",
        tonic::metadata::MetadataValue::from_static(fault),
    );
    status.into_http()
}

impl<S, B> tower::Service<Request<B>> for ThrottleService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is ready in the same way (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let throttle = self.throttle.clone();
        let method = req.uri().path().to_owned();
        let source = source(&req);
        Box::pin(async move {
            let admission = match source {
                Some(s) => throttle.with_bucket(s.ip(), |b| b.admit(&throttle.cfg, Instant::now())),
                None => Admission::Pass,
            };
            match admission {
                Admission::Refuse(left) => {
                    throttle.counts.add(&method, Code::ResourceExhausted);
                    return Ok(refusal(
                        Code::ResourceExhausted,
                        FAULT_THROTTLED,
                        format!(
                            "{FAULT_THROTTLED}: too many refused calls from this address; retry in {} s",
                            left.as_secs().max(1)
                        ),
                    ));
                }
                Admission::Slow(d) => tokio::time::sleep(d).await,
                Admission::Pass => {}
            }
            let mut res = inner.call(req).await?;
            let Some((mut code, message)) = status_of(&res) else {
                return Ok(res);
            };
            if code == Code::Internal && message.starts_with("failed to decode Protobuf message") {
                code = Code::InvalidArgument;
                res = refusal(
                    code,
                    FAULT_BAD_BODY,
                    format!(
                        "{FAULT_BAD_BODY}: the request body is not a valid protobuf message of this method"
                    ),
                );
                throttle.refusals.spawn_record(
                    &Caller::anonymous(source).actor(),
                    &method,
                    &Caller::anonymous(source).detail(""),
                    &format!("{FAULT_BAD_BODY}: the request body does not decode"),
                );
            }
            if code == Code::Ok {
                return Ok(res);
            }
            throttle.counts.add(&method, code);
            if let Some(s) = source.filter(|_| counts_against(code)) {
                let blocked =
                    throttle.with_bucket(s.ip(), |b| b.refused(&throttle.cfg, Instant::now()));
                if blocked {
                    tracing::warn!(source = %s.ip(), "registry throttles a source that keeps failing");
                    throttle.refusals.spawn_record(
                        &format!("source {}", s.ip()),
                        "Throttle",
                        &format!("last call {method}"),
                        &format!(
                            "{FAULT_THROTTLED}: refused for {} s after repeated refusals",
                            throttle.cfg.block_for.as_secs()
                        ),
                    );
                }
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_table() {
        let cfg = ThrottleConfig {
            burst: 4.0,
            refill_per_sec: 1.0,
            slow_below: 2.0,
            slow_delay: Duration::from_millis(100),
            block_for: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_millis(n);
        let mut b = Bucket::new(&cfg, t0);
        // (at ms, refused?, admission before, blocks?)
        let steps: [(u64, bool, Admission, bool); 8] = [
            (0, true, Admission::Pass, false), // 3 left
            (0, true, Admission::Pass, false), // 2 left
            (0, true, Admission::Pass, false), // 1 left: slow from now
            (0, false, Admission::Slow(cfg.slow_delay), false),
            (0, true, Admission::Slow(cfg.slow_delay), true), // 0: blocked
            (
                5_000,
                false,
                Admission::Refuse(Duration::from_secs(5)),
                false,
            ),
            (10_000, false, Admission::Slow(cfg.slow_delay), false), // unblocked, empty
            (14_000, false, Admission::Pass, false),                 // refilled to the burst
        ];
        for (i, (at, refused, want, blocks)) in steps.into_iter().enumerate() {
            assert_eq!(b.admit(&cfg, s(at)), want, "step {i}");
            if refused {
                assert_eq!(b.refused(&cfg, s(at)), blocks, "step {i}");
            }
        }
        assert!(b.idle(&cfg, s(20_000)));
    }

    #[test]
    fn refusal_codes_table() {
        for (code, counts) in [
            (Code::Unauthenticated, true),
            (Code::PermissionDenied, true),
            (Code::InvalidArgument, true),
            (Code::FailedPrecondition, true),
            (Code::NotFound, false),
            (Code::AlreadyExists, false),
            (Code::Internal, false),
            (Code::Unavailable, false),
            (Code::ResourceExhausted, false),
        ] {
            assert_eq!(counts_against(code), counts, "{code:?}");
        }
    }
}
