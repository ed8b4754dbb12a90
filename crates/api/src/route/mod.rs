//! The mesh router behind `/v1/*`: which node answers an OpenAI request, and failover to another
//! replica while nothing has reached the client yet.

mod embed;
mod fanout;
mod proxy;
mod record;
mod resume;

pub use embed::embeddings;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use infermesh_state::{route_order_spread, Candidate, NodeState, Priority};
use serde_json::json;

use crate::admission::Waiting;
use crate::app::App;
use crate::error::OpenAiError;
use crate::node::LocalModel;
use crate::openai::{parse, parse::Parsed, serve_local, unix_now, Shape};
use crate::peer::{peer_base, PeerIdentity};
use record::Pending;

/// Where one attempt goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub node_id: String,
    pub name: String,
    /// Base URL of the peer's API on the peer channel (`https://<id>.peer…:<port>`); `None`
    /// for this node itself.
    pub addr: Option<String>,
}

/// Targets in the order to try them: [`route_order_spread`] (local first, then least loaded,
/// ties spread across requests), with
/// peers that failed within the cooldown moved last rather than dropped — a peer that is in fact
/// back is better than no answer.
pub fn order_targets(
    cands: &[Candidate],
    targets: &[Target],
    spread: u64,
    recently_failed: impl Fn(&str) -> bool,
) -> Vec<Target> {
    let (mut fresh, failed): (Vec<_>, Vec<_>) = route_order_spread(cands, spread)
        .into_iter()
        .map(|i| targets[i].clone())
        .partition(|t| !recently_failed(&t.node_id));
    fresh.extend(failed);
    fresh
}

struct Plan {
    targets: Vec<Target>,
    /// Why this node's own replica is not usable, when it has one.
    local_not_ready: Option<String>,
    /// This node or a peer (in any state) lists the model.
    known: bool,
    /// Serving peers that claim the model but are not admitted for it, and why.
    unadmitted: Vec<Waiting>,
    /// No live peer at all.
    alone: bool,
}

fn plan(app: &App, model: &str, local_only: bool) -> Plan {
    let node = &app.node;
    let mut cands = Vec::new();
    let mut targets = Vec::new();
    let mut local_not_ready = None;
    let mut known = true;
    let mut unadmitted = Vec::new();
    let mut alone = true;
    match node.find_local(model) {
        LocalModel::Ready(_) => {
            cands.push(Candidate {
                node_id: node.info.node_id.clone(),
                is_local: true,
                state: NodeState::Serving,
                has_model: true,
                in_flight: node.client_load(),
                // A node's own healthy backend answers the clients that reach this node directly
                // whatever the round said: the active set governs what the *mesh* routes to a
                // node (see docs/decisions.md).
                active: true,
            });
            targets.push(Target {
                node_id: node.info.node_id.clone(),
                name: node.info.name.clone(),
                addr: None,
            });
        }
        LocalModel::NotReady(why) => local_not_ready = Some(why),
        LocalModel::Absent => known = false,
    }
    if !local_only {
        let rounds = app.round_view();
        let standing = &rounds.standing;
        for p in app.peers() {
            alone = false;
            let id = &p.record.node_id;
            let admitted = standing.admits(id, model);
            let claims =
                p.state == NodeState::Serving && p.record.models.iter().any(|m| m == model);
            if claims && !admitted {
                // Not judged yet (the standing is refreshed every tick; this peer is newer).
                let w = standing.waiting.get(id).and_then(|m| m.get(model));
                unadmitted.push(w.cloned().unwrap_or(Waiting::Checking { for_s: 0 }));
            }
            cands.push(Candidate {
                node_id: id.clone(),
                is_local: false,
                state: p.state,
                has_model: p.record.models.iter().any(|m| m == model),
                // The peer's published load lags; our own outstanding count does not.
                in_flight: p.record.load.max(app.balance.outstanding_on(id)),
                // Only peers their verifiers admitted for this model receive mesh traffic; what
                // a peer says of itself counts for nothing.
                active: admitted,
            });
            targets.push(Target {
                node_id: id.clone(),
                name: p.record.name.clone(),
                // The address the peer signed into its membership record, on the authenticated
                // channel: never the free-form `api_addr` string.
                addr: Some(peer_base(id, p.gossip_addr.port())),
            });
        }
    }
    known |= cands.iter().any(|c| c.has_model);
    Plan {
        targets: order_targets(&cands, &targets, app.balance.next_spread(), |id| {
            app.balance.recently_failed(id)
        }),
        local_not_ready,
        known,
        unadmitted,
        alone,
    }
}

