//! The log's self-audit: a cursor walks the records in batches, checking
//! each stored record against the stored tree ([`super::tree::audit_nodes`]), and
//! starts over at the end. The registry's witness sees only the tree's
//! top, so a record edited in place (with the nodes above it rewritten to
//! match, up to below a witnessed one) is found here — and reported on the
//! admin port's health and metrics — instead of only when a citizen's
//! trace reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{LogError, LogReader};

/// How often a batch is audited.
pub const AUDIT_INTERVAL: Duration = Duration::from_secs(6);
/// A full pass over the log takes at most this long, at any size: the
/// batches grow with the log ([`batch_for`]).
pub const AUDIT_CYCLE: Duration = Duration::from_secs(50 * 60);
/// The fewest records a batch checks (a small log is audited whole every
/// few steps, at little cost).
pub const AUDIT_MIN_BATCH: u64 = 1_000;

/// Records to check in each step of `interval` so that a log of `size`
/// records is audited whole within [`AUDIT_CYCLE`]. Each record is read
/// from its segment, opened, re-derived and checked against the tree
/// (`log_scale` measures the rate): a log of ten million records takes
/// batches of 20,000 every 6 s, a log of a hundred thousand the minimum,
/// so a small log's audit costs a server almost nothing between
/// exchanges.
pub fn batch_for(size: u64, interval: Duration) -> u64 {
    let steps = (AUDIT_CYCLE.as_millis() / interval.as_millis().max(1)).max(1) as u64;
    size.div_ceil(steps).max(AUDIT_MIN_BATCH)
}
/// Mismatches kept for the report (the count goes on).
const KEPT: usize = 20;
/// Distinct mismatches remembered for counting.
const COUNTED: usize = 100_000;

/// Where the audit is and what it found.
#[derive(Debug, Default)]
pub struct AuditStatus {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cursor: u64,
    checked: u64,
    passes: u64,
    /// Every distinct mismatch found (up to [`COUNTED`]).
    distinct: std::collections::HashSet<String>,
    /// The first [`KEPT`] of them, in the order found.
    mismatches: Vec<String>,
}

/// A copy of the audit's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Records checked since the server started.
    pub checked: u64,
    /// Whole passes over the log completed.
    pub passes: u64,
    /// Distinct mismatches found since the server started.
    pub found: u64,
    /// The first of them.
    pub mismatches: Vec<String>,
}

impl AuditStatus {
    /// Audits the next batch of at most `batch` records.
    pub fn step(&self, reader: &LogReader, batch: u64) -> Result<(), LogError> {
        let size = reader.tree_size()?;
        let from = {
            let mut s = self.lock();
            if s.cursor >= size {
                if s.cursor > 0 {
                    s.passes += 1;
                }
                s.cursor = 0;
            }
            s.cursor
        };
        let to = size.min(from.saturating_add(batch));
        // A batch that cannot be audited is a finding, not a pause: the
        // cursor moves on, and /health says so (rather than the audit
        // stopping there, unseen, for good).
        let found = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reader.audit(from, to)
        })) {
            Ok(Ok(audit)) => audit.mismatches,
            Ok(Err(e)) => vec![format!("records {from} to {to} could not be audited: {e}")],
            Err(_) => vec![format!(
                "records {from} to {to} could not be audited: the audit failed (a panic; see the log)"
            )],
        };
        let mut s = self.lock();
        s.cursor = to;
        s.checked += to - from;
        for m in found {
            if s.distinct.contains(&m) || s.distinct.len() >= COUNTED {
                continue;
            }
            tracing::error!(mismatch = %m, "message log audit");
            if s.mismatches.len() < KEPT {
                s.mismatches.push(m.clone());
            }
            s.distinct.insert(m);
        }
        Ok(())
    }

    /// Starts the next batch at the first record again.
    pub fn restart(&self) {
        self.lock().cursor = 0;
    }

    pub fn report(&self) -> AuditReport {
        let s = self.lock();
        AuditReport {
            checked: s.checked,
            passes: s.passes,
            found: s.distinct.len() as u64,
            mismatches: s.mismatches.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Audits a batch every `interval`, for as long as the server runs.
pub async fn run(status: Arc<AuditStatus>, reader: Arc<LogReader>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (status, reader) = (status.clone(), reader.clone());
        let done = tokio::task::spawn_blocking(move || {
            let batch = batch_for(reader.tree_size()?, interval);
            status.step(&reader, batch)
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "message log audit could not run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_fits_the_cycle_at_every_size() {
        let interval = AUDIT_INTERVAL;
        let steps = AUDIT_CYCLE.as_secs() / interval.as_secs();
        for size in [0, 1, 999, 100_000, 1_000_000, 10_000_000, 123_456_789] {
            let batch = batch_for(size, interval);
            assert!(batch >= AUDIT_MIN_BATCH);
            assert!(
                batch * steps >= size,
                "{size} records: {batch} a step is not a pass per cycle"
            );
        }
        assert_eq!(batch_for(10_000_000, interval), 20_000);
        assert_eq!(batch_for(100_000, interval), AUDIT_MIN_BATCH);
        // A shorter interval, smaller batches for the same cycle.
        assert_eq!(batch_for(10_000_000, Duration::from_secs(3)), 10_000);
    }
}
