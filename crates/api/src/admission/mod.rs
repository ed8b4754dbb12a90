//! Peer-verified admission at the edge: this node's own checks of the peers it is assigned to
//! verify (the challenges, the attestations it publishes), and the standing of every member as
//! this node judges it from everyone's attestations. The rule itself is
//! `infermesh_state::admission`; this module only gathers its inputs and runs the challenges.

pub mod challenge;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infermesh_mesh::record::MAX_ATTESTATIONS;
use infermesh_mesh::PeerView;
use infermesh_state::admission::{
    check_due, check_epoch, clip_error, expiry, in_force, judge, verifiers, Attestation, Subject,
    Verdict, VERIFIERS_PER_NODE, VIEW_SLACK,
};
use infermesh_state::{NodeState, ScheduleSpec};

use crate::app::App;
use crate::peer::peer_base;

/// How often the checker looks for due checks (gossip changes wake it sooner).
const TICK: Duration = Duration::from_millis(250);
/// Challenges this node runs at once; more due checks wait for the next tick.
const MAX_CONCURRENT_CHECKS: usize = 2;

/// `(subject, generation, model)`.
type Key = (String, u64, String);

fn key_of(a: &Attestation) -> Key {
    (a.subject.clone(), a.generation, a.model.clone())
}

/// This node's checks: the newest attestation per key, consecutive failures, checks running, and
/// a cache of rendezvous ranks (recomputed only when the member set changes).
#[derive(Default)]
pub struct Book {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    mine: HashMap<Key, Attestation>,
    failures: HashMap<Key, u32>,
    running: HashSet<Key>,
    /// When this node first saw each key it could not yet admit (for the "≈Ns" estimate).
    first_seen: HashMap<Key, Instant>,
    members: Vec<String>,
    ranks: HashMap<(String, u64, u64), Vec<String>>,
}

impl Inner {
    /// The `k + slack` best-ranked verifiers of a subject in `epoch` over the current members.
    fn ranked(&mut self, subject: &str, generation: u64, epoch: u64) -> &[String] {
        let members = &self.members;
        self.ranks
            .entry((subject.to_string(), generation, epoch))
            .or_insert_with(|| {
                verifiers(
                    subject,
                    generation,
                    epoch,
                    members.iter().map(String::as_str),
                    VERIFIERS_PER_NODE + VIEW_SLACK,
                )
                .into_iter()
                .map(str::to_string)
                .collect()
            })
    }

    fn set_members(&mut self, mut members: Vec<String>) {
        members.sort_unstable();
        members.dedup();
        // New members change every rank; and old epochs' ranks are never asked for again, so
        // a stable mesh sheds them rather than keeping one per node per epoch forever.
        let stale = self.ranks.len() > 4 * members.len() + 64;
        if members != self.members || stale {
            self.members = members;
            self.ranks.clear();
        }
    }
}

impl Book {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attestations this node publishes: unexpired, newest first, at most
    /// [`MAX_ATTESTATIONS`] (a record must stay small).
    pub fn published(&self, now_ms: i64, spec: Option<&ScheduleSpec>) -> Vec<Attestation> {
        let mut inner = self.lock();
        inner.mine.retain(|_, a| in_force(now_ms, spec, a));
        let Inner { mine, failures, .. } = &mut *inner;
        failures.retain(|k, _| mine.contains_key(k));
        let mut out: Vec<Attestation> = inner.mine.values().cloned().collect();
        out.sort_by(|a, b| {
            b.at_ms
                .cmp(&a.at_ms)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        out.truncate(MAX_ATTESTATIONS);
        out
    }

    /// Keeps `a` as this node's newest word on its key; returns the failures in a row before it.
    fn record(&self, a: Attestation) -> u32 {
        let mut inner = self.lock();
        let key = key_of(&a);
        inner.running.remove(&key);
        let before = if a.ok {
            inner.failures.remove(&key)
        } else {
            let n = inner.failures.entry(key.clone()).or_default();
            *n += 1;
            Some(*n - 1)
        };
        inner.mine.insert(key, a);
        before.unwrap_or(0)
    }
}

/// What this node concludes about the members, for routing, status and its own participation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// Peers admitted, with the models each is admitted for.
    pub admitted: BTreeMap<String, BTreeSet<String>>,
    /// Serving peers not (yet) admitted for a model they claim, with why, by peer then model.
    pub waiting: BTreeMap<String, BTreeMap<String, Waiting>>,
    /// This node's own models that its verifiers admitted.
    pub me: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    /// No verdict yet, first seen this many seconds ago.
    Checking { for_s: u64 },
    /// Its verifiers found it failing.
    Failed(String),
}

impl Standing {
    pub fn admits(&self, node_id: &str, model: &str) -> bool {
        self.admitted
            .get(node_id)
            .is_some_and(|m| m.contains(model))
    }

    /// One line on where a peer stands, for `/api/status` (`None` when it serves nothing, so
    /// there is nothing to admit): what it is admitted for, then what is still checked or failed.
    pub fn describe(&self, node_id: &str) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(models) = self.admitted.get(node_id).filter(|m| !m.is_empty()) {
            let list: Vec<&str> = models.iter().map(String::as_str).collect();
            parts.push(format!("admitted for {}", list.join(", ")));
        }
        for (model, w) in self.waiting.get(node_id).into_iter().flatten() {
            parts.push(match w {
                Waiting::Checking { for_s } => {
                    format!("admission check in progress for {model} ({for_s}s)")
                }
                Waiting::Failed(why) => format!("failed its admission check for {model}: {why}"),
            });
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

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
    let outcome = challenge::challenge(http, &base, model, budget).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_described_by_what_it_is_admitted_for_and_what_is_pending() {
        let mut s = Standing::default();
        assert_eq!(s.describe("p"), None);
        s.admitted.entry("p".into()).or_default().insert("a".into());
        assert_eq!(s.describe("p").as_deref(), Some("admitted for a"));
        let w = s.waiting.entry("p".into()).or_default();
        w.insert("b".into(), Waiting::Checking { for_s: 2 });
        w.insert(
            "c".into(),
            Waiting::Failed("did not answer within 20 s".into()),
        );
        assert_eq!(
            s.describe("p").as_deref(),
            Some(
                "admitted for a; admission check in progress for b (2s); failed its admission \
                 check for c: did not answer within 20 s"
            )
        );
        assert!(s.admits("p", "a") && !s.admits("p", "b") && !s.admits("q", "a"));
    }
}
