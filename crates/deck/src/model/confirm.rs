//! The mutating actions waiting for the operator's `y`, each with the sentence that states what
//! it changes (its blast radius) before anything is signed or sent.

use super::assign::ReplicaConfirm;
use super::migrate::MigrateConfirm;

/// The mutating action waiting for the operator's y/N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Test(TestConfirm),
    Migrate(MigrateConfirm),
    Wake(WakeConfirm),
    Replica(ReplicaConfirm),
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// A backend test on one node, with what the blast radius needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestConfirm {
    pub node_id: String,
    pub node_name: String,
    pub base: String,
    pub backend_id: String,
    /// The models the test loads, one after the other.
    pub models: Vec<String>,
    /// What the node's other backends serve meanwhile (untouched by the test).
    pub others_serve: Vec<String>,
    /// Requests in flight on the node now.
    pub in_flight: u64,
}

impl Confirm {
    /// Says exactly what pressing `y` will do, before anything is signed or sent.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Confirm::Test(t) => {
                let serving = if t.others_serve.is_empty() {
                    format!("{} serves nothing else now", t.node_name)
                } else {
                    format!(
                        "{} keeps serving {} from its other backends",
                        t.node_name,
                        t.others_serve.join(", ")
                    )
                };
                vec![
                    format!(
                        "Run a test of backend {} on node {}: loads each model, one inference, stops it. [y/N]",
                        t.backend_id, t.node_name
                    ),
                    format!(
                        "It loads {} ({}) into memory in turn; the backend serves nothing now, so no client loses a replica. {serving}; {} request{} in flight there are not touched.",
                        plural(t.models.len(), "model"),
                        t.models.join(", "),
                        t.in_flight,
                        if t.in_flight == 1 { "" } else { "s" }
                    ),
                ]
            }
            Confirm::Migrate(c) => c.lines(),
            Confirm::Wake(w) => w.lines(),
            Confirm::Replica(r) => r.lines(),
        }
    }

    /// The keys the modal takes.
    pub fn keys(&self) -> &'static str {
        match self {
            Confirm::Test(_) => "y runs it · any other key cancels, nothing is sent",
            Confirm::Migrate(_) => {
                "←/→ source · ↑/↓ target · y signs and sends · any other key cancels, nothing is sent"
            }
            Confirm::Wake(_) => "y signs and sends · any other key cancels, nothing is sent",
            Confirm::Replica(_) => {
                "↑/↓ node · y signs and sends · any other key cancels, nothing is sent"
            }
        }
    }
}

/// Waking one suspended machine the attached node knows how to wake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeConfirm {
    pub node_id: String,
    pub node_name: String,
    pub base: String,
    pub id: String,
    pub provider: String,
    pub models: Vec<String>,
    pub vram_gb: Option<String>,
}

impl WakeConfirm {
    pub fn lines(&self) -> Vec<String> {
        let size = self
            .vram_gb
            .as_deref()
            .map(|g| format!(", {g}"))
            .unwrap_or_default();
        let models = if self.models.is_empty() {
            "its models".to_string()
        } else {
            self.models.join(", ")
        };
        vec![
            format!(
                "Wake {} ({}{size}) through node {}. [y/N]",
                self.id, self.provider, self.node_name
            ),
            format!(
                "{} runs the wake command configured for {}; the machine joins the mesh as {} and serves {models} once its peers admit it. Nothing that serves now is touched; while it runs, the machine costs what {} charges for it.",
                self.node_name, self.id, self.id, self.provider
            ),
        ]
    }
}
