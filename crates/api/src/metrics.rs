//! `GET /metrics`: Prometheus text format (version 0.0.4), rendered by hand.
//!
//! Gauges are read from the node at scrape time (its state, peers by state, wakeable machines by
//! state, requests in flight). Counters are fed from the request ring (every routed request this
//! node received: by model and status, latency histogram, completion tokens), and from
//! [`Metrics::record_test`] / [`Metrics::record_round`] hooks.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use infermesh_state::{NodeState, Participation};
use tokio::sync::broadcast::error::RecvError;

use crate::requests::{RequestLog, RequestRecord, RING_CAPACITY};
use crate::wakeable::WakeState;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the request latency histogram: LLM answers range from tens of
/// milliseconds (a short completion on a GPU) to minutes (a long one on a CPU).
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Distinct `model` label values kept. Only models some node serves are labelled by name (see
/// [`RequestRecord::model_known`]); this cap also bounds a mesh whose model set churns, the rest
/// being counted under `model="other"`.
pub const MAX_MODELS: usize = 64;
const OTHER_MODEL: &str = "other";
/// The label of requests for a model no node serves: clients may send anything.
pub const UNKNOWN_MODEL: &str = "unknown";

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; rendered cumulatively.
    buckets: [u64; LATENCY_BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| secs <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_s += secs;
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// Highest request id counted: the ring assigns ids in order, so anything above it is new.
    last_request_id: u64,
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    tokens: BTreeMap<String, u64>,
    tests: [u64; 2],
    rounds: [u64; 2],
}

impl Counters {
    fn model_label(&self, model: &str) -> String {
        if self.latency.contains_key(model) || self.latency.len() < MAX_MODELS {
            model.to_string()
        } else {
            OTHER_MODEL.to_string()
        }
    }

    fn observe(&mut self, rec: &RequestRecord) {
        if rec.admission_check {
            return;
        }
        let model = if rec.model_known {
            self.model_label(&rec.model)
        } else {
            UNKNOWN_MODEL.to_string()
        };
        *self
            .requests
            .entry((model.clone(), rec.status))
            .or_default() += 1;
        self.latency
            .entry(model.clone())
            .or_default()
            .observe(rec.latency_ms as f64 / 1000.0);
        *self.tokens.entry(model).or_default() += u64::from(rec.tokens);
    }
}

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

fn idx(ok: bool) -> usize {
    usize::from(!ok)
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts every record of `log` not counted yet. Exact as long as fewer than the ring's
    /// capacity arrived since the last call (the live feed calls it on every record).
    pub fn catch_up(&self, log: &RequestLog) {
        let mut c = self.lock();
        let mut recent = log.tail(16);
        if recent.first().is_some_and(|r| r.id > c.last_request_id + 1) {
            recent = log.tail(RING_CAPACITY);
        }
        let last = c.last_request_id;
        for rec in recent.iter().filter(|r| r.id > last) {
            c.observe(rec);
        }
        if let Some(last) = recent.last() {
            c.last_request_id = c.last_request_id.max(last.id);
        }
    }

    /// One backend test result (on demand or automatic).
    pub fn record_test(&self, passed: bool) {
        self.lock().tests[idx(passed)] += 1;
    }

    /// One validation round this node took part in, passed or not.
    pub fn record_round(&self, passed: bool) {
        self.lock().rounds[idx(passed)] += 1;
    }

    /// The exposition text for `snap` plus the counters.
    pub fn render(&self, snap: &Snapshot) -> String {
        let c = self.lock();
        let mut out = String::with_capacity(4096);
        let w = &mut out;

        family(
            w,
            "infermesh_info",
            "gauge",
            "This node: always 1, identity in the labels.",
        );
        sample(
            w,
            "infermesh_info",
            &[
                ("node_id", &snap.node_id),
                ("name", &snap.name),
                ("version", &snap.version),
            ],
            1,
        );

        family(
            w,
            "infermesh_node_state",
            "gauge",
            "This node's live state: 1 for the current state, 0 for the others.",
        );
        for s in NodeState::ALL {
            sample(
                w,
                "infermesh_node_state",
                &[("state", s.as_str())],
                u64::from(s == snap.state),
            );
        }

        family(
            w,
            "infermesh_participation",
            "gauge",
            "Whether this node is in the current epoch's active set: 1 for the current value.",
        );
        for p in Participation::ALL {
            sample(
                w,
                "infermesh_participation",
                &[("participation", p.as_str())],
                u64::from(p == snap.participation),
            );
        }

        family(
            w,
            "infermesh_peers",
            "gauge",
            "Live peers by state (this node and wakeable machines are not peers).",
        );
        for s in NodeState::ALL {
            let n = snap.peers.iter().filter(|p| **p == s).count() as u64;
            sample(w, "infermesh_peers", &[("state", s.as_str())], n);
        }

        family(
            w,
            "infermesh_wakeable",
            "gauge",
            "Wakeable machines declared on this node, by state.",
        );
        for s in WakeState::ALL {
            let n = snap.wakeable.iter().filter(|x| **x == s).count() as u64;
            sample(w, "infermesh_wakeable", &[("state", s.as_str())], n);
        }

        family(
            w,
            "infermesh_in_flight",
            "gauge",
            "Requests this node is answering right now.",
        );
        sample(w, "infermesh_in_flight", &[], u64::from(snap.in_flight));

        family(
            w,
            "infermesh_requests_total",
            "counter",
            "OpenAI requests this node received, by model and HTTP status.",
        );
        for ((model, status), n) in &c.requests {
            sample(
                w,
                "infermesh_requests_total",
                &[("model", model), ("status", &status.to_string())],
                *n,
            );
        }

        family(
            w,
            "infermesh_request_duration_seconds",
            "histogram",
            "Latency of OpenAI requests this node received, until the answer ended, by model.",
        );
        for (model, h) in &c.latency {
            let mut cumulative = 0;
            for (b, n) in LATENCY_BUCKETS_S.iter().zip(h.buckets) {
                cumulative += n;
                let le = b.to_string();
                sample(
                    w,
                    "infermesh_request_duration_seconds_bucket",
                    &[("model", model), ("le", &le)],
                    cumulative,
                );
            }
            sample(
                w,
                "infermesh_request_duration_seconds_bucket",
                &[("model", model), ("le", "+Inf")],
                h.count,
            );
            let _ = writeln!(
                w,
                "infermesh_request_duration_seconds_sum{{model=\"{}\"}} {}",
                escape(model),
                h.sum_s
            );
            sample(
                w,
                "infermesh_request_duration_seconds_count",
                &[("model", model)],
                h.count,
            );
        }

        family(
            w,
            "infermesh_tokens_generated_total",
            "counter",
            "Completion tokens in the answers to requests this node received, by model.",
        );
        for (model, n) in &c.tokens {
            sample(
                w,
                "infermesh_tokens_generated_total",
                &[("model", model)],
                *n,
            );
        }

        family(
            w,
            "infermesh_tests_total",
            "counter",
            "Backend test results on this node.",
        );
        for (i, result) in ["pass", "fail"].iter().enumerate() {
            sample(
                w,
                "infermesh_tests_total",
                &[("result", result)],
                c.tests[i],
            );
        }

        family(
            w,
            "infermesh_rounds_total",
            "counter",
            "Validation rounds this node took part in, by its result.",
        );
        for (i, result) in ["pass", "fail"].iter().enumerate() {
            sample(
                w,
                "infermesh_rounds_total",
                &[("result", result)],
                c.rounds[i],
            );
        }
        out
    }
}

fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        w,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

fn sample(w: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    w.push_str(name);
    if !labels.is_empty() {
        w.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                w.push(',');
            }
            let _ = write!(w, "{k}=\"{}\"", escape(v));
        }
        w.push('}');
    }
    let _ = writeln!(w, " {value}");
}

