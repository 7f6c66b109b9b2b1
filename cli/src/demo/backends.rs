//! The agencies' own backend services, reached only through their security
//! servers: the population registry (`population.v1.PersonRegistry`) and
//! the tax registry (`tax.v1.TaxRegistry`), over h2c on loopback, speaking
//! plain gRPC with the messages below.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lienthong_security_server::trace::{grpc_frame, unary_response, unframe};
use prost::Message;
use tokio::net::TcpListener;

use super::data::Citizen;

pub const PERSON_REGISTRY: &str = "population.v1.PersonRegistry";
pub const TAX_REGISTRY: &str = "tax.v1.TaxRegistry";

#[derive(Clone, PartialEq, prost::Message)]
pub struct PersonRequest {
    #[prost(string, tag = "1")]
    pub personal_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Person {
    #[prost(string, tag = "1")]
    pub personal_id: String,
    #[prost(string, tag = "2")]
    pub full_name: String,
    #[prost(string, tag = "3")]
    pub date_of_birth: String,
    #[prost(string, tag = "4")]
    pub gender: String,
    #[prost(string, tag = "5")]
    pub permanent_address: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaxStatusRequest {
    #[prost(string, tag = "1")]
    pub personal_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaxStatus {
    #[prost(string, tag = "1")]
    pub personal_id: String,
    #[prost(string, tag = "2")]
    pub tax_code: String,
    #[prost(uint64, tag = "3")]
    pub outstanding_vnd: u64,
    #[prost(bool, tag = "4")]
    pub in_good_standing: bool,
}

type Answer = Result<Vec<u8>, (tonic::Code, String)>;
type Handler = Arc<dyn Fn(&str, Bytes) -> Answer + Send + Sync>;

fn not_found(id: &str) -> (tonic::Code, String) {
    (tonic::Code::NotFound, format!("no record for {id}"))
}

/// The population registry's `GetPerson`.
pub fn population(citizens: &[Citizen]) -> Handler {
    let by_id: HashMap<String, Citizen> = citizens
        .iter()
        .map(|c| (c.personal_id.clone(), c.clone()))
        .collect();
    Arc::new(move |method, msg| {
        if method != "GetPerson" {
            return Err((tonic::Code::Unimplemented, format!("no method {method}")));
        }
        let req = PersonRequest::decode(msg)
            .map_err(|e| (tonic::Code::InvalidArgument, e.to_string()))?;
        let c = by_id
            .get(&req.personal_id)
            .ok_or_else(|| not_found(&req.personal_id))?;
        Ok(Person {
            personal_id: c.personal_id.clone(),
            full_name: c.full_name.clone(),
            date_of_birth: c.date_of_birth.clone(),
            gender: c.gender.into(),
            permanent_address: c.permanent_address.clone(),
        }
        .encode_to_vec())
    })
}

/// The tax registry's `GetTaxStatus`.
pub fn tax(citizens: &[Citizen]) -> Handler {
    let by_id: HashMap<String, Citizen> = citizens
        .iter()
        .map(|c| (c.personal_id.clone(), c.clone()))
        .collect();
    Arc::new(move |method, msg| {
        if method != "GetTaxStatus" {
            return Err((tonic::Code::Unimplemented, format!("no method {method}")));
        }
        let req = TaxStatusRequest::decode(msg)
            .map_err(|e| (tonic::Code::InvalidArgument, e.to_string()))?;
        let c = by_id
            .get(&req.personal_id)
            .ok_or_else(|| not_found(&req.personal_id))?;
        Ok(TaxStatus {
            personal_id: c.personal_id.clone(),
            tax_code: c.tax_code.clone(),
            outstanding_vnd: c.outstanding_tax_vnd,
            in_good_standing: c.outstanding_tax_vnd == 0,
        }
        .encode_to_vec())
    })
}

fn respond(answer: Answer) -> Response<tonic::body::Body> {
    match answer {
        Ok(msg) => unary_response(Some(grpc_frame(&msg)), tonic::Code::Ok, ""),
        Err((code, message)) => unary_response(None, code, &message),
    }
}

/// Serves `handler` on a loopback port.
pub async fn serve(handler: Handler) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let method =
                                req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let answer = unframe(body)
                                .map_err(|e| (tonic::Code::InvalidArgument, e))
                                .and_then(|msg| handler(&method, msg));
                            Ok::<_, Infallible>(respond(answer))
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
