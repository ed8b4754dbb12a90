//! Sentences that depend on what each backend is doing with its model, not only on the state
//! words: a failed load, a backend with nothing assigned, a node whose serving backends are not
//! all validated, a node that reaches no peer. [`crate::message`] holds the clock-driven
//! sentences these fall back to.

use crate::backend_state::BackendState;
use crate::message::{node_message, onboarding_message_for, unhealthy_message};
use crate::node::NodeState;
use crate::participation::Participation;
use crate::timing::Timing;

/// What one backend is doing with its assigned model, as far as the sentences care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty<'a> {
    /// No model assigned: idle capacity.
    Standby,
    /// A model is assigned and loading (or about to).
    Loading,
    /// The assigned model answers.
    Serving,
    /// It served, and its health check fails now; the cause.
    Unhealthy(&'a str),
    /// Loading the assigned model failed; the cause.
    Failed(&'a str),
}

/// Where a backend's configuration lives, which decides how an operator changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Built from `infermesh up`'s flags: changed by restarting with other flags.
    CommandLine,
    /// Registered through the admin API: changed with `PUT /admin/v1/nodes/<id>`.
    Config,
}

/// One backend as the sentences see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendBrief<'a> {
    pub id: &'a str,
    pub duty: Duty<'a>,
    pub source: Source,
    /// Per [`crate::backend_state::is_validated`]: its own passing test or admission.
    pub validated: bool,
}

/// How to give a backend a model (or another one), as a command that exists today.
fn assign_how(id: &str, source: Source) -> String {
    match source {
        Source::CommandLine => {
            "declare a workload group (`infermesh group set MODEL --replicas N`) and the mesh \
             places it, or restart `infermesh up` with `--model PATH.gguf` (and without \
             `--standby`)"
                .to_string()
        }
        Source::Config => {
            format!("set `serve` to one of its models with `PUT /admin/v1/nodes/{id}`")
        }
    }
}

/// A failed load: the cause verbatim, then what to do. Nothing retries a failed load, so the
/// sentence must never suggest waiting.
pub fn failed_message(id: &str, cause: &str, source: Source) -> String {
    let again = match source {
        Source::CommandLine => "restart `infermesh up`".to_string(),
        Source::Config => format!("apply it again with `PUT /admin/v1/nodes/{id}`"),
    };
    format!(
        "Backend {id} failed: {cause} — fix the model file or the backend, then {again}; \
         requests go to peers meanwhile"
    )
}

/// A backend with nothing assigned. No round checks it and nothing tests it on its own after
/// registration, so the sentence says what it is and how to put it to work, never "wait".
/// `validated` (its registration's auto-test passed) changes only the first word: a pass
/// does not make idle capacity serve.
pub fn standby_message(id: &str, source: Source, validated: bool) -> String {
    format!(
        "{} — idle capacity, no model assigned; to serve, {}",
        if validated { "Validated" } else { "Standby" },
        assign_how(id, source)
    )
}

/// The sentence for one backend: its own trouble first (a test running or failed, a failed
/// load, a failed health check), then idle capacity, then the clock-driven sentences.
pub fn backend_message(
    b: &BackendBrief,
    state: BackendState,
    participation: Participation,
    timing: &Timing,
) -> String {
    match (state, b.duty) {
        (BackendState::Testing | BackendState::TestFailed, _) => {}
        (_, Duty::Failed(cause)) => return failed_message(b.id, cause, b.source),
        (_, Duty::Unhealthy(cause)) => return unhealthy_message(b.id, cause),
        (_, Duty::Standby) => return standby_message(b.id, b.source, b.validated),
        // It answers its own clients and no peer has admitted it yet: the node's sentence
        // (peers check it within seconds), not a promise of the round.
        (BackendState::Waiting, Duty::Serving)
            if participation == Participation::InactiveWaiting =>
        {
            return onboarding_message_for(
                b.id,
                BackendState::Serving,
                participation,
                timing,
                b.validated,
            );
        }
        (_, Duty::Loading | Duty::Serving) => {}
    }
    onboarding_message_for(b.id, state, participation, timing, b.validated)
}

/// The node is validated only when it has a serving backend and every serving backend is
/// validated: one passing backend must not vouch for an untested sibling that takes traffic.
pub fn node_validated(backends: &[BackendBrief]) -> bool {
    let mut serving = backends
        .iter()
        .filter(|b| b.duty == Duty::Serving)
        .peekable();
    serving.peek().is_some() && serving.all(|b| b.validated)
}

/// The sentence for the node as a whole. A node that serves nothing says why: a failed load
/// outranks a failed health check, and both outrank a sibling still loading and a running
/// round, because nothing but the operator fixes them; a node whose backends are all idle says
/// it is idle capacity (no round checks it). Otherwise [`node_message`] with
/// [`node_validated`].
pub fn node_sentence(
    state: NodeState,
    participation: Participation,
    timing: &Timing,
    backends: &[BackendBrief],
) -> String {
    match state {
        NodeState::Loading => {
            let failed = backends.iter().find_map(|b| match b.duty {
                Duty::Failed(c) => Some(failed_message(b.id, c, b.source)),
                _ => None,
            });
            let unhealthy = || {
                backends.iter().find_map(|b| match b.duty {
                    Duty::Unhealthy(c) => Some(unhealthy_message(b.id, c)),
                    _ => None,
                })
            };
            if let Some(m) = failed.or_else(unhealthy) {
                return m;
            }
        }
        NodeState::Standby => {
            let source = backends
                .iter()
                .find(|b| b.source == Source::Config)
                .map_or(Source::CommandLine, |b| b.source);
            let id = backends
                .iter()
                .find(|b| b.source == source)
                .map_or("<id>", |b| b.id);
            return standby_message(id, source, false);
        }
        NodeState::Client | NodeState::Serving => {}
    }
    node_message(state, participation, timing, node_validated(backends))
}

/// The words every surface uses when a node reaches no peer.
pub const NO_PEER: &str = "not connected to any peer";

/// Whether to say that the node reaches no peer, and what to do about it. A lone node started
/// without `--join` is a one-node mesh by choice (unless it is a client, which can answer
/// nothing alone); one started with `--join` that hears from nobody was meant to be in a mesh.
pub fn peer_notice(configured_client: bool, join_addrs: usize, peers: usize) -> Option<String> {
    if peers > 0 {
        None
    } else if join_addrs > 0 {
        Some(
            "Not connected to any peer (no peers reachable) — no member answered at the invite's addresses; check \
             that the node there runs, that its mesh port (UDP and TCP) is open, and that the \
             token is that mesh's (`infermesh invite` on it prints a fresh one)"
                .to_string(),
        )
    } else if configured_client {
        Some(
            "Not connected to any peer (no peers reachable) — a client only routes to peers; restart it with \
             `--join <TOKEN>` (`infermesh invite` on a member prints one)"
                .to_string(),
        )
    } else {
        None
    }
}

#[cfg(test)]
#[path = "situation_tests.rs"]
mod tests;
