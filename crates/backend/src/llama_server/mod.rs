//! The `llama_server` driver: llama.cpp's `llama-server` run as a managed child process, one
//! model at a time, on a private loopback port.
//!
//! The driver owns the process (start on `load`, SIGTERM on `stop`, killed if the node goes
//! away) and talks to it through the `openai` driver, so streaming, error mapping and usage
//! accounting are the same code as for any external OpenAI-compatible server.

mod args;
mod process;
pub mod rpc;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::api::{Backend, BackendError, BackendInfo, InferStream};
use crate::config::ModelSpec;
use crate::openai::{OpenAiBackend, OpenAiConfig};
use crate::types::InferRequest;
pub use args::{cli_flags, model_path};
use process::{Proc, Tail};

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaServerConfig {
    pub id: String,
    /// The `llama-server` executable: a path, or a bare name looked up on `PATH`.
    pub binary: PathBuf,
    /// Each model's args must hold `path` (the GGUF file); the rest become flags
    /// (see [`cli_flags`]), already merged with the mesh defaults.
    pub models: Vec<ModelSpec>,
    /// Context size passed as `--ctx-size`; a model's own `ctx-size` arg overrides it.
    pub ctx: u32,
    /// How long a model may take from process start to a healthy `/health`.
    pub startup_timeout: Duration,
}

/// The model being served by the running child.
struct Serving {
    model: String,
    api: Arc<OpenAiBackend>,
    tail: Tail,
    mem_gb: f32,
}

pub struct LlamaServerBackend {
    cfg: LlamaServerConfig,
    /// The child process. The async lock also serialises `load` and `stop`, which both replace
    /// or end it.
    proc: tokio::sync::Mutex<Option<Proc>>,
    /// What requests go to; read without waiting for a load in progress.
    serving: Mutex<Option<Arc<Serving>>>,
    /// The model asked for by the last `load` (until `stop`), which `recover` brings back if
    /// the child dies; unlike `serving` it survives a failed restart, so the next can retry.
    wanted: Mutex<Option<String>>,
}

impl LlamaServerBackend {
    pub fn new(cfg: LlamaServerConfig) -> Self {
        Self {
            cfg,
            proc: tokio::sync::Mutex::new(None),
            serving: Mutex::new(None),
            wanted: Mutex::new(None),
        }
    }

    /// The running child's process id, while there is one.
    pub fn child_pid(&self) -> Option<u32> {
        self.proc.try_lock().ok()?.as_ref()?.child.id()
    }

    fn set_wanted(&self, model: Option<&str>) {
        *self.wanted.lock().expect("wanted lock") = model.map(str::to_string);
    }

    /// The running child's OpenAI base URL (`http://127.0.0.1:PORT/v1`), while a model is loaded.
    pub fn base_url(&self) -> Option<String> {
        self.serving().map(|s| s.api.base_url().to_string())
    }

    fn serving(&self) -> Option<Arc<Serving>> {
        self.serving.lock().expect("serving lock").clone()
    }

    fn spec(&self, model: &str) -> Result<&ModelSpec, BackendError> {
        self.cfg
            .models
            .iter()
            .find(|m| m.name == model)
            .ok_or_else(|| BackendError::UnknownModel(model.to_string()))
    }

    /// `req` may go to the child: a request with `tools` only where the child renders them with
    /// the model's own Jinja template (`--jinja`), which is also what parses the calls back.
    fn takes(&self, req: &InferRequest) -> Result<(), BackendError> {
        let spec = self.spec(&req.model)?;
        if req.params.tools.is_some() && !args::jinja(&spec.args) {
            return Err(crate::api::tools_unsupported(
                &req.model,
                "a llama-server started without `--jinja`",
            ));
        }
        Ok(())
    }

    /// The full command line for `model` on `port`.
    fn command_args(&self, spec: &ModelSpec, port: u16) -> Result<Vec<String>, BackendError> {
        let path = model_path(&spec.name, &spec.args).map_err(BackendError::Failed)?;
        if !std::path::Path::new(&path).is_file() {
            return Err(BackendError::Failed(format!(
                "model `{}`: GGUF file not found at {path}",
                spec.name
            )));
        }
        let mut argv: Vec<String> = vec![
            "-m".into(),
            path,
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--ctx-size".into(),
            self.cfg.ctx.to_string(),
            // Makes `/v1/models` list the mesh's name, which the openai driver then verifies.
            "--alias".into(),
            spec.name.clone(),
        ];
        // After the driver's flags: llama.cpp keeps the last value of a repeated flag.
        argv.extend(cli_flags(&spec.args).map_err(BackendError::Failed)?);
        Ok(argv)
    }

