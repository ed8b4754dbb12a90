//! `infermesh deck`: the operator's terminal cockpit over one node's API.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct DeckArgs {
    /// The node to attach to; the deck follows the whole mesh through it.
    #[arg(long, env = "INFERMESH_URL", default_value = "http://127.0.0.1:7337")]
    pub url: String,
}

/// Runs the deck until the operator quits; the terminal is restored on every exit path.
pub async fn open(url: &str) -> Result<()> {
    infermesh_deck::run(url.to_string(), infermesh_deck::DeckOptions::default()).await
}

pub async fn run(args: DeckArgs) -> Result<()> {
    open(&args.url).await
}
