//! ONBOARDING: the selected node's backends, their onboarding state and tests.
//!
//! Sentences come from the node's `message` verbatim; the deck adds numbers (countdown, timings),
//! never a state sentence of its own.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::common::{clip, page_offset, spinner};
use crate::api::{AdminNode, TestResult};
use crate::fmt::countdown;
use crate::model::{Model, TestRun};

fn backend_state_color(s: &str) -> Color {
    match s {
        "serving" => Color::Green,
        "testing" => Color::Cyan,
        "test_failed" => Color::Red,
        "waiting" => Color::Yellow,
        _ => Color::Magenta,
    }
}

fn last_test_summary(t: Option<&TestResult>) -> Span<'static> {
    match t {
        None => Span::styled("never", Color::DarkGray),
        Some(t) if t.ok => {
            let ms: u64 = t
                .models
                .iter()
                .map(|m| m.load_ms + m.health_ms + m.infer_ms)
                .sum();
            Span::styled(format!("pass {ms}ms"), Color::Green)
        }
        Some(t) => Span::styled(
            format!("FAIL {}", t.failing_model.as_deref().unwrap_or("")),
            Color::Red,
        ),
    }
}

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let ob = &m.onboarding;
    let node = m.target_node();
    let title = match &node {
        Some((_, name, base)) => format!(" ONBOARDING — node {name} ({base}) "),
        None => " ONBOARDING ".to_string(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);

    let mut notes: Vec<Line> = Vec::new();
    if node.is_none() {
        notes.push(Line::from("Waiting for the node's first status…"));
    } else if let Some(e) = &ob.error {
        notes.push(Line::from(Span::styled(
            format!("cannot read backends: {e}"),
            Color::Red,
        )));
    } else if ob.backends.is_empty() && ob.in_flight {
        notes.push(Line::from(format!("{} loading backends…", spinner(m))));
    } else if ob.backends.is_empty() {
        notes.push(Line::from(
            "This node has no backends: it is a client. Select another node on NODES (1).",
        ));
    }
    if !notes.is_empty() {
        f.render_widget(Paragraph::new(notes).wrap(Wrap { trim: true }), inner);
        return;
    }

    let table_h = (ob.backends.len() as u16 + 1).min(inner.height / 2).max(2);
    let [table_area, detail_area] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(1)]).areas(inner);
    backends_table(m, f, table_area);
    if let Some(b) = ob.backends.get(ob.selected) {
        detail(m, b, f, detail_area);
    }
}

fn backends_table(m: &Model, f: &mut Frame, area: Rect) {
    let ob = &m.onboarding;
    let height = usize::from(area.height.saturating_sub(1));
    let offset = page_offset(ob.selected, height);
    let rows = ob
        .backends
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, b)| {
            let o = b.onboarding.as_ref();
            let state = o
                .and_then(|o| o.backend_state.as_deref())
                .unwrap_or("unknown");
            let part = o
                .and_then(|o| o.participation.as_deref())
                .map_or("-".to_string(), infermesh_state::labels::human);
            let next = o.map_or("-".to_string(), |o| {
                countdown(&o.timing, ob.fetched_ms, m.data_ms())
            });
            let msg = o.and_then(|o| o.message.as_deref()).unwrap_or("");
            let style = if i == ob.selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(clip(&b.node.id, 12)),
                Cell::from(Span::styled(
                    infermesh_state::labels::human(state),
                    backend_state_color(state),
                )),
                Cell::from(part),
                Cell::from(next),
                Cell::from(last_test_summary(o.and_then(|o| o.last_test.as_ref()))),
                Cell::from(msg.to_string()),
            ])
            .style(style)
        });
    let header = Row::new([
        "BACKEND",
        "STATE",
        "PARTICIPATION",
        "NEXT ROUND",
        "LAST TEST",
        "MESSAGE",
    ])
    .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(
        rows,
        [
            // Fixed columns hold "Inactive — waiting for round" and "schedule syncing" whole; the
            // message column takes what is left and the full sentence is repeated below the table.
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Length(28),
            // "running, ends in 23h 59m" whole: a cut countdown reads as a different time.
            Constraint::Length(24),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
    )
    .header(header);
    f.render_widget(table, area);
}

