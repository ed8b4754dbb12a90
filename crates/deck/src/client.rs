//! All network I/O: the live feed of the connected node and the effects `update` asks for.
//!
//! Everything here reports back as [`Msg`]s on one channel; nothing touches the model, so a slow or
//! dead node can delay data but never the screen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{
    AdminNode, ErrorBody, LogLine, LogsBody, MeshRequestsBody, RequestsBody, Status, TestResult,
};
use crate::migrate;
use crate::model::{ReplicaAction, Via};
use crate::request::{admin_request, describe};
use crate::signer::Signer;
use crate::update::{Cmd, Msg, Target};
use infermesh_state::sse::SseParser;

/// The node sends a `status` at least every 5 s; silence past this means the connection is dead
/// even if TCP has not noticed (a node that froze, a NAT that dropped the flow).
const SSE_SILENCE: Duration = Duration::from_secs(8);
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Peer log pulls are many and repeated; a slow peer must not hold the round for long.
const PEER_LOG_TIMEOUT: Duration = Duration::from_millis(1_500);
const PEER_LOG_CONCURRENCY: usize = 16;
/// DESIGN §2 caps a test at 5 min on the node; the deck waits a little longer than that.
const TEST_TIMEOUT: Duration = Duration::from_secs(330);
pub const LOG_TAIL: usize = 200;
/// Records of the whole mesh's view: the node's cap, enough for the tab and MODELS' req/s.
const MESH_REQUESTS: usize = 1000;
/// As `infermesh migrate`'s default: loading plus the admission check of a large model.
const MIGRATE_ADMIT_LIMIT: Duration = Duration::from_secs(300);
/// A drain waits for in-flight requests; the node itself gives up on them after 120 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);

/// Delay before reconnect `attempt` (1-based): 250 ms doubling, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(16);
    (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_CAP)
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    signer: Arc<dyn Signer>,
    tx: UnboundedSender<Msg>,
}

impl Client {
    pub fn new(signer: Arc<dyn Signer>, tx: UnboundedSender<Msg>) -> anyhow::Result<Self> {
        // No client-wide timeout: it would cut the endless SSE body. Each request sets its own.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("infermesh-deck/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, signer, tx })
    }

    fn send(&self, m: Msg) {
        // A closed channel means the deck is exiting; there is nobody left to tell.
        let _ = self.tx.send(m);
    }

    /// Keeps the connected node's feed alive forever: SSE when the node offers it, polling when
    /// it does not, reconnecting with capped backoff after any failure.
    pub async fn feed(self, base: String) {
        let mut attempt = 0u32;
        while !self.tx.is_closed() {
            let (was_connected, error) = match self.sse_session(&base).await {
                Session::Unavailable => self.poll_session(&base).await,
                Session::Ended { connected, error } => (connected, error),
            };
            if was_connected {
                attempt = 0;
            }
            attempt += 1;
            self.send(Msg::Disconnected { attempt, error });
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn sse_session(&self, base: &str) -> Session {
        let resp = match self
            .http
            .get(format!("{base}/api/events"))
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Session::ended(false, describe(&e)),
        };
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let code = resp.status();
        if code == reqwest::StatusCode::NOT_FOUND
            || code == reqwest::StatusCode::METHOD_NOT_ALLOWED
            || (code.is_success() && !is_sse)
        {
            return Session::Unavailable;
        }
        if !code.is_success() {
            return Session::ended(false, format!("HTTP {}", code.as_u16()));
        }
        self.send(Msg::Connected(Via::Sse));
        let mut primed = false;
        let mut parser = SseParser::new();
        let mut body = resp.bytes_stream();
        loop {
            let chunk = match tokio::time::timeout(SSE_SILENCE, body.next()).await {
                Err(_) => return Session::ended(true, "no event for 8 s".into()),
                Ok(None) => return Session::ended(true, "event stream closed".into()),
                Ok(Some(Err(e))) => return Session::ended(true, describe(&e)),
                Ok(Some(Ok(c))) => c,
            };
            for ev in parser.push(&chunk) {
                // An event with no name is a plain `message`, which the node never sends.
                match ev.event.as_deref().unwrap_or("message") {
                    "status" => {
                        if let Ok(s) = serde_json::from_str::<Status>(&ev.data) {
                            if !primed {
                                // SSE carries only new lines; the backlog comes from one pull.
                                primed = true;
                                self.spawn_backlog(base.to_string(), s.node_id.clone());
                            }
                            self.send(Msg::Status(Box::new(s)));
                        }
                    }
                    "log" => {
                        if let Ok(l) = serde_json::from_str::<LogLine>(&ev.data) {
                            self.send(Msg::Log(l));
                        }
                    }
                    "request" => {
                        if let Ok(r) = serde_json::from_str(&ev.data) {
                            self.send(Msg::Request(r));
                        }
                    }
                    // Events a newer node adds are not errors.
                    _ => {}
                }
            }
        }
    }

    fn spawn_backlog(&self, base: String, node_id: String) {
        let me = self.clone();
        tokio::spawn(async move { me.pull_logs_and_requests(&base, &node_id).await });
    }

    /// Logs and requests are extras: a node without these routes (older, or a build in progress)
    /// is still connected, so a failure here is reported against the node, never as a disconnect.
    async fn pull_logs_and_requests(&self, base: &str, node_id: &str) {
        let url = format!("{base}/api/logs?tail={LOG_TAIL}");
        self.send(match self.get_json::<LogsBody>(&url, FETCH_TIMEOUT).await {
            Ok(logs) => Msg::Logs {
                node_id: node_id.to_string(),
                lines: logs.lines,
            },
            Err(error) => Msg::LogsFailed {
                node_id: node_id.to_string(),
                error,
            },
        });
        let url = format!("{base}/api/requests?limit=200");
        if let Ok(reqs) = self.get_json::<RequestsBody>(&url, FETCH_TIMEOUT).await {
            self.send(Msg::Requests(reqs.requests));
        }
    }

    /// The fallback for nodes without `/api/events`: status every 1 s, logs and requests every 2 s.
    async fn poll_session(&self, base: &str) -> (bool, String) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        for n in 0u64.. {
            tick.tick().await;
            if self.tx.is_closed() {
                break;
            }
            let s: Status = match self
                .get_json(&format!("{base}/api/status"), FETCH_TIMEOUT)
                .await
            {
                Ok(s) => s,
                Err(e) => return (connected, e),
            };
            if !connected {
                connected = true;
                self.send(Msg::Connected(Via::Polling));
            }
            let node_id = s.node_id.clone();
            self.send(Msg::Status(Box::new(s)));
            if n % 2 == 0 {
                self.pull_logs_and_requests(base, &node_id).await;
            }
        }
        (connected, "deck closing".into())
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str, t: Duration) -> Result<T, String> {
        let resp = self
            .http
            .get(url)
            .timeout(t)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        json_body(resp).await
    }

