//! The validation round runner and onboarding logger: validates this node's serving backends
//! when a round opens, publishes the signed result, keeps [`RoundView`] (participation, admitted
//! backends, the epoch's active set) current, and tells the operator in `info` lines where the
//! node stands.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use infermesh_backend::tester::checked_answer;
use infermesh_mesh::validation::{VALIDATION_MAX_TOKENS, VALIDATION_PROMPT};
use infermesh_mesh::{
    active_set, collect_validations, participation_of, sign, validation_due, BackendValidation,
    ParticipationTracker, ValidationResult,
};
use infermesh_state::{format_duration, NodeState, Participation};

use crate::app::{App, RoundView};

/// How often the runner looks at the clock; bounds how late a round's validation starts.
const TICK: Duration = Duration::from_millis(250);

/// Participation from the records this node holds; `Err` while the schedule is unknown (the
/// tracker then keeps its previous value).
fn participation_inputs(app: &App) -> Result<Participation, String> {
    if app.schedule.spec().is_none() {
        return Err("schedule unknown".into());
    }
    let Some(epoch) = app.schedule.current_epoch() else {
        return Ok(Participation::InactiveWaiting);
    };
    Ok(participation_of(
        &app.node.info.node_id,
        &routable_set(app, epoch),
    ))
}

/// The nodes the mesh routes to now: those admitted in this epoch's round and — while that
/// round is still running — those admitted in the previous one. Without the handover every
/// node would drop out of routing at each epoch start until its new result had been gossiped.
fn routable_set(app: &App, epoch: u64) -> BTreeSet<String> {
    let records = collect_validations(&app.record(), &app.peers());
    let mut set = active_set(&records, epoch);
    if app.timing().in_round && epoch > 0 {
        set.extend(active_set(&records, epoch - 1));
    }
    set
}

/// Runs the round loop until the process ends.
pub async fn run(app: Arc<App>) {
    let weak: Weak<App> = Arc::downgrade(&app);
    let tracker = ParticipationTracker::spawn(
        move || {
            let app = weak.upgrade().ok_or("node stopped")?;
            participation_inputs(&app)
        },
        app.changes.subscribe(),
        Duration::from_millis(app.tunables.participation_refresh_ms.max(100) as u64),
    );
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
        tick.tick().await;
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
        if let Some(epoch) = validation_due(spec.as_ref(), app.schedule.now_ms(), published) {
            validate(&app, epoch).await;
        }
        app.publish_if_changed();
        let view = round_view(&app, tracker.current());
        *app.rounds.write().unwrap_or_else(|e| e.into_inner()) = view.clone();
        log.observe(&app, &view);
    }
}

fn round_view(app: &App, participation: Participation) -> RoundView {
    let epoch = app.schedule.current_epoch();
    let Some(e) = epoch else {
        return RoundView {
            participation,
            ..RoundView::default()
        };
    };
    let own = app
        .own_validation
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // The same handover as for nodes: last epoch's admission holds until this round ends.
    let handover = app.timing().in_round && e > 0;
    let admitted: BTreeSet<String> = own
        .filter(|v| v.result.epoch == e || (handover && v.result.epoch == e - 1))
        .map(|v| {
            v.result
                .admitted_backends()
                .map(|b| b.backend_id.clone())
                .collect()
        })
        .unwrap_or_default();
    RoundView {
        participation,
        admitted,
        active_set: routable_set(app, e),
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

/// The operator's onboarding narrative at `info`: a line at start and every heartbeat while
/// inactive, one line when the alert window opens, one on becoming active, then quiet.
#[derive(Default)]
struct OnboardingLog {
    last_heartbeat: Option<Instant>,
    alerted_for: Option<Option<u64>>,
    was_active: bool,
}

impl OnboardingLog {
    fn observe(&mut self, app: &App, view: &RoundView) {
        let state = app.node.state();
        if state == NodeState::Client {
            return;
        }
        let timing = app.timing();
        let active = view.participation.is_active();
        let message = crate::status::sentence::node_now(app, view);
        if active != self.was_active {
            self.was_active = active;
            if active {
                tracing::info!(
                    epoch = view.epoch.unwrap_or_default(),
                    "active for this epoch: validated in the round, receiving routed traffic"
                );
            } else {
                tracing::info!(
                    epoch = view.epoch.unwrap_or_default(),
                    "not active this epoch: {message}"
                );
            }
            self.last_heartbeat = Some(Instant::now());
            return;
        }
        if active {
            return;
        }
        if timing.should_be_online
            && !timing.in_round
            && self.alerted_for != Some(timing.target_round_epoch)
        {
            self.alerted_for = Some(timing.target_round_epoch);
            tracing::info!(
                "round starts in {} — must be online now",
                format_duration(timing.seconds_until_next_round.max(1))
            );
        }
        let every = Duration::from_millis(app.tunables.onboarding_heartbeat_ms.max(1000) as u64);
        if self.last_heartbeat.is_none_or(|t| t.elapsed() >= every) {
            self.last_heartbeat = Some(Instant::now());
            tracing::info!(
                state = state.as_str(),
                participation = view.participation.as_str(),
                "onboarding: {message}"
            );
        }
    }
}
