//! The node's HTTP surface (one port): `/api/status`, `/api/requests`, `/v1/*` (OpenAI-compatible,
//! routed across the mesh).

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod drivers;
pub mod error;
pub mod events;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod openai;
pub mod peer;
pub mod requests;
pub mod rounds;
pub mod route;
pub mod status;
pub mod wakeable;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;

pub use app::{App, AppOptions};
pub use node::{Node, NodeInfo, Phase};

#[derive(Deserialize)]
struct TailQuery {
    limit: Option<usize>,
}

async fn get_requests(
    State(app): State<Arc<App>>,
    Query(q): Query<TailQuery>,
) -> Json<serde_json::Value> {
    let requests = app.requests.tail(q.limit.unwrap_or(200));
    Json(serde_json::json!({ "requests": requests }))
}

/// Every route the node serves, with the default [`Limits`].
pub fn router(app: Arc<App>) -> Router {
    router_with(app, Limits::default())
}

/// [`router`] with explicit body limits (tests use short timeouts).
pub fn router_with(app: Arc<App>, limits: Limits) -> Router {
    Router::new()
        .route("/api/status", get(status::get_status))
        .route("/api/requests", get(get_requests))
        .route("/api/logs", get(events::get_logs))
        .route("/api/events", get(events::get_events))
        .route("/admin/v1/nodes", get(admin::list).post(admin::register))
        .route(
            "/admin/v1/nodes/{id}",
            put(admin::change).delete(admin::remove),
        )
        .route("/admin/v1/nodes/{id}/test", post(admin::test))
        .route("/admin/v1/wakeable/{id}/wake", post(wakeable::wake))
        .route("/metrics", get(metrics::get_metrics))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/v1/models", get(route::list_models))
        .route("/v1/chat/completions", post(route::chat_completions))
        .route("/v1/completions", post(route::completions))
        .fallback(error::not_found)
        // Every admin mutation (any admin route, present or future) needs an operator signature.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_operator,
        ))
        // Outermost: every body is read whole, within its size and time limits, before any
        // handler (or the signature check) sees it; the handlers' own 2 MB default is lifted.
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| limit_body(limits, req, next),
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// What members may ask of each other over the peer channel ([`peer::serve`]): the routed
/// OpenAI endpoints, under the same body limits. Nothing else (no admin, no status) is served
/// there, so holding the mesh secret grants no operator power.
pub fn peer_router(app: Arc<App>, limits: Limits) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(route::chat_completions))
        .route("/v1/completions", post(route::completions))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| limit_body(limits, req, next),
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// What one client may cost the server: body sizes and how long it may take to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body on `/v1/*` (chat histories can be long): 8 MiB.
    pub v1_body: usize,
    /// Largest request body anywhere else (admin bodies are small JSON): 1 MiB.
    pub other_body: usize,
    /// Time to send the whole body; a slower client gets 408. 30 s.
    pub body_timeout: Duration,
    /// Time to send a request's headers, idle keep-alive time included; then the connection is
    /// closed. 30 s.
    pub header_timeout: Duration,
    /// After the shutdown signal, how long open connections (event streams never end) get. 5 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            v1_body: 8 * 1024 * 1024,
            other_body: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

fn body_error(v1: bool, status: StatusCode, message: String) -> Response {
    if v1 {
        let mut e = error::OpenAiError::bad_request(message, None);
        e.status = status;
        e.into_response()
    } else {
        error::plain_error(status, message)
    }
}

/// Reads the request body whole, refusing one over its route's limit (413) or one that does not
/// arrive within [`Limits::body_timeout`] (408), so a huge or trickling body cannot hold memory
/// or a connection, and errors are JSON like every other answer.
async fn limit_body(limits: Limits, req: Request, next: Next) -> Response {
    let v1 = req.uri().path().starts_with("/v1/");
    let limit = if v1 {
        limits.v1_body
    } else {
        limits.other_body
    };
    let too_large = || {
        body_error(
            v1,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, mut body) = req.into_parts();
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Some(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(None::<String>);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(None)) => too_large(),
        Ok(Err(Some(e))) => body_error(
            v1,
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        ),
        Err(_) => body_error(
            v1,
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {:?}", limits.body_timeout),
        ),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves: like `axum::serve`, plus what it
/// leaves out — a header read timeout (a client that never finishes its headers, or an idle
/// keep-alive connection, is closed), `TCP_NODELAY` on every connection (without it a streamed
/// answer's small writes wait on the peer's delayed ACK, ~40 ms each time), and a bounded drain
/// so open event streams cannot hold a shutdown. Default [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// [`serve`] with explicit [`Limits`] (`header_timeout`, `drain_timeout`).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The admin gate tells this machine from others by the connection's address.
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(client));
                req
            },
        ));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            "connections still open {:?} after shutdown (event streams); closing them",
            limits.drain_timeout
        );
    }
    Ok(())
}
