//! `update(&mut Model, Msg) -> Vec<Cmd>`: the only place the model changes.
//!
//! Effects are returned as data so the whole deck's behaviour (which fetch happens when, what a key
//! sends) is testable without a terminal or a network.

mod keys;

use std::path::PathBuf;

use crossterm::event::KeyEvent;

use crate::api::{
    base_url, AdminNode, LogLine, MeshRequestsBody, RequestRecord, Status, TestResult,
};
use crate::migrate;
use crate::model::{Conn, Model, Scope, Tab, TestRun, Via, REQUEST_CAP};

/// How often peers' logs and the ONBOARDING view are re-pulled.
pub const PULL_EVERY_MS: i64 = 2_000;
/// How long a flash message stays in the footer.
pub const FLASH_MS: i64 = 6_000;

#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Resize(u16, u16),
    /// Wall clock, Unix ms: the only way time enters the model.
    Tick(i64),
    Connected(Via),
    Disconnected {
        attempt: u32,
        error: String,
    },
    Status(Box<Status>),
    Log(LogLine),
    /// Lines pulled from one node's `/api/logs`.
    Logs {
        node_id: String,
        lines: Vec<LogLine>,
    },
    LogsFailed {
        node_id: String,
        error: String,
    },
    /// A `Cmd::FetchLogs` round finished (successes and failures were reported one by one).
    LogsDone,
    Request(RequestRecord),
    Requests(Vec<RequestRecord>),
    /// The connected node's answer to `Cmd::FetchMeshRequests`.
    MeshRequests(Result<MeshRequestsBody, String>),
    Admin {
        node_id: String,
        result: Result<Vec<AdminNode>, String>,
    },
    TestDone {
        node_id: String,
        backend_id: String,
        result: Result<TestResult, String>,
    },
    Exported(Result<(String, usize), String>),
    /// The node's answer to `Cmd::Wake`: the entry's new state, or why it refused.
    WakeDone {
        id: String,
        result: Result<String, String>,
    },
    /// Progress of the migration `Cmd::Migrate` started.
    Migration(migrate::Step),
    MigrationDone(Result<migrate::Outcome, String>),
    /// The outcome of `Cmd::Replica`, as one sentence for the footer.
    ReplicaDone(Result<String, String>),
}

/// A node to pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node_id: String,
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    FetchLogs(Vec<Target>),
    /// `GET /api/mesh/requests` on the connected node (its base URL).
    FetchMeshRequests(String),
    FetchAdmin(Target),
    PostTest {
        target: Target,
        backend_id: String,
    },
    Export {
        path: PathBuf,
        contents: String,
        lines: usize,
    },
    /// Signed `POST /admin/v1/wakeable/:id/wake` on the node that lists the entry.
    Wake {
        target: Target,
        id: String,
    },
    /// Signed `POST /admin/v1/replicas` (assign) or `…/replicas/:model/drain` (unassign) on
    /// `node`.
    Replica {
        action: crate::model::ReplicaAction,
        model: String,
        node: migrate::Endpoint,
    },
    /// Signed admin calls on both nodes, in order (see [`crate::migrate`]).
    Migrate {
        model: String,
        from: migrate::Endpoint,
        to: migrate::Endpoint,
    },
    Quit,
}

