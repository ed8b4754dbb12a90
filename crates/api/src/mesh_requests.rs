//! `GET /api/mesh/requests`: the whole mesh's requests as one list, read from every live member's
//! ring over the authenticated peer channel (`GET /peer/v1/requests`) and merged so each request
//! appears once ([`infermesh_state::mesh_requests::merge`]). The deck's and the dashboard's
//! "whole mesh" views read it; a member that cannot be read is named, never silently missing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use futures::StreamExt;
use infermesh_state::mesh_requests::{merge, Ring, Routed};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::peer::{peer_base, read_bounded};
use crate::requests::{RequestRecord, RING_CAPACITY};

/// The peer-channel path a member's ring is read from.
pub const PEER_PATH: &str = "/peer/v1/requests";
/// What one call lists by default, and at most.
const DEFAULT_LIMIT: usize = 200;
/// A member that does not answer within this is listed as unread; the view never waits on it.
const PEER_TIMEOUT: Duration = Duration::from_millis(1500);
/// Members read at once.
const CONCURRENCY: usize = 16;
/// A full ring of records is far below this; a member sending more is not believed.
const MAX_RING_BYTES: usize = 2 * 1024 * 1024;

impl Routed for RequestRecord {
    fn origin(&self) -> &str {
        &self.from
    }
    fn at_ms(&self) -> i64 {
        self.at_ms
    }
    fn recorded_at_origin(&self) -> bool {
        !self.admission_check
    }
}

#[derive(Deserialize)]
pub struct LimitQuery {
    limit: Option<usize>,
}

impl LimitQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).min(RING_CAPACITY)
    }
}

/// One record of the mesh view: the record and the node whose ring it was read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshRecord {
    #[serde(flatten)]
    pub rec: RequestRecord,
    pub node: String,
}

/// Whether a member's ring made it into the view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRead {
    pub node_id: String,
    pub name: String,
    /// Why its ring is missing; `None` when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshRequests {
    /// Oldest first, the newest `limit` of the mesh.
    pub requests: Vec<MeshRecord>,
    /// This node first, then every live member.
    pub nodes: Vec<NodeRead>,
}

#[derive(Deserialize)]
struct RingBody {
    requests: Vec<RequestRecord>,
}

/// `GET /peer/v1/requests` (members only): this node's ring.
pub async fn peer_ring(
    State(app): State<Arc<App>>,
    Query(q): Query<LimitQuery>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "requests": app.requests.tail(q.limit()) }))
}

/// `GET /api/mesh/requests?limit=N`.
pub async fn get_mesh_requests(
    State(app): State<Arc<App>>,
    Query(q): Query<LimitQuery>,
) -> Json<MeshRequests> {
    let limit = q.limit();
    let me = &app.node.info;
    let mut rings = vec![Ring {
        node_id: me.node_id.clone(),
        records: app.requests.tail(limit),
    }];
    let mut nodes = vec![NodeRead {
        node_id: me.node_id.clone(),
        name: me.name.clone(),
        error: None,
    }];
    let peers = app.peers();
    let http = app.peer_http.clone();
    let mut reads = futures::stream::iter(peers)
        .map(|p| {
            let http = http.clone();
            async move {
                let base = peer_base(&p.record.node_id, p.gossip_addr.port());
                let got = match http {
                    Some(http) => read_ring(&http, &base, limit).await,
                    None => Err("this node has no peer channel".to_string()),
                };
                (p.record.node_id, p.record.name, got)
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((node_id, name, got)) = reads.next().await {
        let error = match got {
            Ok(records) => {
                rings.push(Ring {
                    node_id: node_id.clone(),
                    records,
                });
                None
            }
            Err(e) => Some(e),
        };
        nodes.push(NodeRead {
            node_id,
            name,
            error,
        });
    }
    nodes[1..].sort_by(|a, b| a.name.cmp(&b.name).then(a.node_id.cmp(&b.node_id)));
    let requests = merge(rings, limit)
        .into_iter()
        .map(|(node, rec)| MeshRecord { rec, node })
        .collect();
    Json(MeshRequests { requests, nodes })
}

async fn read_ring(
    http: &reqwest::Client,
    base: &str,
    limit: usize,
) -> Result<Vec<RequestRecord>, String> {
    let call = async {
        let resp = http
            .get(format!("{base}{PEER_PATH}?limit={limit}"))
            .send()
            .await
            .map_err(|e| format!("unreachable: {}", crate::error::error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        let bytes = read_bounded(resp, MAX_RING_BYTES, "request list").await?;
        let body: RingBody = serde_json::from_slice(&bytes)
            .map_err(|e| format!("sent a request list that does not parse: {e}"))?;
        // A member lists at most what was asked: more would let it crowd out the others.
        Ok(body.requests.into_iter().rev().take(limit).rev().collect())
    };
    tokio::time::timeout(PEER_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "did not answer within {} ms",
                PEER_TIMEOUT.as_millis()
            ))
        })
}
