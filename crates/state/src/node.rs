//! Node live state: exactly one of `client | standby | loading | serving`.

use serde::{Deserialize, Serialize};

use crate::split_role::SplitWork;

/// A node's live state. Serialized lowercase (`node_state`); [`NodeState::title`] gives the
/// Title Case alias kept in `node_status` for older consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serves no models: configured as a client, or has no backend.
    Client,
    /// Has backends, none assigned or serving: idle capacity.
    Standby,
    /// A model is assigned or loading, and nothing is serving yet.
    Loading,
    /// At least one backend is healthy and admitted for routing.
    Serving,
}

impl NodeState {
    pub const ALL: [NodeState; 4] = [Self::Client, Self::Standby, Self::Loading, Self::Serving];

    /// The lowercase wire name (`node_state`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Standby => "standby",
            Self::Loading => "loading",
            Self::Serving => "serving",
        }
    }

    /// The Title Case alias (`node_status`) for consumers that predate `node_state`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Client => "Client",
            Self::Standby => "Standby",
            Self::Loading => "Loading",
            Self::Serving => "Serving",
        }
    }

    /// Parses either spelling (`serving` or `Serving`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node knows about itself at one instant; the input of [`derive_node_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeFacts {
    /// The operator started the node as a client (`--client`).
    pub configured_client: bool,
    /// Number of backends configured on this node.
    pub backends: usize,
    /// At least one backend has a model assigned to it.
    pub model_assigned: bool,
    /// At least one backend is loading a model right now.
    pub backend_loading: bool,
    /// At least one backend is healthy and admitted for routing.
    pub backend_serving: bool,
    /// Its part as a worker in another node's split: a worker carries layers of a model that
    /// node serves, so it is loading or serving like a backend of its own.
    pub split_work: SplitWork,
}

/// The one rule that turns facts into a live state.
///
/// Precedence: an explicit client stays a client whatever it runs; a node without backends is
/// one too, unless it takes part in a split (a split's host runs its model only once the split
/// starts); serving beats loading (one
/// healthy backend makes the node routable even while another loads); anything assigned but not
/// yet healthy is `loading`, never `standby` — an operator watching a node fetch a model must not
/// be told it is idle.
pub fn derive_node_state(f: NodeFacts) -> NodeState {
    if f.configured_client || (f.backends == 0 && f.split_work == SplitWork::None) {
        NodeState::Client
    } else if f.backend_serving || f.split_work == SplitWork::Serving {
        NodeState::Serving
    } else if f.backend_loading || f.model_assigned || f.split_work == SplitWork::Loading {
        NodeState::Loading
    } else {
        NodeState::Standby
    }
}

/// Classifies a peer record from an older version that has no `state` field, from its legacy
/// `role` (`"client"`, `"worker"`, `"host"`, ...) and the models it reports serving. Such records
/// are classified, never dropped: an old node is still a member of the mesh.
pub fn classify_legacy(role: Option<&str>, serving_models: &[String]) -> NodeState {
    let is_client = role.is_some_and(|r| r.trim().eq_ignore_ascii_case("client"));
    if is_client {
        NodeState::Client
    } else if !serving_models.is_empty() {
        NodeState::Serving
    } else if role.is_some_and(|r| r.trim().eq_ignore_ascii_case("loading")) {
        NodeState::Loading
    } else {
        NodeState::Standby
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exhaustive over every combination of the six facts (backends 0, 1, 3).
    #[test]
    fn derivation_table_is_exhaustive() {
        for client in [false, true] {
            for backends in [0usize, 1, 3] {
                for assigned in [false, true] {
                    for loading in [false, true] {
                        for serving in [false, true] {
                            for work in [SplitWork::None, SplitWork::Loading, SplitWork::Serving] {
                                let f = NodeFacts {
                                    configured_client: client,
                                    backends,
                                    model_assigned: assigned,
                                    backend_loading: loading,
                                    backend_serving: serving,
                                    split_work: work,
                                };
                                let expected =
                                    if client || (backends == 0 && work == SplitWork::None) {
                                        NodeState::Client
                                    } else if serving || work == SplitWork::Serving {
                                        NodeState::Serving
                                    } else if loading || assigned || work == SplitWork::Loading {
                                        NodeState::Loading
                                    } else {
                                        NodeState::Standby
                                    };
                                assert_eq!(derive_node_state(f), expected, "{f:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn assigned_but_not_healthy_is_loading_not_standby() {
        let f = NodeFacts {
            backends: 1,
            model_assigned: true,
            ..Default::default()
        };
        assert_eq!(derive_node_state(f), NodeState::Loading);
    }

    #[test]
    fn serialization_is_lowercase_and_title_alias_matches() {
        for s in NodeState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), s);
            assert_eq!(s.title().to_lowercase(), s.as_str());
            assert_eq!(NodeState::parse(s.title()), Some(s));
            assert_eq!(NodeState::parse(s.as_str()), Some(s));
        }
        assert_eq!(NodeState::parse("bogus"), None);
    }

    #[test]
    fn legacy_records_are_classified() {
        let models = vec!["smollm2".to_string()];
        assert_eq!(classify_legacy(Some("client"), &models), NodeState::Client);
        assert_eq!(classify_legacy(Some("Client"), &[]), NodeState::Client);
        assert_eq!(classify_legacy(Some("worker"), &models), NodeState::Serving);
        assert_eq!(classify_legacy(None, &models), NodeState::Serving);
        assert_eq!(classify_legacy(Some("worker"), &[]), NodeState::Standby);
        assert_eq!(classify_legacy(None, &[]), NodeState::Standby);
        assert_eq!(classify_legacy(Some("loading"), &[]), NodeState::Loading);
    }
}
