//! What the rest of the node reads of membership: one live peer, and whether the membership
//! task runs.

use std::net::SocketAddr;

use infermesh_state::NodeState;

use crate::record::NodeRecord;

/// One live peer as this node sees it: every field comes from the peer's own signed record.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// The peer's record; `node_id` is the signer's id, whatever the record claimed.
    pub record: NodeRecord,
    pub gossip_addr: SocketAddr,
    /// The peer's ed25519 public key: what its peer-API TLS certificate must carry.
    pub public_key: [u8; 32],
    /// Start time (ms since the Unix epoch) of the peer's current incarnation.
    pub generation: u64,
    /// Milliseconds since its heartbeat or record last advanced.
    pub last_seen_ms: u64,
    pub state: NodeState,
}

/// Whether the membership task runs, and what stopped it if it ever did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshHealth {
    /// Times the gossip task ended unexpectedly and was restarted.
    pub restarts: u32,
    /// Why it last ended; `None` when it never failed.
    pub last_failure: Option<String>,
    /// `true` while it is running (false between a failure and its restart).
    pub running: bool,
}
