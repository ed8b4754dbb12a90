//! WAKEABLE: suspended capacity the node knows how to wake; never routed to.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::common::{clip, page_offset};
use crate::fmt::gb;
use crate::model::Model;

pub const EMPTY: &str =
    "No wakeable capacity configured. Declare [[wakeable]] entries in the node \
config to list suspended machines here; they are never routed to.";

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let list = m
        .status
        .as_ref()
        .map(|s| s.wakeable.as_slice())
        .unwrap_or(&[]);
    if list.is_empty() {
        f.render_widget(
            Paragraph::new(EMPTY)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(" WAKEABLE ")),
            area,
        );
        return;
    }
    let height = usize::from(area.height.saturating_sub(3));
    let sel = m.wakeable_sel.min(list.len() - 1);
    let offset = page_offset(sel, height);
    let rows = list
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, w)| {
            let state = w.state.as_deref().unwrap_or("unknown");
            let style = if i == sel {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(clip(&w.id, 16)),
                Cell::from(clip(&w.provider, 12)),
                Cell::from(w.models.join(",")),
                Cell::from(gb(w.vram_gb)),
                Cell::from(Span::styled(state.to_string(), Color::Yellow)),
            ])
            .style(style)
        });
    let header = Row::new(["ID", "PROVIDER", "MODELS", "VRAM", "STATE"])
        .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(
        rows,
        [
            Constraint::Length(16),
            Constraint::Length(12),
            Constraint::Min(10),
            Constraint::Length(6),
            Constraint::Length(12),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(
        " WAKEABLE ({}) — suspended capacity, never routed to; w wakes the selected one ",
        list.len()
    )));
    f.render_widget(table, area);
}
