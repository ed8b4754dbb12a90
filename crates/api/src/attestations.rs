//! What this node knows of admission: its own checks of peers (the attestations it publishes)
//! and what it concludes about every member. Plain data, shared by the checker, the router and
//! the status page.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use infermesh_mesh::record::MAX_ATTESTATIONS;
use infermesh_state::admission::{
    in_force, verifiers, Attestation, VERIFIERS_PER_NODE, VIEW_SLACK,
};
use infermesh_state::ScheduleSpec;

/// `(subject, generation, model)`.
pub(crate) type Key = (String, u64, String);

pub(crate) fn key_of(a: &Attestation) -> Key {
    (a.subject.clone(), a.generation, a.model.clone())
}

/// This node's checks: the newest attestation per key, consecutive failures, checks running, and
/// a cache of rendezvous ranks (recomputed only when the member set changes).
#[derive(Default)]
pub struct Book {
    inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) mine: HashMap<Key, Attestation>,
    pub(crate) failures: HashMap<Key, u32>,
    pub(crate) running: HashSet<Key>,
    /// When this node first saw each key it could not yet admit (for the "≈Ns" estimate).
    pub(crate) first_seen: HashMap<Key, Instant>,
    pub(crate) members: Vec<String>,
    pub(crate) ranks: HashMap<(String, u64, u64), Vec<String>>,
}

impl Inner {
    /// The `k + slack` best-ranked verifiers of a subject in `epoch` over the current members.
    pub(crate) fn ranked(&mut self, subject: &str, generation: u64, epoch: u64) -> &[String] {
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

    pub(crate) fn set_members(&mut self, mut members: Vec<String>) {
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
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
    pub(crate) fn record(&self, a: Attestation) -> u32 {
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
