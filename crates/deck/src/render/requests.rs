//! REQUESTS: the routed-request tail, newest first, under a latency sparkline.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::common::clip;
use crate::fmt::hms;
use crate::model::Model;

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    if m.requests.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                "No routed requests yet. Requests this node routes (/v1/*) appear here live.",
                Color::DarkGray,
            ))
            .block(Block::bordered().title(" REQUESTS ")),
            area,
        );
        return;
    }
    let [spark_area, table_area] =
        Layout::vertical([Constraint::Length(5), Constraint::Min(3)]).areas(area);

    let width = usize::from(spark_area.width.saturating_sub(2));
    let start = m.requests.len().saturating_sub(width);
    let data: Vec<u64> = m.requests[start..].iter().map(|r| r.latency_ms).collect();
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
    let rows = m
        .requests
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
    .block(Block::bordered().title(format!(" REQUESTS ({}) newest first ", m.requests.len())));
    f.render_widget(table, table_area);
}
