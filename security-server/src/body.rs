//! A response body that passes frames through unchanged while hashing them,
//! and at its end hands what it saw (digest, size, trailers) to a finisher
//! that decides the trailers actually sent: the provider adds its signed
//! response envelope there, the consumer verifies and removes it. The
//! finisher also writes the log record, so trailers — and with them the
//! gRPC status the client acts on — leave only after the record is durable.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use ring::digest;

/// A request's bytes as the chunks they arrived in, with their SHA-256
/// taken as they arrived: passed on without being copied into one buffer.
#[derive(Debug, Clone, Default)]
pub struct Chunks {
    chunks: Vec<Bytes>,
    len: usize,
    digest: [u8; 32],
}

impl Chunks {
    /// Reads a whole request body of at most `max` bytes, hashing each
    /// chunk as it comes. A body over the limit is refused with
    /// `too_large`, a broken one with `broken`.
    pub async fn read<B>(
        body: B,
        max: usize,
        too_large: crate::faults::Fault,
        broken: crate::faults::Fault,
    ) -> Result<Chunks, crate::faults::FaultError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let mut body = std::pin::pin!(body);
        let mut hasher = digest::Context::new(&digest::SHA256);
        let mut chunks = Vec::new();
        let mut len = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                broken.with(format!("the request body could not be read: {e}"))
            })?;
            // Trailers on a request carry nothing the exchange uses.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            len += data.len();
            if len > max {
                return Err(too_large.with(format!("the request is larger than {max} bytes")));
            }
            if !data.is_empty() {
                hasher.update(&data);
                chunks.push(data);
            }
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(hasher.finish().as_ref());
        Ok(Chunks {
            chunks,
            len,
            digest,
        })
    }

    /// SHA-256 over all the bytes.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All the bytes in one buffer: copied only when they came in more
    /// than one chunk (for a body to log, or a built-in service to decode).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = bytes::BytesMut::with_capacity(self.len);
                for c in many {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        }
    }

    /// A body sending the chunks as they came (sharing, not copying, them).
    pub fn body(&self) -> ChunkBody {
        ChunkBody {
            chunks: self.chunks.clone().into_iter(),
            left: self.len as u64,
        }
    }
}

/// The body of [`Chunks::body`].
#[derive(Debug)]
pub struct ChunkBody {
    chunks: std::vec::IntoIter<Bytes>,
    left: u64,
}

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.chunks.next().map(|c| {
            self.left -= c.len() as u64;
            Ok(Frame::data(c))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// What a body carried.
#[derive(Debug)]
pub struct Observation {
    /// SHA-256 over every data byte (the gRPC length-prefixed messages).
    pub digest: [u8; 32],
    pub size: u64,
    /// The trailers the inner body ended with (none for a body that just ended).
    pub trailers: Option<HeaderMap>,
    /// Why the inner body broke off, if it did.
    pub error: Option<String>,
    /// The whole body, when capturing was asked for and it fit.
    pub body: Option<Bytes>,
    /// The announced size of a message over the limit, where the body was
    /// cut off before it ([`Observed::bounded`]).
    pub oversized: Option<u64>,
}

/// Follows the gRPC length-prefixed messages of a byte stream (a flag byte
/// and a 4-byte big-endian length before each message) and stops at the
/// first message announced larger than the limit.
#[derive(Debug, Clone)]
pub struct MessageBounds {
    max: u64,
    prefix: [u8; 5],
    /// Bytes of the current prefix seen so far.
    in_prefix: usize,
    /// Bytes of the current message still to come.
    left: u64,
}

impl MessageBounds {
    pub fn new(max: usize) -> Self {
        MessageBounds {
            max: max as u64,
            prefix: [0; 5],
            in_prefix: 0,
            left: 0,
        }
    }

    /// Takes the next bytes. `Err((at, len))` when a message announces
    /// `len` bytes, over the limit: its prefix starts at byte `at` of
    /// `data` (0 when it began in an earlier chunk).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), (usize, u64)> {
        let mut i = 0;
        let mut prefix_at = 0;
        while i < data.len() {
            if self.left > 0 {
                let take = self.left.min((data.len() - i) as u64);
                self.left -= take;
                i += take as usize;
                continue;
            }
            if self.in_prefix == 0 {
                prefix_at = i;
            }
            self.prefix[self.in_prefix] = data[i];
            self.in_prefix += 1;
            i += 1;
            if self.in_prefix == self.prefix.len() {
                self.in_prefix = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                if len > self.max {
                    return Err((prefix_at, len));
                }
                self.left = len;
            }
        }
        Ok(())
    }
}

/// The trailers a [`Finish`] decides on, once it has.
pub type FinishFuture = Pin<Box<dyn Future<Output = HeaderMap> + Send>>;

/// The stage that runs when a response's body ends: given what the body
/// carried, it decides the trailers to send (verifying, signing and
/// logging on the way). Closures are finishers too.
pub trait Finish: Send + 'static {
    fn finish(self: Box<Self>, observation: Observation) -> FinishFuture;
}

