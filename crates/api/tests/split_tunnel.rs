//! Who may open a split worker's RPC tunnel: only the host its own record says it works for,
//! only over the peer channel (the authenticated member is what the channel attaches to every
//! request), and only to a running `rpc-server`. The public API has no such route.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use infermesh_api::node::SplitPart;
use infermesh_api::peer::PeerIdentity;
use infermesh_api::split::tunnel::PATH;
use infermesh_api::{App, AppOptions, Limits, Node, NodeInfo};
use infermesh_state::split_role::{SplitClaim, SplitWork};
use tower::ServiceExt;

fn app() -> Arc<App> {
    let node = Node::new(NodeInfo {
        node_id: "worker".into(),
        public_key: String::new(),
        name: "worker".into(),
        version: "test".into(),
        client_mode: false,
    });
    App::with_options(node, None, "127.0.0.1:1".into(), AppOptions::default())
}

fn work_for(app: &App, host: &str, rpc_port: Option<u16>) {
    app.node.set_split_part(Some(SplitPart {
        claim: SplitClaim::Worker {
            model: "m".into(),
            host: host.into(),
            first_layer: 10,
            last_layer: 29,
            ready: true,
        },
        work: SplitWork::Loading,
        detail: String::new(),
        sentence: None,
        rpc_port,
        rpc_traffic: None,
    }));
}

async fn open(app: &Arc<App>, from: Option<&str>, upgrade: bool) -> (StatusCode, String) {
    let mut req = Request::get(PATH);
    if upgrade {
        req = req
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "infermesh-rpc");
    }
    let mut req = req.body(Body::empty()).unwrap();
    let router = match from {
        Some(peer) => {
            req.extensions_mut().insert(PeerIdentity(peer.into()));
            infermesh_api::peer_router(app.clone(), Limits::default())
        }
        None => infermesh_api::router(app.clone()),
    };
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn only_the_workers_own_host_gets_through_and_only_over_the_peer_channel() {
    let app = app();
    // Not a worker: nothing to tunnel to.
    let (code, body) = open(&app, Some("host"), true).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("not a split worker"), "{body}");

    // A worker whose rpc-server is not up yet.
    work_for(&app, "host", None);
    assert_eq!(open(&app, Some("host"), true).await.0, StatusCode::CONFLICT);

    work_for(&app, "host", Some(1));
    // Another member, however authenticated, is refused.
    let (code, body) = open(&app, Some("intruder"), true).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("only this worker's split host"), "{body}");
    // A plain request is not a tunnel.
    let (code, body) = open(&app, Some("host"), false).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.starts_with("{\"error\""), "{body}");
    // The host is switched over.
    assert_eq!(
        open(&app, Some("host"), true).await.0,
        StatusCode::SWITCHING_PROTOCOLS
    );
    // The public API does not know the path at all.
    assert_eq!(open(&app, None, true).await.0, StatusCode::NOT_FOUND);
}
