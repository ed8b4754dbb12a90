//! REQUESTS' scope: the connected node's own ring, or the whole mesh's requests merged by the
//! node from every member (`/api/mesh/requests`). The whole mesh is the default: one node's view
//! of a mesh that balances across replicas looks like a mesh that does not.

use crate::api::{MeshRequestsBody, RequestRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Mesh,
    Node,
}

#[derive(Debug, Clone)]
pub struct MeshRequests {
    pub scope: Scope,
    /// The node's last answer; `None` before the first (or from a node without the route).
    pub view: Option<MeshRequestsBody>,
    /// When `view` arrived (Unix ms).
    pub view_ms: i64,
    /// Why the last pull failed; the view shown is then the one of `view_ms`.
    pub error: Option<String>,
    pub in_flight: bool,
    pub last_fetch_ms: i64,
}

impl Default for MeshRequests {
    fn default() -> Self {
        MeshRequests {
            scope: Scope::Mesh,
            view: None,
            view_ms: 0,
            error: None,
            in_flight: false,
            last_fetch_ms: i64::MIN / 2,
        }
    }
}

impl MeshRequests {
    /// The mesh's records when that scope is chosen and known, else `own` (this node's ring).
    pub fn shown<'a>(&'a self, own: &'a [RequestRecord]) -> &'a [RequestRecord] {
        match (&self.scope, &self.view) {
            (Scope::Mesh, Some(v)) => &v.requests,
            _ => own,
        }
    }

    /// Whether what is shown is the mesh's view (chosen, and received at least once).
    pub fn showing_mesh(&self) -> bool {
        self.scope == Scope::Mesh && self.view.is_some()
    }

    /// Members whose rings the last view lacks, with why: (name, error).
    pub fn unread(&self) -> Vec<(&str, &str)> {
        self.view
            .iter()
            .flat_map(|v| &v.nodes)
            .filter_map(|n| Some((n.name.as_str(), n.error.as_deref()?)))
            .collect()
    }
}
