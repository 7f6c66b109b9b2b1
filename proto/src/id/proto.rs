//! Conversions between identifier newtypes and their protobuf messages.
//! Decoding validates every part; encoding cannot fail.

use super::*;
use crate::pb::identifiers::v1 as pb;

impl TryFrom<&pb::MemberId> for MemberId {
    type Error = IdError;
    fn try_from(m: &pb::MemberId) -> Result<Self, IdError> {
        MemberId::new(&m.instance, &m.member_class, &m.member_code)
    }
}

impl From<&MemberId> for pb::MemberId {
    fn from(m: &MemberId) -> Self {
        pb::MemberId {
            instance: m.instance.to_string(),
            member_class: m.class.to_string(),
            member_code: m.code.to_string(),
        }
    }
}

impl TryFrom<&pb::SubsystemId> for SubsystemId {
    type Error = IdError;
    fn try_from(s: &pb::SubsystemId) -> Result<Self, IdError> {
        let member = s
            .member
            .as_ref()
            .ok_or(IdError::Missing("subsystem member"))?;
        MemberId::try_from(member)?.subsystem(&s.subsystem_code)
    }
}

impl From<&SubsystemId> for pb::SubsystemId {
    fn from(s: &SubsystemId) -> Self {
        pb::SubsystemId {
            member: Some((&s.member).into()),
            subsystem_code: s.code.to_string(),
        }
    }
}

impl TryFrom<&pb::SecurityServerId> for ServerId {
    type Error = IdError;
    fn try_from(s: &pb::SecurityServerId) -> Result<Self, IdError> {
        let owner = s.owner.as_ref().ok_or(IdError::Missing("server owner"))?;
        MemberId::try_from(owner)?.server(&s.server_code)
    }
}

impl From<&ServerId> for pb::SecurityServerId {
    fn from(s: &ServerId) -> Self {
        pb::SecurityServerId {
            owner: Some((&s.owner).into()),
            server_code: s.code.to_string(),
        }
    }
}

impl TryFrom<&pb::ServiceId> for ServiceId {
    type Error = IdError;
    fn try_from(s: &pb::ServiceId) -> Result<Self, IdError> {
        let provider = s
            .provider
            .as_ref()
            .ok_or(IdError::Missing("service provider"))?;
        let version = (!s.version.is_empty()).then_some(s.version.as_str());
        SubsystemId::try_from(provider)?.service(&s.service_code, version)
    }
}

impl From<&ServiceId> for pb::ServiceId {
    fn from(s: &ServiceId) -> Self {
        pb::ServiceId {
            provider: Some((&s.provider).into()),
            service_code: s.service.to_string(),
            version: s
                .version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<&pb::GlobalGroupId> for GlobalGroupId {
    type Error = IdError;
    fn try_from(g: &pb::GlobalGroupId) -> Result<Self, IdError> {
        GlobalGroupId::new(&g.instance, &g.group_code)
    }
}

impl From<&GlobalGroupId> for pb::GlobalGroupId {
    fn from(g: &GlobalGroupId) -> Self {
        pb::GlobalGroupId {
            instance: g.instance.to_string(),
            group_code: g.code.to_string(),
        }
    }
}