/// The authenticated member a request came from over the peer channel, if it did.
type FromPeer = Option<Extension<PeerIdentity>>;

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    peer: FromPeer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse::chat(&body) {
        Ok(mut p) => {
            // An admission check from an authenticated member runs in the validation lane, so a
            // busy node is judged on its answer, not on its queue. Anyone else's header is noise.
            if peer.is_some() && headers.contains_key(crate::admission::challenge::CHECK_HEADER) {
                p.req.priority = Priority::Validation;
            }
            if let Err(e) = continuation(&mut p, peer.is_some(), &headers, &body) {
                return e.into_response();
            }
            if p.n > 1 {
                return fanout::choices(app, peer, &body, p.n, p.stream, Shape::Chat).await;
            }
            dispatch(app, p, Shape::Chat, body, peer).await
        }
        Err(e) => e.into_response(),
    }
}

pub async fn completions(
    State(app): State<Arc<App>>,
    peer: FromPeer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match parse::completion(&body) {
        Ok(p) if p.n > 1 => fanout::choices(app, peer, &body, p.n, p.stream, Shape::Text).await,
        Ok(mut p) => {
            if let Err(e) = continuation(&mut p, peer.is_some(), &headers, &body) {
                return e.into_response();
            }
            dispatch(app, p, Shape::Text, body, peer).await
        }
        Err(e) => e.into_response(),
    }
}

/// A member's request to continue a stream another node started (see [`resume`]). Anyone
/// else's header is ignored: a continuation is only ever asked of a replica by a router.
fn continuation(
    p: &mut Parsed,
    from_peer: bool,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), OpenAiError> {
    if !from_peer {
        return Ok(());
    }
    let Some(c) = resume::requested(headers, body)? else {
        return Ok(());
    };
    if !p.stream || p.n > 1 {
        return Err(OpenAiError::bad_request(
            "a continuation is of a single streamed answer",
            Some(resume::FIELD),
        ));
    }
    p.req.params.continuation = Some(c);
    Ok(())
}

async fn dispatch(app: Arc<App>, p: Parsed, shape: Shape, body: Bytes, peer: FromPeer) -> Response {
    let model = p.req.model.clone();
    let (plan, mut pending, hop) = start(&app, peer, &model, shape.endpoint(), p.stream);
    if hop && p.req.priority == Priority::Validation {
        pending.admission_check();
    }
    let mut failures = Failures::default();
    for target in &plan.targets {
        pending.attempts += 1;
        let attempt = match &target.addr {
            None => serve_local(app.node.clone(), &p, shape)
                .await
                .map_err(|f| (f.error, f.retry)),
            Some(addr) => {
                proxy::forward(&app, target, addr, shape.path(), body.clone(), false).await
            }
        };
        match attempt {
            // A stream this node routed is finished by another replica if its node goes away
            // mid-answer; a hop's stream is its router's to continue.
            Ok(resp) if p.stream && !hop && resume::is_event_stream(&resp) => {
                let f = resume::Failover {
                    app: app.clone(),
                    parsed: p.clone(),
                    body: body.clone(),
                    shape,
                    current: target.clone(),
                    tried: Vec::new(),
                };
                return pending.answered(app, target, resume::relay(resp, f));
            }
            Ok(resp) => return pending.answered(app, target, resp),
            Err((err, retry)) => {
                if let Some(err) = failures.book(&app, &model, target, err, retry) {
                    return pending.failed(&app, Some(target), err);
                }
            }
        }
    }
    let err = failures.unanswered(&app, &model, plan);
    pending.failed(&app, None, err)
}

