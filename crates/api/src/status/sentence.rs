//! Gathers each backend's facts into the briefs `infermesh_state::situation` decides on, so
//! `/api/status`, `/admin/v1/nodes` and the onboarding log compose the node's sentence from
//! the same inputs.

use infermesh_state::{is_validated, node_sentence, BackendBrief, Duty, Source};

use crate::app::{App, RoundView};
use crate::node::{BackendSlot, Phase};

/// What the backend in `slot` is doing with its model. `Idle` with a model assigned is the
/// instant before its load starts, so it reads as loading, not as idle capacity.
pub fn duty_of(slot: &BackendSlot) -> Duty<'_> {
    match &slot.phase {
        Phase::Failed(cause) => Duty::Failed(cause),
        Phase::Unhealthy(cause) => Duty::Unhealthy(cause),
        Phase::Ready => Duty::Serving,
        Phase::Loading => Duty::Loading,
        Phase::Idle if slot.assigned.is_some() => Duty::Loading,
        Phase::Idle => Duty::Standby,
    }
}

pub fn source_of(slot: &BackendSlot) -> Source {
    if slot.config.is_some() {
        Source::Config
    } else {
        Source::CommandLine
    }
}

pub fn brief<'a>(id: &'a str, slot: &'a BackendSlot, rounds: &RoundView) -> BackendBrief<'a> {
    BackendBrief {
        id,
        duty: duty_of(slot),
        source: source_of(slot),
        validated: is_validated(&crate::admin::view::facts(slot, id, rounds)),
    }
}

/// The node's one sentence now, as `/api/status` and the onboarding log say it.
pub fn node_now(app: &App, rounds: &RoundView) -> String {
    let state = app.node.state();
    let timing = app.timing();
    app.node.with_slots(|slots| {
        let briefs: Vec<BackendBrief> = slots.iter().map(|(id, s)| brief(id, s, rounds)).collect();
        node_sentence(state, rounds.participation, &timing, &briefs)
    })
}
