//! Key handling. Overlays take keys first (confirm modal, search input, help) so a key typed into
//! one can never also act on the tab underneath; DESIGN §6 lists the bindings.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{fetch_admin, fetch_mesh_requests, Cmd, Target, FLASH_MS};
use crate::fmt::{export_line, file_stamp};
use crate::model::{
    Confirm, Conn, Level, MigrateConfirm, MigrationRun, Model, ReplicaAction, ReplicaConfirm,
    Scope, Tab, TestConfirm, TestRun, WakeConfirm,
};

pub(super) fn on_key(m: &mut Model, k: KeyEvent) -> Vec<Cmd> {
    if k.kind == KeyEventKind::Release {
        return Vec::new();
    }
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return vec![Cmd::Quit];
    }
    if let Some(c) = m.confirm.take() {
        return confirm_key(m, c, k.code);
    }
    if m.logs_view.search_edit.is_some() {
        search_key(m, k.code);
        return Vec::new();
    }
    if m.help {
        m.help = false;
        return if k.code == KeyCode::Char('q') {
            vec![Cmd::Quit]
        } else {
            Vec::new()
        };
    }
    match k.code {
        KeyCode::Char('q') => vec![Cmd::Quit],
        // Esc closes what is open and never quits: a reflexive Esc must not drop the cockpit.
        KeyCode::Esc => {
            m.detail = false;
            Vec::new()
        }
        KeyCode::Char('?') => {
            m.help = true;
            Vec::new()
        }
        KeyCode::Char(c @ '1'..='7') => switch_tab(m, Tab::ALL[c as usize - '1' as usize]),
        KeyCode::Tab | KeyCode::Right => switch_tab(m, m.tab.cycle(true)),
        KeyCode::BackTab | KeyCode::Left => switch_tab(m, m.tab.cycle(false)),
        code => match m.tab {
            Tab::Nodes => nodes_key(m, code),
            Tab::Models => models_key(m, code),
            Tab::Onboarding => onboarding_key(m, code),
            Tab::Logs => logs_key(m, code),
            Tab::Requests => requests_key(m, code),
            Tab::Wakeable => wakeable_key(m, code),
            // A drawing: nothing to select or scroll.
            Tab::Topology => Vec::new(),
        },
    }
}

fn requests_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    if code == KeyCode::Char('a') {
        m.requests_scroll = 0;
        m.mesh.scope = match m.mesh.scope {
            Scope::Mesh => Scope::Node,
            Scope::Node => Scope::Mesh,
        };
        // The whole mesh now, not at the next pull (unless a pull is already out).
        if m.mesh.scope == Scope::Mesh && !m.mesh.in_flight && matches!(m.conn, Conn::Connected(_))
        {
            return vec![fetch_mesh_requests(m)];
        }
        return Vec::new();
    }
    let len = m.shown_requests().len();
    m.requests_scroll = step(m.requests_scroll, len, code, m.page_rows());
    Vec::new()
}

fn switch_tab(m: &mut Model, tab: Tab) -> Vec<Cmd> {
    m.tab = tab;
    m.detail = false;
    if tab == Tab::Onboarding {
        // Fetch now instead of showing an empty tab until the next pull.
        return fetch_admin(m).into_iter().collect();
    }
    Vec::new()
}

/// j/k/g/G/PgUp/PgDn over a list of `len`; other keys leave `cur` as it is.
fn step(cur: usize, len: usize, code: KeyCode, page: usize) -> usize {
    let last = len.saturating_sub(1);
    let next = match code {
        KeyCode::Char('j') | KeyCode::Down => cur.saturating_add(1),
        KeyCode::Char('k') | KeyCode::Up => cur.saturating_sub(1),
        KeyCode::Char('g') | KeyCode::Home => 0,
        KeyCode::Char('G') | KeyCode::End => last,
        KeyCode::PageDown => cur.saturating_add(page),
        KeyCode::PageUp => cur.saturating_sub(page),
        _ => cur,
    };
    next.min(last)
}

