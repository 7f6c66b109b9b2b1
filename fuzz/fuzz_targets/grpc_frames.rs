//! gRPC framing: `MessageBounds` (the per-message size limit on response
//! bodies) fed the same stream in arbitrary chunks, the `Observed` body
//! that cuts an oversized message off. Input: `max: u16`, `capture limit: u16`, `n: u8` chunk
//! lengths (one byte each), then the stream.

#![no_main]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::Input;
use lienthong_security_server::body::{MessageBounds, Observation, Observed};

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

/// The first message announced over `max`: where its prefix starts and
/// its announced length, reading the whole stream at once.
fn reference(stream: &[u8], max: u64) -> Option<(usize, u64)> {
    let mut at = 0;
    while at + 5 <= stream.len() {
        let len = u64::from(u32::from_be_bytes(
            stream[at + 1..at + 5].try_into().expect("4 bytes"),
        ));
        if len > max {
            return Some((at, len));
        }
        at = at.saturating_add(5).saturating_add(len as usize);
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max = usize::from(input.u16());
    let capture = usize::from(input.u16());
    let n = usize::from(input.byte() % 16);
    let cuts: Vec<usize> = (0..n).map(|_| usize::from(input.byte())).collect();
    let stream = input.rest();

    // The stream in chunks: the given lengths, then the rest.
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut left = stream;
    for c in cuts {
        let (a, b) = left.split_at(c.min(left.len()));
        chunks.push(a);
        left = b;
    }
    chunks.push(left);

    // However the stream is cut, the same message is found.
    let want = reference(stream, max as u64);
    let mut bounds = MessageBounds::new(max);
    let mut found = None;
    let mut start = 0;
    for chunk in &chunks {
        if let Err((at, len)) = bounds.feed(chunk) {
            assert!(at < chunk.len().max(1));
            found = Some((start, at, len));
            break;
        }
        start += chunk.len();
    }
    // What passes on: everything before the oversized message's prefix
    // (or before the chunk its prefix ends in, when it began earlier).
    let passed = match (want, found) {
        (None, None) => stream.len(),
        (Some((p, len)), Some((start, at, got))) => {
            assert_eq!(len, got);
            if p >= start {
                assert_eq!(p, start + at);
                p
            } else {
                assert_eq!(at, 0);
                start
            }
        }
        (w, f) => panic!("whole stream: {w:?}, in chunks: {f:?}"),
    };

    // The body: passes exactly that, and the finisher sees it.
    let frames: VecDeque<Frame<Bytes>> = chunks
        .iter()
        .map(|c| Frame::data(Bytes::copy_from_slice(c)))
        .chain([Frame::trailers(HeaderMap::new())])
        .collect();
    let seen: Arc<Mutex<Option<Observation>>> = Arc::default();
    let sink = seen.clone();
    let mut body = Observed::new(
        Frames(frames),
        Box::new(move |obs: Observation| {
            *sink.lock().expect("lock") = Some(obs);
            Box::pin(async { HeaderMap::new() })
        }),
    )
    .bounded(max)
    .capturing(true, capture);
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let mut trailers = 0;
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => out.extend_from_slice(&d),
                Err(f) => {
                    assert!(f.is_trailers());
                    trailers += 1;
                }
            },
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Ready(None) => break,
            Poll::Pending => panic!("nothing here waits"),
        }
    }
    assert!(body.is_end_stream());
    assert_eq!(trailers, 1);
    assert_eq!(out, &stream[..passed]);
    let obs = seen.lock().expect("lock").take().expect("finished");
    assert_eq!(obs.size, passed as u64);
    assert_eq!(obs.digest, lienthong_proto::sha256(&out));
    assert_eq!(obs.oversized, want.map(|(_, len)| len));
    match obs.body {
        Some(b) => assert_eq!(b, out),
        None => assert!(passed > capture),
    }
});
