//! `render(&Model, &mut Frame)`: pure, so every screen is testable on a `TestBackend`.
//!
//! Tabs draw only the rows that fit: at 1,000 nodes building every row each frame would cost more
//! than the whole visible screen.

pub mod common;
mod logs;
mod models;
mod nodes;
mod onboarding;
mod requests;
mod topology;
mod wakeable;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::Frame;

use crate::model::{Model, Tab};

pub fn render(m: &Model, f: &mut Frame) {
    let [head, tabs, body, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    common::header(m, f, head);
    common::tab_bar(m, f, tabs);
    match m.tab {
        Tab::Nodes => nodes::render(m, f, body),
        Tab::Models => models::render(m, f, body),
        Tab::Onboarding => onboarding::render(m, f, body),
        Tab::Logs => logs::render(m, f, body),
        Tab::Requests => requests::render(m, f, body),
        Tab::Wakeable => wakeable::render(m, f, body),
        Tab::Topology => topology::render(m, f, body),
    }
    if m.lost_ms.is_some() {
        // Everything but the connection line is as of the loss: say so by greying it.
        let below_conn = Rect {
            y: head.y + 1,
            height: head.height.saturating_sub(1),
            ..head
        };
        for area in [below_conn, tabs, body] {
            common::grey_out(f, area);
        }
    }
    common::footer(m, f, foot);
    if m.help {
        common::help(f, f.area());
    }
    if let Some(c) = &m.confirm {
        common::confirm(&c.lines(), c.keys(), f, f.area());
    }
}
