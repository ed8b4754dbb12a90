//! REQUESTS and MODELS over the whole mesh: the deck pulls the connected node's merged view
//! (`/api/mesh/requests`), shows it by default with who is missing from it, and `a` switches to
//! this node's own requests and back.

mod common;

use common::{assert_hides, assert_shows, ch, screen};
use infermesh_deck::api::{MeshRequestsBody, NodeRead, RequestRecord};
use infermesh_deck::fixtures::{self, peer_id, peer_name, NOW_MS, SELF_ID, SELF_NAME, URL};
use infermesh_deck::model::Scope;
use infermesh_deck::update::PULL_EVERY_MS;
use infermesh_deck::{update, Cmd, Msg};

fn fetches_mesh(cmds: &[Cmd]) -> bool {
    cmds.iter()
        .any(|c| matches!(c, Cmd::FetchMeshRequests(base) if base == URL))
}

/// Requests that peer 1 received from its clients and routed to peer 2.
fn peer_traffic(n: usize) -> Vec<RequestRecord> {
    (0..n)
        .map(|i| RequestRecord {
            id: i as u64 + 1,
            at_ms: NOW_MS - 1_000 + i as i64,
            from: Some(peer_id(1)),
            to: Some(peer_id(2)),
            to_name: Some(peer_name(2)),
            model: "model-mesh".into(),
            status: 200,
            latency_ms: 80,
            tokens: Some(7),
            node: Some(peer_id(1)),
            ..RequestRecord::default()
        })
        .collect()
}

fn view(requests: Vec<RequestRecord>, unread: Option<&str>) -> MeshRequestsBody {
    let node = |id: String, name: String, error: Option<&str>| NodeRead {
        node_id: id,
        name,
        error: error.map(str::to_string),
    };
    MeshRequestsBody {
        requests,
        nodes: vec![
            node(SELF_ID.into(), SELF_NAME.into(), None),
            node(peer_id(1), peer_name(1), None),
            node(peer_id(2), peer_name(2), unread),
        ],
    }
}

#[test]
fn the_mesh_view_is_pulled_every_two_seconds_one_pull_at_a_time() {
    let mut m = fixtures::model(3, 0);
    // The fixture's first tick sent the first pull; none other until it is answered.
    assert!(m.mesh.in_flight);
    assert!(!fetches_mesh(&update(
        &mut m,
        Msg::Tick(NOW_MS + PULL_EVERY_MS)
    )));
    update(&mut m, Msg::MeshRequests(Ok(view(peer_traffic(3), None))));
    assert!(!fetches_mesh(&update(
        &mut m,
        Msg::Tick(NOW_MS + PULL_EVERY_MS - 1)
    )));
    assert!(fetches_mesh(&update(
        &mut m,
        Msg::Tick(NOW_MS + PULL_EVERY_MS)
    )));
    // This node's scope needs no pull.
    update(&mut m, Msg::MeshRequests(Ok(view(peer_traffic(3), None))));
    ch(&mut m, '5');
    ch(&mut m, 'a');
    assert_eq!(m.mesh.scope, Scope::Node);
    assert!(!fetches_mesh(&update(
        &mut m,
        Msg::Tick(NOW_MS + 10 * PULL_EVERY_MS)
    )));
    // Back to the whole mesh: pulled at once, not at the next tick.
    assert!(fetches_mesh(&ch(&mut m, 'a')));
}

#[test]
fn requests_and_models_show_the_whole_mesh_and_name_a_member_missing_from_it() {
    let mut m = fixtures::model(3, 0);
    update(
        &mut m,
        Msg::MeshRequests(Ok(view(
            peer_traffic(6),
            Some("did not answer within 1500 ms"),
        ))),
    );
    update(&mut m, Msg::Tick(NOW_MS));
    ch(&mut m, '5');
    let s = screen(&m, 160, 40);
    assert_shows(
        &s,
        "whole mesh, 3 nodes, 1 unread: node-0002 (did not answer within 1500 ms)",
    );
    assert_shows(&s, "node-0001 → node-0002");
    assert_shows(&s, "model-mesh");
    // This node's own ring (box-self → …) is not what the mesh view lists.
    assert_hides(&s, "box-self →");
    assert_shows(&s, "6 newest first");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "whole mesh, 3 nodes");
    assert_shows(&narrow, "node-0001 → node-0002");

    // MODELS' req/s counts the mesh's requests: 6 in the last minute.
    let g = m
        .model_groups()
        .into_iter()
        .find(|g| g.model == "model-mesh")
        .expect("the mesh's model is listed");
    assert!((g.rps - 6.0 / 60.0).abs() < 1e-9, "rps {}", g.rps);
    assert!((g.tok_s - 42.0 / 60.0).abs() < 1e-9, "tok/s {}", g.tok_s);
    ch(&mut m, '2');
    let s = screen(&m, 160, 40);
    assert_shows(&s, "TOK/S");
    assert_shows(&s, "over 60 s, whole mesh");
    ch(&mut m, '5');

    // `a`: this node's own requests only.
    ch(&mut m, 'a');
    let s = screen(&m, 160, 40);
    assert_shows(&s, "this node · a: whole mesh");
    assert_shows(&s, "box-self → node-0000");
    assert_hides(&s, "model-mesh");
    assert_shows(&s, "40 newest first");
}

#[test]
fn a_node_without_the_mesh_view_falls_back_to_its_own_requests_and_says_why() {
    let mut m = fixtures::model(2, 0);
    update(&mut m, Msg::MeshRequests(Err("HTTP 404: no route".into())));
    ch(&mut m, '5');
    let s = screen(&m, 160, 40);
    assert_shows(&s, "this node (whole mesh unavailable: HTTP 404: no route)");
    assert_shows(&s, "box-self → node-0000");

    // A view that later fails keeps what it had and says since when.
    update(&mut m, Msg::MeshRequests(Ok(view(peer_traffic(2), None))));
    update(&mut m, Msg::MeshRequests(Err("timed out".into())));
    let s = screen(&m, 160, 40);
    assert_shows(&s, "whole mesh, 3 nodes, as of");
    assert_shows(&s, "(last pull: timed out)");
    assert_shows(&s, "node-0001 → node-0002");
}

#[test]
fn an_empty_mesh_says_where_requests_will_appear() {
    let mut m = fixtures::model(2, 0);
    update(&mut m, Msg::MeshRequests(Ok(view(Vec::new(), None))));
    ch(&mut m, '5');
    assert_shows(&screen(&m, 160, 40), "No routed requests in the mesh yet");
}