/// Label value escaping of the text format: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// What the gauges show, read from the node at scrape time.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub node_id: String,
    pub name: String,
    pub version: String,
    pub state: NodeState,
    pub participation: Participation,
    pub peers: Vec<NodeState>,
    pub wakeable: Vec<WakeState>,
    pub in_flight: u32,
}

impl Metrics {
    /// Counts request records as they are pushed (outside a runtime, scrapes catch up instead).
    /// The task holds the counters weakly and ends with them.
    pub fn spawn_feed(self: &Arc<Self>, requests: &Arc<RequestLog>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rx = requests.subscribe();
        let (weak, requests) = (Arc::downgrade(self), requests.clone());
        rt.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => match weak.upgrade() {
                        Some(m) => m.catch_up(&requests),
                        None => return,
                    },
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(model: &str, status: u16, latency_ms: u64, tokens: u32) -> RequestRecord {
        RequestRecord {
            id: 0,
            at_ms: 0,
            from: "a".into(),
            to: Some("b".into()),
            to_name: None,
            model: model.into(),
            endpoint: "chat".into(),
            status,
            latency_ms,
            ttft_ms: None,
            tokens,
            attempts: 1,
            stream: false,
            error: None,
            model_known: true,
            admission_check: false,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            node_id: "abc".into(),
            name: "n\"1".into(),
            version: "0.1.0".into(),
            state: NodeState::Serving,
            participation: Participation::InactiveWaiting,
            peers: vec![NodeState::Standby, NodeState::Serving, NodeState::Serving],
            wakeable: vec![WakeState::Sleeping, WakeState::Failed],
            in_flight: 2,
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn gauges_render_every_state() {
        let text = Metrics::default().render(&snap());
        let l = lines(&text);
        for want in [
            "infermesh_info{node_id=\"abc\",name=\"n\\\"1\",version=\"0.1.0\"} 1",
            "infermesh_node_state{state=\"client\"} 0",
            "infermesh_node_state{state=\"serving\"} 1",
            "infermesh_participation{participation=\"inactive_waiting\"} 1",
            "infermesh_participation{participation=\"active\"} 0",
            "infermesh_participation{participation=\"not_serving\"} 0",
            "infermesh_peers{state=\"client\"} 0",
            "infermesh_peers{state=\"standby\"} 1",
            "infermesh_peers{state=\"loading\"} 0",
            "infermesh_peers{state=\"serving\"} 2",
            "infermesh_wakeable{state=\"sleeping\"} 1",
            "infermesh_wakeable{state=\"failed\"} 1",
            "infermesh_in_flight 2",
            "infermesh_tests_total{result=\"pass\"} 0",
            "infermesh_rounds_total{result=\"fail\"} 0",
        ] {
            assert!(l.contains(&want), "missing `{want}` in\n{text}");
        }
    }

    #[test]
    fn requests_feed_counters_and_a_cumulative_histogram() {
        let log = RequestLog::default();
        let m = Metrics::default();
        log.push(rec("m", 200, 40, 10));
        log.push(rec("m", 200, 300, 5));
        log.push(rec("m", 503, 7_000, 0));
        // A peer's admission check is served but is not client traffic.
        log.push(RequestRecord {
            admission_check: true,
            ..rec("m", 200, 10, 4)
        });
        m.catch_up(&log);
        m.catch_up(&log); // idempotent
        log.push(rec("x", 200, 200_000, 1));
        m.catch_up(&log);
        m.record_test(true);
        m.record_test(false);
        m.record_test(true);
        m.record_round(false);
        let text = m.render(&snap());
        let l = lines(&text);
        for want in [
            "infermesh_requests_total{model=\"m\",status=\"200\"} 2",
            "infermesh_requests_total{model=\"m\",status=\"503\"} 1",
            "infermesh_requests_total{model=\"x\",status=\"200\"} 1",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"0.025\"} 0",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"0.05\"} 1",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"0.25\"} 1",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"0.5\"} 2",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"5\"} 2",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"10\"} 3",
            "infermesh_request_duration_seconds_bucket{model=\"m\",le=\"+Inf\"} 3",
            "infermesh_request_duration_seconds_sum{model=\"m\"} 7.34",
            "infermesh_request_duration_seconds_count{model=\"m\"} 3",
            "infermesh_request_duration_seconds_bucket{model=\"x\",le=\"120\"} 0",
            "infermesh_request_duration_seconds_bucket{model=\"x\",le=\"+Inf\"} 1",
            "infermesh_tokens_generated_total{model=\"m\"} 15",
            "infermesh_tokens_generated_total{model=\"x\"} 1",
            "infermesh_tests_total{result=\"pass\"} 2",
            "infermesh_tests_total{result=\"fail\"} 1",
            "infermesh_rounds_total{result=\"pass\"} 0",
            "infermesh_rounds_total{result=\"fail\"} 1",
        ] {
            assert!(l.contains(&want), "missing `{want}` in\n{text}");
        }
    }

    #[test]
    fn format_is_well_formed() {
        let log = RequestLog::default();
        let m = Metrics::default();
        log.push(rec("we\"ird\\name\n", 200, 1, 1));
        m.catch_up(&log);
        let text = m.render(&snap());
        assert!(text.ends_with('\n'));
        assert!(text.contains("model=\"we\\\"ird\\\\name\\n\""), "{text}");
        let mut typed = std::collections::BTreeSet::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["gauge", "counter", "histogram"].contains(&kind));
                assert!(typed.insert(name.to_string()), "{name} typed twice");
                current = Some(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            // Every sample belongs to the family typed just before it, and its value parses.
            let fam = current.as_deref().unwrap();
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            assert!(
                name == fam
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{fam}{s}")),
                "{name} outside {fam}"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn model_labels_are_bounded() {
        let log = RequestLog::default();
        let m = Metrics::default();
        for i in 0..MAX_MODELS + 10 {
            log.push(rec(&format!("m{i}"), 404, 1, 0));
        }
        m.catch_up(&log);
        let text = m.render(&snap());
        let series = text
            .lines()
            .filter(|l| l.starts_with("infermesh_requests_total{"))
            .count();
        assert_eq!(series, MAX_MODELS + 1);
        assert!(text.contains("infermesh_requests_total{model=\"other\",status=\"404\"} 10"));
    }

    #[test]
    fn models_no_node_serves_share_one_label() {
        let log = RequestLog::default();
        let m = Metrics::default();
        for name in ["nope", "x\"y", "gpt-4"] {
            log.push(RequestRecord {
                model_known: false,
                admission_check: false,
                ..rec(name, 404, 1, 0)
            });
        }
        log.push(rec("m", 200, 1, 3));
        m.catch_up(&log);
        let text = m.render(&snap());
        assert!(text.contains("infermesh_requests_total{model=\"unknown\",status=\"404\"} 3"));
        assert!(text.contains("infermesh_requests_total{model=\"m\",status=\"200\"} 1"));
        assert!(!text.contains("nope") && !text.contains("gpt-4"), "{text}");
    }

    #[test]
    fn catch_up_reads_far_back_when_it_fell_behind() {
        let log = RequestLog::default();
        let m = Metrics::default();
        for _ in 0..100 {
            log.push(rec("m", 200, 1, 1));
        }
        m.catch_up(&log);
        assert!(m
            .render(&snap())
            .contains("infermesh_requests_total{model=\"m\",status=\"200\"} 100"));
    }
}
