//! Operations: the exchanges of the last 24 hours from the message log
//! (operational data: never payloads or personal IDs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use lienthong_certs::verify::fmt_time;
use lienthong_proto::fields::printable;
use maud::{Markup, html};
use serde::Deserialize;

use super::{ServerConsole, read_page};
use crate::console_common::both;
use crate::i18n::console as w;

/// One record of the admin port's operational data.
#[derive(Deserialize)]
struct OperationalRow {
    at_unix_ms: i64,
    side: String,
    phase: String,
    message_id: String,
    client: String,
    service: String,
    method: String,
    payload_size: u64,
    grpc_status: i32,
    fault: String,
    duration_us: u64,
}

fn operations_markup(rows: &[OperationalRow]) -> Markup {
    html! {
        p { "The exchanges of the last 24 hours, newest first, as the message log holds them (at most 200 records; never payloads or personal IDs). "
            code { "lienthong server log" } " reads further back." }
        @if rows.is_empty() { p { "No exchange in the last 24 hours." } }
        @else {
            table.operations {
                thead { tr {
                    th scope="col" { (both(w::WHEN)) } th scope="col" { (both(w::SIDE)) } th scope="col" { (both(w::CLIENTS)) }
                    th scope="col" { (both(w::SERVICE)) } th scope="col" { (both(w::BYTES)) } th scope="col" { (both(w::RESULT)) } th scope="col" { "µs" }
                } }
                tbody {
                    @for r in rows {
                        tr title=(printable(&r.message_id)) {
                            td { (fmt_time(r.at_unix_ms / 1000)) }
                            td { (printable(&r.side)) " " (printable(&r.phase)) }
                            td { (printable(&r.client)) }
                            td { (printable(&r.service)) "/" (printable(&r.method)) }
                            td { (r.payload_size) }
                            td {
                                @if r.fault.is_empty() && r.grpc_status == 0 { span.ok { "OK" } }
                                @else { span.bad { (printable(&r.fault)) " (" (r.grpc_status) ")" } }
                            }
                            td { (r.duration_us) }
                        }
                    }
                }
            }
        }
    }
}

pub(super) async fn page(State(c): State<Arc<ServerConsole>>, headers: HeaderMap) -> Response {
    read_page(
        &c,
        &headers,
        "/operational-data?since_hours=24&limit=200",
        &w::OPERATIONS.title(),
        |v: &Vec<OperationalRow>, _| operations_markup(v),
    )
    .await
}
