//! Gathers each backend's facts into the briefs `infermesh_state::situation` decides on, so
//! `/api/status`, `/admin/v1/nodes` and the onboarding log compose the node's sentence from
//! the same inputs.

use infermesh_state::{is_validated, node_sentence, BackendBrief, BackendFacts};

use crate::app::{App, RoundView};
use crate::node::{BackendSlot, Phase};

/// The facts `infermesh_state` derives the backend's state word and validation from.
pub fn facts(slot: &BackendSlot, id: &str, rounds: &RoundView) -> BackendFacts {
    BackendFacts {
        test_in_flight: slot.testing,
        last_test_passed: slot.last_test.as_ref().map(|t| t.ok),
        admitted_this_epoch: rounds.admitted.contains(id),
        healthy: slot.phase == Phase::Ready,
        node_active: rounds.participation.is_active(),
    }
}

pub fn brief<'a>(id: &'a str, slot: &'a BackendSlot, rounds: &RoundView) -> BackendBrief<'a> {
    BackendBrief {
        id,
        duty: slot.duty(),
        source: slot.source(),
        validated: is_validated(&facts(slot, id, rounds)),
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
