//! One node's HTTP API as the operator commands use it: base URL parsing, signed admin calls
//! (bound to the id the node reports), and transport failures turned into operator sentences.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A command ended with this exit code after printing why; `main` exits with it silently.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Prints `msg` on stderr and ends the command with `code`.
pub fn fail(code: u8, msg: impl std::fmt::Display) -> anyhow::Error {
    eprintln!("{msg}");
    Exit(code).into()
}

/// Accepts `HOST:PORT` as well as a full `http://` URL; drops trailing slashes.
pub fn base_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim();
    let full = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let parsed = reqwest::Url::parse(&full)
        .map_err(|e| format!("invalid node URL `{url}`: {e} (expected http://HOST:PORT)"))?;
    match parsed.scheme() {
        "http" if parsed.host_str().is_some_and(|h| !h.is_empty()) => {}
        "https" => {
            return Err(format!(
                "`{url}`: https is not supported by this build (no TLS stack); use http:// \
                 or a local TLS-terminating proxy"
            ))
        }
        _ => {
            return Err(format!(
                "invalid node URL `{url}` (expected http://HOST:PORT)"
            ))
        }
    }
    Ok(full.trim_end_matches('/').to_string())
}

/// Signs an admin request (every change; reads too, which a node on another machine answers only
/// signed) with the operator key: the exact method, request path and body bytes sent go into
/// the `Authorization: Infermesh …` header (`infermesh_api::auth`). Without a key the request
/// goes unsigned and a node that needs a signature answers 401, shown with a hint.
pub fn sign_admin(
    builder: RequestBuilder,
    key: Option<(&SigningKey, &str)>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> RequestBuilder {
    match key {
        Some((key, node_id)) => builder.header(
            reqwest::header::AUTHORIZATION,
            infermesh_api::auth::authorization_header(key, node_id, method.as_str(), path, body),
        ),
        None => builder,
    }
}

pub struct NodeClient {
    http: reqwest::Client,
    pub base: String,
    /// The operator key (`infermesh keygen`), when this machine has one.
    pub key: Option<SigningKey>,
    /// The id of the node at `base`, learnt from its status before the first signed request:
    /// a signature is bound to one node, so one collected by whatever answers at this address
    /// is worth nothing anywhere else.
    node_id: tokio::sync::OnceCell<String>,
}

/// What came back: the status and the body as JSON (`Null` when it was not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The node's `{"error": "..."}` sentence, or a description of the status.
    pub fn error_message(&self) -> String {
        infermesh_deck::request::error_sentence(self.status, &self.body)
    }
}

impl NodeClient {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| fail(2, format!("error: cannot build an HTTP client: {e}")))?;
        let base = base_url(url).map_err(|e| fail(2, format!("error: {e}")))?;
        let key =
            crate::keygen::load_operator_key(None).map_err(|e| fail(2, format!("error: {e:#}")))?;
        Ok(Self {
            http,
            base,
            key,
            node_id: tokio::sync::OnceCell::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The key and the node it signs for, when this machine has an operator key.
    pub async fn signer(&self) -> anyhow::Result<Option<(&SigningKey, &str)>> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let id = self
            .node_id
            .get_or_try_init(|| async {
                let req = self.http.get(self.url("/api/status")).timeout(READ_TIMEOUT);
                let reply = self.send(req).await?;
                match reply.body["node_id"].as_str() {
                    Some(id) if reply.status.is_success() => Ok(id.to_string()),
                    _ => Err(fail(
                        2,
                        format!(
                            "error: {} did not say which node it is (GET /api/status: {}); is it \
                             an infermesh node?",
                            self.base, reply.status
                        ),
                    )),
                }
            })
            .await?;
        Ok(Some((key, id.as_str())))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        let mut req = self.http.get(self.url(path)).timeout(READ_TIMEOUT);
        if infermesh_api::auth::is_admin(path) {
            req = sign_admin(req, self.signer().await?, &Method::GET, path, b"");
        }
        self.send(req).await
    }

    /// A mutating request, signed through [`sign_admin`].
    pub async fn mutate(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .timeout(timeout);
        if body.is_some() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes.clone());
        }
        let req = sign_admin(req, self.signer().await?, &method, path, &bytes);
        self.send(req).await
    }

    /// The one place requests leave this CLI; turns transport failures into operator sentences.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Reply> {
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(&e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            fail(
                2,
                format!(
                    "error: cannot reach the node at {} (is `infermesh up` running?)",
                    self.base
                ),
            )
        } else if e.is_timeout() {
            fail(
                2,
                format!("error: the node at {} did not answer in time", self.base),
            )
        } else if e.is_builder() {
            fail(
                2,
                format!(
                    "error: invalid node URL `{}` (expected http://HOST:PORT): {e}",
                    self.base
                ),
            )
        } else {
            fail(2, format!("error: request to {} failed: {e}", self.base))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_accepts_host_port_and_trailing_slash() {
        assert_eq!(base_url("127.0.0.1:7337").unwrap(), "http://127.0.0.1:7337");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert!(base_url("https://h:1").unwrap_err().contains("https"));
        for bad in ["http://", "ftp://h:1", ""] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }
}
