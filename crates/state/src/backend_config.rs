//! What an operator configures per backend and per served model, and the decoder of the admin
//! API's backend bodies (it takes bytes from the network, so it is fuzzed: `fuzz/`).
//!
//! A model's `args` come from two places: defaults the mesh config sets for the model name, and
//! the node's own backend config. Both the tester and serving must run the model with the same
//! settings (a test of other settings would validate something that is never served), so drivers
//! take [`ModelSpec`]s whose args are already merged with [`merge_args`].

use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// How a backend is reached. The tag is the `driver` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub enum DriverConfig {
    /// In-process llama.cpp. A model's `path` arg names its GGUF file; without one the model
    /// must be a known model (fetched into the model cache).
    Embedded,
    /// A managed `llama-server` child process.
    LlamaServer {
        binary: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctx: Option<u32>,
    },
    /// Any OpenAI-compatible server, by its versioned base URL (e.g. `http://host:8000/v1`).
    Openai {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key: Option<String>,
        /// PEM file of CA certificates trusted for an `https://` url besides the system's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_cert: Option<PathBuf>,
    },
}

impl DriverConfig {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::LlamaServer { .. } => "llama_server",
            Self::Openai { .. } => "openai",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendConfig {
    pub id: String,
    #[serde(flatten)]
    pub driver: DriverConfig,
    pub models: Vec<ModelSpec>,
    /// The model to load and serve; `None` keeps the backend as tested, idle capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<String>,
}

/// Fields each driver accepts, so a misspelt field is a 400 naming it rather than silently
/// ignored.
fn allowed_fields(driver: &str) -> Option<&'static [&'static str]> {
    const COMMON: [&str; 4] = ["id", "driver", "models", "serve"];
    match driver {
        "embedded" => Some(&COMMON),
        "llama_server" => Some(&["id", "driver", "models", "serve", "binary", "ctx"]),
        "openai" => Some(&[
            "id", "driver", "models", "serve", "url", "api_key", "ca_cert",
        ]),
        _ => None,
    }
}

