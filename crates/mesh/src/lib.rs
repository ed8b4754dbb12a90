//! Mesh membership and gossip.
//!
//! Each node runs one chitchat instance (scuttlebutt anti-entropy + phi-accrual failure detection
//! over UDP) and publishes a single versioned [`NodeRecord`]. [`MeshHandle::peers`] is the live
//! peer table every other part reads; [`MeshHandle::subscribe`] tells them when it changed.
//!
//! On top of membership: the epoch [`schedule`] sources, signed [`validation`] results and the
//! epoch's active set, and the background [`participation`] tracker.

pub mod mesh;
pub mod participation;
pub mod record;
pub mod schedule;
pub mod validation;

pub use mesh::{
    free_udp_port, Mesh, MeshConfig, MeshHandle, PeerView, DEFAULT_CLUSTER_ID, DEFAULT_DEAD_AFTER,
    DEFAULT_GC_GRACE, DEFAULT_GOSSIP_INTERVAL,
};
pub use participation::{participation_now, participation_of, ParticipationTracker};
pub use record::{decode_record, NodeRecord, RECORD_KEY, RECORD_SCHEMA_VERSION};
pub use schedule::{
    adopt_schedule, fast_schedule, peer_specs, unix_now_ms, EmbeddedSchedule, Schedule,
    SyntheticSchedule, MESH_SCHEDULE,
};
pub use validation::{
    active_set, collect_validations, node_id_from_public_key, sign, validation_due, verify,
    BackendValidation, Rejection, SignedValidation, ValidationResult,
};
