//! The MODELS tab's assign and unassign actions: start a replica of a model on a standby node, or
//! drain and stop one node's replica, each with the blast radius the operator confirms first.

use super::migrate::{choices, Choice};
use super::Model;
use crate::api::GroupView;

/// Which way the replica count moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaAction {
    /// `POST /admin/v1/replicas` on a standby node.
    Assign,
    /// `POST /admin/v1/replicas/:model/drain` on a serving node.
    Unassign,
}

/// An assign or unassign waiting for `y`; the node is chosen in the modal with ↑/↓.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfirm {
    pub action: ReplicaAction,
    pub model: String,
    /// Standby nodes (assign) or the model's serving replicas (unassign).
    pub nodes: Vec<Choice>,
    pub at: usize,
    /// Serving replicas of the model now.
    pub replicas: usize,
    /// The model's workload group, when it has one: placement then keeps its count.
    pub group: Option<GroupView>,
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

impl ReplicaConfirm {
    /// What the mesh offers for `action` on `model` now, or the sentence saying why not.
    pub fn plan(m: &Model, model: &str, action: ReplicaAction) -> Result<ReplicaConfirm, String> {
        let (serving, standby) = choices(m, model);
        let replicas = serving.len();
        let nodes = match action {
            ReplicaAction::Assign if standby.is_empty() => {
                return Err(format!(
                    "cannot assign {model}: no standby node to start it on (start one: infermesh up --standby --join <TOKEN>)"
                ))
            }
            ReplicaAction::Unassign if serving.is_empty() => {
                return Err(format!(
                    "cannot unassign {model}: no node serves it now"
                ))
            }
            ReplicaAction::Assign => standby,
            ReplicaAction::Unassign => serving,
        };
        let group = m
            .status
            .as_ref()
            .and_then(|s| s.groups.iter().find(|g| g.model == model).cloned());
        Ok(ReplicaConfirm {
            action,
            model: model.to_string(),
            nodes,
            at: 0,
            replicas,
            group,
        })
    }

    pub fn node(&self) -> &Choice {
        &self.nodes[self.at.min(self.nodes.len() - 1)]
    }

    /// ↑/↓ picks the node; wraps.
    pub fn cycle(&mut self, forward: bool) {
        let n = self.nodes.len();
        self.at = if forward {
            (self.at + 1) % n
        } else {
            (self.at + n - 1) % n
        };
    }

    /// The blast radius, in the order things happen.
    pub fn lines(&self) -> Vec<String> {
        let c = self.node();
        let (name, model, n) = (&c.node.name, &self.model, self.replicas);
        let mut out = match self.action {
            ReplicaAction::Assign => vec![
                format!("Assign {model} to {name}: it starts a replica there. [y/N]"),
                format!(
                    "{name} loads {model} and must pass its peers' admission check before clients reach it; nothing that serves now stops. {model} goes from {} to {}.",
                    plural(n, "serving replica"),
                    n + 1
                ),
            ],
            ReplicaAction::Unassign => {
                let after = if c.other_models.is_empty() {
                    format!("{name} then serves nothing and is standby")
                } else {
                    format!("{name} keeps serving {}", c.other_models.join(", "))
                };
                let left = match n.saturating_sub(1) {
                    0 => format!(
                        "none is left: clients asking for {model} get an error until a node serves it again"
                    ),
                    k => format!("{} keep answering", plural(k, "replica")),
                };
                vec![
                    format!("Unassign {model} from {name}: it drains and stops its replica. [y/N]"),
                    format!(
                        "{name} takes no new {model} requests; its {} in flight finish (it waits at most 120 s), then it stops the model. {after}.",
                        plural(c.in_flight as usize, "request")
                    ),
                    format!("{model} goes from {} to {}: {left}.", plural(n, "serving replica"), n - 1),
                ]
            }
        };
        if let Some(g) = &self.group {
            out.push(match self.action {
                ReplicaAction::Assign => format!(
                    "{model} is a workload group that wants {} (min {}, max {}): placement counts this replica, and stops one if the group is then above that.",
                    g.wanted, g.min, g.max
                ),
                ReplicaAction::Unassign => format!(
                    "{model} is a workload group that wants {} (min {}, max {}): placement starts another replica elsewhere if the group falls below that.",
                    g.wanted, g.min, g.max
                ),
            });
        }
        let what = match self.action {
            ReplicaAction::Assign => "target",
            ReplicaAction::Unassign => "replica",
        };
        out.push(format!("{what} {}/{} (↑/↓)", self.at + 1, self.nodes.len()));
        out
    }
}
