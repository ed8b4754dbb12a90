//! The `embedded` driver: GGUF models run in-process by [`Engine`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use crate::api::{Backend, BackendError, BackendInfo, InferStream, LoadProgress};
use crate::engine::{Engine, EngineConfig};
use crate::model_fetch::{ensure_model, KnownModel};
use crate::types::{Embeddings, InferRequest};

/// Where a served model's weights come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A GGUF file the operator pointed at.
    File(PathBuf),
    /// A known model fetched (once) into a cache directory on first load.
    Fetch {
        model: KnownModel,
        cache_dir: PathBuf,
    },
}

impl ModelSource {
    /// How a file found on disk is loaded: a known model is verified like a fresh download.
    pub fn of_disk(file: crate::disk::DiskFile, dir: &std::path::Path) -> Self {
        match file.known {
            Some(model) => Self::Fetch {
                model,
                cache_dir: dir.to_path_buf(),
            },
            None => Self::File(file.path),
        }
    }

    /// The local file, fetching it first if needed. Blocking.
    fn resolve(&self) -> Result<PathBuf, BackendError> {
        match self {
            Self::File(p) => Ok(p.clone()),
            Self::Fetch { model, cache_dir } => {
                ensure_model(model, cache_dir, &mut |line| tracing::info!("{line}"))
                    .map_err(|e| BackendError::Failed(format!("{e:#}")))
            }
        }
    }
}

pub struct EmbeddedBackend {
    id: String,
    /// Served model name → where its weights come from.
    models: BTreeMap<String, ModelSource>,
    cfg: EngineConfig,
    loaded: Mutex<Option<(String, Arc<Engine>)>>,
    embedding: tokio::sync::Mutex<()>,
    /// While the engine reads a model in: when it started and how far it is (0..1), from
    /// llama.cpp's progress callback.
    progress: Arc<Mutex<Option<(Instant, f32)>>>,
}

impl EmbeddedBackend {
    pub fn new(
        id: impl Into<String>,
        models: BTreeMap<String, ModelSource>,
        cfg: EngineConfig,
    ) -> Self {
        Self {
            id: id.into(),
            models,
            cfg,
            loaded: Mutex::new(None),
            embedding: tokio::sync::Mutex::new(()),
            progress: Arc::default(),
        }
    }

    fn current(&self) -> Option<(String, Arc<Engine>)> {
        self.loaded.lock().expect("engine lock").clone()
    }

    /// The engine when it has `model` loaded, or why not.
    fn engine_for(&self, model: &str) -> Result<Arc<Engine>, BackendError> {
        let (loaded, engine) = self
            .current()
            .ok_or_else(|| BackendError::Unavailable("no model loaded".into()))?;
        if loaded == model {
            Ok(engine)
        } else if self.models.contains_key(model) {
            Err(BackendError::Unavailable(format!(
                "model `{model}` is not loaded"
            )))
        } else {
            Err(BackendError::UnknownModel(model.to_string()))
        }
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn describe(&self) -> BackendInfo {
        let current = self.current();
        BackendInfo {
            id: self.id.clone(),
            driver: "embedded".into(),
            models: self.models.keys().cloned().collect(),
            mem_gb: current
                .as_ref()
                .map_or(0.0, |(_, e)| e.size_bytes as f32 / 1e9),
            loaded: current.map(|(m, _)| m),
            loading: self
                .progress
                .lock()
                .expect("progress lock")
                .map(|(t, fraction)| LoadProgress {
                    fraction,
                    elapsed_ms: t.elapsed().as_millis() as u64,
                }),
        }
    }

    async fn load(&self, model: &str) -> Result<(), BackendError> {
        let source = self
            .models
            .get(model)
            .ok_or_else(|| BackendError::UnknownModel(model.to_string()))?
            .clone();
        if self.current().is_some_and(|(m, _)| m == model) {
            return Ok(());
        }
        self.stop().await?;
        let cfg = self.cfg.clone();
        let progress = self.progress.clone();
        let engine = tokio::task::spawn_blocking(move || {
            let path = source.resolve()?;
            // From here on the time is the engine's (a fetch reports its own progress).
            *progress.lock().expect("progress lock") = Some((Instant::now(), 0.0));
            let report = progress.clone();
            let result = Engine::load(&path, &cfg, move |fraction| {
                if let Some((_, f)) = report.lock().expect("progress lock").as_mut() {
                    *f = fraction;
                }
                true
            });
            *progress.lock().expect("progress lock") = None;
            result
        })
        .await
        .map_err(|e| BackendError::Failed(format!("load task panicked: {e}")))??;
        *self.loaded.lock().expect("engine lock") = Some((model.to_string(), Arc::new(engine)));
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        match self.current() {
            Some(_) => Ok(()),
            None => Err(BackendError::Unavailable("no model loaded".into())),
        }
    }

    async fn infer(&self, req: InferRequest) -> Result<InferStream, BackendError> {
        if req.params.tools.is_some() {
            return Err(crate::api::tools_unsupported(
                &req.model,
                "its embedded engine, which renders no tool definitions and parses no calls",
            ));
        }
        let engine = self.engine_for(&req.model)?;
        engine.submit(req.prompt, req.params, req.priority)
    }

    async fn embed(&self, model: &str, inputs: &[String]) -> Result<Embeddings, BackendError> {
        let engine = self.engine_for(model)?;
        // One embedding at a time per backend: each builds a context of its own, and a flood of
        // them must queue rather than allocate side by side.
        let _turn = self.embedding.lock().await;
        let inputs = inputs.to_vec();
        tokio::task::spawn_blocking(move || engine.embed(&inputs))
            .await
            .map_err(|e| BackendError::Failed(format!("embedding task panicked: {e}")))?
    }

    async fn stop(&self) -> Result<(), BackendError> {
        let old = self.loaded.lock().expect("engine lock").take();
        if let Some((_, engine)) = old {
            // Dropping joins the worker threads, which may be finishing a generation.
            tokio::task::spawn_blocking(move || drop(engine))
                .await
                .map_err(|e| BackendError::Failed(format!("stop task panicked: {e}")))?;
        }
        Ok(())
    }
}