/// Where a routed request may go and its record, opened now; and whether it came from a peer
/// (then it is answered here and never forwarded again: at most one hop).
fn start(
    app: &App,
    peer: FromPeer,
    model: &str,
    endpoint: &'static str,
    stream: bool,
) -> (Plan, Pending, bool) {
    let started = Instant::now();
    let hop = peer.is_some();
    let from = peer.map_or_else(|| app.node.info.node_id.clone(), |Extension(p)| p.0);
    let plan = plan(app, model, hop);
    let pending = Pending::new(from, model, plan.known, endpoint, stream, started);
    (plan, pending, hop)
}

/// What one request's failed attempts left, for the error the client gets if none answers.
#[derive(Default)]
struct Failures {
    last_error: Option<String>,
    /// The soonest any busy replica expects to take the request.
    retry_after: Option<u32>,
}

impl Failures {
    /// Books a failed attempt at `target`. Returns the error when it is the client's to see now
    /// (not worth another replica); `None` when the next target may be tried.
    fn book(
        &mut self,
        app: &App,
        model: &str,
        target: &Target,
        err: OpenAiError,
        retry: bool,
    ) -> Option<OpenAiError> {
        if target.addr.is_some() {
            app.balance.mark_failed(&target.node_id);
        }
        tracing::info!(model, to = %target.name, error = %err.message, retry, "routed attempt failed");
        if !retry {
            return Some(err);
        }
        if let Some(s) = err.retry_after_s {
            self.retry_after = Some(self.retry_after.map_or(s, |r| r.min(s)));
        }
        self.last_error = Some(format!("{}: {}", target.name, err.message));
        None
    }

    /// The error when no target answered, with the soonest `Retry-After` a replica gave.
    fn unanswered(self, app: &App, model: &str, plan: Plan) -> OpenAiError {
        let mut err = unanswered(app, model, plan, self.last_error);
        err.retry_after_s = self.retry_after.or(err.retry_after_s);
        err
    }
}

/// Why no target answered: nobody admitted yet, no peer at all, or no replica (404 or 503).
fn unanswered(app: &App, model: &str, plan: Plan, last_error: Option<String>) -> OpenAiError {
    if plan.targets.is_empty() && !plan.unadmitted.is_empty() {
        not_admitted(model, &plan.unadmitted)
    } else if plan.targets.is_empty() && plan.alone && !plan.known && app.expects_peers() {
        OpenAiError::unavailable(format!(
            "no peers reachable: this node does not serve `{model}` and is not connected to any \
             peer; check that the --join address is reachable"
        ))
    } else {
        no_replica(model, plan.targets.len(), plan.local_not_ready, last_error)
    }
}

/// 503 for a model that serving peers claim but none is admitted for yet: the client learns the
/// model exists, and how long to wait, instead of a 404.
fn not_admitted(model: &str, waiting: &[Waiting]) -> OpenAiError {
    let n = waiting.len();
    let nodes = if n == 1 { "node serves" } else { "nodes serve" };
    let checking: Vec<u64> = waiting
        .iter()
        .filter_map(|w| match w {
            Waiting::Checking { for_s } => Some(*for_s),
            Waiting::Failed(_) => None,
        })
        .collect();
    // A check takes about a second once it starts; gossip adds one or two.
    let eta = checking
        .iter()
        .map(|s| 5u64.saturating_sub(*s).max(1))
        .min();
    let mut err = match eta {
        Some(eta) => OpenAiError::unavailable(format!(
            "{n} {nodes} `{model}`; admission check in progress (≈{eta}s)"
        )),
        None => {
            let why = waiting.iter().find_map(|w| match w {
                Waiting::Failed(e) => Some(e.as_str()),
                Waiting::Checking { .. } => None,
            });
            let why = why.unwrap_or("check failed");
            OpenAiError::unavailable(if n == 1 {
                format!(
                    "1 node serves `{model}`, but it failed its admission check: {why}; it is \
                     checked again shortly"
                )
            } else {
                format!(
                    "{n} nodes serve `{model}`, but none passed its admission check (last: \
                     {why}); they are checked again shortly"
                )
            })
        }
    };
    err.retry_after_s = Some(eta.unwrap_or(5) as u32);
    err
}

