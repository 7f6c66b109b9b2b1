//! The service catalogue's documents: a service's protobuf descriptor set
//! (an encoded `google.protobuf.FileDescriptorSet`, as `protoc
//! --include_imports --descriptor_set_out` or `buf build -o` write it).
//!
//! A set is parsed and resolved whole ([`DescriptorSet::parse`]) wherever
//! it enters: when an officer publishes it, when a security server
//! downloads it, when a server reads its own copy. A set that is too large,
//! is no descriptor set, misses an imported file or defines no service is
//! refused with a message that says which.

use prost_reflect::DescriptorPool;

/// The largest descriptor set the catalogue takes (1 MiB): far above the
/// few kilobytes a service's files take, far below a gRPC message's limit.
pub const MAX_DESCRIPTOR_SET_BYTES: usize = 1 << 20;

/// Why bytes are not a usable descriptor set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorSetError {
    #[error("the descriptor set has {size} bytes; at most {MAX_DESCRIPTOR_SET_BYTES} are accepted")]
    TooLarge { size: usize },
    #[error("the descriptor set is empty")]
    Empty,
    #[error(
        "not a protobuf descriptor set (an encoded google.protobuf.FileDescriptorSet): {0}; a .proto file is compiled into one with `protoc --include_imports --descriptor_set_out=FILE.binpb` or `buf build -o FILE.binpb`"
    )]
    Unreadable(String),
    #[error("the descriptor set defines no gRPC service")]
    NoService,
    #[error("the descriptor set does not define {wanted} (it defines {defined})")]
    ServiceMissing { wanted: String, defined: String },
}

/// Whether `name` is a protobuf identifier: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The most files one descriptor set may hold: a service's files and
/// their imports are a few dozen; the bound also bounds how deep the
/// decoder's recursion over imports can go.
pub const MAX_DESCRIPTOR_FILES: usize = 512;

/// A `FileDescriptorSet` read for its files' names, imports and syntax.
#[derive(Clone, PartialEq, prost::Message)]
struct FilesOnlySet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileOnly>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileOnly {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
    #[prost(string, optional, tag = "12")]
    syntax: Option<String>,
}

