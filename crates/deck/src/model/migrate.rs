//! The MODELS tab's migrate action: who can give the replica up, who can take it, and the blast
//! radius the operator confirms before anything is signed.

use infermesh_state::NodeState;

use super::Model;
use crate::api::base_url;
use crate::migrate::Endpoint;

/// A node that can take part, with what the blast radius needs to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub node: Endpoint,
    /// Requests in flight there, as last reported (the node's own count, or its gossiped load).
    pub in_flight: u64,
    /// The other models it serves: what keeps running there after the move.
    pub other_models: Vec<String>,
}

/// The migration waiting for `y`: the source and target are chosen in the modal itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfirm {
    pub model: String,
    /// Serving replicas of `model`: what can be moved away.
    pub sources: Vec<Choice>,
    /// Standby nodes: what can take it.
    pub targets: Vec<Choice>,
    pub from: usize,
    pub to: usize,
}

/// The nodes that serve `model` now, and the standby nodes that could take it, by name.
pub(super) fn choices(m: &Model, model: &str) -> (Vec<Choice>, Vec<Choice>) {
    let mut rows = m.node_rows();
    rows.sort_by(|a, b| a.name.cmp(b.name));
    let choice = |r: &super::NodeRow<'_>| Choice {
        node: Endpoint {
            node_id: r.node_id.to_string(),
            name: r.name.to_string(),
            base: base_url(r.addr),
        },
        in_flight: r.load.unwrap_or(0),
        other_models: r.models.iter().filter(|x| *x != model).cloned().collect(),
    };
    let serving = rows
        .iter()
        .filter(|r| r.state == Some(NodeState::Serving) && r.models.iter().any(|x| x == model))
        .map(choice)
        .collect();
    let standby = rows
        .iter()
        .filter(|r| r.state == Some(NodeState::Standby) && !r.addr.is_empty())
        .map(choice)
        .collect();
    (serving, standby)
}

impl MigrateConfirm {
    /// What the mesh offers for moving `model` now, or the sentence saying why it cannot move.
    pub fn plan(m: &Model, model: &str) -> Result<MigrateConfirm, String> {
        let (sources, targets) = choices(m, model);
        if sources.is_empty() {
            return Err(format!(
                "cannot migrate {model}: no node serves it now (nothing to move)"
            ));
        }
        if targets.is_empty() {
            return Err(format!(
                "cannot migrate {model}: no standby node to move it to (start one: infermesh up --standby --join <TOKEN>)"
            ));
        }
        Ok(MigrateConfirm {
            model: model.to_string(),
            sources,
            targets,
            from: 0,
            to: 0,
        })
    }

    pub fn source(&self) -> &Choice {
        &self.sources[self.from.min(self.sources.len() - 1)]
    }

    pub fn target(&self) -> &Choice {
        &self.targets[self.to.min(self.targets.len() - 1)]
    }

    /// ←/→ picks the source, ↑/↓ the target; both wrap.
    pub fn cycle(&mut self, source: bool, forward: bool) {
        let (i, n) = if source {
            (&mut self.from, self.sources.len())
        } else {
            (&mut self.to, self.targets.len())
        };
        *i = if forward {
            (*i + 1) % n
        } else {
            (*i + n - 1) % n
        };
    }

    /// The blast radius, in the order things happen.
    pub fn lines(&self) -> Vec<String> {
        let (a, b) = (self.source(), self.target());
        let (an, bn) = (&a.node.name, &b.node.name);
        let after = if a.other_models.is_empty() {
            format!("{an} then serves nothing and is standby")
        } else {
            format!("{an} keeps serving {}", a.other_models.join(", "))
        };
        let n = self.sources.len();
        vec![
            format!("Migrate {} from {an} to {bn}. [y/N]", self.model),
            format!(
                "1. {bn} loads {} and must pass its peers' admission check; nothing stops before that.",
                self.model
            ),
            format!(
                "2. {an} drains: its {} request{} in flight finish, new ones go to other replicas; then it stops serving {}. {after}.",
                a.in_flight,
                if a.in_flight == 1 { "" } else { "s" },
                self.model
            ),
            format!(
                "{} has {n} serving replica{} now and keeps {n} through the move.",
                self.model,
                if n == 1 { "" } else { "s" }
            ),
            format!(
                "source {}/{} · target {}/{}",
                self.from + 1,
                self.sources.len(),
                self.to + 1,
                self.targets.len()
            ),
        ]
    }
}

/// A migration the deck started, as the MODELS tab shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRun {
    pub model: String,
    pub from: String,
    pub to: String,
    pub started_ms: i64,
    /// The latest progress line ("1/3 B is loading …").
    pub line: String,
    /// `None` while running; `Some(Ok)` done, `Some(Err)` stopped with the reason.
    pub result: Option<Result<(), String>>,
}
