//! The one loud line for a `--join` that reached nobody. Gossip on loopback or a LAN converges
//! in about a second (docs/decisions.md), so a node that still hears from no peer after
//! [`JOIN_GRACE`] was given an address that does not answer, or one without a port; the
//! operator should hear it at once, not from an empty peer list minutes later.

use std::sync::Arc;
use std::time::Duration;

use infermesh_state::peer_notice;

use crate::app::App;

/// Inside the 5 s an operator waits for a join, with room for a slow first gossip exchange.
pub const JOIN_GRACE: Duration = Duration::from_secs(4);

/// Warns once if the node was told to join and, after [`JOIN_GRACE`], reaches no peer. Only
/// `--join` nodes are judged: a lone node without one is a one-node mesh by choice.
pub async fn warn_if_alone(app: Arc<App>) {
    if app.join.is_empty() {
        return;
    }
    tokio::time::sleep(JOIN_GRACE).await;
    let peers = app.peers().len();
    if let Some(m) = peer_notice(app.node.info.client_mode, app.join.len(), peers) {
        tracing::warn!(join = ?app.join, "{m}");
    }
}