/// What the decoder is not given, because it has crashed on it (an unknown
/// `syntax` panicked; an import cycle recursed until the stack overflowed,
/// which no `catch_unwind` stops): more than [`MAX_DESCRIPTOR_FILES`]
/// files, a syntax other than proto2 or proto3 (editions are not supported
/// by the decoder), or imports that form a cycle (which protoc refuses
/// too).
fn precheck(bytes: &[u8]) -> Result<(), DescriptorSetError> {
    let unreadable = |why: String| Err(DescriptorSetError::Unreadable(why));
    let set = <FilesOnlySet as prost::Message>::decode(bytes)
        .map_err(|e| DescriptorSetError::Unreadable(e.to_string()))?;
    if set.file.len() > MAX_DESCRIPTOR_FILES {
        return unreadable(format!(
            "it holds {} files; at most {MAX_DESCRIPTOR_FILES} are accepted",
            set.file.len()
        ));
    }
    let name = |f: &FileOnly| f.name.clone().unwrap_or_default();
    for file in &set.file {
        match file.syntax.as_deref() {
            None | Some("proto2" | "proto3") => {}
            Some(other) => {
                return unreadable(format!(
                    "{} has syntax {other:?}; proto2 and proto3 are supported",
                    name(file)
                ));
            }
        }
    }
    // Imports as edges between the set's files (imports of files not in
    // the set are the decoder's to refuse); then a depth-first search that
    // keeps its own stack, so that no input can make it recurse.
    let index: std::collections::HashMap<String, usize> = set
        .file
        .iter()
        .enumerate()
        .map(|(i, f)| (name(f), i))
        .collect();
    let edges: Vec<Vec<usize>> = set
        .file
        .iter()
        .map(|f| {
            f.dependency
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    // 0: not seen, 1: on the current path, 2: done.
    let mut state = vec![0u8; edges.len()];
    for root in 0..edges.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some((node, next)) = stack.last_mut() {
            match edges[*node].get(*next) {
                Some(&to) => {
                    *next += 1;
                    match state[to] {
                        0 => {
                            state[to] = 1;
                            stack.push((to, 0));
                        }
                        1 => {
                            return unreadable(format!(
                                "its imports form a cycle through {}",
                                name(&set.file[to])
                            ));
                        }
                        _ => {}
                    }
                }
                None => {
                    state[*node] = 2;
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

/// A parsed, resolved descriptor set with its encoded bytes.
#[derive(Debug, Clone)]
pub struct DescriptorSet {
    bytes: Vec<u8>,
    pool: DescriptorPool,
}

impl DescriptorSet {
    /// Parses `bytes`: at most [`MAX_DESCRIPTOR_SET_BYTES`], a
    /// `FileDescriptorSet` whose every import and type reference resolves
    /// inside it, defining at least one service.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, DescriptorSetError> {
        if bytes.len() > MAX_DESCRIPTOR_SET_BYTES {
            return Err(DescriptorSetError::TooLarge { size: bytes.len() });
        }
        if bytes.is_empty() {
            return Err(DescriptorSetError::Empty);
        }
        precheck(&bytes)?;
        // The decoder has crashed on malformed sets (see `precheck`); bytes
        // from a peer or an officer must never take the process down,
        // whatever else it may panic on.
        let pool = std::panic::catch_unwind(|| DescriptorPool::decode(bytes.as_slice()))
            .map_err(|_| {
                DescriptorSetError::Unreadable("the descriptor decoder failed on it".into())
            })?
            .map_err(|e| DescriptorSetError::Unreadable(e.to_string()))?;
        if pool.services().len() == 0 {
            return Err(DescriptorSetError::NoService);
        }
        // The names are shown in reflection answers, pages and logs, and
        // looked up by name: only protobuf identifiers.
        for service in pool.services() {
            let full = service.full_name();
            if !full.split('.').all(is_identifier) {
                return Err(DescriptorSetError::Unreadable(format!(
                    "the service name {full:?} is not dot-separated protobuf identifiers"
                )));
            }
            if let Some(bad) = service.methods().find(|m| !is_identifier(m.name())) {
                return Err(DescriptorSetError::Unreadable(format!(
                    "{full} has a method named {:?}, not a protobuf identifier",
                    bad.name()
                )));
            }
        }
        Ok(DescriptorSet { bytes, pool })
    }

    /// The encoded set, as published.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// SHA-256 of the encoded set: its name in the catalogue.
    pub fn sha256(&self) -> [u8; 32] {
        crate::sha256(&self.bytes)
    }

    /// The full names of the services it defines, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pool
            .services()
            .map(|s| s.full_name().to_owned())
            .collect();
        names.sort();
        names
    }

    /// The methods of `service` (a full name), sorted; `None` when the set
    /// does not define it.
    pub fn methods(&self, service: &str) -> Option<Vec<String>> {
        let s = self.pool.get_service_by_name(service)?;
        let mut names: Vec<String> = s.methods().map(|m| m.name().to_owned()).collect();
        names.sort();
        Some(names)
    }

    /// Refuses a set that does not define `service`, naming those it does.
    pub fn require_service(&self, service: &str) -> Result<(), DescriptorSetError> {
        if self.pool.get_service_by_name(service).is_some() {
            return Ok(());
        }
        Err(DescriptorSetError::ServiceMissing {
            wanted: service.to_owned(),
            defined: self.services().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_reflect::prost_types::{
        DescriptorProto, FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto,
        ServiceDescriptorProto,
    };

    use super::*;

    fn file(name: &str, deps: &[&str], service: Option<(&str, &[&str])>) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some("population.v1".into()),
            dependency: deps.iter().map(|d| (*d).to_owned()).collect(),
            message_type: vec![DescriptorProto {
                name: Some(format!("M{}", name.len())),
                ..Default::default()
            }],
            service: service
                .map(|(s, methods)| ServiceDescriptorProto {
                    name: Some(s.into()),
                    method: methods
                        .iter()
                        .map(|m| MethodDescriptorProto {
                            name: Some((*m).into()),
                            input_type: Some(format!(".population.v1.M{}", name.len())),
                            output_type: Some(format!(".population.v1.M{}", name.len())),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    fn set(files: Vec<FileDescriptorProto>) -> Vec<u8> {
        FileDescriptorSet { file: files }.encode_to_vec()
    }

    #[test]
    fn a_complete_set_lists_its_services_and_methods() {
        let bytes = set(vec![file(
            "population.proto",
            &[],
            Some(("PersonRegistry", &["GetPerson", "FindPeople"])),
        )]);
        let parsed = DescriptorSet::parse(bytes.clone()).unwrap();
        assert_eq!(parsed.services(), ["population.v1.PersonRegistry"]);
        assert_eq!(
            parsed.methods("population.v1.PersonRegistry").unwrap(),
            ["FindPeople", "GetPerson"]
        );
        assert_eq!(parsed.methods("population.v1.Other"), None);
        assert_eq!(parsed.sha256(), crate::sha256(&bytes));
        assert!(
            parsed
                .require_service("population.v1.PersonRegistry")
                .is_ok()
        );
        let e = parsed.require_service("tax.v1.TaxRecords").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the descriptor set does not define tax.v1.TaxRecords (it defines population.v1.PersonRegistry)"
        );
    }

    proptest::proptest! {
        /// Whatever a peer or an officer sends, parsing answers: a set
        /// that defines a service and is named by its bytes, or a reason.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            match DescriptorSet::parse(bytes.clone()) {
                Ok(set) => {
                    proptest::prop_assert!(!set.services().is_empty());
                    proptest::prop_assert_eq!(set.sha256(), crate::sha256(&bytes));
                }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// A valid set stays valid, and names the same services, whatever
        /// its services are called.
        #[test]
        fn valid_sets_list_their_services(name in "Svc[A-Za-z0-9]{0,20}") {
            let bytes = set(vec![file("population.proto", &[], Some((name.as_str(), &["GetPerson"])))]);
            let parsed = DescriptorSet::parse(bytes).unwrap();
            proptest::prop_assert_eq!(parsed.services(), [format!("population.v1.{name}")]);
        }
    }

    #[test]
    fn what_is_no_usable_set_is_refused_saying_why() {
        let too_large = vec![0u8; MAX_DESCRIPTOR_SET_BYTES + 1];
        assert!(matches!(
            DescriptorSet::parse(too_large),
            Err(DescriptorSetError::TooLarge { .. })
        ));
        assert_eq!(
            DescriptorSet::parse(Vec::new()).unwrap_err(),
            DescriptorSetError::Empty
        );
        let proto_source = b"syntax = \"proto3\";\npackage population.v1;\n".to_vec();
        let e = DescriptorSet::parse(proto_source).unwrap_err();
        assert!(matches!(e, DescriptorSetError::Unreadable(_)), "{e:?}");
        assert!(e.to_string().contains("--descriptor_set_out"), "{e}");
        // An import left out (no --include_imports).
        let incomplete = set(vec![file(
            "population.proto",
            &["common.proto"],
            Some(("PersonRegistry", &["GetPerson"])),
        )]);
        assert!(matches!(
            DescriptorSet::parse(incomplete),
            Err(DescriptorSetError::Unreadable(_))
        ));
        let messages_only = set(vec![file("common.proto", &[], None)]);
        assert_eq!(
            DescriptorSet::parse(messages_only).unwrap_err(),
            DescriptorSetError::NoService
        );
    }

    /// The decoder panicked on a file of unknown syntax (found by the
    /// `descriptor_set` fuzz target): refused instead, whichever file.
    #[test]
    fn an_unknown_syntax_is_refused_not_a_panic() {
        for position in 0..2 {
            let mut files = vec![
                file("common.proto", &[], None),
                file(
                    "population.proto",
                    &[],
                    Some(("PersonRegistry", &["GetPerson"])),
                ),
            ];
            files[position].syntax = Some("proto4".into());
            let e = DescriptorSet::parse(set(files)).unwrap_err();
            assert!(matches!(e, DescriptorSetError::Unreadable(_)), "{e:?}");
            assert!(e.to_string().contains("syntax \"proto4\""), "{e}");
        }
        let mut proto3 = file(
            "population.proto",
            &[],
            Some(("PersonRegistry", &["GetPerson"])),
        );
        proto3.syntax = Some("proto3".into());
        assert!(DescriptorSet::parse(set(vec![proto3])).is_ok());
    }

    /// Names that are no protobuf identifiers are refused (the fuzz
    /// target's second find: a NUL in a package made a listed service
    /// unfindable by its own name).
    #[test]
    fn names_that_are_no_protobuf_identifiers_are_refused() {
        for (package, service, method) in [
            ("op\0v1", "PersonRegistry", "GetPerson"),
            ("population.v1", "Person\u{1b}[31m", "GetPerson"),
            ("population.v1", "PersonRegistry", "Get Person"),
            ("population.v1", "9Registry", "GetPerson"),
        ] {
            let mut f = file("population.proto", &[], Some((service, &[method])));
            f.package = Some(package.into());
            for m in &mut f.service[0].method {
                let own = Some(format!(".{package}.M16"));
                (m.input_type, m.output_type) = (own.clone(), own);
            }
            let e = DescriptorSet::parse(set(vec![f])).unwrap_err();
            assert!(e.to_string().contains("protobuf identifier"), "{e}");
        }
    }

    /// Imports that form a cycle made the decoder recurse until the stack
    /// overflowed (the fuzz target's third find): refused before it.
    #[test]
    fn import_cycles_and_too_many_files_are_refused() {
        let service = Some(("PersonRegistry", &["GetPerson"][..]));
        let mut own = file("a.proto", &["a.proto"], service);
        own.public_dependency = vec![0];
        let mut a = file("a.proto", &["b.proto"], service);
        a.public_dependency = vec![0];
        let mut b = file("b.proto", &["a.proto"], None);
        b.public_dependency = vec![0];
        for files in [vec![own], vec![a, b]] {
            let e = DescriptorSet::parse(set(files)).unwrap_err();
            assert!(e.to_string().contains("imports form a cycle"), "{e}");
        }
        let many: Vec<FileDescriptorProto> = (0..=MAX_DESCRIPTOR_FILES)
            .map(|i| file(&format!("f{i}.proto"), &[], None))
            .collect();
        let e = DescriptorSet::parse(set(many)).unwrap_err();
        assert!(e.to_string().contains("at most 512"), "{e}");
        // A chain without a cycle is fine (names of other lengths: the
        // fixture names each file's message after its name's length).
        let top = file("t.proto", &["mid.proto"], service);
        let mid = file("mid.proto", &["lowest.proto"], None);
        let low = file("lowest.proto", &[], None);
        assert!(DescriptorSet::parse(set(vec![low, mid, top])).is_ok());
    }
}
