//! The whole mesh's requests as one list, from every node's own request ring.
//!
//! A request that node C routes to node A is recorded twice: by C, which received it from the
//! client (its origin), and by A, which received it from C over the peer channel. The mesh view
//! keeps each request once: from its origin's ring, or from the hop's ring when the origin could
//! not be read (it is down or unreachable), so a lost node's traffic does not vanish from view.

use std::collections::BTreeSet;

/// What the merge needs to know about a record.
pub trait Routed {
    /// The node that received the request from the client.
    fn origin(&self) -> &str;
    /// When it started (ms since the Unix epoch).
    fn at_ms(&self) -> i64;
    /// Whether the origin keeps its own record of it. A verifier's admission check is sent by
    /// the verifier itself, not routed, so only the checked node records it.
    fn recorded_at_origin(&self) -> bool {
        true
    }
}

/// One node's ring as read: `records` oldest first, as `/api/requests` lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring<R> {
    pub node_id: String,
    pub records: Vec<R>,
}

/// The newest `limit` requests of the mesh, oldest first, each with the node whose ring it came
/// from. `rings` are the rings that could be read; a node missing from them is unreadable.
pub fn merge<R: Routed>(rings: Vec<Ring<R>>, limit: usize) -> Vec<(String, R)> {
    let read: BTreeSet<String> = rings.iter().map(|r| r.node_id.clone()).collect();
    let mut out: Vec<(String, R)> = Vec::new();
    for ring in rings {
        for rec in ring.records {
            let own = rec.origin() == ring.node_id;
            // A hop record stands in for its origin's record only when that ring is missing.
            if own || !rec.recorded_at_origin() || !read.contains(rec.origin()) {
                out.push((ring.node_id.clone(), rec));
            }
        }
    }
    // Stable: records of one ring that share a millisecond keep their ring order.
    out.sort_by_key(|(_, r)| r.at_ms());
    let skip = out.len().saturating_sub(limit);
    out.drain(..skip);
    out
}

/// Requests per second and tokens per second over the `window_ms` before `now_ms`, from records
/// `(at_ms, tokens)`: what the mesh (or one node) served lately, for the MODELS tab and charts.
pub fn rates(records: impl IntoIterator<Item = (i64, u32)>, now_ms: i64, window_ms: i64) -> Rates {
    let window_ms = window_ms.max(1);
    let (mut n, mut tokens) = (0u64, 0u64);
    for (at, t) in records {
        if at > now_ms - window_ms && at <= now_ms {
            n += 1;
            tokens += u64::from(t);
        }
    }
    let secs = window_ms as f64 / 1000.0;
    Rates {
        requests: n,
        req_per_s: n as f64 / secs,
        tok_per_s: tokens as f64 / secs,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub requests: u64,
    pub req_per_s: f64,
    pub tok_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct R(&'static str, i64);

    impl Routed for R {
        fn origin(&self) -> &str {
            self.0
        }
        fn at_ms(&self) -> i64 {
            self.1
        }
    }

    /// An admission check: its origin (the verifier) keeps no record of it.
    #[derive(Debug, Clone, PartialEq)]
    struct Check(&'static str, i64);

    impl Routed for Check {
        fn origin(&self) -> &str {
            self.0
        }
        fn at_ms(&self) -> i64 {
            self.1
        }
        fn recorded_at_origin(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_record_only_its_receiver_keeps_is_listed_from_there() {
        let merged = merge(
            vec![ring("a", vec![Check("v", 3)]), ring("v", Vec::new())],
            10,
        );
        assert_eq!(merged, vec![("a".into(), Check("v", 3))]);
    }

    fn ring<T>(id: &str, records: Vec<T>) -> Ring<T> {
        Ring {
            node_id: id.into(),
            records,
        }
    }

    #[test]
    fn a_hop_is_listed_once_from_its_origin() {
        let merged = merge(
            vec![
                ring("a", vec![R("a", 1), R("c", 5)]),
                ring("c", vec![R("c", 4), R("c", 6)]),
            ],
            10,
        );
        assert_eq!(
            merged,
            vec![
                ("a".into(), R("a", 1)),
                ("c".into(), R("c", 4)),
                ("c".into(), R("c", 6)),
            ]
        );
    }

    #[test]
    fn an_unreadable_origin_is_stood_in_for_by_the_hop_record() {
        let merged = merge(vec![ring("a", vec![R("a", 1), R("c", 5)])], 10);
        assert_eq!(
            merged,
            vec![("a".into(), R("a", 1)), ("a".into(), R("c", 5))]
        );
    }

    #[test]
    fn the_newest_limit_are_kept_oldest_first() {
        let merged = merge(
            vec![
                ring("a", vec![R("a", 1), R("a", 3), R("a", 5)]),
                ring("b", vec![R("b", 2), R("b", 4), R("b", 6)]),
            ],
            3,
        );
        let at: Vec<i64> = merged.iter().map(|(_, r)| r.1).collect();
        assert_eq!(at, vec![4, 5, 6]);
        assert!(merge::<R>(Vec::new(), 5).is_empty());
        assert!(merge(vec![ring("a", vec![R("a", 1)])], 0).is_empty());
    }

    #[test]
    fn same_millisecond_records_keep_their_ring_order() {
        let merged = merge(vec![ring("a", vec![R("a", 7), R("x", 7), R("a", 7)])], 10);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[1].1, R("x", 7));
    }

    #[test]
    fn rates_count_the_window_only() {
        let recs = [(1_000, 10), (9_500, 20), (10_000, 30), (10_001, 99)];
        let r = rates(recs, 10_000, 1_000);
        assert_eq!(r.requests, 2);
        assert!((r.req_per_s - 2.0).abs() < 1e-9);
        assert!((r.tok_per_s - 50.0).abs() < 1e-9);
        let r = rates(recs, 10_000, 0);
        assert_eq!(r.requests, 1, "a zero window is one millisecond");
    }
}
