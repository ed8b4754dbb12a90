//! The `openai` driver: a model server that speaks the OpenAI HTTP API at a URL the operator
//! gives (vLLM, llama-server, Ollama, another infermesh node, a hosted API).
//!
//! The remote owns its models' lifetime, so `load` only checks that the remote really serves
//! the model and `stop` only stops routing to it. Inference always streams: the node needs
//! tokens as they come whether or not its own client asked for a stream.

pub mod decode;
mod embed;
mod pump;
mod relay;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::{error_chain, Backend, BackendError, BackendInfo, EventStream, InferStream};
use crate::config::ModelSpec;
use crate::types::{Embeddings, InferRequest};
use decode::StreamDecoder;
use wire::{request_body, status_error};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
const MODELS_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No byte for this long means the remote hung; a slow but live stream sends a token well within.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle pooled connections are dropped after this: below the keep-alive timeout servers close
/// them at (llama-server and many others send `Keep-Alive: timeout=5`), so a request seldom
/// picks a connection the server is closing at that moment.
const POOL_IDLE: Duration = Duration::from_secs(4);
/// More tries of one request whose pooled connection the server closed before answering.
const STALE_RETRIES: usize = 2;

/// Whether a send failed on a connection the server closed (or reset) before answering: the
/// server saw at most an unanswered request, nothing reached our client, and a fresh connection
/// gets the answer. Inference has no side effects, so a resend is safe.
fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    pub id: String,
    /// The versioned base path, e.g. `http://127.0.0.1:8080/v1`; endpoints are appended to it.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// A PEM file of CA certificates trusted for an `https://` URL on top of the system's (a
    /// server behind a private CA, or self-signed).
    pub ca_cert: Option<PathBuf>,
    /// The models served through this backend, args already merged (see [`crate::config`]).
    pub models: Vec<ModelSpec>,
}

pub struct OpenAiBackend {
    id: String,
    base: String,
    api_key: Option<String>,
    models: Vec<ModelSpec>,
    client: reqwest::Client,
    loaded: Mutex<Option<String>>,
}

/// `base_url` without surrounding whitespace and trailing slashes, checked to be HTTP(S).
pub fn normalize_base_url(base_url: &str) -> Result<String, BackendError> {
    infermesh_state::backend_config::normalize_base_url(base_url).map_err(BackendError::BadRequest)
}

/// The CA certificates of a `ca_cert` PEM file; errors name the file and what is wrong with it.
pub fn load_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

impl OpenAiBackend {
    pub fn new(cfg: OpenAiConfig) -> Result<Self, BackendError> {
        let base = normalize_base_url(&cfg.base_url)?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(IDLE_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE);
        if let Some(path) = &cfg.ca_cert {
            builder =
                builder.tls_certs_merge(load_ca_certs(path).map_err(BackendError::BadRequest)?);
        }
        let client = builder
            .build()
            .map_err(|e| BackendError::Failed(format!("cannot create HTTP client: {e}")))?;
        Ok(Self {
            id: cfg.id,
            base,
            api_key: cfg.api_key,
            models: cfg.models,
            client,
            loaded: Mutex::new(None),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn loaded(&self) -> Option<String> {
        self.loaded.lock().expect("loaded lock").clone()
    }

    fn spec(&self, model: &str) -> Result<&ModelSpec, BackendError> {
        self.models
            .iter()
            .find(|m| m.name == model)
            .ok_or_else(|| BackendError::UnknownModel(model.to_string()))
    }

    /// `model`'s spec when it is the one loaded: what every request to the remote needs first.
    fn loaded_spec(&self, model: &str) -> Result<&ModelSpec, BackendError> {
        let spec = self.spec(model)?;
        if self.loaded().as_deref() != Some(model) {
            return Err(BackendError::Unavailable(format!(
                "model `{model}` is not loaded"
            )));
        }
        Ok(spec)
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.base)
    }

    fn with_auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => rb.bearer_auth(key),
            None => rb,
        }
    }

    fn transport_error(&self, url: &str, e: &reqwest::Error) -> BackendError {
        if e.is_timeout() {
            BackendError::Unavailable(format!("{url} did not answer in time"))
        } else if e.is_connect() {
            let cause = error_chain(e);
            // A TLS verification failure is a configuration problem with a known fix.
            let hint = if cause.contains("certificate") {
                "; if the server's certificate comes from a private CA or is self-signed, set the backend's `ca_cert` to its PEM file"
            } else {
                ""
            };
            BackendError::Unavailable(format!("cannot connect to {}: {cause}{hint}", self.base))
        } else {
            BackendError::Unavailable(format!("request to {url} failed: {}", error_chain(e)))
        }
    }

