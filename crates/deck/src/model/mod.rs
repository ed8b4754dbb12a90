//! Everything the deck knows, as plain data, and the pure views derived from it.
//!
//! Views (sorted node rows, model groups, the filtered log) are recomputed on demand instead of
//! cached: at 1,000 nodes that costs well under a millisecond, and a cache would be one more thing
//! that can disagree with the data it came from.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use infermesh_state::mesh_requests::Rates;
use infermesh_state::NodeState;

use crate::api::{base_url, AdminNode, GroupView, RequestRecord, Status, TestResult};

mod assign;
mod confirm;
pub mod live;
mod logs;
mod mesh;
pub mod migrate;
pub mod topology;
pub use assign::{ReplicaAction, ReplicaConfirm};
pub use confirm::{Confirm, TestConfirm, WakeConfirm};
pub use logs::{Level, LogStore, LogsView, LOG_CAP};
pub use mesh::{MeshRequests, Scope};
pub use migrate::{Choice, MigrateConfirm, MigrationRun};

/// Bounds that keep a deck left open for days at a constant footprint.
pub const REQUEST_CAP: usize = 2_000;
/// The window `requests/s` is averaged over.
pub const RATE_WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Nodes,
    Models,
    Onboarding,
    Logs,
    Requests,
    Wakeable,
    Topology,
}

