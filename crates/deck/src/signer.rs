//! The one hook every mutating request passes through.
//!
//! Operator signing (DESIGN §4: `Authorization: Infermesh <key-id>:<sig>`) lives with whoever owns
//! the operator keys; the deck only promises that nothing mutating leaves without being offered to
//! the signer first, so plugging a real one in later changes no call site.

use reqwest::header::HeaderValue;

/// Produces the `Authorization` header for a mutating request, or `None` to send it unsigned.
pub trait Signer: Send + Sync {
    /// `node_id` is the node meant (from the mesh's authenticated membership, never what the
    /// address answers), `path` the request path (`/admin/v1/nodes/embedded/test`), `body` the
    /// exact bytes sent.
    fn sign_request(
        &self,
        node_id: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Option<HeaderValue> {
        let _ = (node_id, method, path, body);
        None
    }
}

/// Sends requests unsigned: nodes without an operator registry accept them.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSigner;

impl Signer for NoopSigner {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noop_signer_signs_nothing() {
        assert!(NoopSigner.sign_request("n", "POST", "/x", b"{}").is_none());
    }
}
