//! Pieces every tab shares: the state badge and its colours, header, tab bar, footer, overlays.
//!
//! One colour per node state, defined only here, so a state reads the same in every tab.

use infermesh_state::NodeState;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use crate::model::{Conn, Model, Tab, Via};

/// The dashboard's palette (client grey, standby blue, loading amber, serving green), in colours
/// that read both as text on a dark terminal and as a badge behind black text: a dark blue badge
/// made `client` nearly unreadable.
pub fn state_color(s: Option<NodeState>) -> Color {
    match s {
        Some(NodeState::Client) => Color::Gray,
        Some(NodeState::Standby) => Color::LightBlue,
        Some(NodeState::Loading) => Color::Yellow,
        Some(NodeState::Serving) => Color::Green,
        None => Color::Magenta,
    }
}

pub fn state_word(s: Option<NodeState>) -> &'static str {
    s.map_or("unknown", NodeState::as_str)
}

/// ` serving ` on the state's colour; fixed width so badge columns line up.
pub fn badge(s: Option<NodeState>) -> Span<'static> {
    Span::styled(
        format!(" {:<7} ", state_word(s)),
        Style::new()
            .fg(Color::Black)
            .bg(state_color(s))
            .add_modifier(Modifier::BOLD),
    )
}

pub fn level_color(level: &str) -> Color {
    match crate::model::Level::parse(level) {
        crate::model::Level::Error => Color::Red,
        crate::model::Level::Warn => Color::Yellow,
        crate::model::Level::Info => Color::Green,
        crate::model::Level::Debug => Color::Blue,
        crate::model::Level::Trace => Color::DarkGray,
    }
}

pub const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

pub fn spinner(m: &Model) -> &'static str {
    SPINNER[m.spinner % SPINNER.len()]
}

pub fn conn_span(m: &Model) -> Span<'static> {
    match &m.conn {
        Conn::Connecting => Span::styled(format!("{} connecting…", spinner(m)), Color::Yellow),
        Conn::Connected(Via::Sse) => Span::styled("● connected (live)", Color::Green),
        Conn::Connected(Via::Polling) => Span::styled("● connected (polling)", Color::Green),
        Conn::Reconnecting { attempt, error } => {
            let since = m
                .lost_ms
                .map(|t| format!("unreachable since {} UTC, ", &crate::fmt::hms(t)[..8]))
                .unwrap_or_default();
            Span::styled(
                format!(
                    "✖ {since}{} reconnecting (attempt {attempt}, {error})",
                    spinner(m)
                ),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        }
    }
}

/// Greys `area` out: colours and emphasis dropped, so nothing last seen reads as live.
pub fn grey_out(f: &mut Frame, area: Rect) {
    f.buffer_mut().set_style(
        area,
        Style::new()
            .fg(Color::DarkGray)
            .bg(Color::Reset)
            .remove_modifier(Modifier::BOLD | Modifier::REVERSED),
    );
}

