//! MODELS: one row per model with its replicas, its declared workload group and what the router
//! can use.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::common::{clip, page_offset, state_color};

pub fn render(m: &crate::model::Model, f: &mut Frame, area: Rect) {
    let area = match &m.migration {
        Some(run) => {
            let [table, line] =
                Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
            migration_line(run, m.now_ms, f, line);
            table
        }
        None => area,
    };
    let groups = m.model_groups();
    if groups.is_empty() {
        let p = Paragraph::new(
            "No models: no node in the mesh lists a model yet, and no request named one.",
        )
        .block(Block::bordered().title(" MODELS "));
        f.render_widget(p, area);
        return;
    }
    let sel = m.models_sel.min(groups.len() - 1);
    let height = usize::from(area.height.saturating_sub(3));
    let offset = page_offset(sel, height);
    let rows = groups
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, g)| {
            // Each replica name in its state's colour: the group reads as a census at a glance.
            let mut names: Vec<Span> = Vec::new();
            for (j, (name, st)) in g.replicas.iter().enumerate() {
                if j > 0 {
                    names.push(Span::raw(", "));
                }
                names.push(Span::styled(name.clone(), state_color(*st)));
            }
            if names.is_empty() {
                names.push(Span::styled("no replica", Color::Red));
            }
            let wanted = match &g.declared {
                Some(d) => {
                    names.push(Span::styled(
                        format!(" — {}", d.sentence),
                        Style::new().fg(Color::Gray),
                    ));
                    let color = if d.serving >= d.wanted {
                        Color::Green
                    } else if d.serving > 0 || d.loading > 0 {
                        Color::Yellow
                    } else {
                        Color::Red
                    };
                    Span::styled(format!("{}/{}", d.serving, d.wanted), color)
                }
                None => Span::styled("—", Color::DarkGray),
            };
            let routable = Span::styled(
                format!("{}/{}", g.routable, g.replicas.len()),
                if g.routable == 0 {
                    Color::Red
                } else {
                    Color::Green
                },
            );
            let style = if i == sel {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(vec![
                Cell::from(clip(&g.model, 32)),
                Cell::from(routable),
                Cell::from(wanted),
                Cell::from(format!("{:.2}", g.rps)),
                Cell::from(format!("{:.1}", g.tok_s)),
                Cell::from(Line::from(names)),
            ])
            .style(style)
        });
    let header = Row::new(["MODEL", "ROUTABLE", "GROUP", "REQ/S", "TOK/S", "REPLICAS"])
        .style(Style::new().bold().fg(Color::Gray));
    let table = Table::new(
        rows,
        [
            Constraint::Length(32),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(Block::bordered().title(format!(
        " MODELS ({}) — routable = serving replicas; group = serving/wanted (`infermesh group set`); req/s, tok/s over 60 s, {} ",
        groups.len(),
        if m.mesh.showing_mesh() { "whole mesh" } else { "this node" }
    )));
    f.render_widget(table, area);
}

/// The deck's own migration: running (with its age), done or stopped.
fn migration_line(run: &crate::model::MigrationRun, now_ms: i64, f: &mut Frame, area: Rect) {
    let (color, text) = match &run.result {
        None => (
            Color::Yellow,
            format!(
                "migrating {} → {} ({:.0} s): {}",
                run.from,
                run.to,
                (now_ms - run.started_ms).max(0) as f64 / 1000.0,
                run.line
            ),
        ),
        Some(Ok(())) => (Color::Green, run.line.clone()),
        Some(Err(_)) => (Color::Red, run.line.clone()),
    };
    f.render_widget(Paragraph::new(Span::styled(text, color)), area);
}
