//! Turns a registered [`BackendConfig`] into a running driver.

#[cfg(feature = "llama")]
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "llama")]
use infermesh_backend::disk;
#[cfg(feature = "llama")]
use infermesh_backend::embedded::{EmbeddedBackend, ModelSource};
use infermesh_backend::engine::EngineConfig;
use infermesh_backend::llama_server::{LlamaServerBackend, LlamaServerConfig};
use infermesh_backend::openai::{OpenAiBackend, OpenAiConfig};
use infermesh_backend::Backend;

use crate::config::{BackendConfig, DriverConfig, NodeConfig};

/// Node-wide settings drivers are built with.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub model_dir: PathBuf,
    pub engine: EngineConfig,
    pub llama_server_startup: Duration,
}

/// Builds the driver with every model's args merged with the mesh defaults, so the tester and
/// serving run the same settings.
pub fn build_backend(
    cfg: &BackendConfig,
    node_cfg: &NodeConfig,
    ctx: &BuildContext,
) -> Result<Arc<dyn Backend>, String> {
    let models: Vec<_> = cfg.models.iter().map(|m| node_cfg.merged(m)).collect();
    Ok(match &cfg.driver {
        #[cfg(not(feature = "llama"))]
        DriverConfig::Embedded => {
            return Err(
                "this build of infermesh has no embedded engine (built without the `llama` \
                 feature); use the `llama_server` or `openai` driver"
                    .to_string(),
            )
        }
        #[cfg(feature = "llama")]
        DriverConfig::Embedded => {
            let mut sources = BTreeMap::new();
            for m in &models {
                let source = match m.args.get("path").and_then(|p| p.as_str()) {
                    Some(p) => ModelSource::File(PathBuf::from(p)),
                    None => match disk::known(&m.name) {
                        Some(k) => ModelSource::Fetch {
                            model: k,
                            cache_dir: ctx.model_dir.clone(),
                        },
                        None => {
                            return Err(format!(
                            "model `{}` has no `args.path` and is not a known model (known: {})",
                            m.name,
                            disk::KNOWN
                                .iter()
                                .map(|k| k.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        }
                    },
                };
                sources.insert(m.name.clone(), source);
            }
            Arc::new(EmbeddedBackend::new(&cfg.id, sources, ctx.engine.clone()))
        }
        DriverConfig::LlamaServer { binary, ctx: n_ctx } => {
            Arc::new(LlamaServerBackend::new(LlamaServerConfig {
                id: cfg.id.clone(),
                binary: binary.clone(),
                models,
                ctx: n_ctx.unwrap_or(ctx.engine.n_ctx),
                startup_timeout: ctx.llama_server_startup,
            }))
        }
        DriverConfig::Openai {
            url,
            api_key,
            ca_cert,
        } => Arc::new(
            OpenAiBackend::new(OpenAiConfig {
                id: cfg.id.clone(),
                base_url: url.clone(),
                api_key: api_key.clone(),
                ca_cert: ca_cert.clone(),
                models,
            })
            .map_err(|e| format!("invalid `url` or `ca_cert`: {e}"))?,
        ),
    })
}

/// The embedded engine for one model a placement or an operator put on this node: `file` is
/// the model on disk, or `None` for a known model fetched into the model directory.
pub fn embedded_for(
    id: &str,
    model: &str,
    file: Option<PathBuf>,
    ctx: &BuildContext,
) -> Result<Arc<dyn Backend>, String> {
    #[cfg(feature = "llama")]
    {
        let source = match (file, disk::known(model)) {
            (Some(path), None) => ModelSource::File(path),
            (_, Some(k)) => ModelSource::Fetch {
                model: k,
                cache_dir: ctx.model_dir.clone(),
            },
            (None, None) => return Err(format!("model `{model}` is not on this node's disk")),
        };
        let sources = BTreeMap::from([(model.to_string(), source)]);
        Ok(Arc::new(EmbeddedBackend::new(
            id,
            sources,
            ctx.engine.clone(),
        )))
    }
    #[cfg(not(feature = "llama"))]
    {
        let _ = (id, model, file, ctx);
        Err(
            "this build of infermesh has no embedded engine (built without the `llama` feature)"
                .into(),
        )
    }
}
