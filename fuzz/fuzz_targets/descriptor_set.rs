//! Protobuf descriptor sets as the registry receives them from an officer
//! or a provider's operator and as every server reads them from the
//! catalogue (`DescriptorSet::parse`): bounded, every reference resolved,
//! and whatever parses answers reflection's questions without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_proto::catalogue::{DescriptorSet, MAX_DESCRIPTOR_SET_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(set) = DescriptorSet::parse(data.to_vec()) else {
        return;
    };
    assert!(data.len() <= MAX_DESCRIPTOR_SET_BYTES && !data.is_empty());
    assert_eq!(set.bytes(), data);
    assert_eq!(set.sha256(), DescriptorSet::parse(data.to_vec()).unwrap().sha256());
    let services = set.services();
    assert!(!services.is_empty(), "a parsed set defines a service");
    for service in &services {
        set.require_service(service).expect("a listed service is found");
        assert!(set.methods(service).is_some());
    }
    assert!(set.methods("no.such.Service").is_none());
});
