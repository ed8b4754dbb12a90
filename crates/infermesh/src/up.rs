//! `infermesh up`: wire identity, backends and the HTTP API into a running node.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use infermesh_api::app::machine_ram_gb;
use infermesh_api::drivers::BuildContext;
use infermesh_api::{App, AppOptions, Node, NodeInfo};
use infermesh_backend::embedded::EmbeddedBackend;
use infermesh_backend::engine::EngineConfig;
use infermesh_backend::model_fetch::default_model_dir;
use infermesh_mesh::schedule::{fast_schedule, EmbeddedSchedule, MESH_SCHEDULE};
use infermesh_mesh::{Mesh, MeshConfig};
use infermesh_state::{NodeState, ScheduleSpec, Tunables};

use crate::{identity, membership, models, split_setup};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// HTTP port for the API, dashboard and metrics (0 picks a free one).
    #[arg(long, default_value_t = 7337)]
    pub port: u16,
    /// Address to listen on. Loopback by default: expose the node deliberately.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// A GGUF model to serve. Without it the node serves the model the mesh needs most among
    /// those in the model cache, or fetches the default model (SmolLM2-135M-Instruct).
    #[arg(long, value_name = "PATH.gguf", conflicts_with = "client")]
    pub model: Option<PathBuf>,
    /// Name to serve the model under (default: the file name without `.gguf`).
    #[arg(long, requires = "model")]
    pub model_name: Option<String>,
    /// Serve no model: only route requests to the mesh.
    #[arg(long)]
    pub client: bool,
    /// Register the embedded backend but serve nothing yet: idle capacity (`standby`) that an
    /// operator or the mesh can assign a model to later.
    #[arg(long, conflicts_with_all = ["client", "model"])]
    pub standby: bool,
    /// Human-readable node name (default: hostname plus a short id).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the node keeps its identity and config.
    #[arg(long, value_name = "DIR", env = "INFERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept admin changes WITHOUT operator signatures (local experiments only: anyone who can
    /// reach the port can change the node). Otherwise they, and admin reads from other machines,
    /// must be signed by a key listed in config.toml [[operator]] (`infermesh keygen`).
    /// `--admin-open=false` overrides the env.
    #[arg(
        long,
        env = "INFERMESH_ADMIN_OPEN",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::FalseyValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub admin_open: bool,
    /// Model cache [env: INFERMESH_MODEL_DIR; default: $XDG_CACHE_HOME/infermesh/models].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Context length per request slot, in tokens.
    #[arg(long, default_value_t = 2048)]
    pub ctx: u32,
    /// Requests generated in parallel by the embedded engine (more wait in a queue). The slots
    /// are sequences of one continuous batch: every running answer advances in one decode on all
    /// the cores, so a lone request is as fast as with one slot. Each slot holds a whole `--ctx`
    /// of KV cache. 4 measured best here: 1.45× the tokens/s of 1 slot at 4 clients, the same as
    /// llama-server -np 4, and a lone request unchanged (`infermesh bench engine`).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Run each slot as a context of its own with a share of the cores, instead of one batch.
    #[arg(long)]
    pub separate_slots: bool,
    /// CPU threads of the engine [default: this machine's cores; with --separate-slots, the
    /// cores divided by --slots, per slot]. llama.cpp's
    /// threads spin while they wait for each other: more threads than cores in all (several
    /// nodes or slots on one machine) makes every generation many times slower.
    #[arg(long, env = "INFERMESH_THREADS", value_name = "N")]
    pub threads: Option<u16>,
    /// Join a mesh with an invite token (`im1…`), printed by any member at start-up and by
    /// `infermesh invite` on a member. Saved in the data dir, so a restart rejoins without it.
    /// Without it the node starts a new mesh (or rejoins the one saved in the data dir).
    #[arg(long, value_name = "TOKEN")]
    pub join: Vec<String>,
    /// Mesh port (UDP gossip and TCP peer channel) [default: --port + 1; 0 picks a free one].
    #[arg(long)]
    pub gossip_port: Option<u16>,
    /// The API address clients and operators reach this node at, when it differs from the
    /// bound one (e.g. with --bind 0.0.0.0): HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub advertise: Option<infermesh_state::HostPort>,
    /// The mesh address other members reach this node at (UDP and TCP), when it differs from
    /// the bound one: IP:PORT [default: --advertise's host with the mesh port].
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    pub gossip_advertise: Option<infermesh_state::HostPort>,
    /// Validation round schedule: `mesh` (the embedded mesh schedule: 4 h epochs opening with a
    /// 10 min round), `fast` (20 s epochs, 4 s rounds, short alert lead: demos and tests) or
    /// `learn` (adopt the schedule peers advertise).
    #[arg(long, value_enum, default_value = "mesh")]
    pub schedule: ScheduleChoice,
    /// Memory this node offers, in decimal GB: what split planning counts on it as a split's
    /// host or worker [default: the memory available at start]. A model that needs more than
    /// this node offers is split across idle (`--standby`) members.
    #[arg(long, value_name = "GB", value_parser = split_setup::parse_gb)]
    pub max_mem: Option<f64>,
    /// llama.cpp's `llama-server`, run by the host of a split model (see below for the default).
    #[arg(long, value_name = "PATH")]
    pub llama_server: Option<PathBuf>,
    /// llama.cpp's `rpc-server`, run by a split's workers (see below for the default).
    #[arg(long, value_name = "PATH")]
    pub rpc_server: Option<PathBuf>,
    /// An explicit schedule, `GENESIS_MS:EPOCH_MS:ROUND_MS` (unix ms; replaces --schedule).
    /// Onboarding timings scale with it. For selfcheck, tests and private meshes.
    #[arg(long, value_name = "G:E:R", value_parser = parse_spec)]
    pub schedule_spec: Option<ScheduleSpec>,
    /// Seconds a workload group's replicas must stay saturated before demand adds one.
    #[arg(long, value_name = "S", default_value_t = 10.0, hide = true)]
    pub demand_grow_s: f64,
    /// Seconds demand must stay low before an extra replica is released.
    #[arg(long, value_name = "S", default_value_t = 30.0, hide = true)]
    pub demand_shrink_s: f64,
    /// Requests in flight per replica at which a group counts as saturated.
    #[arg(long, value_name = "N", default_value_t = 4.0, hide = true)]
    pub demand_busy: f64,
}

