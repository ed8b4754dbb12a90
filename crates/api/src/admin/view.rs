//! `GET /admin/v1/nodes` entries: each backend's config and live status wrapped with its
//! onboarding state, derived only by `infermesh_state`.

use infermesh_backend::config::ModelSpec;
use infermesh_backend::tester::TestResult;
use infermesh_state::{backend_message, derive_backend_state, BackendState, Participation, Timing};
use serde::Serialize;

use crate::app::{App, RoundView};
use crate::config::DriverConfig;
use crate::node::{BackendSlot, Phase};

#[derive(Debug, Clone, Serialize)]
pub struct AdminBackend {
    pub id: String,
    pub driver: String,
    pub models: Vec<ModelSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// The model it is configured to serve.
    pub serve: Option<String>,
    /// `config` (registered through the admin API) or `command_line` (built by `up`'s flags,
    /// changed by restarting with other flags).
    pub source: &'static str,
    #[serde(flatten)]
    pub phase: Phase,
    pub loaded: Option<String>,
    pub mem_gb: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Onboarding {
    pub backend_state: BackendState,
    pub participation: Participation,
    pub validated: bool,
    pub message: String,
    pub failing_model: Option<String>,
    pub last_test: Option<TestResult>,
    pub timing: Timing,
}

#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    pub node: AdminBackend,
    pub onboarding: Onboarding,
}

fn envelope_of(id: &str, slot: &BackendSlot, rounds: &RoundView, timing: &Timing) -> Envelope {
    let d = slot.backend.describe();
    let (url, binary) = match slot.config.as_ref().map(|c| &c.driver) {
        Some(DriverConfig::Openai { url, .. }) => (Some(url.clone()), None),
        Some(DriverConfig::LlamaServer { binary, .. }) => {
            (None, Some(binary.display().to_string()))
        }
        _ => (None, None),
    };
    let node = AdminBackend {
        id: id.to_string(),
        driver: d.driver,
        models: slot.config.as_ref().map_or_else(
            || d.models.iter().map(ModelSpec::named).collect(),
            |c| c.models.clone(),
        ),
        url,
        binary,
        serve: slot.assigned.clone(),
        source: if slot.config.is_some() {
            "config"
        } else {
            "command_line"
        },
        phase: slot.phase.clone(),
        loaded: d.loaded,
        mem_gb: d.mem_gb,
    };
    let state = derive_backend_state(&crate::status::sentence::facts(slot, id, rounds));
    let brief = crate::status::sentence::brief(id, slot, rounds);
    Envelope {
        node,
        onboarding: Onboarding {
            backend_state: state,
            participation: rounds.participation,
            validated: brief.validated,
            message: backend_message(&brief, state, rounds.participation, timing),
            failing_model: slot
                .last_test
                .as_ref()
                .and_then(|t| t.failing_model.clone()),
            last_test: slot.last_test.clone(),
            timing: *timing,
        },
    }
}

pub fn envelope(app: &App, id: &str) -> Option<Envelope> {
    let (rounds, timing) = (app.round_view(), app.timing());
    app.node
        .with_slot(id, |s| envelope_of(id, s, &rounds, &timing))
}

pub fn envelopes(app: &App) -> Vec<Envelope> {
    app.node
        .backend_ids()
        .iter()
        .filter_map(|id| envelope(app, id))
        .collect()
}