impl<F> Finish for F
where
    F: FnOnce(Observation) -> FinishFuture + Send + 'static,
{
    fn finish(self: Box<Self>, observation: Observation) -> FinishFuture {
        (*self)(observation)
    }
}

/// A finisher written as a closure.
pub type Finisher = Box<dyn FnOnce(Observation) -> FinishFuture + Send>;

enum State {
    Streaming,
    Finishing(FinishFuture),
    Done,
}

/// See the module documentation.
pub struct Observed<B> {
    inner: B,
    hasher: digest::Context,
    size: u64,
    finisher: Option<Box<dyn Finish>>,
    state: State,
    /// Captured data and the most to capture (for opted-in body logging).
    captured: Option<(bytes::BytesMut, usize)>,
    /// The per-message size limit, if any.
    bounds: Option<MessageBounds>,
    /// The whole body's size limit, if any (a body held whole).
    total_limit: Option<u64>,
    oversized: Option<u64>,
}

impl<B> Observed<B> {
    /// Passes `inner` through, then lets `finisher` decide the trailers.
    pub fn new(inner: B, finisher: Finisher) -> Self {
        Self::finishing(inner, finisher)
    }

    /// Passes `inner` through, then lets the stage `finish` decide the
    /// trailers.
    pub fn finishing(inner: B, finish: impl Finish) -> Self {
        Observed {
            inner,
            hasher: digest::Context::new(&digest::SHA256),
            size: 0,
            finisher: Some(Box::new(finish)),
            state: State::Streaming,
            captured: None,
            bounds: None,
            total_limit: None,
            oversized: None,
        }
    }

    /// Cuts the body off where it would grow past `max` bytes in all (for
    /// a body held whole before it leaves); the finisher sees the size it
    /// reached in [`Observation::oversized`].
    pub fn bounded_whole(mut self, max: usize) -> Self {
        self.total_limit = Some(max as u64);
        self
    }

    /// Cuts the body off before the first gRPC message larger than `max`
    /// bytes; the finisher sees it in [`Observation::oversized`].
    pub fn bounded(mut self, max: usize) -> Self {
        self.bounds = Some(MessageBounds::new(max));
        self
    }

    /// When `capture`, also keeps a copy of the body, up to `limit` bytes
    /// (beyond that, none is kept).
    pub fn capturing(mut self, capture: bool, limit: usize) -> Self {
        if capture {
            self.captured = Some((bytes::BytesMut::new(), limit));
        }
        self
    }

    fn observation(&mut self, trailers: Option<HeaderMap>, error: Option<String>) -> Observation {
        let hasher = std::mem::replace(&mut self.hasher, digest::Context::new(&digest::SHA256));
        let mut d = [0u8; 32];
        d.copy_from_slice(hasher.finish().as_ref());
        Observation {
            digest: d,
            size: self.size,
            trailers,
            error,
            body: self
                .captured
                .take()
                .filter(|(_, limit)| self.size as usize <= *limit)
                .map(|(b, _)| b.freeze()),
            oversized: self.oversized,
        }
    }

    fn finish(&mut self, trailers: Option<HeaderMap>, error: Option<String>) {
        let obs = self.observation(trailers, error);
        self.state = match self.finisher.take() {
            Some(f) => State::Finishing(f.finish(obs)),
            None => State::Done,
        };
    }
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Streaming => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            let mut cut = this.bounds.as_mut().and_then(|b| b.feed(&data).err());
                            if let Some(limit) = this.total_limit {
                                let reached = this.size + data.len() as u64;
                                if cut.is_none() && reached > limit {
                                    cut = Some(((limit - this.size) as usize, reached));
                                }
                            }
                            if let Some((at, len)) = cut {
                                // Nothing of the oversized message passes on.
                                data.truncate(at);
                                this.oversized = Some(len);
                            }
                            this.hasher.update(&data);
                            this.size += data.len() as u64;
                            if let Some((buf, limit)) = &mut this.captured
                                && buf.len() + data.len() <= *limit
                            {
                                buf.extend_from_slice(&data);
                            }
                            if cut.is_some() {
                                this.finish(None, None);
                                if data.is_empty() {
                                    continue;
                                }
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => this.finish(Some(trailers), None),
                            // Unknown frame kinds are dropped.
                            Err(_) => continue,
                        },
                    },
                    Poll::Ready(Some(Err(e))) => this.finish(None, Some(e.to_string())),
                    Poll::Ready(None) => this.finish(None, None),
                    Poll::Pending => return Poll::Pending,
                },
                State::Finishing(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(trailers) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        // The caller went away mid-stream: the finisher still records it.
        if self.finisher.is_some()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let obs = self.observation(None, Some("cancelled by the caller".into()));
            if let Some(f) = self.finisher.take() {
                rt.spawn(f.finish(obs));
            }
        }
    }
}

