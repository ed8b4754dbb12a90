//! What the router remembers between requests about each peer: requests it has outstanding
//! there (gossiped load lags), peers that just failed one, and a counter that spreads ties.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After a peer fails a request it is tried last for this long: gossip takes up to a few seconds
/// to declare it dead, and every request meanwhile should not pay a failed attempt first.
pub const FAILED_PEER_COOLDOWN: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Balance {
    /// Requests this node has outstanding on each peer, by node id.
    outstanding: Mutex<HashMap<String, u32>>,
    failed_at: Mutex<HashMap<String, Instant>>,
    spread: AtomicU64,
}

/// Decrements the per-peer outstanding count when a proxied request ends.
pub struct Outstanding {
    balance: Arc<Balance>,
    node_id: String,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut m = self
            .balance
            .outstanding
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.node_id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Balance {
    pub fn outstanding_on(&self, node_id: &str) -> u32 {
        let m = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        m.get(node_id).copied().unwrap_or(0)
    }

    pub fn begin_outstanding(self: &Arc<Self>, node_id: &str) -> Outstanding {
        let mut m = self.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(node_id.to_string()).or_default() += 1;
        Outstanding {
            balance: self.clone(),
            node_id: node_id.to_string(),
        }
    }

    /// A fresh value per routed request, spreading ties between equally loaded replicas.
    pub fn next_spread(&self) -> u64 {
        self.spread.fetch_add(1, Ordering::Relaxed)
    }

    pub fn mark_failed(&self, node_id: &str) {
        let mut m = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(node_id.to_string(), Instant::now());
    }

    /// The peer failed a request within [`FAILED_PEER_COOLDOWN`].
    pub fn recently_failed(&self, node_id: &str) -> bool {
        let mut m = self.failed_at.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, at| at.elapsed() < FAILED_PEER_COOLDOWN);
        m.contains_key(node_id)
    }
}
