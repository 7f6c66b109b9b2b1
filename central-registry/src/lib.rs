//! The Lienthong central registry: the instance's source of truth and
//! certificate authority. It lists members, subsystems, security servers,
//! services and certificates, and publishes the signed global configuration
//! that every security server pulls and caches, so it is never on the data
//! path. Its PKI is [`lienthong_certs::InstanceCa`]; its wire API is
//! `lienthong_proto::pb::registry::v1`.
