//! The load generator: `concurrency` callers on one HTTP/2 connection, each
//! calling `Echo` back to back for a fixed time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::echo::{Echo, SERVICE};

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted latencies, microseconds.
    pub latencies: Vec<u32>,
    pub first_error: Option<String>,
}

impl Measured {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile latency in microseconds (0 without samples).
    pub fn quantile(&self, q: f64) -> u32 {
        if self.latencies.is_empty() {
            return 0;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i]
    }
}

pub(super) async fn call(
    channel: Channel,
    metadata: MetadataMap,
    data: Bytes,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(Echo { data });
    *req.metadata_mut() = metadata;
    let path = format!("/{SERVICE}/Echo").parse().expect("valid path");
    let reply: tonic::Response<Echo> = grpc
        .unary(req, path, tonic_prost::ProstCodec::default())
        .await?;
    drop(reply);
    Ok(())
}

/// Runs the load for `duration`.
pub async fn run(
    channel: Channel,
    metadata: MetadataMap,
    payload: usize,
    concurrency: usize,
    duration: Duration,
) -> Measured {
    let data = Bytes::from(vec![0x5a; payload]);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (channel, metadata, data) = (channel.clone(), metadata.clone(), data.clone());
        workers.push(tokio::spawn(async move {
            let mut m = Measured::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                match call(channel.clone(), metadata.clone(), data.clone()).await {
                    Ok(()) => {
                        m.ok += 1;
                        m.latencies
                            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            m
        }));
    }
    let mut total = Measured::default();
    for w in workers {
        if let Ok(m) = w.await {
            total.ok += m.ok;
            total.errors += m.errors;
            total.latencies.extend(m.latencies);
            if total.first_error.is_none() {
                total.first_error = m.first_error;
            }
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}
