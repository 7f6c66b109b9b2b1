//! Identifier newtypes: parsed once at the edge, never raw strings inside.
//!
//! Every part uses only X-Road's strict character set
//! `A-Z a-z 0-9 ' ( ) + , - . = ?`; text forms join parts with `/`:
//!
//! | type | text form | example |
//! |---|---|---|
//! | [`MemberId`] | `INSTANCE/CLASS/CODE` | `VN/GOV/000102` |
//! | [`SubsystemId`] | `INSTANCE/CLASS/CODE/SUBSYSTEM` | `VN/GOV/000102/population` |
//! | [`ServerId`] | `INSTANCE/CLASS/CODE/SERVER` | `VN/GOV/000102/ss1` |
//! | [`ServiceId`] | `…/SUBSYSTEM/SERVICE[/VERSION]` | `VN/GOV/000102/population/population.v1.PersonRegistry` |
//! | [`GlobalGroupId`] | `INSTANCE/GROUP` | `VN/investigators` |

mod proto;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

/// Longest instance identifier, in bytes.
pub const MAX_INSTANCE_LEN: usize = 32;
/// Longest identifier part other than the instance, in bytes.
pub const MAX_PART_LEN: usize = 255;

/// Why an identifier was refused. The message names the part and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{part} is empty")]
    Empty { part: &'static str },
    #[error("{part} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        part: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "{part} {value:?} contains {ch:?} at position {pos}; allowed are A-Z a-z 0-9 and ' ( ) + , - . = ?"
    )]
    BadChar {
        part: &'static str,
        value: String,
        ch: char,
        pos: usize,
    },
    #[error("{kind} {value:?} has {got} parts separated by '/'; expected {expected}")]
    WrongShape {
        kind: &'static str,
        value: String,
        got: usize,
        expected: &'static str,
    },
    #[error("{0} is missing")]
    Missing(&'static str),
}

/// Whether `c` is in X-Road's strict identifier character set.
pub fn is_allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '=' | '?')
}

/// Shortens a refused value before it goes into an error message, so that a
/// hostile 1 MB string does not become a 1 MB log line.
fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

fn check_part(part: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { part });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            part,
            len: value.len(),
            max,
        });
    }
    if let Some((pos, ch)) = value.char_indices().find(|(_, c)| !is_allowed_char(*c)) {
        return Err(IdError::BadChar {
            part,
            value: excerpt(value),
            ch,
            pos,
        });
    }
    Ok(())
}

/// Declares a validated single-part newtype.
macro_rules! part_type {
    ($(#[$doc:meta])* $name:ident, $label:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates one identifier part.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_part($label, &value, $max)?;
                Ok(Self(value))
            }

            /// The part as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

part_type!(
    /// A federation, e.g. `VN`.
    Instance, "instance", MAX_INSTANCE_LEN
);
part_type!(
    /// A member class, e.g. `GOV`.
    MemberClass, "member class", MAX_PART_LEN
);
part_type!(
    /// A member code, e.g. `000102`.
    MemberCode, "member code", MAX_PART_LEN
);
part_type!(
    /// A subsystem code, e.g. `population`.
    SubsystemCode, "subsystem code", MAX_PART_LEN
);
part_type!(
    /// A security server code, e.g. `ss1`.
    ServerCode, "server code", MAX_PART_LEN
);
part_type!(
    /// A fully qualified gRPC service name, e.g. `population.v1.PersonRegistry`.
    ServiceCode, "service code", MAX_PART_LEN
);
part_type!(
    /// A service version label, e.g. `v2`.
    ServiceVersion, "service version", MAX_PART_LEN
);
part_type!(
    /// A global group code, e.g. `investigators`.
    GroupCode, "group code", MAX_PART_LEN
);

/// Splits `s` on `/` into exactly `n` parts (or `n..=m` with `max`).
fn split<'a>(
    kind: &'static str,
    s: &'a str,
    min: usize,
    max: usize,
    expected: &'static str,
) -> Result<Vec<&'a str>, IdError> {
    // Bound the work on hostile input before splitting.
    let limit = MAX_INSTANCE_LEN + (max - 1) * (MAX_PART_LEN + 1);
    let parts: Vec<&str> = s.splitn(max + 1, '/').collect();
    if s.len() > limit || parts.len() < min || parts.len() > max {
        let got = if s.len() > limit {
            s.split('/').take(1000).count()
        } else {
            parts.len()
        };
        return Err(IdError::WrongShape {
            kind,
            value: excerpt(s),
            got,
            expected,
        });
    }
    Ok(parts)
}

