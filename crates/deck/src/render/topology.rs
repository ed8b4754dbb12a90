//! TOPOLOGY: routers at the top, each model with its replica edges (a split with its host and
//! workers' layers), idle capacity at the bottom. Drawn as lines so it reads the same at 80
//! columns as at 200, and stops at the pane's height: a 1,000-node mesh says how many more.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

use super::common::{clip, state_color, state_word};
use crate::model::topology::{topology, Member, ModelEdges};
use crate::model::Model;

/// Room kept on a names line for " and 1000 more".
const MORE_ROOM: usize = 15;
/// Replica edges drawn per model before "+N more".
const EDGES_PER_MODEL: usize = 4;
const LABEL: usize = 16;

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let rows = m.node_rows();
    let t = topology(&rows);
    let title = format!(
        " TOPOLOGY — {} nodes · {} routing · {} models · {} idle ",
        rows.len(),
        t.routers.len(),
        t.models.len(),
        t.idle.len()
    );
    let width = usize::from(area.width.saturating_sub(2));
    let mut lines: Vec<Line<'static>> = Vec::new();
    if m.status.is_none() {
        lines.push(Line::from("Waiting for the node's first status…"));
    } else {
        lines.push(names_line(
            "ROUTERS",
            &t.routers,
            "no client node: requests enter at the nodes",
            width,
        ));
        if !t.routers.is_empty() {
            lines.push(note(
                "│ each request goes to a serving replica its peers admitted",
            ));
            lines.push(note("▼"));
        }
        let budget = usize::from(area.height.saturating_sub(2)).saturating_sub(lines.len() + 2);
        let mut used = 0;
        for (i, e) in t.models.iter().enumerate() {
            let drawn = model_lines(e);
            if used + drawn.len() > budget {
                lines.push(note(&format!(
                    "… and {} more models (MODELS lists them all)",
                    t.models.len() - i
                )));
                break;
            }
            used += drawn.len();
            lines.extend(drawn);
        }
        if t.models.is_empty() {
            lines.push(label_line("MODELS", vec![Span::raw("none served yet")]));
        }
        lines.push(names_line("IDLE", &t.idle, "no standby node", width));
        if !t.other.is_empty() {
            lines.push(names_line("OTHER", &t.other, "", width));
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn note(text: &str) -> Line<'static> {
    Line::from(vec![
        Span::raw(" ".repeat(LABEL + 1)),
        Span::styled(text.to_string(), Color::DarkGray),
    ])
}

fn label_line(label: &str, mut rest: Vec<Span<'static>>) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("{:<w$} ", clip(label, LABEL), w = LABEL),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    spans.append(&mut rest);
    Line::from(spans)
}

/// "● name" in the node's state colour; "*" marks the node the deck is attached to.
fn dot(n: &Member) -> Vec<Span<'static>> {
    vec![
        Span::styled("● ", state_color(n.state)),
        Span::raw(format!("{}{}", n.name, if n.is_self { "*" } else { "" })),
    ]
}

/// "3: ● a · ● b · ● c", as many names as fit `width`, then "and N more".
fn names_line(label: &str, list: &[Member], empty: &str, width: usize) -> Line<'static> {
    if list.is_empty() {
        return label_line(
            label,
            vec![Span::styled(empty.to_string(), Color::DarkGray)],
        );
    }
    let head = format!("{}: ", list.len());
    let mut used = LABEL + 1 + head.chars().count();
    let mut spans = vec![Span::raw(head)];
    let mut shown = 0;
    for (i, n) in list.iter().enumerate() {
        let item = dot(n);
        let len: usize = item
            .iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
            + if i > 0 { 3 } else { 0 };
        let room = if i + 1 == list.len() { 0 } else { MORE_ROOM };
        if used + len + room > width && shown > 0 {
            break;
        }
        if i > 0 {
            spans.push(Span::styled(" · ", Color::DarkGray));
        }
        spans.extend(item);
        used += len;
        shown += 1;
    }
    if list.len() > shown {
        spans.push(Span::styled(
            format!(" and {} more", list.len() - shown),
            Color::DarkGray,
        ));
    }
    label_line(label, spans)
}

fn edge_text(n: &Member) -> Vec<Span<'static>> {
    let mut spans = dot(n);
    let mut words = format!(" {}", state_word(n.state));
    if let Some(load) = n.load {
        words.push_str(&format!(" · load {load}"));
    }
    spans.push(Span::styled(words, Color::Gray));
    spans
}

/// A model and its edges: one line per replica (┬ ├ └), then a split's workers (╠ ╚).
fn model_lines(e: &ModelEdges) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let shown: Vec<&Member> = e.replicas.iter().take(EDGES_PER_MODEL).collect();
    let more = e.replicas.len().saturating_sub(EDGES_PER_MODEL);
    let pad = " ".repeat(LABEL + 1);
    for (i, r) in shown.iter().enumerate() {
        let last = i + 1 == shown.len() && more == 0;
        let glyph = match (i, last) {
            (0, true) => "──── ",
            (0, false) => "─┬── ",
            (_, true) => " └── ",
            _ => " ├── ",
        };
        let mut spans = if i == 0 {
            vec![Span::styled(
                format!("{:<w$} ", clip(&e.model, LABEL), w = LABEL),
                Style::new().add_modifier(Modifier::BOLD),
            )]
        } else {
            vec![Span::raw(pad.clone())]
        };
        spans.push(Span::styled(glyph, Color::DarkGray));
        spans.extend(edge_text(r));
        lines.push(Line::from(spans));
    }
    if more > 0 {
        lines.push(Line::from(vec![
            Span::raw(pad.clone()),
            Span::styled(format!(" └── +{more} more replicas"), Color::DarkGray),
        ]));
    }
    if let Some(s) = &e.split {
        if shown.is_empty() {
            lines.push(label_line(&e.model, vec![]));
        }
        let state = if s.serving {
            "serving"
        } else {
            "not serving yet"
        };
        lines.push(Line::from(vec![
            Span::raw(pad.clone()),
            Span::styled(" ══ ", Color::Cyan),
            Span::raw(format!("split: host {} ({state})", s.host)),
        ]));
        for (i, (name, layers, ready)) in s.workers.iter().enumerate() {
            let glyph = if i + 1 == s.workers.len() {
                "    ╚═ "
            } else {
                "    ╠═ "
            };
            let up = if *ready {
                "rpc-server up"
            } else {
                "rpc-server starting"
            };
            lines.push(Line::from(vec![
                Span::raw(pad.clone()),
                Span::styled(glyph, Color::Cyan),
                Span::raw(format!("{name} carries {layers}")),
                Span::styled(format!(" · {up}"), Color::Gray),
            ]));
        }
    }
    lines
}