fn nodes_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    match code {
        KeyCode::Char('s') => m.sort = m.sort.next(),
        KeyCode::Enter => m.detail = !m.detail,
        KeyCode::Char('l') => {
            if let Some((id, _, _)) = m.target_node() {
                m.logs_view.node_filter = Some(id);
                m.logs_view.follow = true;
                m.tab = Tab::Logs;
                m.detail = false;
            }
        }
        _ => {
            let rows = m.node_rows();
            let cur = m.selected_index(&rows);
            let next = step(cur, rows.len(), code, m.page_rows());
            let id = rows.get(next).map(|r| r.node_id.to_string());
            m.selected_hint = next;
            m.selected_node = id;
        }
    }
    Vec::new()
}

fn onboarding_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    match code {
        KeyCode::Char('t') => {
            if matches!(m.onboarding.test, Some(TestRun::Running { .. })) {
                m.flash = Some((
                    "a test is already running; wait for its result".into(),
                    m.now_ms + FLASH_MS,
                ));
                return Vec::new();
            }
            let Some(b) = m.onboarding.backends.get(m.onboarding.selected).cloned() else {
                return Vec::new();
            };
            let Some((node_id, node_name, base)) = m.target_node() else {
                return Vec::new();
            };
            if m.onboarding.node_id.as_deref() != Some(&node_id) {
                return Vec::new();
            }
            // The node refuses a test of a backend that serves (409): say so before asking.
            let state = b
                .onboarding
                .as_ref()
                .and_then(|o| o.backend_state.as_deref());
            if state == Some("serving") || b.node.loaded.is_some() {
                let what = b.node.loaded.as_deref().unwrap_or("a model");
                m.flash = Some((
                    format!(
                        "backend {} serves {what} now; a test would take it from its clients, so the node refuses it (409). Test a backend that serves nothing.",
                        b.node.id
                    ),
                    m.now_ms + FLASH_MS,
                ));
                return Vec::new();
            }
            let others_serve = m
                .onboarding
                .backends
                .iter()
                .filter(|o| o.node.id != b.node.id)
                .filter_map(|o| o.node.loaded.clone())
                .collect();
            let in_flight = m
                .node_rows()
                .iter()
                .find(|r| r.node_id == node_id)
                .and_then(|r| r.load)
                .unwrap_or(0);
            m.confirm = Some(Confirm::Test(TestConfirm {
                node_id,
                node_name,
                base,
                backend_id: b.node.id.clone(),
                models: b.node.models.iter().map(|x| x.name.clone()).collect(),
                others_serve,
                in_flight,
            }));
            Vec::new()
        }
        KeyCode::Char('r') => {
            m.onboarding.in_flight = false;
            fetch_admin(m).into_iter().collect()
        }
        _ => {
            let len = m.onboarding.backends.len();
            m.onboarding.selected = step(m.onboarding.selected, len, code, m.page_rows());
            Vec::new()
        }
    }
}

