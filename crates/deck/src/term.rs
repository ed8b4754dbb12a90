//! The terminal loop: raw mode and alternate screen in, keys/feed/ticks → `update` → draw.
//!
//! The terminal is restored on every way out — normal quit, error return (guard `Drop`) and panic
//! (hook) — because a deck that dies leaving the shell in raw mode loses the operator their shell.

use std::io::{stdout, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crossterm::event::{Event, EventStream};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::model::Model;
use crate::render::render;
use crate::signer::{NoopSigner, Signer};
use crate::update::{update, Cmd, Msg};
use crate::DeckOptions;

/// Set while the deck owns the terminal, so the panic hook restores only what was changed.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();
/// Messages handled before a redraw is forced: a burst of events costs one frame, yet keys and
/// ticks still get through during a flood.
const DRAIN_MAX: usize = 512;

fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
    }
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info);
        }));
    });
}

struct Guard;

impl Guard {
    fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode().context("the deck needs an interactive terminal")?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(stdout(), EnterAlternateScreen, crossterm::cursor::Hide)?;
        Ok(Guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Applies one message and performs its effects; `true` when the deck should exit.
fn step(model: &mut Model, client: &Client, msg: Msg) -> bool {
    let mut quit = false;
    for cmd in update(model, msg) {
        match cmd {
            Cmd::Quit => quit = true,
            other => client.perform(other),
        }
    }
    quit
}

pub async fn run(url: String, opts: DeckOptions) -> anyhow::Result<()> {
    let signer: Arc<dyn Signer> = match opts.signer {
        Some(s) => Arc::from(s),
        None => Arc::new(NoopSigner),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = Client::new(signer, tx)?;
    let mut model = Model::new(url);
    let feed = tokio::spawn(client.clone().feed(model.url.clone()));

    let _guard = Guard::enter()?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> =
        Terminal::new(CrosstermBackend::new(stdout()))?;
    terminal.clear()?;
    let size = terminal.size()?;
    update(&mut model, Msg::Resize(size.width, size.height));
    update(&mut model, Msg::Tick(now_ms()));

    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result: anyhow::Result<()> = async {
        loop {
            terminal.draw(|f| render(&model, f))?;
            let msg = tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(Event::Key(k))) => Msg::Key(k),
                    Some(Ok(Event::Resize(w, h))) => Msg::Resize(w, h),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(anyhow::Error::from(e).context("reading the terminal")),
                    None => return Ok(()),
                },
                Some(msg) = rx.recv() => msg,
                _ = tick.tick() => Msg::Tick(now_ms()),
            };
            if step(&mut model, &client, msg) {
                return Ok(());
            }
            for _ in 0..DRAIN_MAX {
                let Ok(msg) = rx.try_recv() else { break };
                if step(&mut model, &client, msg) {
                    return Ok(());
                }
            }
        }
    }
    .await;
    feed.abort();
    drop(terminal);
    result
}
