//! What an operator configures per served model, shared by every driver.
//!
//! A model's `args` come from two places: defaults the mesh config sets for the model name, and
//! the node's own backend config. Both the tester and serving must run the model with the same
//! settings (a test of other settings would validate something that is never served), so drivers
//! take [`ModelSpec`]s whose args are already merged with [`merge_args`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One model a backend serves, under `name`, with driver-specific `args`.
///
/// What `args` mean depends on the driver: extra request-body fields for `openai` (e.g.
/// `"top_k": 40`), command-line flags for `llama_server` (where `"path"` names the GGUF file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

impl ModelSpec {
    /// A spec with no args.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            args: BTreeMap::new(),
        }
    }

    /// This spec with `mesh_defaults` filled in under its own args.
    pub fn with_defaults(&self, mesh_defaults: &BTreeMap<String, Value>) -> Self {
        Self {
            name: self.name.clone(),
            args: merge_args(mesh_defaults, &self.args),
        }
    }
}

/// The args a model runs with: `mesh_defaults` overridden key by key by the node's `local` args.
///
/// The merge is shallow on purpose: an arg is one flag or one request field, and a local value
/// that is an object replaces the default object whole rather than mixing two operators' intents.
pub fn merge_args(
    mesh_defaults: &BTreeMap<String, Value>,
    local: &BTreeMap<String, Value>,
) -> BTreeMap<String, Value> {
    let mut merged = mesh_defaults.clone();
    merged.extend(local.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn local_args_override_mesh_defaults_and_both_sides_are_kept() {
        let merged = merge_args(
            &args(json!({"top_k": 40, "ctx": 2048, "flash-attn": true})),
            &args(json!({"top_k": 20, "threads": 4})),
        );
        assert_eq!(
            merged,
            args(json!({"top_k": 20, "ctx": 2048, "flash-attn": true, "threads": 4}))
        );
    }

    #[test]
    fn objects_are_replaced_not_deep_merged() {
        let merged = merge_args(
            &args(json!({"logit_bias": {"1": 5, "2": 3}})),
            &args(json!({"logit_bias": {"3": 1}})),
        );
        assert_eq!(merged, args(json!({"logit_bias": {"3": 1}})));
    }

    #[test]
    fn empty_sides_are_identity() {
        let a = args(json!({"x": 1}));
        assert_eq!(merge_args(&a, &BTreeMap::new()), a);
        assert_eq!(merge_args(&BTreeMap::new(), &a), a);
    }

    #[test]
    fn spec_deserializes_without_args_and_merges_defaults() {
        let spec: ModelSpec = serde_json::from_value(json!({"name": "m"})).unwrap();
        assert_eq!(spec, ModelSpec::named("m"));
        let spec = ModelSpec {
            name: "m".into(),
            args: args(json!({"a": 2})),
        };
        let merged = spec.with_defaults(&args(json!({"a": 1, "b": 1})));
        assert_eq!(merged.args, args(json!({"a": 2, "b": 1})));
        assert_eq!(merged.name, "m");
    }
}
