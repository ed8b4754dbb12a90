//! What an operator configures per served model, shared by every driver (defined with the
//! pure config decoder in `infermesh_state::backend_config`).
//!
//! A model's `args` come from two places: defaults the mesh config sets for the model name, and
//! the node's own backend config. Both the tester and serving must run the model with the same
//! settings (a test of other settings would validate something that is never served), so drivers
//! take [`ModelSpec`]s whose args are already merged with [`merge_args`].

pub use infermesh_state::backend_config::{merge_args, ModelSpec};