/// Three lines: where the deck is connected, what that node says about itself, the mesh census.
pub fn header(m: &Model, f: &mut Frame, area: Rect) {
    let mut l1 = Vec::new();
    // A lost node needs the whole line for when and why; the title can go.
    if m.lost_ms.is_none() {
        l1.push(Span::styled("infermesh deck ", Style::new().bold()));
    }
    l1.extend([Span::raw(m.url.clone()), Span::raw("  ")]);
    l1.push(conn_span(m));
    let l2 = match &m.status {
        Some(s) => {
            let mut spans = vec![
                badge(s.state()),
                Span::raw(" "),
                Span::raw(s.name.clone()).bold(),
            ];
            if let Some(msg) = s.message.as_deref().filter(|t| !t.is_empty()) {
                spans.push(Span::raw(format!(" — {msg}")));
            }
            // A client's message already is the notice; anyone else gets it added, loudly.
            if let Some(pm) = s
                .peer_message
                .as_deref()
                .filter(|p| Some(*p) != s.message.as_deref())
            {
                spans.push(Span::styled(format!(" · {pm}"), Color::Yellow));
            }
            Line::from(spans)
        }
        None => Line::from(Span::styled("no status received yet", Color::DarkGray)),
    };
    let l3 = match &m.status {
        Some(s) => {
            let mut counts = [0usize; 5];
            for p in &s.peers {
                let i = p.node_state().map_or(4, |st| st as usize);
                counts[i] += 1;
            }
            let mut spans = vec![Span::raw(format!("peers {}: ", s.peers.len()))];
            let slots = NodeState::ALL.iter().map(|st| Some(*st)).chain([None]);
            for (i, st) in slots.enumerate() {
                if counts[i] == 0 && st.is_none() {
                    continue; // "0 unknown" is noise; the four real states always show.
                }
                if i > 0 {
                    spans.push(Span::raw(" · "));
                }
                spans.push(Span::styled(
                    format!("{} {}", counts[i], state_word(st)),
                    state_color(st),
                ));
            }
            Line::from(spans)
        }
        None => Line::default(),
    };
    f.render_widget(Paragraph::new(vec![Line::from(l1), l2, l3]), area);
}

pub fn tab_bar(m: &Model, f: &mut Frame, area: Rect) {
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())));
    let mut tabs = Tabs::new(titles)
        .select(m.tab.index())
        .highlight_style(Style::new().fg(Color::Black).bg(Color::White).bold())
        .divider(" ");
    // Seven tabs padded on both sides need 83 columns: an 80-column terminal drops the right pad
    // rather than the last tab.
    if area.width < 84 {
        tabs = tabs.padding(" ", "");
    }
    f.render_widget(tabs, area);
}

fn hints(m: &Model) -> &'static str {
    match m.tab {
        Tab::Nodes => "j/k move  g/G ends  s sort  ⏎ detail  l logs  1-7 tabs  ? help  q quit",
        Tab::Models => "j/k move  a assign  u unassign  m migrate  1-7/Tab  ? help  q quit",
        Tab::Onboarding => "j/k backend  t test  r refresh  1-7/Tab tabs  ? help  q quit",
        Tab::Logs => {
            "f node  v level  p pause  / search  e export  j/k PgUp/PgDn g/G scroll  ? help  q quit"
        }
        Tab::Requests => "j/k scroll  a this node/whole mesh  1-7/Tab tabs  ? help  q quit",
        Tab::Wakeable => "j/k move  w wake  1-7/Tab tabs  ? help  q quit",
        Tab::Topology => "1-7/Tab tabs  ? help  q quit",
    }
}

pub fn footer(m: &Model, f: &mut Frame, area: Rect) {
    let line = if let Some(edit) = &m.logs_view.search_edit {
        Line::from(vec![
            Span::styled("search: ", Color::Yellow),
            Span::raw(format!("{edit}▏")),
            Span::styled("  ⏎ apply  Esc cancel", Color::DarkGray),
        ])
    } else if let Some((text, _)) = &m.flash {
        Line::from(Span::styled(
            text.clone(),
            Style::new().fg(Color::Yellow).bold(),
        ))
    } else {
        Line::from(Span::styled(hints(m), Color::DarkGray))
    };
    f.render_widget(Paragraph::new(line), area);
}

/// A `w`×`h` rectangle centred in `area`, clipped to it.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}

