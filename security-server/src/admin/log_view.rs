//! `GET /api/log`: the message log's self-audit (records checked against
//! the Merkle tree, passes, mismatches) and its newest checkpoints as the
//! registry witnessed them — what an operator looks at to know the log
//! is whole and its history is anchored outside the server.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::Admin;
use super::api::read;
use crate::message_log::LogError;

/// How many checkpoints the view lists.
pub const CHECKPOINTS_SHOWN: usize = 20;

/// The self-audit's progress since the server started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfAuditView {
    pub checked: u64,
    pub passes: u64,
    pub found: u64,
    /// The first mismatches found.
    pub mismatches: Vec<String>,
}

/// One witnessed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointView {
    pub tree_size: u64,
    /// The Merkle root, hex.
    pub root: String,
    pub created_at_ms: i64,
    pub witnessed_at_ms: i64,
}

/// `GET /api/log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogView {
    /// Whether this server keeps a message log at all.
    pub kept: bool,
    /// Records in the log.
    pub tree_size: u64,
    pub self_audit: Option<SelfAuditView>,
    /// The newest witnessed checkpoints, newest first.
    pub checkpoints: Vec<CheckpointView>,
}

impl Admin {
    fn log_view(&self) -> Result<LogView, LogError> {
        let self_audit = self.audit.as_ref().map(|a| {
            let r = a.report();
            SelfAuditView {
                checked: r.checked,
                passes: r.passes,
                found: r.found,
                mismatches: r.mismatches,
            }
        });
        let Some(reader) = &self.reader else {
            return Ok(LogView {
                kept: false,
                tree_size: 0,
                self_audit,
                checkpoints: Vec::new(),
            });
        };
        Ok(LogView {
            kept: true,
            tree_size: reader.tree_size()?,
            self_audit,
            checkpoints: reader
                .recent_checkpoints(CHECKPOINTS_SHOWN)?
                .into_iter()
                .map(|c| CheckpointView {
                    tree_size: c.tree_size,
                    root: hex::encode(c.root),
                    created_at_ms: c.created_at_ms,
                    witnessed_at_ms: c.witnessed_at_ms,
                })
                .collect(),
        })
    }
}

pub(super) async fn log(State(a): State<Admin>, headers: HeaderMap) -> Response {
    read(a, headers, Admin::log_view).await
}
