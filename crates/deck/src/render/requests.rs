//! REQUESTS: the routed-request tail, newest first, under a latency sparkline; the whole mesh's
//! (merged by the node from every member) or this node's own, switched with `a`.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::common::clip;
use crate::fmt::hms;
use crate::model::{Model, Scope};

/// What the tab shows, and the other choice `a` gives.
pub fn scope_title(m: &Model) -> String {
    match (m.mesh.scope, &m.mesh.view) {
        (Scope::Node, _) => "this node · a: whole mesh".into(),
        (Scope::Mesh, None) => match &m.mesh.error {
            Some(e) => format!("this node (whole mesh unavailable: {e}) · a: this node only"),
            None => "this node (whole mesh loading) · a: this node only".into(),
        },
        (Scope::Mesh, Some(v)) => {
            let mut t = format!("whole mesh, {} nodes", v.nodes.len());
            let unread = m.mesh.unread();
            if !unread.is_empty() {
                let names: Vec<String> = unread.iter().map(|(n, e)| format!("{n} ({e})")).collect();
                t.push_str(&format!(", {} unread: {}", unread.len(), names.join(", ")));
            }
            if let Some(e) = &m.mesh.error {
                t.push_str(&format!(", as of {} (last pull: {e})", hms(m.mesh.view_ms)));
            }
            t + " · a: this node only"
        }
    }
}

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let reqs = m.shown_requests();
    let title = clip(
        &format!(" REQUESTS · {} ", scope_title(m)),
        usize::from(area.width.saturating_sub(2)),
    );
    if reqs.is_empty() {
        let text = match (m.mesh.scope, &m.mesh.view) {
            (Scope::Mesh, Some(_)) => {
                "No routed requests in the mesh yet. Requests any node routes (/v1/*) appear here within 2 s."
            }
            _ => "No routed requests yet. Requests this node routes (/v1/*) appear here live.",
        };
        f.render_widget(
            Paragraph::new(Span::styled(text, Color::DarkGray))
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    }
    let [spark_area, table_area] =
        Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(area);

    let width = usize::from(spark_area.width.saturating_sub(2));
    let start = reqs.len().saturating_sub(width);
    let data: Vec<u64> = reqs[start..].iter().map(|r| r.latency_ms).collect();
    let max = data.iter().copied().max().unwrap_or(0);
    let spark = Sparkline::default()
        .data(&data)
        .style(Style::new().fg(Color::Cyan))
        .block(Block::bordered().title(format!(
            " latency, last {} requests (max {max} ms) ",
            data.len()
        )));
    f.render_widget(spark, spark_area);

    let height = usize::from(table_area.height.saturating_sub(3));
    let rows = reqs
        .iter()
        .rev()
        .skip(m.requests_scroll)
        .take(height)
        .map(|r| {
            let from = r.from.as_deref().map_or("-", |id| m.name_of(id));
            let to = match (&r.to_name, &r.to) {
                (Some(n), _) => n.as_str(),
                (None, Some(id)) => m.name_of(id),
                (None, None) => "no replica",
            };
            let ok = (200..300).contains(&r.status);
            let status = Span::styled(
                r.status.to_string(),
                if ok { Color::Green } else { Color::Red },
            );
            let mut tail = r.tokens.map_or("-".into(), |t| t.to_string());
            if r.admission_check {
                tail = format!("{tail} admission check");
            }
            if let Some(e) = &r.error {
                tail = format!("{tail} {e}");
            }
            Row::new(vec![
                Cell::from(hms(r.at_ms)),
                Cell::from(format!("{} → {}", clip(from, 12), clip(to, 12))),
                Cell::from(clip(&r.model, 24)),
                Cell::from(status),
                Cell::from(format!("{} ms", r.latency_ms)),
                Cell::from(tail),
            ])
        });
    let header = Row::new(["TIME", "FROM → TO", "MODEL", "STATUS", "LATENCY", "TOKENS"])
        .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(27),
            Constraint::Length(24),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Min(6),
        ],
    )
    .header(header)
    .block(
        Block::bordered()
            .title(title)
            .title_bottom(format!(" {} newest first ", reqs.len())),
    );
    f.render_widget(table, table_area);
}
