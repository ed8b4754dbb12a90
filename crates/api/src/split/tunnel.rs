//! llama.cpp's RPC protocol through the peer channel. It has no authentication, so it never
//! leaves loopback in the clear: the host's `llama-server` dials a loopback port of its own
//! node, which carries every connection to the worker over mutual TLS (an HTTP/1.1 upgrade on
//! the peer port), and the worker lets it through to its loopback `rpc-server` only when the
//! authenticated peer is the host its own record says it works for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper_util::rt::TokioIo;
use infermesh_mesh::Directory;
use infermesh_state::split_role::{RpcTraffic, SplitClaim};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::error::plain_error;
use crate::peer::{peer_base, PeerIdentity};

/// The peer-channel path and upgrade token of the tunnel.
pub const PATH: &str = "/peer/v1/rpc";
const PROTOCOL: &str = "infermesh-rpc";
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Worker side: the peer route. 101 and a spliced stream for the host this node works for;
/// 403 for any other member, 409 when this node works for nobody (or its `rpc-server` is not
/// up), 400 for a request that is not an upgrade to the tunnel protocol.
pub async fn accept(
    State(AppState(app)): State<AppState>,
    Extension(peer): Extension<PeerIdentity>,
    mut req: Request,
) -> Response {
    let wants_tunnel = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !wants_tunnel {
        return plain_error(
            StatusCode::BAD_REQUEST,
            format!("{PATH} takes only an `Upgrade: {PROTOCOL}` request"),
        );
    }
    let part = app.node.split_part();
    let (host, port) = match part.as_ref().map(|p| (&p.claim, p.rpc_port)) {
        Some((SplitClaim::Worker { host, .. }, Some(port))) => (host.clone(), port),
        _ => {
            return plain_error(
                StatusCode::CONFLICT,
                "this node is not a split worker with a running rpc-server",
            )
        }
    };
    if peer.0 != host {
        tracing::warn!(peer = %peer.0, %host, "refused an RPC tunnel from a member that is not this worker's host");
        return plain_error(
            StatusCode::FORBIDDEN,
            "only this worker's split host may open its RPC tunnel",
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let remote = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "RPC tunnel upgrade failed");
                return;
            }
        };
        let mut local = match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, port, "the split worker's rpc-server refused the host's tunnel");
                return;
            }
        };
        let _ = local.set_nodelay(true);
        let mut remote = TokioIo::new(remote);
        let _ = tokio::io::copy_bidirectional(&mut remote, &mut local).await;
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}

/// RPC bytes this node's tunnels carried, as a split's host: what a split costs the network.
static TO_WORKERS: AtomicU64 = AtomicU64::new(0);
static FROM_WORKERS: AtomicU64 = AtomicU64::new(0);

/// Bytes through this node's RPC tunnels since it started (it hosts one split at most).
pub fn traffic() -> RpcTraffic {
    RpcTraffic {
        to_workers_bytes: TO_WORKERS.load(Ordering::Relaxed),
        from_workers_bytes: FROM_WORKERS.load(Ordering::Relaxed),
    }
}

/// Copies until EOF or an error, counting as it goes (a tunnel stays open for the split's
/// life, so a total at the end would come too late).
async fn pump(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    count: &AtomicU64,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Host side: a loopback port whose every connection is carried to one worker's `rpc-server`.
/// Dropping it closes the port and every connection through it.
pub struct Tunnel {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the host dials workers with: the peer channel's own client (mutual TLS under the
/// member keys, names resolved from membership only) and the membership for their ports.
#[derive(Clone)]
pub struct Dialer {
    http: reqwest::Client,
    dir: Directory,
}

impl Dialer {
    pub fn new(http: reqwest::Client, dir: Directory) -> Self {
        Self { http, dir }
    }

    /// One tunnelled stream to `worker`'s `rpc-server`.
    async fn dial(&self, worker: &str) -> anyhow::Result<reqwest::Upgraded> {
        let port = self
            .dir
            .peer(worker)
            .map(|p| p.gossip_addr.port())
            .ok_or_else(|| anyhow::anyhow!("node {worker} is not a live member"))?;
        let send = self
            .http
            .get(format!("{}{PATH}", peer_base(worker, port)))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .send();
        // Not the request's own timeout: that would also bound the upgraded stream's life.
        let resp = tokio::time::timeout(DIAL_TIMEOUT, send).await??;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            anyhow::bail!("worker {worker} refused the RPC tunnel ({})", resp.status());
        }
        Ok(resp.upgrade().await?)
    }

    /// Opens the loopback port for `worker`. When a connection ends from the worker's side
    /// (its node or `rpc-server` died) or cannot be dialled, `lost` hears the worker's id: the
    /// host then plans without it at once instead of waiting for gossip to declare it dead.
    pub async fn open(&self, worker: String, lost: mpsc::Sender<String>) -> anyhow::Result<Tunnel> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let dialer = self.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut local, _)) = listener.accept().await else {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let _ = local.set_nodelay(true);
                let (dialer, worker, lost) = (dialer.clone(), worker.clone(), lost.clone());
                conns.spawn(async move {
                    let mut remote = match dialer.dial(&worker).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(%worker, error = %e, "cannot open the RPC tunnel to a split worker");
                            let _ = lost.send(worker).await;
                            return;
                        }
                    };
                    use tokio::io::AsyncWriteExt;
                    let (mut lr, mut lw) = local.split();
                    let (mut rr, mut rw) = tokio::io::split(&mut remote);
                    // Which side ends first tells a worker's death from the host's own stop.
                    tokio::select! {
                        _ = pump(&mut rr, &mut lw, &FROM_WORKERS) => {
                            tracing::info!(%worker, "a split worker closed its RPC tunnel");
                            let _ = lost.send(worker).await;
                        }
                        _ = pump(&mut lr, &mut rw, &TO_WORKERS) => {
                            let _ = rw.shutdown().await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Tunnel { port, task })
    }
}
