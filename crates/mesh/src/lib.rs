//! Mesh membership and gossip.
//!
//! Each node gossips (push-pull anti-entropy over UDP, every datagram sealed with the mesh key
//! from its invite token) its own [`NodeRecord`] and heartbeats, signed with its node key, so
//! no member can forge, rewrite or freshen another's. [`MeshHandle::peers`] is the live
//! peer table every other part reads; [`MeshHandle::subscribe`] tells them when it changed.
//!
//! On top of membership: the epoch [`schedule`] sources and signed [`validation`] results (what
//! a node says of its own round; admission is peers' checks, `infermesh_state::admission`).

pub mod credential;
mod gossip;
pub mod group;
pub mod members;
pub mod mesh;
mod own;
pub mod peer;
pub mod record;
pub mod schedule;
pub mod signed;
pub mod validation;
pub mod wire;

pub use credential::{Invite, InviteError, MeshSecret};
pub use mesh::{
    free_udp_port, Directory, Mesh, MeshConfig, MeshHandle, MeshHealth, PeerView,
    DEFAULT_DEAD_AFTER, DEFAULT_GC_GRACE, DEFAULT_GOSSIP_INTERVAL, DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_PER_IP,
};
pub use record::{decode_record, NodeRecord, RECORD_KEY, RECORD_SCHEMA_VERSION};
pub use schedule::{
    adopt_schedule, fast_schedule, peer_specs, unix_now_ms, EmbeddedSchedule, Schedule,
    SyntheticSchedule, MESH_SCHEDULE,
};
pub use validation::{
    node_id_from_public_key, sign, validation_due, verify, BackendValidation, Rejection,
    SignedValidation, ValidationResult,
};
