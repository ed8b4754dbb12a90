//! The validation round runner and onboarding logger: validates this node's serving backends
//! when a round opens, publishes the signed result (what the node says of itself: it admits
//! nothing), keeps [`RoundView`] (participation and the routed set, both from peers' checks, see
//! [`crate::admission`]) current, and tells the operator in `info` lines where the node stands.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_backend::tester::checked_answer;
use infermesh_mesh::validation::{VALIDATION_MAX_TOKENS, VALIDATION_PROMPT};
use infermesh_mesh::{sign, validation_due, BackendValidation, ValidationResult};
use infermesh_state::{format_duration, gist, NodeState, Participation};

use crate::app::{App, RoundView};

/// How often the runner looks at the clock; bounds how late a round's validation starts.
const TICK: Duration = Duration::from_millis(250);

/// Runs the round loop until the process ends.
pub async fn run(app: Arc<App>) {
    tokio::spawn(crate::admission::run(app.clone()));
    if let Some(mesh) = &app.mesh {
        let mut peer_changes = mesh.subscribe();
        let app2 = app.clone();
        tokio::spawn(async move {
            while peer_changes.changed().await.is_ok() {
                app2.changes.send_modify(|n| *n += 1);
            }
        });
    }
    let mut log = OnboardingLog::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.node.changed.notified() => {}
        }
        if let Some(learner) = &app.learner {
            learner.learn_from_peers(&app.peers());
        }
        let published = app
            .own_validation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.result.epoch);
        let spec = app.schedule.spec();
        // A node still loading when the round opens is checked once it serves, while the round
        // lasts: checking it at once would record "nothing to validate" for the whole epoch.
        if let Some(epoch) = validation_due(spec.as_ref(), app.schedule.now_ms(), published) {
            if !app.node.loading() {
                validate(&app, epoch).await;
            }
        }
        app.publish_if_changed();
        let view = round_view(&app);
        *app.rounds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view.clone());
        log.observe(&app, &view);
    }
}

/// Participation and routing come from peers' checks ([`crate::admission::standing`]); the
/// admitted backends from this node's own round.
fn round_view(app: &App) -> RoundView {
    let standing = crate::admission::standing(app);
    let participation = Participation::of(app.node.state(), !standing.me.is_empty());
    let mut active_set: BTreeSet<String> = standing.admitted.keys().cloned().collect();
    if participation.is_active() {
        active_set.insert(app.node.info.node_id.clone());
    }
    // A backend whose model the node's verifiers admitted is proven for this epoch as much as
    // one that passed the node's own round check: traffic goes to it.
    let peer_admitted: BTreeSet<String> = app
        .node
        .ready_backends()
        .into_iter()
        .filter(|(_, model, _)| standing.me.contains(model))
        .map(|(id, _, _)| id)
        .collect();
    let epoch = app.schedule.current_epoch();
    let Some(e) = epoch else {
        return RoundView {
            participation,
            admitted: peer_admitted,
            active_set,
            standing,
            epoch: None,
        };
    };
    let own = app
        .own_validation
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // The same handover as for nodes: last epoch's admission holds until this round ends.
    let handover = app.timing().in_round && e > 0;
    let mut admitted: BTreeSet<String> = own
        .filter(|v| v.result.epoch == e || (handover && v.result.epoch == e - 1))
        .map(|v| {
            v.result
                .admitted_backends()
                .map(|b| b.backend_id.clone())
                .collect()
        })
        .unwrap_or_default();
    admitted.extend(peer_admitted);
    RoundView {
        participation,
        admitted,
        active_set,
        standing,
        epoch,
    }
}