fn detail(m: &Model, b: &AdminNode, f: &mut Frame, area: Rect) {
    let o = b.onboarding.as_ref();
    let mut lines = vec![Line::default()];
    let models: Vec<&str> = b.node.models.iter().map(|x| x.name.as_str()).collect();
    lines.push(Line::from(vec![
        Span::styled(format!("{} ", b.node.id), Style::new().bold()),
        Span::styled(
            format!(
                "driver {} · phase {} · models {}",
                b.node.driver,
                b.node.phase.as_deref().unwrap_or("-"),
                if models.is_empty() {
                    "-".to_string()
                } else {
                    models.join(", ")
                }
            ),
            Color::Gray,
        ),
    ]));
    match o.and_then(|o| o.message.as_deref()) {
        Some(msg) => lines.push(Line::from(Span::raw(msg.to_string()).bold())),
        None => lines.push(Line::from(Span::styled(
            "the node reports no onboarding view for this backend",
            Color::DarkGray,
        ))),
    }
    if let Some(fm) = o.and_then(|o| o.failing_model.as_deref()) {
        lines.push(Line::from(Span::styled(
            format!("failing model: {fm}"),
            Color::Red,
        )));
    }
    lines.push(Line::default());

    let shown_test = match &ob_test(m, &b.node.id) {
        Some(TestRun::Running {
            node_name,
            backend_id,
            started_ms,
        }) => {
            lines.push(Line::from(Span::styled(
                format!(
                    "{} testing… backend {backend_id} on node {node_name} ({}s)",
                    spinner(m),
                    (m.now_ms - started_ms).max(0) / 1000
                ),
                Color::Cyan,
            )));
            None
        }
        Some(TestRun::Done {
            node_name,
            backend_id,
            result,
        }) => {
            let (word, color) = if result.ok {
                ("PASSED", Color::Green)
            } else {
                ("FAILED", Color::Red)
            };
            lines.push(Line::from(vec![
                Span::raw(format!(
                    "test of backend {backend_id} on node {node_name}: "
                )),
                Span::styled(word, Style::new().fg(color).bold()),
            ]));
            Some(result.clone())
        }
        Some(TestRun::Failed {
            node_name,
            backend_id,
            error,
        }) => {
            lines.push(Line::from(Span::styled(
                format!("test of backend {backend_id} on node {node_name} was not run: {error}"),
                Color::Red,
            )));
            None
        }
        None => {
            let last = o.and_then(|o| o.last_test.clone());
            if last.is_some() {
                lines.push(Line::from(Span::styled("last test:", Color::Gray)));
            } else {
                lines.push(Line::from(Span::styled(
                    "never tested here — press t to test it",
                    Color::DarkGray,
                )));
            }
            last
        }
    };
    let text_h = (lines.len() as u16).min(area.height);
    let [text_area, table_area] =
        Layout::vertical([Constraint::Length(text_h), Constraint::Min(0)]).areas(area);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text_area);
    if let Some(t) = shown_test {
        timings(&t, f, table_area);
    }
}

/// The deck's own test run, when it concerns this backend; otherwise the node's `last_test` shows.
fn ob_test(m: &Model, backend: &str) -> Option<TestRun> {
    let t = m.onboarding.test.as_ref()?;
    let id = match t {
        TestRun::Running { backend_id, .. }
        | TestRun::Done { backend_id, .. }
        | TestRun::Failed { backend_id, .. } => backend_id,
    };
    (id == backend || matches!(t, TestRun::Running { .. })).then(|| t.clone())
}

fn timings(t: &TestResult, f: &mut Frame, area: Rect) {
    let rows = t.models.iter().map(|r| {
        let err = r.error.as_deref().unwrap_or("");
        let style = if err.is_empty() {
            Style::new()
        } else {
            Style::new().fg(Color::Red)
        };
        Row::new(vec![
            Cell::from(clip(&r.model, 28)),
            Cell::from(format!("{}", r.load_ms)),
            Cell::from(format!("{}", r.health_ms)),
            Cell::from(format!("{}", r.infer_ms)),
            Cell::from(if err.is_empty() {
                "ok".to_string()
            } else {
                err.to_string()
            }),
        ])
        .style(style)
    });
    let header = Row::new(["MODEL", "LOAD ms", "HEALTH ms", "INFER ms", "RESULT"])
        .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(
        rows,
        [
            Constraint::Length(28),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Min(6),
        ],
    )
    .header(header);
    f.render_widget(table, area);
}