/// A complete body: at most one data frame, then trailers.
#[derive(Debug)]
pub struct Complete {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Complete {
    pub fn new(data: Option<Bytes>, trailers: HeaderMap) -> Self {
        Complete {
            data,
            trailers: Some(trailers),
        }
    }
}

impl Body for Complete {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body that yields prepared frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn frames_pass_and_finisher_sees_digest_size_and_trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        let inner = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"hello ")),
            Frame::data(Bytes::from_static(b"world")),
            Frame::trailers(t),
        ]));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let body = Observed::new(
            inner,
            Box::new(move |obs: Observation| {
                Box::pin(async move {
                    let mut out = obs.trailers.clone().unwrap();
                    out.insert("x-seen", obs.size.to_string().parse().unwrap());
                    let _ = tx.send(obs);
                    out
                })
            }),
        );
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"hello world"));
        assert_eq!(trailers["x-seen"], "11");
        let obs = rx.await.unwrap();
        assert_eq!(obs.digest, lienthong_proto::sha256(b"hello world"));
        assert!(obs.error.is_none());
    }

    #[tokio::test]
    async fn a_body_without_trailers_still_finishes() {
        let inner = Frames(VecDeque::from([Frame::data(Bytes::from_static(b"x"))]));
        let body = Observed::new(
            inner,
            Box::new(|obs: Observation| {
                Box::pin(async move {
                    let mut h = HeaderMap::new();
                    h.insert(
                        "x-had-trailers",
                        obs.trailers.is_some().to_string().parse().unwrap(),
                    );
                    h
                })
            }),
        );
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-had-trailers"], "false");
    }

    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len));
        m
    }

    #[test]
    fn message_bounds_follow_prefixes_across_chunks() {
        let stream: Vec<u8> = [message(10), message(0), message(100), message(3)].concat();
        // However the stream is cut into chunks, every message fits.
        for chunk in 1..=stream.len() {
            let mut b = MessageBounds::new(100);
            for part in stream.chunks(chunk) {
                assert_eq!(b.feed(part), Ok(()), "chunks of {chunk}");
            }
        }
        // One byte over: found, and where its prefix starts.
        let stream = [message(10), message(101), message(1)].concat();
        let mut b = MessageBounds::new(100);
        assert_eq!(b.feed(&stream), Err((15, 101)));
        // A prefix split over chunks: it began before this chunk.
        let mut b = MessageBounds::new(100);
        assert_eq!(b.feed(&stream[..17]), Ok(()));
        assert_eq!(b.feed(&stream[17..]), Err((0, 101)));
        // The largest length a prefix can announce.
        let mut b = MessageBounds::new(usize::MAX);
        assert_eq!(b.feed(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]), Ok(()));
    }

    #[tokio::test]
    async fn an_oversized_message_is_cut_off_before_it() {
        let first = message(4);
        let inner = Frames(VecDeque::from([
            Frame::data(Bytes::from(
                [first.clone(), message(9)[..7].to_vec()].concat(),
            )),
            Frame::data(Bytes::from(message(9)[7..].to_vec())),
        ]));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let body = Observed::new(
            inner,
            Box::new(move |obs: Observation| {
                Box::pin(async move {
                    let _ = tx.send(obs);
                    HeaderMap::new()
                })
            }),
        )
        .bounded(8);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.to_bytes(), Bytes::from(first.clone()));
        let obs = rx.await.unwrap();
        assert_eq!(obs.oversized, Some(9));
        assert_eq!(obs.size, first.len() as u64);
        assert_eq!(obs.digest, lienthong_proto::sha256(&first));
    }

    #[tokio::test]
    async fn a_body_held_whole_is_cut_off_where_it_outgrows_its_bound() {
        // Messages of 5 bytes each (10 with their prefixes), none over the
        // per-message limit, adding up past the whole body's.
        let inner = Frames(VecDeque::from(
            (0..4)
                .map(|_| Frame::data(Bytes::from(message(5))))
                .collect::<Vec<_>>(),
        ));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let body = Observed::new(
            inner,
            Box::new(move |obs: Observation| {
                Box::pin(async move {
                    let _ = tx.send(obs);
                    HeaderMap::new()
                })
            }),
        )
        .bounded(100)
        .bounded_whole(25);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.to_bytes().len(), 25, "nothing past the bound");
        let obs = rx.await.unwrap();
        assert_eq!(obs.oversized, Some(30), "the size it would have reached");
        assert_eq!(obs.size, 25);
    }
}