/// One validation inference per serving backend, then the signed result into the record.
async fn validate(app: &Arc<App>, epoch: u64) {
    let Some(key) = &app.signing_key else {
        return;
    };
    // A client has nothing to validate and never joins the active set: no round for it.
    if app.node.info.client_mode {
        return;
    }
    let serving = app.node.ready_backends();
    let mut results = Vec::new();
    for (id, model, backend) in serving {
        let started = Instant::now();
        let outcome = checked_answer(
            backend.as_ref(),
            &model,
            VALIDATION_PROMPT,
            VALIDATION_MAX_TOKENS,
        )
        .await
        .map_err(|e| e.to_string());
        let infer_ms = started.elapsed().as_millis() as u64;
        let (tokens, error) = match outcome {
            Ok(tokens) => (tokens, None),
            Err(e) => (0, Some(e)),
        };
        match &error {
            None => {
                tracing::info!(backend = %id, model, epoch, infer_ms, tokens, "round: backend validated")
            }
            Some(e) => {
                tracing::error!(backend = %id, model, epoch, error = %e, "round: backend failed validation; it will not serve this epoch — fix it before the next round")
            }
        }
        results.push(BackendValidation {
            backend_id: id,
            model,
            infer_ms,
            tokens,
            error,
        });
    }
    if results.is_empty() {
        tracing::info!(
            epoch,
            "round: no serving backend to validate; this node stays inactive this epoch"
        );
    }
    let result = ValidationResult::from_backends(
        app.node.info.node_id.clone(),
        epoch,
        results,
        app.schedule.now_ms(),
    );
    app.metrics.record_round(result.passed);
    *app.own_validation
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(sign(result, key));
    app.publish_if_changed();
}

/// The operator's onboarding narrative at `info`, in the words `/api/status` and
/// `GET /admin/v1/nodes` use: a line whenever the node's sentence (or a backend's own, where it
/// differs) changes beyond its countdown, a heartbeat while inactive, one line when the alert
/// window opens, one on becoming active.
#[derive(Default)]
struct OnboardingLog {
    last_heartbeat: Option<Instant>,
    alerted_for: Option<Option<u64>>,
    was_active: bool,
    said: Option<String>,
    said_by_backend: HashMap<String, String>,
}

impl OnboardingLog {
    fn observe(&mut self, app: &App, view: &RoundView) {
        let state = app.node.state();
        let message = crate::status::message_now(app, view);
        let said = gist(&message);
        let mut changed = self.said.as_ref() != Some(&said);
        if changed {
            self.said = Some(said);
        }
        self.observe_backends(app, &message);
        if state == NodeState::Client {
            if changed {
                tracing::info!(state = state.as_str(), "onboarding: {message}");
            }
            return;
        }
        let timing = app.timing();
        let active = view.participation.is_active();
        if active != self.was_active {
            self.was_active = active;
            if active {
                tracing::info!(
                    epoch = view.epoch.unwrap_or_default(),
                    "active: peers verified this node; receiving routed traffic"
                );
            } else {
                tracing::info!(
                    epoch = view.epoch.unwrap_or_default(),
                    "not active this epoch: {message}"
                );
                changed = false;
            }
            self.last_heartbeat = Some(Instant::now());
        }
        if timing.should_be_online
            && !timing.in_round
            && self.alerted_for != Some(timing.target_round_epoch)
        {
            self.alerted_for = Some(timing.target_round_epoch);
            // A node whose sentence already says so has just logged it.
            if !(changed && message.ends_with("must be online now")) {
                tracing::info!(
                    "round starts in {} — must be online now",
                    format_duration(timing.seconds_until_next_round.max(1))
                );
            }
        }
        let every = Duration::from_millis(app.tunables.onboarding_heartbeat_ms.max(1000) as u64);
        let heartbeat = !active && self.last_heartbeat.is_none_or(|t| t.elapsed() >= every);
        if changed || heartbeat {
            self.last_heartbeat = Some(Instant::now());
            tracing::info!(
                state = state.as_str(),
                participation = view.participation.as_str(),
                "onboarding: {message}"
            );
        }
    }

    /// A backend's sentence is logged when it changes and says something the node's does not
    /// (on a one-backend node they are mostly the same words).
    fn observe_backends(&mut self, app: &App, node_message: &str) {
        let envelopes = crate::admin::view::envelopes(app);
        self.said_by_backend
            .retain(|id, _| envelopes.iter().any(|e| &e.node.id == id));
        for e in envelopes {
            let message = &e.onboarding.message;
            let g = gist(message);
            if self.said_by_backend.get(&e.node.id) == Some(&g) {
                continue;
            }
            if message != node_message {
                tracing::info!(
                    backend = %e.node.id,
                    backend_state = e.onboarding.backend_state.as_str(),
                    "onboarding: backend {}: {message}",
                    e.node.id
                );
            }
            self.said_by_backend.insert(e.node.id, g);
        }
    }
}
