//! The node's HTTP surface (one port): `/api/status`, `/api/requests`, `/api/mesh/requests`, `/v1/*` (OpenAI-compatible,
//! routed across the mesh).

pub mod admin;
pub mod admission;
pub mod app;
pub mod attestations;
pub mod auth;
pub mod balance;
pub mod body;
pub mod config;
pub mod dashboard;
pub mod drivers;
pub mod error;
pub mod events;
pub mod health;
pub mod logs;
pub mod members;
pub mod mesh_requests;
pub mod metrics;
pub mod node;
pub mod openai;
pub mod peer;
pub mod placement;
pub mod requests;
pub mod rounds;
pub mod route;
pub mod split;
pub mod status;
pub mod usage;
pub mod wakeable;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::middleware::Next;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

pub use app::{App, AppOptions, AppState};
pub use body::Limits;
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
    let budget = body::Budget::new(limits.body_budget);
    Router::new()
        .route("/api/status", get(status::get_status))
        .route("/api/requests", get(get_requests))
        .route("/api/mesh/requests", get(mesh_requests::get_mesh_requests))
        .route("/api/logs", get(events::get_logs))
        .route("/api/events", get(events::get_events))
        .route("/admin/v1/nodes", get(admin::list).post(admin::register))
        .route(
            "/admin/v1/nodes/{id}",
            put(admin::change).delete(admin::remove),
        )
        .route("/admin/v1/nodes/{id}/test", post(admin::test))
        .route("/admin/v1/groups/{model}", put(admin::groups::put_group))
        .route("/admin/v1/replicas", post(admin::groups::start_replica))
        .route(
            "/admin/v1/replicas/{model}/drain",
            post(admin::groups::drain_replica),
        )
        .route("/admin/v1/wakeable/{id}/wake", post(wakeable::wake))
        .route("/metrics", get(status::prometheus::get_metrics))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/v1/models", get(route::list_models))
        .route("/v1/chat/completions", post(route::chat_completions))
        .route("/v1/completions", post(route::completions))
        .route("/v1/embeddings", post(route::embeddings))
        .fallback(error::not_found)
        // Every admin mutation (any admin route, present or future) needs an operator signature.
        .layer(axum::middleware::from_fn_with_state(
            AppState(app.clone()),
            auth::require_operator,
        ))
        // Outermost: every body is read whole, within its size and time limits, before any
        // handler (or the signature check) sees it; the handlers' own 2 MB default is lifted.
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| body::limit_body(limits, budget.clone(), req, next),
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState(app))
}

/// What members may ask of each other over the peer channel ([`peer::serve`]): the routed
/// OpenAI endpoints, under the same body limits. Nothing else (no admin, no status) is served
/// there, so holding the mesh secret grants no operator power.
pub fn peer_router(app: Arc<App>, limits: Limits) -> Router {
    let budget = body::Budget::new(limits.body_budget);
    Router::new()
        .route("/v1/chat/completions", post(route::chat_completions))
        .route("/v1/completions", post(route::completions))
        .route("/v1/embeddings", post(route::embeddings))
        // Request metadata (no prompts, no answers) for the mesh-wide views.
        .route(mesh_requests::PEER_PATH, get(mesh_requests::peer_ring))
        // Members only, and only the worker's own host gets through (see the handler).
        .route(
            split::tunnel::PATH,
            axum::routing::get(split::tunnel::accept),
        )
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| body::limit_body(limits, budget.clone(), req, next),
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(AppState(app))
}

/// Connections the API port serves at once (event streams and dashboards included).
pub const MAX_API_CONNECTIONS: usize = 1024;

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
    // Past the cap, connections wait in the kernel's backlog rather than each costing a task,
    // buffers and a file descriptor here.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
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
            let _permit = permit;
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