// === impl MemberId ===

/// A member: `INSTANCE/CLASS/CODE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    pub instance: Instance,
    pub class: MemberClass,
    pub code: MemberCode,
}

impl MemberId {
    /// Builds a member id from its parts, validating each.
    pub fn new(instance: &str, class: &str, code: &str) -> Result<Self, IdError> {
        Ok(Self {
            instance: Instance::new(instance)?,
            class: MemberClass::new(class)?,
            code: MemberCode::new(code)?,
        })
    }

    /// The subsystem `code` of this member.
    pub fn subsystem(&self, code: &str) -> Result<SubsystemId, IdError> {
        Ok(SubsystemId {
            member: self.clone(),
            code: SubsystemCode::new(code)?,
        })
    }

    /// The security server `code` owned by this member.
    pub fn server(&self, code: &str) -> Result<ServerId, IdError> {
        Ok(ServerId {
            owner: self.clone(),
            code: ServerCode::new(code)?,
        })
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.code)
    }
}

impl FromStr for MemberId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split("member id", s, 3, 3, "3: INSTANCE/CLASS/CODE")?;
        Self::new(p[0], p[1], p[2])
    }
}

// === impl SubsystemId ===

/// A subsystem: `INSTANCE/CLASS/CODE/SUBSYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsystemId {
    pub member: MemberId,
    pub code: SubsystemCode,
}

impl SubsystemId {
    /// The service `service` (optionally versioned) offered by this subsystem.
    pub fn service(&self, service: &str, version: Option<&str>) -> Result<ServiceId, IdError> {
        Ok(ServiceId {
            provider: self.clone(),
            service: ServiceCode::new(service)?,
            version: version.map(ServiceVersion::new).transpose()?,
        })
    }
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.code)
    }
}

impl FromStr for SubsystemId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split("subsystem id", s, 4, 4, "4: INSTANCE/CLASS/CODE/SUBSYSTEM")?;
        MemberId::new(p[0], p[1], p[2])?.subsystem(p[3])
    }
}

// === impl ServerId ===

/// A security server: `INSTANCE/CLASS/CODE/SERVER`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId {
    pub owner: MemberId,
    pub code: ServerCode,
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.code)
    }
}

impl FromStr for ServerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split("server id", s, 4, 4, "4: INSTANCE/CLASS/CODE/SERVER")?;
        MemberId::new(p[0], p[1], p[2])?.server(p[3])
    }
}

// === impl ServiceId ===

/// A service: `INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub provider: SubsystemId,
    pub service: ServiceCode,
    pub version: Option<ServiceVersion>,
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.service)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for ServiceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split(
            "service id",
            s,
            5,
            6,
            "5 or 6: INSTANCE/CLASS/CODE/SUBSYSTEM/SERVICE[/VERSION]",
        )?;
        MemberId::new(p[0], p[1], p[2])?
            .subsystem(p[3])?
            .service(p[4], p.get(5).copied())
    }
}

// === impl GlobalGroupId ===

/// A global group: `INSTANCE/GROUP`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlobalGroupId {
    pub instance: Instance,
    pub code: GroupCode,
}

impl GlobalGroupId {
    /// Builds a group id from its parts, validating each.
    pub fn new(instance: &str, code: &str) -> Result<Self, IdError> {
        Ok(Self {
            instance: Instance::new(instance)?,
            code: GroupCode::new(code)?,
        })
    }
}

impl fmt::Display for GlobalGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.code)
    }
}

impl FromStr for GlobalGroupId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let p = split("global group id", s, 2, 2, "2: INSTANCE/GROUP")?;
        Self::new(p[0], p[1])
    }
}