    /// Starts a child for `spec` into the (locked, empty) process slot and serves from it.
    async fn run(&self, slot: &mut Option<Proc>, spec: &ModelSpec) -> Result<(), BackendError> {
        let started = std::time::Instant::now();
        let (child, serving) = self.start(spec).await?;
        tracing::info!(
            target: "llama_server",
            "[{}] model `{}` ready in {:.1}s",
            self.cfg.id,
            spec.name,
            started.elapsed().as_secs_f32()
        );
        *slot = Some(child);
        *self.serving.lock().expect("serving lock") = Some(Arc::new(serving));
        Ok(())
    }

    async fn start(&self, spec: &ModelSpec) -> Result<(Proc, Serving), BackendError> {
        let port = process::free_port()?;
        let argv = self.command_args(spec, port)?;
        let id = &self.cfg.id;
        tracing::info!(target: "llama_server", "[{id}] starting {} {}", self.cfg.binary.display(), argv.join(" "));
        // Dropped (and so killed) on every early return below.
        let mut proc = process::spawn(&self.cfg.binary, &argv, id)?;
        proc.wait_healthy(port, self.cfg.startup_timeout, &spec.name)
            .await?;
        let api = OpenAiBackend::new(OpenAiConfig {
            id: id.clone(),
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: None,
            ca_cert: None,
            // The args were turned into flags; none of them belong in request bodies.
            models: vec![ModelSpec::named(spec.name.clone())],
        })?;
        api.load(&spec.name).await?;
        // The weights dominate the process's memory; the file size is a fair estimate of it.
        let mem_gb = model_path(&spec.name, &spec.args)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0.0, |m| m.len() as f32 / 1e9);
        let serving = Serving {
            model: spec.name.clone(),
            api: Arc::new(api),
            tail: proc.tail.clone(),
            mem_gb,
        };
        Ok((proc, serving))
    }
}

#[async_trait]
impl Backend for LlamaServerBackend {
    fn describe(&self) -> BackendInfo {
        let serving = self.serving();
        BackendInfo {
            id: self.cfg.id.clone(),
            driver: "llama_server".into(),
            models: self.cfg.models.iter().map(|m| m.name.clone()).collect(),
            loaded: serving.as_ref().map(|s| s.model.clone()),
            mem_gb: serving.map_or(0.0, |s| s.mem_gb),
            loading: None,
        }
    }

    async fn load(&self, model: &str) -> Result<(), BackendError> {
        let spec = self.spec(model)?.clone();
        let mut proc = self.proc.lock().await;
        *self.serving.lock().expect("serving lock") = None;
        // A failed load is the loader's to report and retry, not `recover`'s.
        self.set_wanted(None);
        if let Some(old) = proc.take() {
            old.terminate().await?;
        }
        self.run(&mut proc, &spec).await?;
        self.set_wanted(Some(model));
        Ok(())
    }

    async fn health(&self) -> Result<(), BackendError> {
        let serving = self
            .serving()
            .ok_or_else(|| BackendError::Unavailable("no model loaded".into()))?;
        // A crashed child says more through its exit status and last output than through the
        // "connection refused" the HTTP check would give; a load or stop in progress holds the
        // lock, and then the HTTP check alone decides.
        if let Ok(mut proc) = self.proc.try_lock() {
            if let Some(status) = proc.as_mut().and_then(Proc::exited) {
                return Err(BackendError::Unavailable(format!(
                    "llama-server exited ({status}){}",
                    serving.tail.describe()
                )));
            }
        }
        serving.api.health().await
    }

    async fn embed(
        &self,
        model: &str,
        inputs: &[String],
    ) -> Result<crate::types::Embeddings, BackendError> {
        match self.serving() {
            Some(s) if s.model == model => s.api.embed(model, inputs).await,
            _ => Err(BackendError::Unavailable(format!(
                "model `{model}` is not loaded"
            ))),
        }
    }

    async fn complete(
        &self,
        req: &InferRequest,
    ) -> Option<Result<serde_json::Value, BackendError>> {
        if let Err(e) = self.takes(req) {
            return Some(Err(e));
        }
        match self.serving() {
            Some(s) if s.model == req.model => s.api.complete(req).await,
            // Not serving it: `infer` says why.
            _ => None,
        }
    }

