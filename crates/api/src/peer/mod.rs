//! The node-to-node channel: every forwarded request and answer between members travels over
//! mutual TLS 1.3 on the member's gossip port (TCP), authenticated by the node keys the signed
//! membership holds. Nothing between nodes is plaintext, and a peer is reached only at the
//! address its own signed record gives, under the key it signed with.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use infermesh_mesh::Directory;
use tokio::net::TcpListener;

pub use tls::PEER_HOST_SUFFIX;

/// Set on every request that arrived over the peer channel: the authenticated node it came
/// from. Its presence is what makes a request a forwarded one (answered locally, never
/// forwarded again); no header from a client can fake it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub String);

/// Connections the peer port serves at once; more wait in the kernel's backlog.
const MAX_PEER_CONNECTIONS: usize = 512;
/// A TLS handshake that takes longer is abandoned (a member's takes milliseconds).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept below a server's 30 s idle limit, so a pooled connection is never one the server
/// already closed.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// The base URL of a member's peer API. The host names the node, so the TLS verifier knows
/// which key to demand; the resolver maps it to the member's signed address.
pub fn peer_base(node_id: &str, port: u16) -> String {
    format!("https://{node_id}{PEER_HOST_SUFFIX}:{port}")
}

/// Resolves `<node id>.peer.infermesh.invalid` to that member's gossip address, and nothing
/// else (no DNS: the peer client cannot be pointed anywhere membership does not say).
struct MemberResolver(Directory);

impl reqwest::dns::Resolve for MemberResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = name
            .as_str()
            .strip_suffix(PEER_HOST_SUFFIX)
            .and_then(|id| self.0.peer(id))
            .map(|p| p.gossip_addr);
        let name = name.as_str().to_string();
        Box::pin(async move {
            match found {
                Some(addr) => Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs),
                None => Err(format!("{name} is not a live member").into()),
            }
        })
    }
}

/// A member's answer body, read up to `max` bytes: a member holding the mesh secret is still
/// not trusted with this node's memory. `what` names the body in the error.
pub async fn read_bounded(
    resp: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| format!("{what} cut off: {}", crate::error::error_chain(&e)))?;
        if out.len() + chunk.len() > max {
            return Err(format!("{what} larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The HTTP client for the peer channel.
pub fn client(key: &ed25519_dalek::SigningKey, dir: Directory) -> anyhow::Result<reqwest::Client> {
    let tls = tls::client_config(key, dir.clone())?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(MemberResolver(dir)))
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(POOL_IDLE)
        .no_proxy()
        .build()?)
}

/// Serves `router` to members on `listener` (the gossip port, TCP) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    key: &ed25519_dalek::SigningKey,
    dir: Directory,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(key, dir)?));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p?,
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a peer connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    log_refused(client, &e.to_string());
                    return;
                }
                Err(_) => return,
            };
            let Some(peer) = tls::peer_node_id(tls.get_ref().1.peer_certificates()) else {
                return;
            };
            let service = TowerToHyperService::new(router.map_request(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerIdentity(peer.clone()));
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(client));
                    req
                },
            ));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tls), service)
                // A split's RPC tunnel is an HTTP/1.1 upgrade (`crate::split::tunnel`).
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "peer connection ended with an error");
            }
        });
    }
    Ok(())
}

/// A refused handshake is logged once per source address (a scanner must not flood the log).
fn log_refused(from: SocketAddr, why: &str) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<std::net::IpAddr>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = seen.get_or_insert_with(HashSet::new);
    if set.len() > 4096 {
        set.clear();
    }
    if set.insert(from.ip()) {
        tracing::warn!(%from, error = %why,
            "refused a peer connection: not an authenticated member (logged once per address)");
    }
}
