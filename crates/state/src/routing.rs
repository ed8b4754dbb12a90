//! Which replica an OpenAI request is tried on, and in what order on failover.

use serde::{Deserialize, Serialize};

use crate::node::NodeState;

/// One node that might serve a request, as the router sees it at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    pub node_id: String,
    /// This node itself: no network hop, so always tried first.
    pub is_local: bool,
    pub state: NodeState,
    /// The node serves the requested model.
    pub has_model: bool,
    /// Requests this router currently has outstanding on the node.
    pub in_flight: u32,
    /// The node is in the current epoch's active set.
    pub active: bool,
}

impl Candidate {
    /// Only a serving, active node that has the model may receive traffic; anything else
    /// (loading, wakeable, inactive) would fail or serve an unvalidated backend.
    pub fn is_eligible(&self) -> bool {
        self.state == NodeState::Serving && self.has_model && self.active
    }
}

/// Indices into `cands` of the eligible candidates, in the order to try them: local first, then
/// least loaded, ties broken by `node_id` so every retry and every test sees the same order.
pub fn route_order(cands: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].is_eligible())
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&cands[a], &cands[b]);
        b.is_local
            .cmp(&a.is_local)
            .then(a.in_flight.cmp(&b.in_flight))
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, is_local: bool, in_flight: u32) -> Candidate {
        Candidate {
            node_id: id.to_string(),
            is_local,
            state: NodeState::Serving,
            has_model: true,
            in_flight,
            active: true,
        }
    }

    #[test]
    fn eligibility_is_exhaustive() {
        for state in NodeState::ALL {
            for has_model in [false, true] {
                for active in [false, true] {
                    let cand = Candidate {
                        state,
                        has_model,
                        active,
                        ..c("n", true, 0)
                    };
                    let want = state == NodeState::Serving && has_model && active;
                    assert_eq!(cand.is_eligible(), want, "{cand:?}");
                    let want_order: Vec<usize> = if want { vec![0] } else { vec![] };
                    assert_eq!(route_order(&[cand]), want_order);
                }
            }
        }
    }

    #[test]
    fn order_table() {
        let cases: Vec<(&str, Vec<Candidate>, Vec<usize>)> = vec![
            ("empty", vec![], vec![]),
            (
                "local first even when busiest",
                vec![c("b", false, 0), c("a", true, 9), c("c", false, 1)],
                vec![1, 0, 2],
            ),
            (
                "peers by ascending load",
                vec![c("x", false, 5), c("y", false, 1), c("z", false, 3)],
                vec![1, 2, 0],
            ),
            (
                "ties broken by node id, not input order",
                vec![c("n3", false, 2), c("n1", false, 2), c("n2", false, 2)],
                vec![1, 2, 0],
            ),
            (
                "load beats id",
                vec![c("a", false, 4), c("b", false, 0)],
                vec![1, 0],
            ),
            (
                "ineligible skipped, indices refer to input",
                vec![
                    Candidate {
                        state: NodeState::Loading,
                        ..c("a", true, 0)
                    },
                    c("b", false, 7),
                    Candidate {
                        has_model: false,
                        ..c("c", false, 0)
                    },
                    Candidate {
                        active: false,
                        ..c("d", false, 0)
                    },
                    c("e", false, 2),
                ],
                vec![4, 1],
            ),
            (
                "ineligible local falls back to peers",
                vec![
                    Candidate {
                        active: false,
                        ..c("me", true, 0)
                    },
                    c("p", false, 3),
                ],
                vec![1],
            ),
        ];
        for (name, cands, want) in cases {
            assert_eq!(route_order(&cands), want, "{name}");
        }
    }

    #[test]
    fn order_is_independent_of_input_permutation() {
        let base = vec![
            c("a", false, 1),
            c("b", false, 1),
            c("c", true, 3),
            c("d", false, 0),
        ];
        let ids = |cands: &[Candidate]| -> Vec<String> {
            route_order(cands)
                .into_iter()
                .map(|i| cands[i].node_id.clone())
                .collect()
        };
        let want = vec!["c", "d", "a", "b"];
        for rot in 0..base.len() {
            let mut v = base.clone();
            v.rotate_left(rot);
            assert_eq!(ids(&v), want, "rotation {rot}");
            v.reverse();
            assert_eq!(ids(&v), want, "reversed rotation {rot}");
        }
    }
}