/// Only an explicit yes sends; N, Esc or any other key cancels with nothing sent. The migrate
/// modal also takes the arrows that pick its source and target, and stays open for them.
fn confirm_key(m: &mut Model, c: Confirm, code: KeyCode) -> Vec<Cmd> {
    let yes = matches!(code, KeyCode::Char('y' | 'Y'));
    match c {
        Confirm::Test(t) if yes => start_test(m, t),
        Confirm::Migrate(c) if yes => start_migration(m, c),
        Confirm::Migrate(mut c) => {
            let pick = match code {
                KeyCode::Left | KeyCode::Char('h') => Some((true, false)),
                KeyCode::Right | KeyCode::Char('l') => Some((true, true)),
                KeyCode::Up | KeyCode::Char('k') => Some((false, false)),
                KeyCode::Down | KeyCode::Char('j') => Some((false, true)),
                _ => None,
            };
            if let Some((source, forward)) = pick {
                c.cycle(source, forward);
                m.confirm = Some(Confirm::Migrate(c));
            }
            Vec::new()
        }
        Confirm::Wake(w) if yes => {
            m.flash = Some((format!("waking {}…", w.id), m.now_ms + FLASH_MS));
            vec![Cmd::Wake {
                target: Target {
                    node_id: w.node_id,
                    base: w.base,
                },
                id: w.id,
            }]
        }
        Confirm::Replica(r) if yes => {
            let verb = match r.action {
                ReplicaAction::Assign => "asking",
                ReplicaAction::Unassign => "draining",
            };
            m.flash = Some((
                format!("{verb} {} for {}…", r.node().node.name, r.model),
                m.now_ms + FLASH_MS,
            ));
            vec![Cmd::Replica {
                action: r.action,
                model: r.model.clone(),
                node: r.node().node.clone(),
            }]
        }
        Confirm::Replica(mut r) => {
            let pick = match code {
                KeyCode::Up | KeyCode::Char('k') => Some(false),
                KeyCode::Down | KeyCode::Char('j') => Some(true),
                _ => None,
            };
            if let Some(forward) = pick {
                r.cycle(forward);
                m.confirm = Some(Confirm::Replica(r));
            }
            Vec::new()
        }
        Confirm::Test(_) | Confirm::Wake(_) => Vec::new(),
    }
}

fn wakeable_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    let Some(s) = &m.status else {
        return Vec::new();
    };
    let len = s.wakeable.len();
    if code != KeyCode::Char('w') {
        m.wakeable_sel = step(m.wakeable_sel, len, code, m.page_rows());
        return Vec::new();
    }
    let Some(w) = s.wakeable.get(m.wakeable_sel.min(len.saturating_sub(1))) else {
        return Vec::new();
    };
    // The node answers 409 for these; say why instead of asking.
    if let Some(state @ ("waking" | "joined")) = w.state.as_deref() {
        m.flash = Some((
            format!("{} is {state} already; nothing to wake", w.id),
            m.now_ms + FLASH_MS,
        ));
        return Vec::new();
    }
    m.confirm = Some(Confirm::Wake(WakeConfirm {
        node_id: s.node_id.clone(),
        node_name: s.name.clone(),
        base: m.url.clone(),
        id: w.id.clone(),
        provider: w.provider.clone(),
        models: w.models.clone(),
        vram_gb: w.vram_gb.map(|g| crate::fmt::gb(Some(g))),
    }));
    Vec::new()
}

fn models_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    let groups = m.model_groups();
    let action = match code {
        KeyCode::Char('a') => Some(ReplicaAction::Assign),
        KeyCode::Char('u') => Some(ReplicaAction::Unassign),
        _ => None,
    };
    if let Some(action) = action {
        let Some(g) = groups.get(m.models_sel.min(groups.len().saturating_sub(1))) else {
            return Vec::new();
        };
        match ReplicaConfirm::plan(m, &g.model, action) {
            Ok(c) => m.confirm = Some(Confirm::Replica(c)),
            Err(why) => m.flash = Some((why, m.now_ms + FLASH_MS)),
        }
        return Vec::new();
    }
    if code != KeyCode::Char('m') {
        m.models_sel = step(m.models_sel, groups.len(), code, m.page_rows());
        return Vec::new();
    }
    if m.migration.as_ref().is_some_and(|r| r.result.is_none()) {
        m.flash = Some((
            "a migration is already running; wait for it to finish".into(),
            m.now_ms + FLASH_MS,
        ));
        return Vec::new();
    }
    let Some(g) = groups.get(m.models_sel.min(groups.len().saturating_sub(1))) else {
        return Vec::new();
    };
    match MigrateConfirm::plan(m, &g.model) {
        Ok(c) => m.confirm = Some(Confirm::Migrate(c)),
        Err(why) => m.flash = Some((why, m.now_ms + FLASH_MS)),
    }
    Vec::new()
}

