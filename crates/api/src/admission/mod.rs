//! Peer-verified admission at the edge: this node's own checks of the peers it is assigned to
//! verify (the challenges, the attestations it publishes), and the standing of every member as
//! this node judges it from everyone's attestations. The rule itself is
//! `infermesh_state::admission`; this module only gathers its inputs and runs the challenges.

pub mod challenge;

use crate::attestations::Inner;
pub use crate::attestations::{Book, Standing, Waiting};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_mesh::PeerView;
use infermesh_state::admission::{
    check_due, check_epoch, clip_error, connect_retry_after, expiry, in_force, judge, Attestation,
    Subject, Verdict, VERIFIERS_PER_NODE,
};
use infermesh_state::NodeState;

use crate::app::App;
use crate::peer::peer_base;

/// How often the checker looks for due checks (gossip changes wake it sooner).
const TICK: Duration = Duration::from_millis(250);
/// Challenges this node runs at once; more due checks wait for the next tick.
const MAX_CONCURRENT_CHECKS: usize = 2;

/// Every live member's id (this node's first), the input of the rendezvous ranks.
fn member_ids(me: &str, peers: &[PeerView]) -> Vec<String> {
    std::iter::once(me.to_string())
        .chain(peers.iter().map(|p| p.record.node_id.clone()))
        .collect()
}

/// Judges every serving peer's claimed models and this node's own, from the attestations in the
/// peers' records and this node's book.
pub fn standing(app: &App) -> Standing {
    let Some(mesh) = &app.mesh else {
        return Standing::default();
    };
    let now = app.schedule.now_ms();
    let spec = app.schedule.spec();
    let spec = spec.as_ref();
    let me = app.node.info.node_id.as_str();
    let peers = app.peers();
    let mine = app.admission.published(now, spec);
    let mut about: HashMap<&str, Vec<(&str, &Attestation)>> = HashMap::new();
    for p in &peers {
        for a in &p.record.attestations {
            about
                .entry(a.subject.as_str())
                .or_default()
                .push((p.record.node_id.as_str(), a));
        }
    }
    for a in &mine {
        about.entry(a.subject.as_str()).or_default().push((me, a));
    }
    let mut book = app.admission.lock();
    book.set_members(member_ids(me, &peers));
    let verdict = |book: &mut Inner, id: &str, generation: u64, model: &str| {
        let subject = Subject {
            node_id: id,
            generation,
            model,
        };
        // Only live statements about this incarnation and model reach the rank computation: an
        // insider cannot make this node rank members for dozens of made-up epochs. A live one is
        // from this epoch or the last (it lapses at the next round's end), so that is ≤ 2 ranks.
        let list: Vec<(&str, &Attestation)> = about
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(_, a)| {
                a.generation == generation && a.model == model && in_force(now, spec, a)
            })
            .copied()
            .collect();
        // Ranks are filled first: `judge` only reads them.
        let epochs: BTreeSet<u64> = list
            .iter()
            .map(|(_, a)| check_epoch(spec, a.at_ms))
            .collect();
        let allowed: HashMap<u64, Vec<String>> = epochs
            .into_iter()
            .map(|e| (e, book.ranked(id, generation, e).to_vec()))
            .collect();
        judge(now, spec, subject, list.iter().copied(), |who, epoch| {
            allowed
                .get(&epoch)
                .is_some_and(|v| v.iter().any(|x| x == who))
        })
    };
    let mut out = Standing::default();
    let mut seen = HashSet::new();
    for p in peers.iter().filter(|p| p.state == NodeState::Serving) {
        let id = p.record.node_id.as_str();
        for model in &p.record.models {
            match verdict(&mut book, id, p.generation, model) {
                Verdict::Admitted { .. } => {
                    out.admitted
                        .entry(id.to_string())
                        .or_default()
                        .insert(model.clone());
                }
                Verdict::Failed { error } => {
                    out.waiting
                        .entry(id.to_string())
                        .or_default()
                        .insert(model.clone(), Waiting::Failed(error));
                }
                Verdict::Pending => {
                    let key = (id.to_string(), p.generation, model.clone());
                    seen.insert(key.clone());
                    let since = *book.first_seen.entry(key).or_insert_with(Instant::now);
                    out.waiting.entry(id.to_string()).or_default().insert(
                        model.clone(),
                        Waiting::Checking {
                            for_s: since.elapsed().as_secs(),
                        },
                    );
                }
            }
        }
    }
    book.first_seen.retain(|k, _| seen.contains(k));
    for model in app.node.serving_models() {
        if verdict(&mut book, me, mesh.generation(), &model).is_admitted() {
            out.me.insert(model);
        }
    }
    out
}

