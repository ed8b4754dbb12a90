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
    order_by(cands, |_| 0)
}

/// [`route_order`] with ties between equally loaded peers broken by a per-request `spread`
/// value instead of always by `node_id`: a sequential client (load always 0 everywhere) would
/// otherwise send everything to the same replica. The order is still a pure function of its
/// inputs, so a retry with the same `spread` sees the same order.
pub fn route_order_spread(cands: &[Candidate], spread: u64) -> Vec<usize> {
    order_by(cands, |id| tie_key(id, spread))
}

fn order_by(cands: &[Candidate], tie: impl Fn(&str) -> u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].is_eligible())
        .collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&cands[a], &cands[b]);
        b.is_local
            .cmp(&a.is_local)
            .then(a.in_flight.cmp(&b.in_flight))
            .then_with(|| tie(&a.node_id).cmp(&tie(&b.node_id)))
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    order
}

/// FNV-1a of the id mixed with `spread`: stable per (id, spread), uniform across ids.
fn tie_key(node_id: &str, spread: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ spread.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_shares_ties_but_never_overrides_locality_or_load() {
        let cands = [c("a", false, 0), c("b", false, 0), c("c", false, 0)];
        let firsts: std::collections::BTreeSet<usize> =
            (0..64).map(|s| route_order_spread(&cands, s)[0]).collect();
        assert_eq!(firsts.len(), 3, "ties always went to the same replica");
        for s in 0..64 {
            assert_eq!(route_order_spread(&cands, s), route_order_spread(&cands, s));
            let mixed = [c("a", false, 1), c("me", true, 5), c("b", false, 0)];
            assert_eq!(route_order_spread(&mixed, s), vec![1, 2, 0]);
        }
    }

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