fn start_migration(m: &mut Model, c: MigrateConfirm) -> Vec<Cmd> {
    let (from, to) = (c.source().node.clone(), c.target().node.clone());
    m.migration = Some(MigrationRun {
        model: c.model.clone(),
        from: from.name.clone(),
        to: to.name.clone(),
        started_ms: m.now_ms,
        line: format!("asking {} to start {}", to.name, c.model),
        result: None,
    });
    vec![Cmd::Migrate {
        model: c.model,
        from,
        to,
    }]
}

fn start_test(m: &mut Model, c: TestConfirm) -> Vec<Cmd> {
    m.onboarding.test = Some(TestRun::Running {
        node_name: c.node_name,
        backend_id: c.backend_id.clone(),
        started_ms: m.now_ms,
    });
    vec![Cmd::PostTest {
        target: Target {
            node_id: c.node_id,
            base: c.base,
        },
        backend_id: c.backend_id,
    }]
}

fn search_key(m: &mut Model, code: KeyCode) {
    let v = &mut m.logs_view;
    let Some(edit) = v.search_edit.as_mut() else {
        return;
    };
    match code {
        KeyCode::Char(c) => edit.push(c),
        KeyCode::Backspace => {
            edit.pop();
        }
        KeyCode::Enter => {
            v.search = v.search_edit.take().unwrap_or_default();
            v.follow = true;
        }
        KeyCode::Esc => v.search_edit = None,
        _ => {}
    }
}

fn logs_key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    let visible = m.visible_logs();
    match code {
        KeyCode::Char('e') => return export(m, &visible),
        KeyCode::Char('f') => {
            m.logs_view.node_filter = next_node_filter(m);
            return Vec::new();
        }
        _ => {}
    }
    let len = visible.len();
    let page = m.page_rows();
    let bottom = len.saturating_sub(page);
    let cur = m.log_top(len, page);
    let v = &mut m.logs_view;
    // Any scroll pauses the tail: the operator is reading, lines must stop moving under them.
    let scroll_to = |top: usize, v: &mut crate::model::LogsView| {
        v.follow = false;
        v.top = top.min(bottom);
    };
    match code {
        KeyCode::Char('p') => {
            v.follow = !v.follow;
            v.top = cur;
        }
        KeyCode::Char('v') => {
            v.min_level = match v.min_level {
                None => Some(Level::Debug),
                Some(Level::Error) => None,
                Some(l) => Some(l.next()),
            };
        }
        KeyCode::Char('/') => v.search_edit = Some(v.search.clone()),
        KeyCode::Char('k') | KeyCode::Up => scroll_to(cur.saturating_sub(1), v),
        KeyCode::Char('j') | KeyCode::Down => scroll_to(cur + 1, v),
        KeyCode::PageUp => scroll_to(cur.saturating_sub(page), v),
        KeyCode::PageDown => scroll_to(cur + page, v),
        KeyCode::Char('g') | KeyCode::Home => scroll_to(0, v),
        KeyCode::Char('G') | KeyCode::End => v.follow = true,
        _ => {}
    }
    Vec::new()
}

/// all → each known node (by name) → all.
fn next_node_filter(m: &Model) -> Option<String> {
    let mut ids: Vec<(&str, &str)> = m
        .names
        .iter()
        .map(|(id, name)| (name.as_str(), id.as_str()))
        .collect();
    ids.sort();
    match &m.logs_view.node_filter {
        None => ids.first().map(|(_, id)| id.to_string()),
        Some(cur) => {
            let i = ids.iter().position(|(_, id)| id == cur)?;
            ids.get(i + 1).map(|(_, id)| id.to_string())
        }
    }
}

fn export(m: &mut Model, visible: &[usize]) -> Vec<Cmd> {
    let lines = m.logs.lines();
    let mut contents = String::new();
    for &i in visible {
        let l = &lines[i];
        contents.push_str(&export_line(l, m.name_of(&l.node_id)));
        contents.push('\n');
    }
    let path = format!("./infermesh-deck-logs-{}.txt", file_stamp(m.now_ms));
    vec![Cmd::Export {
        path: path.into(),
        contents,
        lines: visible.len(),
    }]
}