/// Runs this node's checks until the process ends: every tick (or gossip change), each serving
/// peer's models this node is assigned to verify and that are due get a challenge, at most
/// [`MAX_CONCURRENT_CHECKS`] at once.
pub async fn run(app: Arc<App>) {
    let Some(mesh) = app.mesh.as_ref() else {
        return;
    };
    let mut changes = mesh.subscribe();
    loop {
        for (peer, model) in due_checks(&app) {
            let app = app.clone();
            tokio::spawn(async move { check_one(&app, &peer, &model).await });
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

/// The checks to start now, marked running.
fn due_checks(app: &App) -> Vec<(PeerView, String)> {
    if app.peer_http.is_none() {
        return Vec::new();
    }
    let now = app.schedule.now_ms();
    let spec = app.schedule.spec();
    let epoch = check_epoch(spec.as_ref(), now);
    let me = app.node.info.node_id.clone();
    let peers = app.peers();
    let mut book = app.admission.lock();
    book.set_members(member_ids(&me, &peers));
    let mut due = Vec::new();
    for p in peers.iter().filter(|p| p.state == NodeState::Serving) {
        let id = &p.record.node_id;
        let assigned = book
            .ranked(id, p.generation, epoch)
            .iter()
            .take(VERIFIERS_PER_NODE)
            .any(|v| *v == me);
        if !assigned {
            continue;
        }
        for model in &p.record.models {
            if book.running.len() >= MAX_CONCURRENT_CHECKS {
                return due;
            }
            let key = (id.clone(), p.generation, model.clone());
            if book.running.contains(&key) {
                continue;
            }
            let failures = book.failures.get(&key).copied().unwrap_or(0);
            if check_due(now, spec.as_ref(), book.mine.get(&key), failures) {
                book.running.insert(key);
                due.push((p.clone(), model.clone()));
            }
        }
    }
    due
}

async fn check_one(app: &Arc<App>, peer: &PeerView, model: &str) {
    let Some(http) = app.peer_http.as_ref() else {
        return;
    };
    let name = &peer.record.name;
    let budget = Duration::from_millis(app.tunables.admission_check_ms.max(1000) as u64);
    let base = peer_base(&peer.record.node_id, peer.gossip_addr.port());
    let started = Instant::now();
    let mut attempt = 0;
    let outcome = loop {
        let left = budget.saturating_sub(started.elapsed());
        let outcome = challenge::challenge(http, &base, model, left).await;
        let spent = started.elapsed().as_millis() as u64;
        let wait = match &outcome {
            Err(why) if why.starts_with(challenge::UNREACHABLE) => {
                connect_retry_after(attempt, spent, budget.as_millis() as u64)
            }
            _ => None,
        };
        let Some(wait) = wait else { break outcome };
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    };
    let took_ms = started.elapsed().as_millis() as u64;
    let at_ms = app.schedule.now_ms();
    let spec = app.schedule.spec();
    let failures_before = app.admission.record(Attestation {
        subject: peer.record.node_id.clone(),
        generation: peer.generation,
        model: model.to_string(),
        ok: outcome.is_ok(),
        at_ms,
        expires_ms: expiry(spec.as_ref(), at_ms),
        took_ms,
        error: outcome.as_ref().err().map(|e| clip_error(e)),
    });
    let id = &peer.record.node_id;
    // One line per verdict change, not per retry: a peer that keeps failing is named once.
    match (&outcome, failures_before) {
        (Ok(tokens), 0) => {
            tracing::info!(peer = %name, node_id = %id, model, took_ms, tokens, "admission: peer passed its check; routing to it")
        }
        (Ok(_), n) => {
            tracing::info!(peer = %name, node_id = %id, model, took_ms, "admission: peer passed its check after {n} failed; routing to it again")
        }
        // A member that stopped is unreachable until gossip declares it dead a few seconds
        // later: normal, not the operator's to act on. A member that answers wrongly is.
        (Err(why), 0) if why.starts_with(challenge::UNREACHABLE) => {
            tracing::info!(peer = %name, node_id = %id, model, error = %why, "admission: peer unreachable for its check; no traffic goes to it until it answers")
        }
        (Err(why), 0) => {
            tracing::warn!(peer = %name, node_id = %id, model, took_ms, error = %why, "admission: peer failed its check; no traffic goes to it until it passes (retried with backoff)")
        }
        (Err(why), n) => {
            tracing::debug!(peer = %name, node_id = %id, model, failures = n + 1, error = %why, "admission: peer failed its check again")
        }
    }
    app.publish_if_changed();
}
