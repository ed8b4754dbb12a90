//! The operator deck: a ratatui terminal cockpit over one node's HTTP API (`docs/api.md`).
//!
//! Elm-style so every screen and every key is testable without a terminal or a network:
//! [`Model`] is plain data, [`update`] turns a [`Msg`] into model changes plus [`Cmd`]s (effects
//! as data), [`render()`] draws a model. I/O lives in `client` (HTTP, SSE) and `term` (terminal).

pub mod api;
pub mod client;
#[doc(hidden)]
pub mod fixtures;
pub mod fmt;
pub mod migrate;
pub mod model;
pub mod render;
pub mod request;
pub mod signer;
mod term;
pub mod update;

use std::time::Duration;

pub use client::backoff;
pub use model::{Model, Tab};
pub use render::render;
pub use request::admin_request;
pub use signer::{NoopSigner, Signer};
pub use update::{update, Cmd, Msg};

/// How `run` behaves.
pub struct DeckOptions {
    /// Signs mutating requests (backend tests); `None` sends them unsigned.
    pub signer: Option<Box<dyn Signer>>,
    /// Redraw/clock period: countdowns, "2s ago" and spinners advance at this rate.
    pub tick: Duration,
}

impl Default for DeckOptions {
    fn default() -> Self {
        DeckOptions {
            signer: None,
            tick: Duration::from_millis(250),
        }
    }
}

impl std::fmt::Debug for DeckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeckOptions")
            .field("signer", &self.signer.as_ref().map(|_| "<signer>"))
            .field("tick", &self.tick)
            .finish()
    }
}

/// Runs the deck against the node at `url` (`http://127.0.0.1:7337` or `127.0.0.1:7337`) until
/// the operator quits. Takes over the terminal and restores it on every exit, panics included.
pub async fn run(url: String, opts: DeckOptions) -> anyhow::Result<()> {
    term::run(url, opts).await
}