/// The error a client gets when no replica answered: 404 for a model nobody serves, 503 when
/// replicas exist but none could answer now.
fn no_replica(
    model: &str,
    tried: usize,
    local_not_ready: Option<String>,
    last_error: Option<String>,
) -> OpenAiError {
    match (tried, local_not_ready, last_error) {
        (0, Some(why), _) => OpenAiError::unavailable(why),
        (0, None, _) => OpenAiError::model_not_found(model),
        (n, _, last) => OpenAiError::unavailable(format!(
            "no replica of model `{model}` could answer ({n} tried; last: {}); retry shortly",
            last.unwrap_or_default()
        )),
    }
}

/// `GET /v1/models`: every model this node can get answered — its own, and those its peers are
/// admitted for — with the replica count.
pub async fn list_models(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let mut replicas: BTreeMap<String, u32> = BTreeMap::new();
    for m in app.node.serving_models() {
        *replicas.entry(m).or_default() += 1;
    }
    let rounds = app.round_view();
    let standing = &rounds.standing;
    for p in app.peers() {
        if p.state != NodeState::Serving {
            continue;
        }
        for m in p.record.models {
            if standing.admits(&p.record.node_id, &m) {
                *replicas.entry(m).or_default() += 1;
            }
        }
    }
    let created = unix_now();
    let data: Vec<_> = replicas
        .into_iter()
        .map(|(id, n)| json!({"id": id, "object": "model", "created": created, "owned_by": "infermesh", "replicas": n}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, local: bool, load: u32, serving: bool) -> (Candidate, Target) {
        (
            Candidate {
                node_id: id.into(),
                is_local: local,
                state: if serving {
                    NodeState::Serving
                } else {
                    NodeState::Loading
                },
                has_model: true,
                in_flight: load,
                active: true,
            },
            Target {
                node_id: id.into(),
                name: id.into(),
                addr: (!local).then(|| format!("{id}:1")),
            },
        )
    }

    fn order(list: &[(Candidate, Target)], failed: &[&str]) -> Vec<String> {
        let (c, t): (Vec<_>, Vec<_>) = list.iter().cloned().unzip();
        order_targets(&c, &t, 0, |id| failed.contains(&id))
            .into_iter()
            .map(|t| t.node_id)
            .collect()
    }

    #[test]
    fn local_then_least_loaded_and_ineligible_dropped() {
        let l = [
            cand("b", false, 3, true),
            cand("c", false, 1, true),
            cand("me", true, 9, true),
            cand("d", false, 0, false),
        ];
        assert_eq!(order(&l, &[]), ["me", "c", "b"]);
    }

    #[test]
    fn recently_failed_peers_go_last_but_stay() {
        let l = [cand("b", false, 3, true), cand("c", false, 1, true)];
        assert_eq!(order(&l, &["c"]), ["b", "c"]);
        assert_eq!(order(&l, &["b", "c"]), ["c", "b"]);
    }

    #[test]
    fn no_replica_errors_name_the_model() {
        let e = no_replica("m", 0, None, None);
        assert_eq!(e.status.as_u16(), 404);
        let e = no_replica(
            "m",
            0,
            Some("model `m` is loading; retry shortly".into()),
            None,
        );
        assert_eq!(e.status.as_u16(), 503);
        assert!(e.message.contains("loading"));
        let e = no_replica("m", 2, None, Some("b: connection refused".into()));
        assert_eq!(e.status.as_u16(), 503);
        assert!(e.message.contains("`m`") && e.message.contains("2 tried"));
    }
}