/// Decodes and checks an admin request body, everything but what needs the filesystem (a
/// `ca_cert` file: `infermesh_api::config::parse_backend` adds that). `path_id` is the id from
/// `PUT /…/:id`, which the body may repeat but not contradict. Errors name the offending field.
pub fn decode_backend(body: &[u8], path_id: Option<&str>) -> Result<BackendConfig, String> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or("body must be a JSON object describing the backend")?;
    if let Some(id) = path_id {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), Value::String(id.to_string()));
            }
            Some(Value::String(s)) if s == id => {}
            Some(other) => {
                return Err(format!(
                    "`id` in the body ({other}) differs from the id in the path (`{id}`)"
                ))
            }
        }
    }
    let driver = match obj.get("driver") {
        Some(Value::String(d)) => d.clone(),
        Some(_) => return Err("`driver` must be a string".into()),
        None => return Err("missing `driver` (embedded | llama_server | openai)".into()),
    };
    let allowed = allowed_fields(&driver).ok_or_else(|| {
        format!("unknown `driver` `{driver}` (expected embedded | llama_server | openai)")
    })?;
    if let Some(bad) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{bad}` for driver `{driver}` (allowed: {})",
            allowed.join(", ")
        ));
    }
    let cfg: BackendConfig = serde_path_to_error::deserialize(v)
        .map_err(|e| format!("invalid `{}`: {}", e.path(), e.inner()))?;
    check_backend(&cfg)?;
    Ok(cfg)
}

/// Semantic checks serde cannot express (none reads a file).
pub fn check_backend(cfg: &BackendConfig) -> Result<(), String> {
    let id_ok = !cfg.id.is_empty()
        && cfg.id.len() <= 64
        && cfg
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !id_ok {
        return Err(format!(
            "invalid `id` `{}`: use 1-64 letters, digits, `-`, `_` or `.`",
            cfg.id
        ));
    }
    if cfg.models.is_empty() {
        return Err("`models` must list at least one model".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in cfg.models.iter().enumerate() {
        if m.name.trim().is_empty() {
            return Err(format!("`models[{i}].name` must not be empty"));
        }
        if !seen.insert(&m.name) {
            return Err(format!("`models[{i}].name` `{}` is listed twice", m.name));
        }
        let path = m.args.get("path");
        if path.is_some_and(|p| !p.is_string()) {
            return Err(format!("`models[{i}].args.path` must be a string"));
        }
        if matches!(cfg.driver, DriverConfig::LlamaServer { .. }) && path.is_none() {
            return Err(format!(
                "`models[{i}].args.path` is required for llama_server (the GGUF file)"
            ));
        }
    }
    if let Some(serve) = &cfg.serve {
        if !cfg.models.iter().any(|m| &m.name == serve) {
            return Err(format!("`serve` names `{serve}`, which is not in `models`"));
        }
    }
    match &cfg.driver {
        DriverConfig::Openai { url, ca_cert, .. } => {
            let base = normalize_base_url(url).map_err(|e| format!("invalid `url`: {e}"))?;
            if ca_cert.is_some() && !base.starts_with("https://") {
                return Err(format!("`ca_cert` is for https:// urls; `url` is {base}"));
            }
            Ok(())
        }
        DriverConfig::LlamaServer { binary, ctx } => {
            if binary.as_os_str().is_empty() {
                return Err("`binary` must name the llama-server executable".into());
            }
            if ctx == &Some(0) {
                return Err("`ctx` must be positive".into());
            }
            Ok(())
        }
        DriverConfig::Embedded => Ok(()),
    }
}

/// An OpenAI-compatible base URL without surrounding space or trailing slashes.
pub fn normalize_base_url(base_url: &str) -> Result<String, String> {
    let base = base_url.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() => Ok(base.to_string()),
        _ => Err(format!(
            "`{base_url}` is not an http:// or https:// URL (expected e.g. http://127.0.0.1:8080/v1)"
        )),
    }
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

    fn parse(v: Value) -> Result<BackendConfig, String> {
        decode_backend(v.to_string().as_bytes(), None)
    }

    #[test]
    fn each_driver_parses() {
        let e = parse(json!({"id": "e", "driver": "embedded", "models": [{"name": "m"}]})).unwrap();
        assert_eq!(e.driver, DriverConfig::Embedded);
        let o = parse(
            json!({"id": "o", "driver": "openai", "url": "http://127.0.0.1:1/v1",
            "api_key": "k", "models": [{"name": "m", "args": {"top_k": 4}}], "serve": "m"}),
        )
        .unwrap();
        assert_eq!(o.serve.as_deref(), Some("m"));
        assert_eq!(o.models[0].args["top_k"], 4);
        let l = parse(
            json!({"id": "l", "driver": "llama_server", "binary": "llama-server",
            "models": [{"name": "m", "args": {"path": "/m.gguf"}}]}),
        )
        .unwrap();
        assert!(matches!(
            l.driver,
            DriverConfig::LlamaServer { ctx: None, .. }
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({"id": "x", "models": []}), "`driver`"),
            (
                json!({"id": "x", "driver": "vllm", "models": []}),
                "unknown `driver` `vllm`",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": [{"name": "m"}], "urll": 1}),
                "`urll`",
            ),
            (
                json!({"id": "x", "driver": "openai", "models": [{"name": "m"}]}),
                "url",
            ),
            (
                json!({"id": "x", "driver": "openai", "url": "ftp://h", "models": [{"name": "m"}]}),
                "`url`",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": [{"name": 3}]}),
                "models[0].name",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": []}),
                "`models`",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": [{"name": "m"}, {"name": "m"}]}),
                "twice",
            ),
            (
                json!({"id": "a b", "driver": "embedded", "models": [{"name": "m"}]}),
                "`id`",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": [{"name": "m"}], "serve": "n"}),
                "`serve`",
            ),
            (
                json!({"id": "x", "driver": "llama_server", "binary": "b", "models": [{"name": "m"}]}),
                "args.path",
            ),
            (
                json!({"id": "x", "driver": "embedded", "models": [{"name": "m", "args": {"path": 1}}]}),
                "args.path",
            ),
            (
                json!({"id": "x", "driver": "openai", "url": "http://h/v1", "ca_cert": "/c.pem",
                    "models": [{"name": "m"}]}),
                "https://",
            ),
        ];
        for (body, want) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
        assert!(decode_backend(b"{not json", None)
            .unwrap_err()
            .contains("JSON"));
    }

    #[test]
    fn path_id_fills_or_must_match() {
        let body = json!({"driver": "embedded", "models": [{"name": "m"}]}).to_string();
        assert_eq!(decode_backend(body.as_bytes(), Some("p")).unwrap().id, "p");
        let body = json!({"id": "q", "driver": "embedded", "models": [{"name": "m"}]}).to_string();
        assert!(decode_backend(body.as_bytes(), Some("p"))
            .unwrap_err()
            .contains("differs"));
    }
}