impl Tab {
    pub const ALL: [Tab; 7] = [
        Tab::Nodes,
        Tab::Models,
        Tab::Onboarding,
        Tab::Logs,
        Tab::Requests,
        Tab::Wakeable,
        Tab::Topology,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Nodes => "NODES",
            Tab::Models => "MODELS",
            Tab::Onboarding => "ONBOARDING",
            Tab::Logs => "LOGS",
            Tab::Requests => "REQUESTS",
            Tab::Wakeable => "WAKEABLE",
            Tab::Topology => "TOPOLOGY",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    pub fn cycle(self, forward: bool) -> Tab {
        let n = Tab::ALL.len();
        let i = self.index();
        Tab::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }
}

/// How the live feed currently reaches the deck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Sse,
    Polling,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Connected(Via),
    Reconnecting { attempt: u32, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortCol {
    Name,
    State,
    Models,
    Vram,
    Load,
    LastSeen,
}

impl SortCol {
    pub const ALL: [SortCol; 6] = [
        SortCol::Name,
        SortCol::State,
        SortCol::Models,
        SortCol::Vram,
        SortCol::Load,
        SortCol::LastSeen,
    ];

    pub fn next(self) -> SortCol {
        let i = SortCol::ALL.iter().position(|c| *c == self).unwrap_or(0);
        SortCol::ALL[(i + 1) % SortCol::ALL.len()]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestRun {
    Running {
        node_name: String,
        backend_id: String,
        started_ms: i64,
    },
    Done {
        node_name: String,
        backend_id: String,
        result: TestResult,
    },
    Failed {
        node_name: String,
        backend_id: String,
        error: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct OnboardingView {
    /// Which node `backends` belongs to; data of another node is never shown under this one.
    pub node_id: Option<String>,
    pub backends: Vec<AdminNode>,
    pub fetched_ms: i64,
    pub error: Option<String>,
    pub in_flight: bool,
    pub last_fetch_ms: i64,
    pub selected: usize,
    pub test: Option<TestRun>,
}

/// One row of NODES: the connected node or a peer, borrowed from the status body.
#[derive(Debug, Clone)]
pub struct NodeRow<'a> {
    pub node_id: &'a str,
    pub name: &'a str,
    pub addr: &'a str,
    pub is_self: bool,
    pub state: Option<NodeState>,
    pub models: &'a [String],
    pub vram_gb: Option<f64>,
    pub ram_gb: Option<f64>,
    pub usage: Option<infermesh_state::usage::Usage>,
    pub load: Option<u64>,
    pub version: &'a str,
    pub participation: Option<&'a str>,
    /// `None` for the connected node itself: it is being heard from now.
    pub last_seen_ms: Option<i64>,
    pub split: Option<&'a infermesh_state::split_role::SplitClaim>,
}

/// One row of MODELS.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelGroup {
    pub model: String,
    /// (node name, state) of every node listing the model.
    pub replicas: Vec<(String, Option<NodeState>)>,
    /// Replicas in `serving`: what the router can actually send to.
    pub routable: usize,
    pub rps: f64,
    /// Completion tokens per second over the same window.
    pub tok_s: f64,
    /// The operator's workload group for this model, when one is declared.
    pub declared: Option<GroupView>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub url: String,
    pub now_ms: i64,
    /// When the connected node stopped answering (cleared when it answers again): from then on
    /// what is on screen is as of that moment, greyed, and its clocks stop.
    pub lost_ms: Option<i64>,
    pub spinner: usize,
    pub conn: Conn,
    pub status: Option<Status>,
    /// node_id → name, kept after a node leaves so its old log lines keep their name.
    pub names: HashMap<String, String>,
    pub tab: Tab,
    pub help: bool,
    pub confirm: Option<Confirm>,
    pub flash: Option<(String, i64)>,
    pub term: (u16, u16),

    pub sort: SortCol,
    pub selected_node: Option<String>,
    pub selected_hint: usize,
    pub detail: bool,
    pub models_sel: usize,
    pub wakeable_sel: usize,

    pub logs: LogStore,
    pub logs_view: LogsView,
    pub logs_in_flight: bool,
    pub last_logs_fetch_ms: i64,
    /// Last pull error per peer; a peer that cannot be reached must not look merely quiet.
    pub log_errors: HashMap<String, String>,

    pub requests: Vec<RequestRecord>,
    pub requests_scroll: usize,
    pub mesh: MeshRequests,
    /// Each node's CPU use over the last statuses, for NODES' sparklines.
    pub cpu: live::CpuHistory,

    pub onboarding: OnboardingView,
    /// The migration started from MODELS, while it runs and after it ended.
    pub migration: Option<MigrationRun>,
}

impl Model {
    pub fn new(url: impl Into<String>) -> Self {
        Model {
            url: base_url(&url.into()),
            now_ms: 0,
            lost_ms: None,
            spinner: 0,
            conn: Conn::Connecting,
            status: None,
            names: HashMap::new(),
            tab: Tab::Nodes,
            help: false,
            confirm: None,
            flash: None,
            term: (80, 24),
            sort: SortCol::Name,
            selected_node: None,
            selected_hint: 0,
            detail: false,
            models_sel: 0,
            wakeable_sel: 0,
            logs: LogStore::default(),
            logs_view: LogsView {
                follow: true,
                ..LogsView::default()
            },
            logs_in_flight: false,
            last_logs_fetch_ms: i64::MIN / 2,
            log_errors: HashMap::new(),
            requests: Vec::new(),
            requests_scroll: 0,
            mesh: MeshRequests::default(),
            cpu: live::CpuHistory::default(),
            onboarding: OnboardingView {
                last_fetch_ms: i64::MIN / 2,
                ..OnboardingView::default()
            },
            migration: None,
        }
    }

    /// What `node_id` served lately, from the whole mesh's records when the deck has them
    /// (whatever REQUESTS' scope), else from this node's own.
    pub fn served(&self, node_id: &str) -> live::Served {
        let records = self
            .mesh
            .view
            .as_ref()
            .map_or(&self.requests, |v| &v.requests);
        live::served(records, node_id, self.data_ms())
    }

    /// REQUESTS' records in the chosen scope (the mesh's, or this node's own), oldest first.
    pub fn shown_requests(&self) -> &[RequestRecord] {
        self.mesh.shown(&self.requests)
    }

    pub fn name_of<'a>(&'a self, node_id: &'a str) -> &'a str {
        self.names
            .get(node_id)
            .map(String::as_str)
            .unwrap_or(node_id)
    }

    /// The connected node and every peer, sorted by the current column (ties by name, then id,
    /// so rows never jitter between frames).
    pub fn node_rows(&self) -> Vec<NodeRow<'_>> {
        let Some(s) = &self.status else {
            return Vec::new();
        };
        let mut rows = Vec::with_capacity(s.peers.len() + 1);
        rows.push(NodeRow {
            node_id: &s.node_id,
            name: &s.name,
            addr: &self.url,
            is_self: true,
            state: s.state(),
            models: &s.models,
            vram_gb: s.vram_gb,
            ram_gb: s.ram_gb,
            usage: s.usage,
            load: s.in_flight,
            version: &s.version,
            participation: s.participation.as_deref(),
            last_seen_ms: None,
            split: s.split.as_ref(),
        });
        rows.extend(s.peers.iter().map(|p| NodeRow {
            node_id: &p.node_id,
            name: &p.name,
            addr: &p.addr,
            is_self: false,
            state: p.node_state(),
            models: &p.models,
            vram_gb: p.vram_gb,
            ram_gb: p.ram_gb,
            usage: p.usage,
            load: p.load,
            version: p.version.as_deref().unwrap_or(""),
            participation: p.participation.as_deref(),
            last_seen_ms: p.last_seen_ms,
            split: p.split.as_ref(),
        }));
        let sort = self.sort;
        rows.sort_by(|a, b| {
            let f = |x: Option<f64>| x.unwrap_or(-1.0);
            let primary = match sort {
                SortCol::Name => Ordering::Equal,
                // Serving first: what an operator checks first is what can take traffic.
                SortCol::State => b.state.cmp(&a.state),
                SortCol::Models => b.models.len().cmp(&a.models.len()),
                SortCol::Vram => f(b.vram_gb).total_cmp(&f(a.vram_gb)),
                SortCol::Load => b.load.cmp(&a.load),
                // Stalest first: that is the peer about to be declared dead.
                SortCol::LastSeen => a
                    .last_seen_ms
                    .unwrap_or(i64::MAX)
                    .cmp(&b.last_seen_ms.unwrap_or(i64::MAX)),
            };
            primary
                .then_with(|| a.name.cmp(b.name))
                .then_with(|| a.node_id.cmp(b.node_id))
        });
        rows
    }

    /// Index of the selected row in `rows`, following the node (not the position) across sorts.
    pub fn selected_index(&self, rows: &[NodeRow<'_>]) -> usize {
        self.selected_node
            .as_deref()
            .and_then(|id| rows.iter().position(|r| r.node_id == id))
            .unwrap_or_else(|| self.selected_hint.min(rows.len().saturating_sub(1)))
    }

    /// The node ONBOARDING and `l` act on: the NODES selection, else the connected node.
    pub fn target_node(&self) -> Option<(String, String, String)> {
        let rows = self.node_rows();
        let r = rows.get(self.selected_index(&rows))?;
        Some((r.node_id.to_string(), r.name.to_string(), base_url(r.addr)))
    }

    /// The moment the data on screen was last true: now while the node answers, the moment it
    /// was lost after. Countdowns, ages and rates are computed against this, so a dead node's
    /// view never ticks as if it were live.
    pub fn data_ms(&self) -> i64 {
        self.lost_ms.unwrap_or(self.now_ms)
    }

    pub fn model_groups(&self) -> Vec<ModelGroup> {
        let mut groups: BTreeMap<&str, ModelGroup> = BTreeMap::new();
        let mut rows = self.node_rows();
        rows.sort_by(|a, b| a.name.cmp(b.name));
        for r in &rows {
            for m in r.models {
                let g = groups.entry(m).or_insert_with(|| ModelGroup {
                    model: m.clone(),
                    replicas: Vec::new(),
                    routable: 0,
                    rps: 0.0,
                    tok_s: 0.0,
                    declared: None,
                });
                g.replicas.push((r.name.to_string(), r.state));
                g.routable += usize::from(r.state == Some(NodeState::Serving));
            }
        }
        // Requests for a model nobody lists still show: that is a routing failure worth seeing.
        for req in self.shown_requests() {
            groups
                .entry(req.model.as_str())
                .or_insert_with(|| ModelGroup {
                    model: req.model.clone(),
                    replicas: Vec::new(),
                    routable: 0,
                    rps: 0.0,
                    tok_s: 0.0,
                    declared: None,
                });
        }
        // A declared group shows even with no replica yet: "0 of 2 serving" is the news.
        for d in self.status.iter().flat_map(|s| &s.groups) {
            groups
                .entry(d.model.as_str())
                .or_insert_with(|| ModelGroup {
                    model: d.model.clone(),
                    replicas: Vec::new(),
                    routable: 0,
                    rps: 0.0,
                    tok_s: 0.0,
                    declared: None,
                })
                .declared = Some(d.clone());
        }
        let mut out: Vec<ModelGroup> = groups.into_values().collect();
        for g in &mut out {
            let r = rates(self.shown_requests(), &g.model, self.data_ms());
            (g.rps, g.tok_s) = (r.req_per_s, r.tok_per_s);
        }
        out.retain(|g| !g.replicas.is_empty() || g.rps > 0.0 || g.declared.is_some());
        out
    }

    /// Indices into `logs.lines()` that pass the node, level and search filters.
    pub fn visible_logs(&self) -> Vec<usize> {
        let v = &self.logs_view;
        let needle = v.search.to_ascii_lowercase();
        self.logs
            .lines()
            .iter()
            .enumerate()
            .filter(|(_, l)| v.node_filter.as_deref().is_none_or(|n| l.node_id == n))
            .filter(|(_, l)| v.min_level.is_none_or(|m| Level::parse(&l.level) >= m))
            .filter(|(_, l)| needle.is_empty() || contains_ci(&l.message, &needle))
            .map(|(i, _)| i)
            .collect()
    }

    /// Rows a bordered tab body can show (screen less header 3, tab bar 1, footer 1, borders 2);
    /// page keys move by this much.
    pub fn page_rows(&self) -> usize {
        usize::from(self.term.1).saturating_sub(7).max(1)
    }

    /// First visible line of a filtered log of `len` lines shown `height` rows at a time.
    pub fn log_top(&self, len: usize, height: usize) -> usize {
        if self.logs_view.follow {
            len.saturating_sub(height)
        } else {
            self.logs_view.top.min(len.saturating_sub(1))
        }
    }
}

/// Requests and completion tokens for `model` in the last [`RATE_WINDOW_MS`], per second.
pub fn rates(reqs: &[RequestRecord], model: &str, now_ms: i64) -> Rates {
    let of_model = reqs
        .iter()
        .filter(|r| r.model == model && !r.admission_check)
        .map(|r| {
            (
                r.at_ms,
                r.tokens.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
            )
        });
    infermesh_state::mesh_requests::rates(of_model, now_ms, RATE_WINDOW_MS)
}

/// ASCII case-insensitive substring test; `needle` must already be lowercase.
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}
