//! The node's persisted configuration (`config.toml` in the data dir): registered backends and
//! mesh-wide per-model defaults. Written atomically so a crash mid-write never loses the
//! previous config.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use infermesh_backend::config::ModelSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Decodes and validates an admin request body. `path_id` is the id from `PUT /…/:id`, which
/// the body may repeat but not contradict. Errors name the offending field.
pub fn parse_backend(body: &[u8], path_id: Option<&str>) -> Result<BackendConfig, String> {
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
    validate(&cfg)?;
    Ok(cfg)
}

/// Semantic checks serde cannot express.
pub fn validate(cfg: &BackendConfig) -> Result<(), String> {
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
            let base = infermesh_backend::openai::normalize_base_url(url)
                .map_err(|e| format!("invalid `url`: {e}"))?;
            if let Some(path) = ca_cert {
                if !base.starts_with("https://") {
                    return Err(format!("`ca_cert` is for https:// urls; `url` is {base}"));
                }
                infermesh_backend::openai::load_ca_certs(path)
                    .map_err(|e| format!("invalid `ca_cert`: {e}"))?;
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Mesh-wide defaults per model name, merged under each backend's own model args.
    pub model_defaults: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
    /// Suspended machines this node can wake (`[[wakeable]]`); never peers, never routed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wakeable: Vec<crate::wakeable::WakeableConfig>,
    /// Operator public keys whose signatures admin changes must carry (`[[operator]]`).
    #[serde(rename = "operator", default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<crate::auth::OperatorConfig>,
}

impl NodeConfig {
    /// `spec` with the mesh defaults for its model filled in: what the tester and serving use.
    pub fn merged(&self, spec: &ModelSpec) -> ModelSpec {
        match self.model_defaults.get(&spec.name) {
            Some(d) => spec.with_defaults(d),
            None => spec.clone(),
        }
    }
}

pub const CONFIG_FILE: &str = "config.toml";
/// Temp files of [`save`]; one left by a crash mid-write is removed by [`load`].
const TMP_PREFIX: &str = ".config.toml.tmp";

/// Reads `config.toml`; a missing file is an empty config, a broken one an error naming it.
pub fn load(dir: &Path) -> Result<NodeConfig, String> {
    remove_stale_temp_files(dir);
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NodeConfig::default()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cfg: NodeConfig =
        toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
    let mut ids = std::collections::BTreeSet::new();
    for b in &cfg.backends {
        validate(b).map_err(|e| format!("{}: backend `{}`: {e}", path.display(), b.id))?;
        if !ids.insert(&b.id) {
            return Err(format!(
                "{}: backend `{}` is declared twice; remove one",
                path.display(),
                b.id
            ));
        }
    }
    crate::wakeable::validate(&cfg.wakeable).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::auth::OperatorRegistry::from_config(&cfg.operators)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

/// A crash between creating and renaming a temp file leaves it behind; it never holds anything
/// the config does not (the rename is the commit), so it is safe to delete.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `config.toml` so that a reader (or a crash at any instant) sees either the old file or
/// the new one, whole: write a temp file in the same directory, fsync it, rename over, fsync the
/// directory so the rename itself is durable.
pub fn save(dir: &Path, cfg: &NodeConfig) -> Result<(), String> {
    let text = toml::to_string_pretty(cfg).map_err(|e| format!("cannot encode config: {e}"))?;
    let path = dir.join(CONFIG_FILE);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BackendConfig, String> {
        parse_backend(v.to_string().as_bytes(), None)
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
        ];
        for (body, want) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
        assert!(parse_backend(b"{not json", None)
            .unwrap_err()
            .contains("JSON"));
    }

    #[test]
    fn path_id_fills_or_must_match() {
        let body = json!({"driver": "embedded", "models": [{"name": "m"}]}).to_string();
        assert_eq!(parse_backend(body.as_bytes(), Some("p")).unwrap().id, "p");
        let body = json!({"id": "q", "driver": "embedded", "models": [{"name": "m"}]}).to_string();
        assert!(parse_backend(body.as_bytes(), Some("p"))
            .unwrap_err()
            .contains("differs"));
    }

    #[test]
    fn toml_round_trip_and_defaults_merge() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), NodeConfig::default());
        let mut cfg = NodeConfig::default();
        cfg.model_defaults.insert(
            "m".into(),
            [
                ("top_k".to_string(), json!(40)),
                ("seed".to_string(), json!(1)),
            ]
            .into(),
        );
        cfg.backends.push(
            parse(
                json!({"id": "o", "driver": "openai", "url": "http://127.0.0.1:9/v1",
            "models": [{"name": "m", "args": {"top_k": 5}}]}),
            )
            .unwrap(),
        );
        save(dir.path(), &cfg).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, cfg);
        let merged = back.merged(&back.backends[0].models[0]);
        assert_eq!(merged.args["top_k"], 5);
        assert_eq!(merged.args["seed"], 1);
        // No temp files are left next to the config.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(CONFIG_FILE)]);
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "[[backend]]\nid = 3\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.contains("config.toml"), "{err}");
    }
}
