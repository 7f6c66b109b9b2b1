//! The Lienthong security server: the gateway each agency runs. Its consumer
//! side signs and forwards its information systems' gRPC calls over mutual
//! TLS; its provider side verifies identity, signature and access rights,
//! calls the backend and signs the response. Envelopes are
//! `lienthong_proto::pb::exchange::v1`; keys, certificates and pinned TLS
//! come from [`lienthong_certs`].