fn demand_policy(args: &UpArgs) -> infermesh_state::demand::DemandPolicy {
    infermesh_state::demand::DemandPolicy {
        busy_per_replica: args.demand_busy.max(0.5),
        calm_per_replica: (args.demand_busy / 4.0).max(0.0),
        grow_after_ms: (args.demand_grow_s.max(0.0) * 1000.0) as u64,
        shrink_after_ms: (args.demand_shrink_s.max(0.0) * 1000.0) as u64,
    }
}

fn parse_addr(s: &str) -> Result<infermesh_state::HostPort, String> {
    infermesh_state::parse_host_port(s)
}

fn parse_spec(s: &str) -> Result<ScheduleSpec, String> {
    let parts: Vec<i64> = s
        .split(':')
        .map(|p| p.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not GENESIS_MS:EPOCH_MS:ROUND_MS (three integers)"))?;
    let [genesis_ms, epoch_ms, round_ms] = parts[..] else {
        return Err(format!(
            "`{s}` is not GENESIS_MS:EPOCH_MS:ROUND_MS (three integers)"
        ));
    };
    let spec = ScheduleSpec {
        genesis_ms,
        epoch_ms,
        round_ms,
    };
    spec.validate()?;
    Ok(spec)
}

/// Onboarding timings proportional to an explicit schedule, never longer than the mesh's own:
/// a short one alerts one round ahead and never auto-tests (a test would compete with rounds
/// seconds apart); one shaped like the mesh's gets the mesh's timings.
fn tunables_for(spec: &ScheduleSpec) -> Tunables {
    let d = Tunables::DEFAULT;
    Tunables {
        alert_lead_ms: spec.round_ms.min(d.alert_lead_ms),
        auto_test_min_lead_ms: (spec.epoch_ms * 2).min(d.auto_test_min_lead_ms),
        auto_test_retry_ms: spec.epoch_ms.min(d.auto_test_retry_ms),
        test_timeout_ms: 60_000,
        onboarding_heartbeat_ms: spec.epoch_ms.min(d.onboarding_heartbeat_ms),
        admission_check_ms: d.admission_check_ms,
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleChoice {
    Mesh,
    Fast,
    Learn,
}

impl ScheduleChoice {
    fn spec(self) -> Option<ScheduleSpec> {
        match self {
            Self::Mesh => Some(MESH_SCHEDULE),
            // Genesis 0: every fast node agrees on the boundaries without coordination.
            Self::Fast => Some(fast_schedule(0)),
            Self::Learn => None,
        }
    }

    /// The fast schedule needs proportionally short onboarding timings, or a node would always
    /// read "must be online now".
    fn tunables(self) -> Tunables {
        match self {
            Self::Fast => Tunables {
                alert_lead_ms: 5_000,
                auto_test_min_lead_ms: 8_000,
                auto_test_retry_ms: 20_000,
                test_timeout_ms: 60_000,
                onboarding_heartbeat_ms: 20_000,
                admission_check_ms: Tunables::DEFAULT.admission_check_ms,
            },
            Self::Mesh | Self::Learn => Tunables::default(),
        }
    }
}

fn engine_config(args: &UpArgs) -> EngineConfig {
    let slots = args.slots.max(1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // One batch works on all the cores; separate slots split them.
    let per_worker = if args.separate_slots { slots } else { 1 };
    let threads = args
        .threads
        .map_or_else(|| (cores / per_worker).max(1), usize::from);
    EngineConfig {
        n_ctx: args.ctx,
        slots,
        batched: !args.separate_slots,
        n_threads: threads.max(1) as i32,
        ..EngineConfig::default()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// What `infermesh up --help` says about the network, so an operator knows what to open.
pub const PORTS_HELP: &str = "\
Ports (open these between machines; nothing else is needed):
  --port (TCP, default 7337)       the API: OpenAI-compatible /v1 for clients, /api/status, the
                                   dashboard, /metrics, and signed /admin/v1 for operators.
  --gossip-port (UDP+TCP, default  the mesh port. UDP carries membership gossip, every datagram
    --port + 1, so 7338)           sealed with the mesh secret from the invite token. TCP is the
                                   peer channel: mutual TLS 1.3 between members' node keys,
                                   carrying forwarded /v1 requests and answers.
  Bind beyond loopback with --bind 0.0.0.0 --advertise HOST:PORT (and --gossip-advertise IP:PORT
  when the mesh address differs).

Split models (a model bigger than any one node, served by several; see --max-mem):
  the host runs llama.cpp's llama-server and each worker its rpc-server, looked for in order:
  --llama-server/--rpc-server PATH, $INFERMESH_LLAMA_SERVER/$INFERMESH_RPC_SERVER, next to this
  infermesh executable, target/llama-server/ under the working directory (where
  scripts/build-llama-server puts them), then PATH. rpc-server listens on loopback only; the
  host reaches it through the peer channel.";

pub async fn run(args: UpArgs) -> Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(identity::default_data_dir);
    // Before anything reads or writes the data dir: one data dir, one node.
    let _lock = membership::lock_data_dir(&data_dir)?;
    let member = membership::resolve(&data_dir, &args.join)?;
    let id = identity::load_or_create(&data_dir)?;
    infermesh_api::logs::global().set_node_id(&id.node_id);
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
    let node_config = infermesh_api::config::load(&data_dir).map_err(anyhow::Error::msg)?;
    // Validate an explicit model before binding anything: a typo must not leave a half-up node.
    let explicit = match &args.model {
        Some(path) => Some(models::explicit(path, args.model_name.clone())?),
        None => None,
    };

    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another node running? try --port)")
    })?;
    let local = listener.local_addr()?;
    let api_addr = match &args.advertise {
        Some(a) => a.to_string(),
        None if args.bind.is_unspecified() => anyhow::bail!(
            "--bind {} listens on every interface, but peers and operators need one address: \
             pass --advertise HOST:PORT (this machine's address as others reach it)",
            args.bind
        ),
        None => local.to_string(),
    };

    // The mesh port: TCP for the peer channel first (so port 0 picks one), UDP gossip on the
    // same number.
    // The API holds TCP on --port, so the mesh port is the next one (0 stays "pick one").
    let gossip_port = args.gossip_port.unwrap_or(if args.port == 0 {
        0
    } else {
        args.port.saturating_add(1)
    });
    let peer_listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, gossip_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on tcp {}:{gossip_port} (mesh port taken? try --gossip-port)",
                args.bind
            )
        })?;
    let gossip_addr = peer_listener.local_addr()?;
    let gossip_advertise = match (&args.gossip_advertise, &args.advertise) {
        (Some(g), _) => Some(g.socket_addr().context(
            "--gossip-advertise must be an IP address with a port (members dial it directly)",
        )?),
        (None, Some(a)) => a.ip().map(|ip| SocketAddr::new(ip, gossip_addr.port())),
        (None, None) => None,
    };
    let mut first = App::record_of(&node, &api_addr, machine_ram_gb());
    // Until its backend is registered the node would read as `client`; peers should see what it
    // is about to be.
    if !args.client {
        first.state = Some(if args.standby {
            NodeState::Standby
        } else {
            NodeState::Loading
        });
    }
    let mut mesh_cfg = MeshConfig::new(id.key.clone(), member.secret.clone(), gossip_addr, first);
    mesh_cfg.advertise_addr = gossip_advertise;
    mesh_cfg.seeds = member.seeds.clone();
    let mesh = Mesh::start(mesh_cfg).await.with_context(|| {
        format!("cannot start gossip on udp {gossip_addr} (port taken? try --gossip-port)")
    })?;
    // Machine-readable lines on stdout, so scripts and tests can find a `--port 0` node and
    // hand its invite to the next one.
    announce(&format!("infermesh listening on http://{local}"));
    announce(&format!("infermesh gossip on {}", mesh.gossip_addr()));
    let invite = infermesh_mesh::Invite {
        secret: member.secret.clone(),
        bootstrap: vec![mesh.gossip_addr().to_string()],
    };
    announce(&format!("infermesh invite {}", invite.encode()));
    tracing::info!(node_id = %id.node_id, name = %node.info.name, mesh = %mesh.mesh_id(),
        gossip = %mesh.gossip_addr(), "node up on http://{local}");
    if !member.seeds.is_empty() {
        tracing::info!(seeds = ?member.seeds, "joining the mesh");
    }

    let mut to_activate = None;
    let own_offer = split_setup::offer_bytes(args.max_mem);
    let mut split_host = None;
    if !args.client {
        node.set_mem_offer(own_offer);
        let (model_name, source) = match explicit {
            Some(m) => m,
            None => {
                let dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
                models::auto_assign(dir, &mesh, !member.seeds.is_empty(), args.standby).await
            }
        };
        let cfg = engine_config(&args);
        if !args.standby {
            split_host = split_setup::host_setup(split_setup::SplitChoice {
                model: &model_name,
                source: &source,
                own_offer,
                n_ctx: args.ctx,
                threads: cfg.n_threads.max(1) as u32,
                llama_server: split_setup::find_tool(
                    "llama-server",
                    args.llama_server.as_deref(),
                    "INFERMESH_LLAMA_SERVER",
                ),
            });
        }
        // A split's host serves through the split's llama-server, not the embedded engine.
        if split_host.is_none() {
            let models = BTreeMap::from([(model_name.clone(), source)]);
            let assigned = (!args.standby).then(|| model_name.clone());
            node.add_backend(
                Arc::new(EmbeddedBackend::new("embedded", models, cfg)),
                assigned,
            );
            if !args.standby {
                to_activate = Some("embedded");
            }
        }
    }

    let build = BuildContext {
        model_dir: args.model_dir.clone().unwrap_or_else(default_model_dir),
        engine: engine_config(&args),
        llama_server_startup: std::time::Duration::from_secs(120),
    };
    let (spec, tunables) = match &args.schedule_spec {
        Some(spec) => (Some(*spec), tunables_for(spec)),
        None => (args.schedule.spec(), args.schedule.tunables()),
    };
    let schedule = Arc::new(EmbeddedSchedule::new(spec));
    let opts = AppOptions {
        schedule: schedule.clone(),
        learner: Some(schedule),
        signing_key: Some(id.key.clone()),
        tunables,
        data_dir: Some(data_dir.clone()),
        config: node_config,
        build,
        admin_open: args.admin_open,
        invite: Some(invite.encode()),
        // The addresses, never the token: this list is logged.
        join: member.seeds.clone(),
        demand: demand_policy(&args),
    };
    let app = App::with_options(node.clone(), Some(mesh), api_addr, opts);
    app.admin.log_mode();
    infermesh_api::admin::restore(&app).await;
    if let Some(backend) = to_activate {
        let node = node.clone();
        tokio::spawn(async move { node.activate(backend).await });
    }
    if let Some(setup) = split_host {
        tokio::spawn(infermesh_api::split::host::run(app.clone(), setup));
    }
    if !args.client {
        let rpc = split_setup::find_tool(
            "rpc-server",
            args.rpc_server.as_deref(),
            "INFERMESH_RPC_SERVER",
        );
        let threads = engine_config(&args).n_threads.max(1) as u32;
        tokio::spawn(infermesh_api::split::worker::run(app.clone(), rpc, threads));
    }
    // Clients too: they learn and relay groups, so any node can be asked about them.
    tokio::spawn(infermesh_api::placement::run::run(app.clone()));
    app.usage.spawn();
    tokio::spawn(publish_loop(app.clone()));
    let rounds = tokio::spawn(infermesh_api::rounds::run(app.clone()));
    tokio::spawn(log_membership(app.clone()));
    tokio::spawn(infermesh_api::status::reach::warn_if_alone(app.clone()));
    tokio::spawn(infermesh_api::health::watch(
        node.clone(),
        infermesh_api::health::HealthPolicy::default(),
    ));

    let peer_dir = app.mesh.as_ref().map(|m| m.directory());
    if let Some(dir) = peer_dir {
        let peers = infermesh_api::peer_router(app.clone(), infermesh_api::Limits::default());
        let key = id.key.clone();
        tokio::spawn(async move {
            let timeout = infermesh_api::Limits::default().header_timeout;
            if let Err(e) = infermesh_api::peer::serve(
                peer_listener,
                peers,
                &key,
                dir,
                timeout,
                std::future::pending(),
            )
            .await
            {
                tracing::error!(error = %e, "the peer channel stopped; this node no longer answers requests routed by peers (restart it)");
            }
        });
    }
    let router = infermesh_api::router(app.clone());
    // Not `axum::serve`: it sets no header read timeout and no TCP_NODELAY (see `serve`).
    infermesh_api::serve(listener, router, shutdown_signal())
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    // No round may validate a backend that is being stopped: that is a shutdown, not a failure.
    rounds.abort();
    node.stop_all().await;
    Ok(())
}

