//! Each node's live numbers over the last minutes, for NODES' sparklines: CPU use (sampled from
//! every status the deck receives, as gossiped by the node) and tokens/s and latency (computed
//! from the whole mesh's request records, by the node that served each one).

use std::collections::{BTreeMap, VecDeque};

use infermesh_state::stats::nearest_rank;

use crate::api::RequestRecord;

/// Samples kept per node: at one status a second, the last two minutes.
pub const KEEP: usize = 120;
/// Tokens/s and latency buckets: 10 s each, the last 5 minutes.
pub const BUCKET_MS: i64 = 10_000;
pub const BUCKETS: usize = 30;

/// CPU use per node id, oldest first.
#[derive(Debug, Clone, Default)]
pub struct CpuHistory {
    by_node: BTreeMap<String, VecDeque<f32>>,
}

impl CpuHistory {
    /// One status's worth: each listed node's current CPU use (percent of its machine). Nodes
    /// not listed any more are dropped, so a 1,000-node mesh's churn cannot grow this.
    pub fn record(&mut self, now: &[(&str, Option<f32>)]) {
        self.by_node
            .retain(|id, _| now.iter().any(|(n, _)| *n == id.as_str()));
        for (id, pct) in now {
            let Some(pct) = pct else { continue };
            let ring = self.by_node.entry((*id).to_string()).or_default();
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(*pct);
        }
    }

    pub fn of(&self, node_id: &str) -> Vec<f32> {
        self.by_node
            .get(node_id)
            .map_or_else(Vec::new, |r| r.iter().copied().collect())
    }
}

/// One node's served traffic over the last [`BUCKETS`] × [`BUCKET_MS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Completion tokens per second in each bucket, oldest first.
    pub tok_s: Vec<f64>,
    /// Latency percentiles of the requests finished in the window, ms.
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub requests: usize,
}

/// What `node_id` served (the record's `to`), by when each request finished, up to `now_ms`.
/// Admission checks are not traffic and failed requests carry no tokens.
pub fn served(records: &[RequestRecord], node_id: &str, now_ms: i64) -> Served {
    let start = now_ms - BUCKET_MS * BUCKETS as i64;
    let mut tokens = vec![0u64; BUCKETS];
    let mut latencies = Vec::new();
    for r in records {
        if r.admission_check || r.to.as_deref() != Some(node_id) {
            continue;
        }
        let end = r
            .at_ms
            .saturating_add(i64::try_from(r.latency_ms).unwrap_or(i64::MAX));
        if end <= start || end > now_ms {
            continue;
        }
        let i = usize::try_from((end - start - 1) / BUCKET_MS).unwrap_or(0);
        if (200..300).contains(&r.status) {
            tokens[i.min(BUCKETS - 1)] += r.tokens.unwrap_or(0);
            latencies.push(r.latency_ms);
        }
    }
    latencies.sort_unstable();
    let secs = BUCKET_MS as f64 / 1_000.0;
    Served {
        tok_s: tokens.iter().map(|t| *t as f64 / secs).collect(),
        p50_ms: nearest_rank(&latencies, 50),
        p95_ms: nearest_rank(&latencies, 95),
        requests: latencies.len(),
    }
}

/// The last `width` values as a bar sparkline scaled to `max` (or to the values' own maximum
/// when `max` is `None`); blanks where there is no value yet, so a new node's line grows from the
/// right as time does.
pub fn sparkline(values: &[f64], width: usize, max: Option<f64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let top = max.unwrap_or_else(|| tail.iter().copied().fold(0.0, f64::max));
    let mut out: String = " ".repeat(width - tail.len());
    for v in tail {
        let level = if top > 0.0 && v.is_finite() {
            ((v / top).clamp(0.0, 1.0) * 7.0).round() as usize
        } else {
            0
        };
        out.push(BARS[level]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(to: &str, at_ms: i64, latency_ms: u64, tokens: u64, status: u16) -> RequestRecord {
        RequestRecord {
            to: Some(to.into()),
            at_ms,
            latency_ms,
            tokens: Some(tokens),
            status,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn served_traffic_is_bucketed_by_finish_time_for_the_serving_node_only() {
        let now = 1_000_000;
        let records = vec![
            // Finished 5 s ago: the last bucket; 20 tokens over 10 s.
            rec("a", now - 6_000, 1_000, 20, 200),
            // Finished 15 s ago: the one before.
            rec("a", now - 16_000, 1_000, 50, 200),
            // Too old for the window, another node, a failure, a check, still running.
            rec("a", now - 400_000, 1_000, 99, 200),
            rec("b", now - 6_000, 1_000, 99, 200),
            rec("a", now - 6_000, 3_000, 99, 503),
            RequestRecord {
                admission_check: true,
                ..rec("a", now - 6_000, 1_000, 99, 200)
            },
            rec("a", now - 1_000, 5_000, 99, 200),
        ];
        let s = served(&records, "a", now);
        assert_eq!(s.tok_s.len(), BUCKETS);
        assert_eq!(s.tok_s[BUCKETS - 1], 2.0);
        assert_eq!(s.tok_s[BUCKETS - 2], 5.0);
        assert_eq!(s.tok_s.iter().sum::<f64>(), 7.0);
        assert_eq!(
            (s.requests, s.p50_ms, s.p95_ms),
            (2, Some(1_000), Some(1_000))
        );
        let none = served(&records, "zzz", now);
        assert_eq!((none.requests, none.p50_ms), (0, None));
    }

    #[test]
    fn cpu_history_keeps_the_last_samples_of_listed_nodes() {
        let mut h = CpuHistory::default();
        for i in 0..(KEEP + 5) {
            h.record(&[("a", Some(i as f32)), ("b", None)]);
        }
        let a = h.of("a");
        assert_eq!(a.len(), KEEP);
        assert_eq!(a[KEEP - 1], (KEEP + 4) as f32);
        assert!(h.of("b").is_empty(), "no sample, no line");
        h.record(&[("b", Some(1.0))]);
        assert!(h.of("a").is_empty(), "a left the mesh");
    }

    #[test]
    fn sparklines_scale_and_grow_from_the_right() {
        assert_eq!(sparkline(&[0.0, 50.0, 100.0], 5, Some(100.0)), "  ▁▅█");
        assert_eq!(sparkline(&[1.0, 2.0], 2, None), "▅█");
        assert_eq!(sparkline(&[0.0, 0.0], 2, None), "▁▁");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0, 4.0], 2, None), "▆█");
        assert_eq!(sparkline(&[], 3, None), "   ");
    }
}
