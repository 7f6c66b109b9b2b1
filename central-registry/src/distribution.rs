//! Configuration distribution: "give me the configuration if newer than V".
//!
//! Open to anyone who reaches the registry: the document is verified with
//! the anchor, not by the transport. An idle poll costs one comparison.
//! Every node serves the bytes it last read from the store (the publisher
//! reads its own versions back too), so all nodes hand out the same
//! document for a version, whichever node signed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use lienthong_proto::pb::registry::v1::configuration_distribution_server::ConfigurationDistribution;
use lienthong_proto::pb::registry::v1::{GetConfigurationReply, GetConfigurationRequest};
use tonic::{Request, Response, Status};

use crate::publisher::Publisher;

/// The `ConfigurationDistribution` service.
#[derive(Debug, Clone)]
pub struct Distribution {
    publisher: Arc<Publisher>,
    /// When a server holding a version above this registry's newest was
    /// last warned about (ms since the epoch).
    warned_at: Arc<AtomicI64>,
}

/// How often the warning about servers ahead of the registry is repeated.
const WARN_EVERY_MS: i64 = 60_000;

impl Distribution {
    pub fn new(publisher: Arc<Publisher>) -> Self {
        Distribution {
            publisher,
            warned_at: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// A server holds a version this registry never published: after a
    /// restore from an older backup, servers refuse every version until
    /// the registry passes theirs. Said at most once a minute (anyone may
    /// ask, with any version), after reading the store (this node may only
    /// lag behind the publisher).
    async fn ahead_of_us(&self, held: u64) {
        let now = crate::store::now_ms();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < WARN_EVERY_MS {
            return;
        }
        let p = self.publisher.clone();
        let newest =
            match tokio::task::spawn_blocking(move || p.follow_store().map(|()| p.current())).await
            {
                Ok(Ok(current)) => current.map_or(0, |c| c.version),
                _ => return,
            };
        // Only one caller of a minute warns (and only a genuine case
        // counts: a node lagging behind the publisher is not one).
        if held > newest
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                held,
                newest,
                "a security server holds configuration version {held}, above this registry's newest ({newest}), and will refuse every version up to it: was the store restored from an older backup? Run `lienthong registry version-floor {}` on the registry host",
                held.saturating_add(1)
            );
        }
    }
}

#[tonic::async_trait]
impl ConfigurationDistribution for Distribution {
    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationReply>, Status> {
        let held = request.get_ref().if_newer_than;
        let current = self.publisher.current().ok_or_else(|| {
            Status::unavailable("the registry has not published a configuration yet; retry shortly")
        })?;
        if held > current.version {
            self.ahead_of_us(held).await;
        }
        let configuration = (current.version > held).then(|| current.signed.clone());
        Ok(Response::new(GetConfigurationReply {
            configuration,
            current_version: current.version,
        }))
    }
}