pub fn update(m: &mut Model, msg: Msg) -> Vec<Cmd> {
    match msg {
        Msg::Key(k) => return keys::on_key(m, k),
        Msg::Resize(w, h) => m.term = (w, h),
        Msg::Tick(now) => return on_tick(m, now),
        Msg::Connected(via) => {
            m.conn = Conn::Connected(via);
            m.lost_ms = None;
        }
        Msg::Disconnected { attempt, error } => {
            m.conn = Conn::Reconnecting { attempt, error };
            m.lost_ms.get_or_insert(m.now_ms);
        }
        Msg::Status(s) => on_status(m, *s),
        Msg::Log(l) => {
            // Live lines come from the connected node; one without `node_id` is its own.
            let source = source_or_self(m, l.node_id.clone());
            merge_logs(m, &source, vec![l]);
        }
        Msg::Logs { node_id, lines } => {
            let source = source_or_self(m, node_id);
            m.log_errors.remove(&source);
            merge_logs(m, &source, lines);
        }
        Msg::LogsFailed { node_id, error } => {
            m.log_errors.insert(node_id, error);
        }
        Msg::LogsDone => m.logs_in_flight = false,
        Msg::Request(r) => merge_requests(m, vec![r]),
        Msg::Requests(rs) => merge_requests(m, rs),
        Msg::MeshRequests(r) => {
            m.mesh.in_flight = false;
            match r {
                Ok(view) => {
                    m.mesh.view = Some(view);
                    m.mesh.view_ms = m.now_ms;
                    m.mesh.error = None;
                }
                Err(e) => m.mesh.error = Some(e),
            }
        }
        Msg::Admin { node_id, result } => on_admin(m, node_id, result),
        Msg::TestDone {
            node_id: _,
            backend_id,
            result,
        } => on_test_done(m, backend_id, result),
        Msg::Exported(r) => {
            let text = match r {
                Ok((path, n)) => format!("exported {n} lines to {path}"),
                Err(e) => format!("export failed: {e}"),
            };
            m.flash = Some((text, m.now_ms + FLASH_MS));
        }
        Msg::WakeDone { id, result } => {
            let text = match result {
                Ok(state) => format!(
                    "wake of {id} started ({state}): the node runs its command and watches for it to join"
                ),
                Err(e) => format!("wake of {id} refused: {e}"),
            };
            m.flash = Some((text, m.now_ms + FLASH_MS));
        }
        Msg::Migration(step) => on_migration_step(m, step),
        Msg::MigrationDone(r) => on_migration_done(m, r),
        Msg::ReplicaDone(r) => {
            let text = r.unwrap_or_else(|e| e);
            m.flash = Some((text, m.now_ms + FLASH_MS));
        }
    }
    Vec::new()
}

fn on_migration_step(m: &mut Model, step: migrate::Step) {
    let Some(run) = m.migration.as_mut() else {
        return;
    };
    run.line = match step {
        migrate::Step::Loading => format!("1/3 {} is loading {}", run.to, run.model),
        migrate::Step::Waiting(now) => format!("1/3 {} is loading {}: {now}", run.to, run.model),
        migrate::Step::Admitted(secs) => format!(
            "2/3 {} serves {} and {} admitted it ({secs:.1} s); {} drains",
            run.to, run.model, run.from, run.from
        ),
    };
}

fn on_migration_done(m: &mut Model, r: Result<migrate::Outcome, String>) {
    let Some(run) = m.migration.as_mut() else {
        return;
    };
    let text = match &r {
        Ok(o) => format!(
            "3/3 {} moved from {} to {} in {:.1} s ({} requests finished on {}, {} cut off)",
            run.model, run.from, run.to, o.secs, o.finished, run.from, o.cut_off
        ),
        Err(e) => format!("migration of {} stopped: {e}", run.model),
    };
    run.line = text.clone();
    run.result = Some(r.map(|_| ()));
    m.flash = Some((text, m.now_ms + FLASH_MS));
}

/// An empty source means the connected node (the live feed may not know its id yet).
fn source_or_self(m: &Model, node_id: String) -> String {
    match &m.status {
        Some(s) if node_id.is_empty() => s.node_id.clone(),
        _ => node_id,
    }
}

fn on_tick(m: &mut Model, now: i64) -> Vec<Cmd> {
    m.now_ms = now;
    m.spinner = m.spinner.wrapping_add(1);
    if m.flash.as_ref().is_some_and(|(_, until)| *until <= now) {
        m.flash = None;
    }
    let mut cmds = Vec::new();
    // Pulls only run while the node answers: peer addresses come from its status, and a pull
    // storm against a mesh we cannot see would only produce stale errors.
    if matches!(m.conn, Conn::Connected(_))
        && !m.logs_in_flight
        && now - m.last_logs_fetch_ms >= PULL_EVERY_MS
    {
        let targets = peer_targets(m);
        m.last_logs_fetch_ms = now;
        if !targets.is_empty() {
            m.logs_in_flight = true;
            cmds.push(Cmd::FetchLogs(targets));
        }
    }
    // REQUESTS and MODELS' req/s read the mesh view, so it is pulled whatever the tab.
    if matches!(m.conn, Conn::Connected(_))
        && m.mesh.scope == Scope::Mesh
        && !m.mesh.in_flight
        && now - m.mesh.last_fetch_ms >= PULL_EVERY_MS
    {
        cmds.push(fetch_mesh_requests(m));
    }
    if m.tab == Tab::Onboarding && now - m.onboarding.last_fetch_ms >= PULL_EVERY_MS {
        cmds.extend(fetch_admin(m));
    }
    cmds
}

pub(crate) fn fetch_mesh_requests(m: &mut Model) -> Cmd {
    m.mesh.in_flight = true;
    m.mesh.last_fetch_ms = m.now_ms;
    Cmd::FetchMeshRequests(m.url.clone())
}

