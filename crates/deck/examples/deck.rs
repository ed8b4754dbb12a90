//! Runs the deck without the `infermesh` binary: `cargo run -p infermesh-deck --example deck -- URL`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7337".into());
    infermesh_deck::run(url, infermesh_deck::DeckOptions::default()).await
}
