//! Mesh membership and gossip.
//!
//! Each node runs one chitchat instance (scuttlebutt anti-entropy + phi-accrual failure detection
//! over UDP) and publishes a single versioned [`NodeRecord`]. [`MeshHandle::peers`] is the live
//! peer table every other part reads; [`MeshHandle::subscribe`] tells them when it changed.

pub mod mesh;
pub mod record;

pub use mesh::{
    free_udp_port, Mesh, MeshConfig, MeshHandle, PeerView, DEFAULT_CLUSTER_ID, DEFAULT_DEAD_AFTER,
    DEFAULT_GC_GRACE, DEFAULT_GOSSIP_INTERVAL,
};
pub use record::{decode_record, NodeRecord, RECORD_KEY, RECORD_SCHEMA_VERSION};