    /// Performs one effect in the background; its outcome comes back as a `Msg`.
    pub fn perform(&self, cmd: Cmd) {
        let me = self.clone();
        match cmd {
            Cmd::Quit => {}
            Cmd::FetchLogs(targets) => {
                tokio::spawn(async move { me.fetch_logs(targets).await });
            }
            Cmd::FetchMeshRequests(base) => {
                let url = format!("{base}/api/mesh/requests?limit={MESH_REQUESTS}");
                tokio::spawn(async move {
                    // The node gives each member 1.5 s; this waits for that and a margin.
                    let r = me.get_json::<MeshRequestsBody>(&url, FETCH_TIMEOUT).await;
                    me.send(Msg::MeshRequests(r));
                });
            }
            Cmd::FetchAdmin(t) => {
                tokio::spawn(async move {
                    // Signed: a node on another machine opens admin reads to operators only.
                    let result = me
                        .admin::<Vec<AdminNode>>(Method::GET, &t, "/admin/v1/nodes", FETCH_TIMEOUT)
                        .await;
                    me.send(Msg::Admin {
                        node_id: t.node_id,
                        result,
                    });
                });
            }
            Cmd::PostTest { target, backend_id } => {
                tokio::spawn(async move {
                    let path = format!("/admin/v1/nodes/{backend_id}/test");
                    let result = me
                        .admin::<TestResult>(Method::POST, &target, &path, TEST_TIMEOUT)
                        .await;
                    me.send(Msg::TestDone {
                        node_id: target.node_id,
                        backend_id,
                        result,
                    });
                });
            }
            Cmd::Wake { target, id } => {
                tokio::spawn(async move {
                    let path = format!("/admin/v1/wakeable/{}/wake", migrate::encode(&id));
                    let result = me
                        .admin::<crate::api::Wakeable>(Method::POST, &target, &path, FETCH_TIMEOUT)
                        .await
                        .map(|w| w.state.unwrap_or_else(|| "waking".into()));
                    me.send(Msg::WakeDone { id, result });
                });
            }
            Cmd::Replica {
                action,
                model,
                node,
            } => {
                tokio::spawn(async move {
                    let result = me.replica(action, &model, &node).await;
                    me.send(Msg::ReplicaDone(result));
                });
            }
            Cmd::Migrate { model, from, to } => {
                tokio::spawn(async move {
                    let tx = me.clone();
                    let result = migrate::run(
                        &me.http,
                        me.signer.as_ref(),
                        &model,
                        &from,
                        &to,
                        MIGRATE_ADMIT_LIMIT,
                        |step| tx.send(Msg::Migration(step)),
                    )
                    .await;
                    me.send(Msg::MigrationDone(result));
                });
            }
            Cmd::Export {
                path,
                contents,
                lines,
            } => {
                tokio::spawn(async move {
                    let result = tokio::fs::write(&path, contents)
                        .await
                        .map(|()| (shown_path(&path), lines))
                        .map_err(|e| format!("{}: {e}", path.display()));
                    me.send(Msg::Exported(result));
                });
            }
        }
    }

