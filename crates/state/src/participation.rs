//! Whether a node is in the current epoch's active set.

use serde::{Deserialize, Serialize};

use crate::node::NodeState;

/// Serialized `inactive_waiting` / `active`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Participation {
    /// Not in this epoch's active set; it can join at the next round at the earliest. Every
    /// node starts here.
    #[default]
    InactiveWaiting,
    /// In this epoch's active set: an accepted passing validation result for the epoch.
    Active,
    /// A client: it serves nothing, so rounds and admission do not apply to it. Saying it waits
    /// for a round would promise something that never comes.
    NotServing,
}

impl Participation {
    pub const ALL: [Participation; 3] = [Self::InactiveWaiting, Self::Active, Self::NotServing];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InactiveWaiting => "inactive_waiting",
            Self::Active => "active",
            Self::NotServing => "not_serving",
        }
    }

    /// The words a human reads (deck, dashboard); the wire name stays for machines.
    pub fn label(self) -> &'static str {
        match self {
            Self::InactiveWaiting => "Inactive — waiting for round",
            Self::Active => "Active for this epoch",
            Self::NotServing => "Not serving — a client, outside rounds",
        }
    }

    /// [`Participation::label`] for a wire name; unknown words are shown as they came, so a
    /// newer peer's word is not hidden.
    pub fn label_of(wire: &str) -> &str {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == wire)
            .map_or(wire, |s| s.label())
    }

    pub fn is_active(self) -> bool {
        self == Self::Active
    }

    /// A node's participation from its state and whether its verifiers admitted it: a client
    /// takes no part in rounds; every other node waits until it is admitted.
    pub fn of(state: NodeState, admitted: bool) -> Self {
        match (state, admitted) {
            (NodeState::Client, _) => Self::NotServing,
            (_, true) => Self::Active,
            (_, false) => Self::InactiveWaiting,
        }
    }
}

impl std::fmt::Display for Participation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        let cases = [
            (Participation::InactiveWaiting, "inactive_waiting", false),
            (Participation::Active, "active", true),
            (Participation::NotServing, "not_serving", false),
        ];
        for (p, name, active) in cases {
            assert_eq!(p.as_str(), name);
            assert_eq!(p.to_string(), name);
            assert_eq!(p.is_active(), active);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<Participation>(&json).unwrap(), p);
        }
        assert_eq!(Participation::ALL.len(), cases.len());
    }

    #[test]
    fn only_an_admitted_node_that_is_not_a_client_is_active() {
        for state in NodeState::ALL {
            for admitted in [false, true] {
                let want = match state {
                    NodeState::Client => Participation::NotServing,
                    _ if admitted => Participation::Active,
                    _ => Participation::InactiveWaiting,
                };
                assert_eq!(
                    Participation::of(state, admitted),
                    want,
                    "{state:?} {admitted}"
                );
            }
        }
    }

    #[test]
    fn labels_are_human_and_unknown_words_pass_through() {
        assert_eq!(
            Participation::label_of("inactive_waiting"),
            "Inactive — waiting for round"
        );
        for p in Participation::ALL {
            assert_eq!(Participation::label_of(p.as_str()), p.label());
            assert!(!p.label().contains('_'), "{}", p.label());
        }
        assert_eq!(Participation::label_of("probation"), "probation");
    }
}
