//! Helpers shared by the deck's integration tests.
#![allow(dead_code)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use infermesh_deck::fixtures;
use infermesh_deck::migrate::Endpoint;
use infermesh_deck::{render, update, Cmd, Model, Msg};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

/// Renders `m` on a `w`×`h` test terminal and returns the screen as text, one line per row.
pub fn screen(m: &Model, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(m, f)).unwrap();
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

pub fn assert_shows(screen: &str, needle: &str) {
    assert!(
        screen.contains(needle),
        "expected {needle:?} on screen:\n{screen}"
    );
}

pub fn assert_hides(screen: &str, needle: &str) {
    assert!(
        !screen.contains(needle),
        "did not expect {needle:?} on screen:\n{screen}"
    );
}

pub fn key(m: &mut Model, code: KeyCode) -> Vec<Cmd> {
    update(m, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

pub fn ch(m: &mut Model, c: char) -> Vec<Cmd> {
    key(m, KeyCode::Char(c))
}

/// ONBOARDING with the node's admin view received, as once the deck is signed in.
pub fn with_admin(m: &mut Model) {
    ch(m, '3');
    let node_id = m
        .onboarding
        .node_id
        .clone()
        .expect("onboarding targets a node");
    update(
        m,
        Msg::Admin {
            node_id,
            result: Ok(infermesh_deck::fixtures::admin_nodes()),
        },
    );
}

/// The fixture's peer `i` as an action's endpoint.
pub fn endpoint(i: usize) -> Endpoint {
    Endpoint {
        node_id: fixtures::peer_id(i),
        name: fixtures::peer_name(i),
        base: format!("http://127.0.0.1:{}", 40_000 + i),
    }
}

/// MODELS with the row of `model` selected.
pub fn on_model(m: &mut infermesh_deck::Model, model: &str) {
    ch(m, '2');
    let i = m
        .model_groups()
        .iter()
        .position(|g| g.model == model)
        .expect("model listed");
    for _ in 0..i {
        ch(m, 'j');
    }
}
