//! Building admin requests and describing transport failures: shared by the live client and the
//! migration procedure, so every admin call is signed the same way.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};

use crate::signer::Signer;

/// Builds every admin request (changes, and the admin read a node on another machine only
/// answers signed). It is the single place a [`Signer`] is consulted, so operator signing
/// covers all of them by construction.
pub fn admin_request(
    http: &reqwest::Client,
    signer: &dyn Signer,
    method: Method,
    (node_id, base): (&str, &str),
    path: &str,
    body: Vec<u8>,
) -> RequestBuilder {
    let auth = signer.sign_request(node_id, method.as_str(), path, &body);
    let mut rb = http.request(method, format!("{base}{path}"));
    if let Some(h) = auth {
        rb = rb.header(AUTHORIZATION, h);
    }
    if !body.is_empty() {
        rb = rb.header(CONTENT_TYPE, "application/json");
    }
    rb.body(body)
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's outer message repeats
/// the URL, which the header already shows.
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The node's `{"error": …}` sentence (plain, or OpenAI-shaped with a `message`), else the
/// status: what an operator reads when an admin call is refused.
pub fn error_sentence(status: reqwest::StatusCode, body: &serde_json::Value) -> String {
    match &body["error"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => format!("the node answered {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Signer for Fixed {
        fn sign_request(
            &self,
            node_id: &str,
            method: &str,
            path: &str,
            body: &[u8],
        ) -> Option<reqwest::header::HeaderValue> {
            reqwest::header::HeaderValue::from_str(&format!(
                "Infermesh k:{node_id}:{method}:{path}:{}",
                body.len()
            ))
            .ok()
        }
    }

    #[test]
    fn admin_requests_carry_the_signers_header() {
        let http = reqwest::Client::new();
        let req = admin_request(
            &http,
            &Fixed,
            Method::POST,
            ("abc", "http://n:1"),
            "/admin/v1/nodes/e/test",
            Vec::new(),
        )
        .build()
        .unwrap();
        assert_eq!(req.url().as_str(), "http://n:1/admin/v1/nodes/e/test");
        assert_eq!(
            req.headers().get(AUTHORIZATION).unwrap(),
            "Infermesh k:abc:POST:/admin/v1/nodes/e/test:0"
        );
        let unsigned = admin_request(
            &http,
            &crate::signer::NoopSigner,
            Method::POST,
            ("abc", "http://n:1"),
            "/x",
            Vec::new(),
        )
        .build()
        .unwrap();
        assert!(unsigned.headers().get(AUTHORIZATION).is_none());
    }
}
