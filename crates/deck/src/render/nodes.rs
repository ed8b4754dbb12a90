//! NODES: the connected node and every live peer.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::common::{badge, clip, page_offset};
use crate::fmt::{ago, gb};
use crate::model::live::sparkline;
use crate::model::{Model, NodeRow, SortCol};
use infermesh_state::usage::format_pct;

const COLUMNS: [(&str, Option<SortCol>); 11] = [
    ("", None),
    ("NAME", Some(SortCol::Name)),
    ("STATE", Some(SortCol::State)),
    ("MODELS", Some(SortCol::Models)),
    ("VRAM", Some(SortCol::Vram)),
    ("CPU", None),
    ("MEM", None),
    ("TOK/S", None),
    ("LOAD", Some(SortCol::Load)),
    ("VERSION", None),
    ("SEEN", Some(SortCol::LastSeen)),
];

/// Sparkline samples in the CPU cell and in the detail pane.
const CELL_SPARK: usize = 4;
const DETAIL_SPARK: usize = 30;

pub fn render(m: &Model, f: &mut Frame, area: Rect) {
    let Some(status) = &m.status else {
        let p = Paragraph::new("Waiting for the node's first status…")
            .block(Block::bordered().title(" NODES "));
        f.render_widget(p, area);
        return;
    };
    let rows = m.node_rows();
    let sel = m.selected_index(&rows);
    let (table_area, detail_area) = if m.detail {
        if area.width >= 120 {
            let [a, b] =
                Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                    .areas(area);
            (a, Some(b))
        } else {
            let [a, b] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
            (a, Some(b))
        }
    } else {
        (area, None)
    };

    let title = if status.peers.is_empty() {
        " NODES (1) — no peers yet: this node is alone in the mesh ".to_string()
    } else {
        format!(" NODES ({}) — sorted by {:?} ", rows.len(), m.sort)
    };
    let height = usize::from(table_area.height.saturating_sub(3));
    let offset = page_offset(sel, height);
    let header = Row::new(COLUMNS.iter().map(|(name, col)| {
        let mark = if *col == Some(m.sort) { "▼" } else { "" };
        Cell::from(format!("{name}{mark}"))
    }))
    .style(Style::new().bold().fg(Color::Gray));
    let body = rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, r)| row(m, r, i == sel));
    let table = Table::new(
        body,
        [
            Constraint::Length(1),
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Min(10),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title));
    f.render_widget(table, table_area);

    if let (Some(a), Some(r)) = (detail_area, rows.get(sel)) {
        detail(m, r, f, a);
    }
}

fn row<'a>(m: &Model, r: &NodeRow<'a>, selected: bool) -> Row<'a> {
    let seen = match r.last_seen_ms {
        None => "self".to_string(),
        Some(t) => ago(m.data_ms(), t),
    };
    let load = r.load.map_or("-".to_string(), |l| l.to_string());
    let cells = vec![
        Cell::from(if r.is_self { "*" } else { " " }),
        Cell::from(clip(r.name, 16)),
        Cell::from(badge(r.state)),
        Cell::from(r.models.join(",")),
        Cell::from(gb(r.vram_gb)),
        Cell::from(cpu_cell(m, r)),
        Cell::from(r.usage.map_or("-".into(), |u| bytes(u.rss_bytes))),
        Cell::from(served_now(m, r.node_id)),
        Cell::from(load),
        Cell::from(clip(r.version, 8)),
        Cell::from(seen),
    ];
    let style = if selected {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    Row::new(cells).style(style)
}

/// "37% ▂▃▅▇": the node's CPU use now and its last few samples.
fn cpu_cell(m: &Model, r: &NodeRow<'_>) -> String {
    match r.usage {
        None => "-".into(),
        Some(u) => {
            let history: Vec<f64> = m.cpu.of(r.node_id).iter().map(|x| f64::from(*x)).collect();
            format!(
                "{:>4} {}",
                format_pct(u.cpu_pct),
                sparkline(&history, CELL_SPARK, Some(100.0)).trim_start()
            )
        }
    }
}

/// Tokens/s over the last 10 s; "-" for a node that served nothing in the last 5 minutes.
fn served_now(m: &Model, node_id: &str) -> String {
    let s = m.served(node_id);
    if s.requests == 0 {
        return "-".into();
    }
    tok_s(s.tok_s.last().copied())
}

fn tok_s(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(t) if t >= 100.0 => format!("{t:.0}"),
        Some(t) => format!("{t:.1}"),
    }
}