/// Every peer but the connected node, whose own lines arrive on the live feed.
fn peer_targets(m: &Model) -> Vec<Target> {
    let Some(s) = &m.status else {
        return Vec::new();
    };
    s.peers
        .iter()
        .filter(|p| !p.addr.is_empty() && p.node_id != s.node_id)
        .map(|p| Target {
            node_id: p.node_id.clone(),
            base: base_url(&p.addr),
        })
        .collect()
}

/// Fetches the ONBOARDING node's backends unless a fetch is already out.
pub(crate) fn fetch_admin(m: &mut Model) -> Option<Cmd> {
    let (node_id, _, base) = m.target_node()?;
    if m.onboarding.node_id.as_deref() != Some(&node_id) {
        // A different node: drop the old rows now rather than show them under the new name.
        m.onboarding.node_id = Some(node_id.clone());
        m.onboarding.backends.clear();
        m.onboarding.error = None;
        m.onboarding.selected = 0;
        m.onboarding.in_flight = false;
    }
    if m.onboarding.in_flight {
        return None;
    }
    m.onboarding.in_flight = true;
    m.onboarding.last_fetch_ms = m.now_ms;
    Some(Cmd::FetchAdmin(Target { node_id, base }))
}

fn on_status(m: &mut Model, mut s: Status) {
    // The node sends each peer's silence as an age; pinning it to our clock at receipt keeps
    // "2s ago" growing between updates instead of freezing at the last value.
    for p in &mut s.peers {
        p.last_seen_ms = p.last_seen_ms.map(|age| m.now_ms - age);
    }
    m.names.insert(s.node_id.clone(), s.name.clone());
    for p in &s.peers {
        m.names.insert(p.node_id.clone(), p.name.clone());
    }
    let cpu: Vec<(&str, Option<f32>)> = std::iter::once((s.node_id.as_str(), s.usage))
        .chain(s.peers.iter().map(|p| (p.node_id.as_str(), p.usage)))
        .map(|(id, u)| (id, u.map(|u| u.cpu_pct)))
        .collect();
    m.cpu.record(&cpu);
    m.status = Some(s);
}

/// Public so the merge is testable with lines from several nodes without going through keys.
pub fn merge_logs(m: &mut Model, source: &str, lines: Vec<LogLine>) {
    let before = m.logs.lines().len();
    let added = m.logs.merge(source, lines);
    let after = m.logs.lines().len();
    // A paused view must not slide when the bounded store drops its oldest lines.
    if !m.logs_view.follow && after < before + added {
        let dropped = before + added - after;
        m.logs_view.top = m.logs_view.top.saturating_sub(dropped);
    }
}

fn merge_requests(m: &mut Model, rs: Vec<RequestRecord>) {
    for r in rs {
        // `id` restarts with the node; `at_ms` tells a new record 17 from the old one.
        if m.requests
            .iter()
            .rev()
            .take(REQUEST_CAP)
            .any(|x| x.id == r.id && x.at_ms == r.at_ms)
        {
            continue;
        }
        let pos = m.requests.partition_point(|x| x.at_ms <= r.at_ms);
        m.requests.insert(pos, r);
    }
    if m.requests.len() > REQUEST_CAP {
        let drop = m.requests.len() - REQUEST_CAP;
        m.requests.drain(..drop);
    }
}

fn on_admin(m: &mut Model, node_id: String, result: Result<Vec<AdminNode>, String>) {
    let ob = &mut m.onboarding;
    if ob.node_id.as_deref() != Some(&node_id) {
        return; // Answer for a node the operator has since moved away from.
    }
    ob.in_flight = false;
    match result {
        Ok(b) => {
            ob.backends = b;
            ob.fetched_ms = m.now_ms;
            ob.error = None;
            ob.selected = ob.selected.min(ob.backends.len().saturating_sub(1));
        }
        Err(e) => ob.error = Some(e),
    }
}

fn on_test_done(m: &mut Model, backend_id: String, result: Result<TestResult, String>) {
    let node_name = match &m.onboarding.test {
        Some(TestRun::Running { node_name, .. }) => node_name.clone(),
        _ => String::new(),
    };
    m.onboarding.test = Some(match result {
        Ok(result) => TestRun::Done {
            node_name,
            backend_id,
            result,
        },
        Err(error) => TestRun::Failed {
            node_name,
            backend_id,
            error,
        },
    });
    // The backend's state and last_test changed on the node: show them without waiting a round.
    m.onboarding.last_fetch_ms = i64::MIN / 2;
}
