//! LOGS: the merged mesh log with its filters, follow mode and scrollback.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::common::{clip, level_color};
use crate::fmt::hms;
use crate::model::Model;

fn title(m: &Model, shown: usize) -> String {
    let v = &m.logs_view;
    let mode = if v.follow { "following" } else { "PAUSED" };
    let node = v.node_filter.as_deref().map_or("all", |id| m.name_of(id));
    let level = v.min_level.map_or("all", |l| l.as_str());
    let mut t = format!(" LOGS — {mode} · node {node} · level ≥ {level}");
    if !v.search.is_empty() {
        t.push_str(&format!(" · search \"{}\"", v.search));
    }
    t.push_str(&format!(" · {shown}/{} lines", m.logs.lines().len()));
    if !m.log_errors.is_empty() {
        t.push_str(&format!(" · {} nodes unreachable", m.log_errors.len()));
    }
    t.push(' ');
    t
}

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let visible = m.visible_logs();
    let block = Block::bordered().title(title(m, visible.len()));
    let height = usize::from(area.height.saturating_sub(2));
    if visible.is_empty() {
        let text = if m.logs.lines().is_empty() {
            "No log lines yet. Lines from this node arrive live; peers' lines are pulled every 2 s."
        } else {
            "No lines match the filters (f node, v level, / search)."
        };
        f.render_widget(
            Paragraph::new(Span::styled(text, Color::DarkGray)).block(block),
            area,
        );
        return;
    }
    let top = m.log_top(visible.len(), height);
    let all = m.logs.lines();
    let lines: Vec<Line> = visible[top..]
        .iter()
        .take(height)
        .map(|&i| {
            let l = &all[i];
            Line::from(vec![
                Span::styled(hms(l.at_ms), Color::DarkGray),
                Span::raw(" "),
                Span::styled(
                    format!("{:<12}", clip(m.name_of(&l.node_id), 12)),
                    Color::Cyan,
                ),
                Span::raw(" "),
                Span::styled(
                    format!("{:<5}", l.level.to_ascii_uppercase()),
                    Style::new().fg(level_color(&l.level)).bold(),
                ),
                Span::raw(" "),
                Span::raw(l.message.as_str()),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block), area);
}