/// "232M", "3.1G": a process's or machine's memory in a narrow column.
fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = b as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1}G", mib / 1024.0)
    } else {
        format!("{mib:.0}M")
    }
}

/// The detail pane's live lines: CPU and memory use, tokens/s and latency, with sparklines.
fn live_lines(
    m: &Model,
    r: &NodeRow<'_>,
    kv: &dyn Fn(&str, String) -> Line<'static>,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match r.usage {
        Some(u) => {
            let history: Vec<f64> = m.cpu.of(r.node_id).iter().map(|x| f64::from(*x)).collect();
            lines.push(kv(
                "cpu",
                format!(
                    "{} of {} cores (machine {})  {}",
                    format_pct(u.cpu_pct),
                    u.cores,
                    format_pct(u.machine_cpu_pct),
                    sparkline(&history, DETAIL_SPARK, Some(100.0)).trim_start()
                ),
            ));
            lines.push(kv(
                "memory",
                format!(
                    "node {} · machine {} of {} used",
                    bytes(u.rss_bytes),
                    bytes(u.mem_used_bytes),
                    bytes(u.mem_total_bytes)
                ),
            ));
            if u.vram_total_bytes > 0 {
                lines.push(kv(
                    "gpu",
                    format!(
                        "{} busy · vram {} of {} used",
                        format_pct(u.gpu_pct),
                        bytes(u.vram_used_bytes),
                        bytes(u.vram_total_bytes)
                    ),
                ));
            }
        }
        None => lines.push(kv("cpu / memory", "not reported by this node".into())),
    }
    let served = m.served(r.node_id);
    if served.requests == 0 {
        lines.push(kv("served", "no request in the last 5 min".into()));
    } else {
        lines.push(kv(
            "tokens/s",
            format!(
                "{} now  {}",
                tok_s(served.tok_s.last().copied()),
                sparkline(&served.tok_s, DETAIL_SPARK, None)
            ),
        ));
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
        lines.push(kv(
            "latency",
            format!(
                "p50 {} · p95 {} ({} requests, last 5 min)",
                ms(served.p50_ms),
                ms(served.p95_ms),
                served.requests
            ),
        ));
    }
    lines
}

fn detail(m: &Model, r: &NodeRow<'_>, f: &mut Frame, area: Rect) {
    let kv = |k: &str, v: String| {
        Line::from(vec![
            Span::styled(format!("{k:>13}: "), Color::Gray),
            Span::raw(v),
        ])
    };
    let mut lines = vec![
        Line::from(vec![
            badge(r.state),
            Span::raw(" "),
            Span::raw(r.name.to_string()).bold(),
        ]),
        kv("node id", r.node_id.to_string()),
        kv("address", r.addr.to_string()),
        kv("version", r.version.to_string()),
        kv(
            "participation",
            r.participation
                .map_or("-".to_string(), infermesh_state::labels::human),
        ),
        kv(
            "models",
            if r.models.is_empty() {
                "-".into()
            } else {
                r.models.join(", ")
            },
        ),
        kv(
            "vram / ram",
            format!("{} / {} (the machine's)", gb(r.vram_gb), gb(r.ram_gb)),
        ),
        kv("load", r.load.map_or("-".into(), |l| l.to_string())),
        kv(
            "last seen",
            r.last_seen_ms
                .map_or("connected node".into(), |t| ago(m.data_ms(), t)),
        ),
    ];
    lines.extend(live_lines(m, r, &kv));
    if let Some(claim) = r.split {
        let name_of = |id: &str| {
            m.node_rows()
                .iter()
                .find(|n| n.node_id == id)
                .map_or_else(|| id.to_string(), |n| n.name.to_string())
        };
        lines.push(kv(
            "split",
            infermesh_state::split_role::role_words(claim, name_of),
        ));
    }
    if let Some(e) = m.log_errors.get(r.node_id) {
        lines.push(kv("log pull", format!("failing: {e}")));
    }
    if r.is_self {
        if let Some(s) = &m.status {
            if let Some(msg) = &s.message {
                lines.push(kv("message", msg.clone()));
            }
            for b in &s.backends {
                let phase = b.phase.as_deref().unwrap_or("-");
                let mut text = format!("{} ({}) {phase}", b.id, b.driver);
                if let Some(a) = &b.assigned {
                    text.push_str(&format!(" · {a}"));
                }
                if let Some(d) = &b.detail {
                    text.push_str(&format!(" · {d}"));
                }
                if let Some(l) = b.load_words() {
                    text.push_str(&format!(" · {l}"));
                }
                lines.push(kv("backend", text));
            }
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" detail — Enter/Esc closes ")),
        area,
    );
}