    /// One signed admin call without a body; a refusal comes back as "HTTP 409: <sentence>".
    async fn admin<T: DeserializeOwned>(
        &self,
        method: Method,
        t: &Target,
        path: &str,
        timeout: Duration,
    ) -> Result<T, String> {
        self.admin_with(method, t, path, Vec::new(), timeout).await
    }

    /// Assigns or unassigns a replica, answered with the sentence the footer shows.
    async fn replica(
        &self,
        action: ReplicaAction,
        model: &str,
        node: &migrate::Endpoint,
    ) -> Result<String, String> {
        let t = Target {
            node_id: node.node_id.clone(),
            base: node.base.clone(),
        };
        let name = &node.name;
        match action {
            ReplicaAction::Assign => {
                let body = serde_json::json!({ "model": model })
                    .to_string()
                    .into_bytes();
                self.admin_with::<serde_json::Value>(
                    Method::POST,
                    &t,
                    "/admin/v1/replicas",
                    body,
                    FETCH_TIMEOUT,
                )
                .await
                .map(|_| format!("{name} is loading {model}; it serves once its peers admit it"))
                .map_err(|e| format!("{name} did not start {model}: {e}"))
            }
            ReplicaAction::Unassign => {
                let path = format!("/admin/v1/replicas/{}/drain", migrate::encode(model));
                self.admin_with::<serde_json::Value>(Method::POST, &t, &path, Vec::new(), DRAIN_TIMEOUT)
                    .await
                    .map(|v| {
                        format!(
                            "{name} stopped serving {model}: {} in flight finished, {} cut off, in {:.1} s",
                            v["in_flight_at_start"].as_u64().unwrap_or(0).saturating_sub(v["cut_off"].as_u64().unwrap_or(0)),
                            v["cut_off"].as_u64().unwrap_or(0),
                            v["took_ms"].as_u64().unwrap_or(0) as f64 / 1e3
                        )
                    })
                    .map_err(|e| format!("{name} did not drain {model}: {e}"))
            }
        }
    }

    async fn admin_with<T: DeserializeOwned>(
        &self,
        method: Method,
        t: &Target,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, String> {
        let rb = admin_request(
            &self.http,
            self.signer.as_ref(),
            method,
            (&t.node_id, &t.base),
            path,
            body,
        );
        match rb.timeout(timeout).send().await {
            Ok(resp) => json_body::<T>(resp).await,
            Err(e) => Err(describe(&e)),
        }
    }

    async fn fetch_logs(&self, targets: Vec<Target>) {
        let mut results = futures::stream::iter(targets)
            .map(|t| async move {
                let url = format!("{}/api/logs?tail={LOG_TAIL}", t.base);
                (
                    t.node_id,
                    self.get_json::<LogsBody>(&url, PEER_LOG_TIMEOUT).await,
                )
            })
            .buffer_unordered(PEER_LOG_CONCURRENCY);
        while let Some((node_id, r)) = results.next().await {
            self.send(match r {
                Ok(body) => Msg::Logs {
                    node_id,
                    lines: body.lines,
                },
                Err(error) => Msg::LogsFailed { node_id, error },
            });
        }
        self.send(Msg::LogsDone);
    }
}

enum Session {
    /// The node has no SSE endpoint: use polling.
    Unavailable,
    Ended {
        connected: bool,
        error: String,
    },
}

impl Session {
    fn ended(connected: bool, error: String) -> Self {
        Session::Ended { connected, error }
    }
}

/// Decodes a 2xx body; anything else becomes "HTTP 409: <the node's sentence>".
async fn json_body<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, String> {
    let code = resp.status();
    let bytes = resp.bytes().await.map_err(|e| describe(&e))?;
    if !code.is_success() {
        let sentence = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|b| b.sentence())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes)
                    .trim()
                    .chars()
                    .take(120)
                    .collect()
            });
        return Err(format!("HTTP {}: {sentence}", code.as_u16()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("unexpected response: {e}"))
}

fn shown_path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_two_seconds() {
        let ms: Vec<u128> = (1..=7).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![250, 500, 1000, 2000, 2000, 2000, 2000]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }
}