    /// POSTs `body` and returns the remote's 2xx answer (its body unread), the remote's error
    /// mapped by [`status_error`], or the transport failure. A request on a pooled connection the
    /// server closed before answering is sent again on a fresh one (see [`STALE_RETRIES`]).
    async fn post(
        &self,
        url: &str,
        body: &Value,
        model: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let mut retries = 0;
        let resp = loop {
            match self
                .with_auth(self.client.post(url))
                .json(body)
                .send()
                .await
            {
                Err(e) if retries < STALE_RETRIES && closed_before_answer(&e) => {
                    retries += 1;
                    tracing::debug!(backend = %self.id, %url, error = %error_chain(&e),
                        "connection closed before the answer; sending again on a fresh one");
                }
                sent => break sent.map_err(|e| self.transport_error(url, &e))?,
            }
        };
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            return Err(status_error(status, &text, model, url));
        }
        Ok(resp)
    }

    /// [`Self::post`] for a whole JSON answer.
    async fn post_for_json(
        &self,
        url: &str,
        body: &Value,
        model: &str,
    ) -> Result<Value, BackendError> {
        let resp = self.post(url, body, model).await?;
        resp.json().await.map_err(|e| {
            BackendError::Unavailable(format!(
                "{url} sent an answer that is not JSON: {}",
                error_chain(&e)
            ))
        })
    }

    /// One non-streamed call; the remote's answer with `model` set to the name this mesh serves
    /// it under (a remote may report its own alias or file path there).
    async fn complete_once(&self, req: &InferRequest) -> Result<Value, BackendError> {
        let spec = self.loaded_spec(&req.model)?;
        let (endpoint, mut body) = request_body(req, &spec.args);
        if let Some(b) = body.as_object_mut() {
            b.insert("stream".into(), Value::Bool(false));
            b.remove("stream_options");
        }
        let url = self.url(endpoint);
        let mut answer = self.post_for_json(&url, &body, &req.model).await?;
        if answer["choices"].as_array().is_none_or(|c| c.is_empty()) {
            return Err(BackendError::Failed(format!(
                "{url} answered without `choices`: {}",
                wire::error_message(&answer.to_string())
            )));
        }
        answer["model"] = Value::String(req.model.clone());
        Ok(answer)
    }

    /// `GET {base}/models` → `(status, body)`, or the transport failure.
    async fn get_models(&self, timeout: Duration) -> Result<(u16, String), BackendError> {
        let url = self.url("models");
        let resp = self
            .with_auth(self.client.get(&url))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        Ok((status, body))
    }

    /// The model ids the remote lists.
    async fn remote_models(&self, model: &str) -> Result<Vec<String>, BackendError> {
        let url = self.url("models");
        let (status, body) = self.get_models(MODELS_TIMEOUT).await?;
        if status != 200 {
            return Err(match status_error(status, &body, model, &url) {
                // A 404 here is a wrong base URL, not an unknown model.
                BackendError::UnknownModel(_) => BackendError::Failed(format!(
                    "{url} answered 404; is the base URL right (it should end in the API version, e.g. /v1)?"
                )),
                other => other,
            });
        }
        let list: Value = serde_json::from_str(&body).map_err(|e| {
            BackendError::Failed(format!("{url} did not return a JSON model list: {e}"))
        })?;
        let ids = list["data"].as_array().ok_or_else(|| {
            BackendError::Failed(format!("{url} returned no `data` array of models"))
        })?;
        Ok(ids
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            id: self.id.clone(),
            driver: "openai".into(),
            models: self.models.iter().map(|m| m.name.clone()).collect(),
            loaded: self.loaded(),
            // The weights live on the remote machine, not in this node's memory.
            mem_gb: 0.0,
            loading: None,
        }
    }

    async fn load(&self, model: &str) -> Result<(), BackendError> {
        self.spec(model)?;
        let listed = self.remote_models(model).await?;
        if !listed.iter().any(|m| m == model) {
            let lists = if listed.is_empty() {
                "no models".to_string()
            } else {
                listed.join(", ")
            };
            return Err(BackendError::Failed(format!(
                "{} does not serve model `{model}` (it lists: {lists})",
                self.url("models")
            )));
        }
        *self.loaded.lock().expect("loaded lock") = Some(model.to_string());
        tracing::debug!(backend = %self.id, model, base = %self.base, "remote model available");
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let Some(model) = self.loaded() else {
            return Err(BackendError::Unavailable("no model loaded".into()));
        };
        let url = self.url("models");
        match self.get_models(HEALTH_TIMEOUT).await? {
            (200, _) => Ok(()),
            (status, body) => Err(status_error(status, &body, &model, &url)),
        }
    }

    async fn infer(&self, req: InferRequest) -> Result<InferStream, BackendError> {
        let spec = self.loaded_spec(&req.model)?;
        let (endpoint, body) = request_body(&req, &spec.args);
        let url = self.url(endpoint);
        let started = Instant::now();
        let resp = self.post(&url, &body, &req.model).await?;
        let (tx, rx) = mpsc::channel(64);
        let decoder =
            StreamDecoder::new(&req.model, &url).continuing(req.params.continuation.as_ref());
        tokio::spawn(pump::pump(resp, decoder, started, tx));
        Ok(rx)
    }

    async fn complete(&self, req: &InferRequest) -> Option<Result<Value, BackendError>> {
        Some(self.complete_once(req).await)
    }

    async fn stream(
        &self,
        req: &InferRequest,
        include_usage: bool,
    ) -> Option<Result<EventStream, BackendError>> {
        // A continued answer is decoded: the remote may send the continued text back first.
        if req.params.continuation.is_some() {
            return None;
        }
        Some(self.relay_once(req, include_usage).await)
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, BackendError> {
        self.embed_once(model, inputs).await
    }

    async fn stop(&self) -> Result<(), BackendError> {
        *self.loaded.lock().expect("loaded lock") = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_non_http_ones_rejected() {
        assert_eq!(
            normalize_base_url(" http://127.0.0.1:8080/v1/ "),
            Ok("http://127.0.0.1:8080/v1".into())
        );
        assert_eq!(
            normalize_base_url("http://h/api/v1//"),
            Ok("http://h/api/v1".into())
        );
        assert_eq!(
            normalize_base_url("https://api.example.com/v1/"),
            Ok("https://api.example.com/v1".into())
        );
        for bad in ["https://", "ftp://x", "localhost:8080/v1", "http://", ""] {
            assert!(
                matches!(normalize_base_url(bad), Err(BackendError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    /// The driver for model `m` at `http://127.0.0.1:{port}/v1`.
    fn backend_at(port: u16) -> OpenAiBackend {
        OpenAiBackend::new(OpenAiConfig {
            id: "x".into(),
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: None,
            ca_cert: None,
            models: vec![ModelSpec::named("m")],
        })
        .unwrap()
    }

    /// Reads one HTTP/1.1 request (headers, then a `Content-Length` body) from `sock`.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Some(text);
                }
            }
            let n = sock.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn respond(sock: &mut tokio::net::TcpStream, body: &str) {
        use tokio::io::AsyncWriteExt;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: keep-alive\r\n\r\n",
            body.len()
        );
        sock.write_all(format!("{head}{body}").as_bytes())
            .await
            .unwrap();
    }

    /// The race a keep-alive server loses now and then: it closes an idle connection just as
    /// the next request goes out on it. The request is sent again on a fresh connection; the
    /// caller sees an answer, not "connection closed before message completed".
    #[tokio::test]
    async fn a_request_on_a_connection_the_server_closed_is_sent_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            let models = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
            let answer = r#"{"id":"c","object":"chat.completion","created":0,"model":"m",
                "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},
                "finish_reason":"stop"}],
                "usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
            // First connection: the model list, then the next request read and dropped unanswered.
            let (mut first, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            read_request(&mut first).await.unwrap();
            respond(&mut first, models).await;
            read_request(&mut first).await.unwrap();
            drop(first);
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Some(req) = read_request(&mut sock).await {
                        respond(
                            &mut sock,
                            if req.starts_with("GET") {
                                models
                            } else {
                                answer
                            },
                        )
                        .await;
                    }
                });
            }
        });
        let b = backend_at(port);
        b.load("m").await.unwrap();
        let tokens = crate::tester::checked_answer(&b, "m", "hello", 4)
            .await
            .unwrap_or_else(|e| panic!("the stale connection reached the caller: {e}"));
        assert_eq!(tokens, 1);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A non-streamed request is one non-streamed upstream call whose answer comes back whole,
    /// under the name the mesh serves the model by.
    #[tokio::test]
    async fn a_whole_answer_is_relayed_under_the_mesh_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut bodies) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(req) = read_request(&mut sock).await {
                        let answer = if req.starts_with("GET") {
                            r#"{"data":[{"id":"m"}]}"#
                        } else {
                            r#"{"id":"up-1","object":"chat.completion","created":7,
                                "model":"/models/alias.gguf","choices":[{"index":0,
                                "message":{"role":"assistant","content":"hi"},
                                "finish_reason":"stop","logprobs":null}],
                                "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#
                        };
                        let _ = tx.send(req);
                        respond(&mut sock, answer).await;
                    }
                });
            }
        });
        let b = backend_at(port);
        b.load("m").await.unwrap();
        let req = InferRequest {
            model: "m".into(),
            prompt: crate::types::Prompt::Chat(vec![crate::types::ChatMessage {
                role: "user".into(),
                content: "hello".into(),
            }]),
            params: crate::types::GenParams {
                max_tokens: 4,
                ..Default::default()
            },
            priority: Default::default(),
        };
        let answer = b.complete(&req).await.expect("a relay path").unwrap();
        assert_eq!(answer["model"], "m");
        assert_eq!(
            answer["id"], "up-1",
            "the remote's answer, not a re-encoding"
        );
        assert_eq!(answer["usage"]["completion_tokens"], 1);
        let _models = bodies.recv().await.unwrap();
        let sent = bodies.recv().await.unwrap();
        let body: Value = serde_json::from_str(sent.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["stream"], false, "{body}");
        assert!(body.get("stream_options").is_none(), "{body}");
    }

    #[tokio::test]
    async fn a_dead_url_is_unavailable_with_the_cause() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let b = backend_at(port);
        match b.load("m").await {
            Err(BackendError::Unavailable(m)) => assert!(m.contains("Connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