/// One machine-readable line on stdout. A reader that stopped reading (a script that took the
/// line it wanted and closed the pipe) must not take the node down, as `println!` would.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Keeps the gossiped record in step with the node. Polling (cheap: a struct compare) rather than
/// hooking every state change keeps `Node` free of mesh concerns; the interval bounds how stale a
/// peer's view of our state and load can be, on top of gossip propagation.
async fn publish_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(PUBLISH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        app.publish_if_changed();
    }
}

const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One `info` line per peer that joins, leaves or changes state: the operator's membership log.
async fn log_membership(app: Arc<App>) {
    let Some(mesh) = app.mesh.as_ref() else {
        return;
    };
    let mut changes = mesh.subscribe();
    let mut known: BTreeMap<String, (String, NodeState)> = BTreeMap::new();
    loop {
        let now: BTreeMap<String, (String, NodeState)> = app
            .peers()
            .into_iter()
            .map(|p| (p.record.node_id.clone(), (p.record.name.clone(), p.state)))
            .collect();
        for (id, (name, state)) in &now {
            match known.get(id) {
                None => {
                    tracing::info!(peer = %name, node_id = %id, state = state.as_str(), peers = now.len(), "peer joined")
                }
                Some((_, old)) if old != state => {
                    tracing::info!(peer = %name, node_id = %id, from = old.as_str(), to = state.as_str(), "peer changed state")
                }
                _ => {}
            }
        }
        for (id, (name, _)) in &known {
            if !now.contains_key(id) {
                tracing::info!(peer = %name, node_id = %id, peers = now.len(), "peer gone (silent past the failure timeout)");
            }
        }
        known = now;
        // Also wake periodically: a peer that goes silent changes nothing in gossip.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed()).await;
    }
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