pub const HELP: &[(&str, &str)] = &[
    (
        "1-7",
        "switch tab (NODES MODELS ONBOARDING LOGS REQUESTS WAKEABLE TOPOLOGY)",
    ),
    ("Tab/Shift-Tab ←/→", "next / previous tab"),
    ("j/k ↓/↑", "move selection or scroll"),
    ("g/G Home/End", "first / last"),
    ("PgUp/PgDn", "page"),
    ("s", "NODES: cycle sort column"),
    ("Enter", "NODES: open/close the detail pane"),
    ("l", "NODES: show LOGS of the selected node"),
    (
        "m",
        "MODELS: migrate the selected model to a standby node (asks)",
    ),
    (
        "a / u",
        "MODELS: assign to a standby node / unassign a replica (asks)",
    ),
    ("t", "ONBOARDING: test the selected backend (asks first)"),
    ("w", "WAKEABLE: wake the selected machine (asks first)"),
    ("r", "ONBOARDING: refresh now"),
    ("f", "LOGS: cycle node filter"),
    ("v", "LOGS: cycle minimum level"),
    ("p", "LOGS: pause / resume following"),
    ("/", "LOGS: search (Enter applies, Esc cancels)"),
    ("e", "LOGS: export the filtered lines to a file"),
    ("?", "this help"),
    ("q", "quit"),
    (
        "Esc",
        "close the open pane, overlay or search (never quits)",
    ),
];

pub fn help(f: &mut Frame, area: Rect) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(format!("{k:>18}  "), Style::new().fg(Color::Cyan).bold()),
                Span::raw(*d),
            ])
        })
        .collect();
    let r = centered(area, 84, HELP.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys — any key closes ")),
        r,
    );
}

/// The confirm modal: what `y` will do, line by line, then the keys it takes.
pub fn confirm(lines: &[String], keys: &str, f: &mut Frame, area: Rect) {
    let width = area.width.min(100);
    // Each line wraps inside the border; the height follows so nothing of the blast radius is cut.
    let inner = usize::from(width.saturating_sub(2)).max(1);
    let rows: usize = lines
        .iter()
        .chain(std::iter::once(&keys.to_string()))
        .map(|l| wrapped_rows(l, inner))
        .sum();
    let r = centered(area, width, (rows + 3) as u16);
    let mut text: Vec<Line> = lines.iter().map(|l| Line::from(l.clone())).collect();
    text.push(Line::default());
    text.push(Line::from(Span::styled(keys.to_string(), Color::DarkGray)));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(
            Block::bordered()
                .title(" confirm ")
                .border_style(Style::new().fg(Color::Yellow)),
        ),
        r,
    );
}

/// Rows `line` takes when wrapped at word boundaries into `width` columns (as `Wrap` does): a
/// word that does not fit on the row moves to the next, and a word longer than a row is split.
fn wrapped_rows(line: &str, width: usize) -> usize {
    let (mut rows, mut used) = (1, 0);
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        let mut len = word.chars().count();
        let need = if used == 0 { len } else { used + 1 + len };
        if need <= width {
            used = need;
            continue;
        }
        if used > 0 {
            rows += 1;
        }
        while len > width {
            rows += 1;
            len -= width;
        }
        used = len;
    }
    rows
}

/// Cuts `s` to `max` chars with an ellipsis; column widths are fixed and a long model list must
/// not push the state badge off screen.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// First row to draw so that `selected` is visible in `height` rows: whole pages, so the view
/// only moves when the selection leaves it.
pub fn page_offset(selected: usize, height: usize) -> usize {
    selected.checked_div(height).map_or(0, |page| page * height)
}

#[cfg(test)]
mod tests {
    use super::wrapped_rows;

    #[test]
    fn rows_follow_word_wrapping() {
        assert_eq!(wrapped_rows("", 10), 1);
        assert_eq!(wrapped_rows("one two", 10), 1);
        // "aaaa bbbb" fits 9 columns; "cccc" goes to the next row.
        assert_eq!(wrapped_rows("aaaa bbbb cccc", 9), 2);
        // Character counting would say 2 rows (14 chars at 9); words need 3 at 6.
        assert_eq!(wrapped_rows("aaaa bbbb cccc", 6), 3);
        assert_eq!(wrapped_rows("abcdefghijkl", 5), 3, "a long word is split");
    }
}