    async fn stream(
        &self,
        req: &InferRequest,
        include_usage: bool,
    ) -> Option<Result<crate::api::EventStream, BackendError>> {
        if let Err(e) = self.takes(req) {
            return Some(Err(e));
        }
        match self.serving() {
            Some(s) if s.model == req.model => s.api.stream(req, include_usage).await,
            _ => None,
        }
    }

    async fn infer(&self, req: InferRequest) -> Result<InferStream, BackendError> {
        self.takes(&req)?;
        match self.serving() {
            Some(s) if s.model == req.model => s.api.infer(req).await,
            _ => Err(BackendError::Unavailable(format!(
                "model `{}` is not loaded",
                req.model
            ))),
        }
    }

    async fn stop(&self) -> Result<(), BackendError> {
        let mut proc = self.proc.lock().await;
        *self.serving.lock().expect("serving lock") = None;
        self.set_wanted(None);
        match proc.take() {
            Some(p) => p.terminate().await,
            None => Ok(()),
        }
    }

    /// Restarts the child when it has exited (crashed, OOM-killed) while a model is wanted. A
    /// child that is alive but not answering is left to the health watch: it may be busy.
    async fn recover(&self) -> Result<bool, BackendError> {
        let mut proc = self.proc.lock().await;
        let Some(model) = self.wanted.lock().expect("wanted lock").clone() else {
            return Ok(false);
        };
        let status = match proc.as_mut() {
            Some(p) => match p.exited() {
                Some(status) => status.to_string(),
                None => return Ok(false),
            },
            None => "no process (the last restart failed)".to_string(),
        };
        *self.serving.lock().expect("serving lock") = None;
        proc.take();
        let spec = self.spec(&model)?.clone();
        tracing::info!(target: "llama_server", "[{}] restarting llama-server for `{model}` (it exited: {status})", self.cfg.id);
        self.run(&mut proc, &spec).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn backend(binary: &str, path: &str) -> LlamaServerBackend {
        LlamaServerBackend::new(LlamaServerConfig {
            id: "ls".into(),
            binary: binary.into(),
            models: vec![ModelSpec {
                name: "m".into(),
                args: serde_json::from_value(json!({"path": path, "threads": 2})).unwrap(),
            }],
            ctx: 1024,
            startup_timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn command_line_puts_driver_flags_first_and_model_flags_after() {
        let gguf = tempfile::NamedTempFile::new().unwrap();
        let path = gguf.path().to_str().unwrap();
        let b = backend("llama-server", path);
        let argv = b.command_args(&b.cfg.models[0], 4242).unwrap();
        assert_eq!(
            argv,
            [
                "-m",
                path,
                "--host",
                "127.0.0.1",
                "--port",
                "4242",
                "--ctx-size",
                "1024",
                "--alias",
                "m",
                "--threads",
                "2"
            ]
        );
    }

    #[tokio::test]
    async fn load_errors_are_clear_sentences_not_panics() {
        let gguf = tempfile::NamedTempFile::new().unwrap();
        let path = gguf.path().to_str().unwrap();
        let b = backend("/nonexistent/llama-server", path);
        assert_eq!(
            b.load("m").await,
            Err(BackendError::Failed(
                "llama-server binary not found at /nonexistent/llama-server (install it or set the backend's `binary`)".into()
            ))
        );
        assert_eq!(
            b.load("x").await,
            Err(BackendError::UnknownModel("x".into()))
        );
        let b = backend("/bin/true", "/nonexistent/model.gguf");
        assert_eq!(
            b.load("m").await,
            Err(BackendError::Failed(
                "model `m`: GGUF file not found at /nonexistent/model.gguf".into()
            ))
        );
        assert_eq!(b.describe().loaded, None);
        assert!(b.stop().await.is_ok());
    }

    #[tokio::test]
    async fn a_child_that_exits_at_startup_is_reported_with_its_output() {
        let gguf = tempfile::NamedTempFile::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-llama-server");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"error: unknown argument: $9\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let b = backend(script.to_str().unwrap(), gguf.path().to_str().unwrap());
        match b.load("m").await {
            Err(BackendError::Failed(m)) => {
                assert!(
                    m.starts_with("llama-server exited (exit status: 3) while loading `m`"),
                    "{m}"
                );
                assert!(
                    m.ends_with("; last output: error: unknown argument: --alias"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b.health().await,
            Err(BackendError::Unavailable("no model loaded".into()))
        );
    }
}
