//! The infermesh state vocabulary and every pure decision.
//!
//! Nothing here performs I/O or reads a clock: time is always an argument. Every other crate
//! renders states it got from here, so API, logs, deck and dashboard cannot disagree.

pub mod addr;
pub mod admission;
pub mod assign;
pub mod backend_config;
pub mod backend_state;
pub mod constants;
pub mod demand;
pub mod first_seen;
pub mod labels;
pub mod membership;
pub mod mesh_requests;
pub mod message;
pub mod node;
pub mod participation;
pub mod placement;
pub mod queue;
pub mod relay;
pub mod resume;
pub mod routing;
pub mod schedule;
pub mod situation;
pub mod split;
pub mod split_role;
pub mod sse;
pub mod stats;
#[cfg(test)]
mod test_schedule;
pub mod timing;
pub mod usage;

pub use addr::{parse_host_port, HostPort};
pub use assign::{choose_model, Assignment};
pub use backend_state::{derive_backend_state, is_validated, BackendFacts, BackendState};
pub use constants::Tunables;
pub use first_seen::FirstSeen;
pub use message::{
    gist, node_message, onboarding_message, onboarding_message_for, unhealthy_message,
};
pub use node::{classify_legacy, derive_node_state, NodeFacts, NodeState};
pub use participation::Participation;
pub use queue::Priority;
pub use routing::{route_order, route_order_spread, Candidate};
pub use schedule::ScheduleSpec;
pub use situation::{
    backend_message, failed_message, node_sentence, node_validated, peer_notice, standby_message,
    BackendBrief, Duty, Source, NO_PEER,
};
pub use timing::{format_clock_utc, format_duration, timing, Timing};
