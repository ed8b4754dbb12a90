//! `infermesh deck`: the operator's terminal cockpit over one node's API.

use anyhow::Result;
use ed25519_dalek::SigningKey;
use infermesh_deck::{DeckOptions, Signer};
use reqwest::header::HeaderValue;

#[derive(clap::Args, Debug)]
pub struct DeckArgs {
    /// The node to attach to; the deck follows the whole mesh through it.
    #[arg(long, env = "INFERMESH_URL", default_value = "http://127.0.0.1:7337")]
    pub url: String,
}

/// Signs the deck's (and `infermesh migrate`'s) admin calls with the operator key.
pub struct OperatorSigner(pub SigningKey);

impl Signer for OperatorSigner {
    fn sign_request(
        &self,
        node_id: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Option<HeaderValue> {
        HeaderValue::from_str(&infermesh_api::auth::authorization_header(
            &self.0, node_id, method, path, body,
        ))
        .ok()
    }
}

/// Runs the deck until the operator quits; the terminal is restored on every exit path.
pub async fn open(url: &str) -> Result<()> {
    // Checked before the terminal is taken over, so a bad key file is a plain error message.
    open_with(url, crate::keygen::load_operator_key(None)?).await
}

/// As [`open`], signing with `key` (the demo's throwaway key) rather than the machine's.
pub async fn open_with(url: &str, key: Option<SigningKey>) -> Result<()> {
    let signer = key.map(|k| Box::new(OperatorSigner(k)) as Box<dyn Signer>);
    let opts = DeckOptions {
        signer,
        ..DeckOptions::default()
    };
    infermesh_deck::run(url.to_string(), opts).await
}

pub async fn run(args: DeckArgs) -> Result<()> {
    open(&args.url).await
}
