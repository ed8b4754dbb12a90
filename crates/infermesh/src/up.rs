//! `infermesh up`: wire identity, backends and the HTTP API into a running node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use infermesh_api::{Node, NodeInfo};
use infermesh_backend::embedded::{EmbeddedBackend, ModelSource};
use infermesh_backend::engine::EngineConfig;
use infermesh_backend::model_fetch::{default_model_dir, SMOLLM2_135M};

use crate::identity;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// HTTP port for the API, dashboard and metrics (0 picks a free one).
    #[arg(long, default_value_t = 7337)]
    pub port: u16,
    /// Address to listen on. Loopback by default: expose the node deliberately.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// A GGUF model to serve. Without it the default model (SmolLM2-135M-Instruct) is fetched
    /// into the model cache on first start.
    #[arg(long, value_name = "PATH.gguf", conflicts_with = "client")]
    pub model: Option<PathBuf>,
    /// Name to serve the model under (default: the file name without `.gguf`).
    #[arg(long, requires = "model")]
    pub model_name: Option<String>,
    /// Serve no model: only route requests to the mesh.
    #[arg(long)]
    pub client: bool,
    /// Human-readable node name (default: hostname plus a short id).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the node keeps its identity and config.
    #[arg(long, value_name = "DIR", env = "INFERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Model cache [env: INFERMESH_MODEL_DIR; default: $XDG_CACHE_HOME/infermesh/models].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Context length per request slot, in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// Requests generated in parallel by the embedded engine (more wait in a queue).
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
}

fn model_name_of(path: &std::path::Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

pub async fn run(args: UpArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(identity::default_data_dir);
    let id = identity::load_or_create(&data_dir)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), &id.node_id[..4]));
    let node = Node::new(NodeInfo {
        node_id: id.node_id.clone(),
        public_key: hex::encode(id.key.verifying_key().as_bytes()),
        name,
        version: env!("CARGO_PKG_VERSION").to_string(),
        client_mode: args.client,
    });

    let mut to_activate = None;
    if !args.client {
        let (model_name, source) = match &args.model {
            Some(path) => {
                // Not `is_file()`: a named pipe or device is a legitimate (if slow) model source.
                let problem = if !path.exists() {
                    Some("does not exist")
                } else if path.is_dir() {
                    Some("is a directory")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    bail!(
                        "model file {} {problem} (pass a .gguf file, or omit --model to use the default model)",
                        path.display()
                    );
                }
                let name = args
                    .model_name
                    .clone()
                    .unwrap_or_else(|| model_name_of(path));
                (name, ModelSource::File(path.clone()))
            }
            None => (
                SMOLLM2_135M.name.to_string(),
                ModelSource::Fetch {
                    model: SMOLLM2_135M,
                    cache_dir: args.model_dir.clone().unwrap_or_else(default_model_dir),
                },
            ),
        };
        let cfg = EngineConfig {
            n_ctx: args.ctx,
            slots: args.slots.max(1),
            ..EngineConfig::default()
        };
        let models = BTreeMap::from([(model_name.clone(), source)]);
        node.add_backend(
            Arc::new(EmbeddedBackend::new("embedded", models, cfg)),
            Some(model_name),
        );
        to_activate = Some("embedded");
    }

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another node running? try --port)")
    })?;
    let local = listener.local_addr()?;
    // One machine-readable line on stdout, so scripts and tests can find a `--port 0` node.
    println!("infermesh listening on http://{local}");
    tracing::info!(node_id = %id.node_id, name = %node.info.name, "node up on http://{local}");

    if let Some(backend) = to_activate {
        let node = node.clone();
        tokio::spawn(async move { node.activate(backend).await });
    }

    let app = infermesh_api::router(node.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    node.stop_all().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
