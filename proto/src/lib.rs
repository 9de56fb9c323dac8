//! Wire types of the gateway and supervisor APIs. No logic: generated code, the descriptor set, and the
//! table saying who may call each RPC (`RPC_CALLERS`, generated from the `caller` option; the build fails
//! on an RPC without one).
#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod options {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/openshell.options.v1.rs"));
    }
}

pub mod gateway {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/openshell.gateway.v1.rs"));
    }
}

pub mod supervisor {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/openshell.supervisor.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every API file (for reflection and the declaration test).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Who may call an RPC (mirrors `openshell.options.v1.Caller` without its unspecified value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    User,
    Sandbox,
}

include!(concat!(env!("OUT_DIR"), "/callers.rs"));

/// Who may call the RPC at this gRPC path (`/package.Service/Method`); `None` for unknown paths, which
/// callers must refuse.
#[must_use]
pub fn caller_of(path: &str) -> Option<Caller> {
    RPC_CALLERS.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
}
