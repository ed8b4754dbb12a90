//! The node's persisted configuration (`config.toml` in the data dir): registered backends and
//! mesh-wide per-model defaults. Written atomically so a crash mid-write never loses the
//! previous config.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use infermesh_backend::config::ModelSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use infermesh_state::backend_config::{BackendConfig, DriverConfig};

/// Decodes and validates an admin request body: [`decode_backend`]'s checks, then the ones that
/// read a file. Errors name the offending field.
///
/// [`decode_backend`]: infermesh_state::backend_config::decode_backend
pub fn parse_backend(body: &[u8], path_id: Option<&str>) -> Result<BackendConfig, String> {
    let cfg = infermesh_state::backend_config::decode_backend(body, path_id)?;
    check_files(&cfg)?;
    Ok(cfg)
}

/// Every check of a backend config, for one read from `config.toml`.
pub fn validate(cfg: &BackendConfig) -> Result<(), String> {
    infermesh_state::backend_config::check_backend(cfg)?;
    check_files(cfg)
}

/// A `ca_cert` must be a readable PEM file holding at least one certificate.
fn check_files(cfg: &BackendConfig) -> Result<(), String> {
    if let DriverConfig::Openai {
        ca_cert: Some(path),
        ..
    } = &cfg.driver
    {
        infermesh_backend::openai::load_ca_certs(path)
            .map_err(|e| format!("invalid `ca_cert`: {e}"))?;
    }
    Ok(())
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

    #[test]
    fn a_ca_cert_must_be_a_readable_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let body = |path: &Path| {
            json!({"id": "o", "driver": "openai", "url": "https://127.0.0.1:1/v1",
                "ca_cert": path, "models": [{"name": "m"}]})
            .to_string()
        };
        let missing = dir.path().join("missing.pem");
        let err = parse_backend(body(&missing).as_bytes(), None).unwrap_err();
        assert!(
            err.contains("invalid `ca_cert`") && err.contains("missing.pem"),
            "{err}"
        );
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = parse_backend(body(&not_pem).as_bytes(), None).unwrap_err();
        assert!(err.contains("invalid `ca_cert`"), "{err}");
        // The pure decoder leaves the file alone: it is the api's check.
        assert!(
            infermesh_state::backend_config::decode_backend(body(&missing).as_bytes(), None)
                .is_ok()
        );
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
            parse_backend(
                json!({"id": "o", "driver": "openai", "url": "http://127.0.0.1:9/v1",
            "models": [{"name": "m", "args": {"top_k": 5}}]})
                .to_string()
                .as_bytes(),
                None,
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
