//! `infermesh demo`: a whole mesh on this machine — real `infermesh up` processes on 127.0.0.1
//! in every live state, joined by gossip, with a trickle of routed requests — then cleaned away.

mod chatter;
mod node;
mod slow_disk;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use infermesh_backend::model_fetch::default_model_dir;

use chatter::Notices;
use node::{Node, Stop};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How many nodes to start (1–64). From 5 on, the mesh shows every state: serving nodes, one
    /// loading from a slow disk, one on standby and two clients.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Print the node table and keep the mesh running without opening the deck.
    #[arg(long)]
    pub no_deck: bool,
    /// Model cache shared by every node [env: INFERMESH_MODEL_DIR; default:
    /// $XDG_CACHE_HOME/infermesh/models]. The default model is fetched into it once.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Speed of the simulated slow disk the loading node reads its model from (bytes/s).
    #[arg(long, hide = true, default_value_t = 1_600_000)]
    pub slow_disk_rate: u64,
}

/// What a demo node is started as: the `node_state` it should show once up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    Serving,
    Standby,
    /// Serves once its model has arrived over a throttled "slow disk" (about a minute).
    Loading,
    Client,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Standby => "standby",
            Self::Loading => "loading",
            Self::Client => "client",
        }
    }
}

/// Roles by node index. Node 0 always serves: it fetches the model and every other node joins
/// through it. Clients come last so their URLs read as "the ones to send requests to".
pub fn plan(n: usize) -> Vec<NodeRole> {
    let mut roles = vec![NodeRole::Serving; n];
    if n >= 5 {
        roles[n - 4] = NodeRole::Loading;
        roles[n - 3] = NodeRole::Standby;
        roles[n - 2] = NodeRole::Client;
        roles[n - 1] = NodeRole::Client;
    } else if n >= 2 {
        roles[n - 1] = NodeRole::Client;
    }
    roles
}

/// Convergence is waited for before the table is printed, but a slow machine should still get
/// its demo: past this the table comes with a warning.
const CONVERGE_LIMIT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: DemoArgs) -> Result<()> {
    // Listening from the very start: a Ctrl-C during a long first fetch must still clean up.
    let mut stop = Stop::new()?;
    let roles = plan(usize::from(args.nodes));
    let model_dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
    let root = tempfile::Builder::new()
        .prefix("infermesh-demo-")
        .tempdir()
        .context("cannot create the demo's temp dir")?;
    let deck = !args.no_deck;
    // With the deck on screen, anything printed would tear it: notices go to a file instead.
    let notices = Notices::new(deck.then(|| root.path().join("demo.log")));
    // A throwaway operator key that only this demo's nodes trust, so the deck's actions (test,
    // migrate) and the CLI's signed commands work on them, and are refused anywhere else.
    let key_path = root.path().join("operator.key");
    let operator = crate::keygen::generate(&key_path, false)?;
    let mut demo = Demo {
        root: root.path().to_path_buf(),
        model_dir,
        nodes: Vec::new(),
        notices: notices.clone(),
        operator_config: crate::keygen::config_snippet("demo", &operator),
        key_path,
        operator,
    };

    let started = Instant::now();
    let booted = tokio::select! {
        r = demo.boot(&roles) => Some(r),
        _ = stop.recv() => None,
    };
    let outcome = match booted {
        Some(Ok(())) => {
            demo.print_table(started.elapsed(), args.slow_disk_rate, deck);
            demo.run_until_stopped(&mut stop, deck, args.slow_disk_rate)
                .await
        }
        Some(Err(e)) => Err(e),
        None => Ok(()),
    };
    match demo.nodes.len() {
        0 => {}
        1 => eprintln!("stopping the node…"),
        n => eprintln!("stopping {n} nodes…"),
    }
    demo.stop_all().await;
    drop(root);
    outcome
}

/// One wakeable machine on node 0, so the WAKEABLE tab and card have an entry. Its wake command
/// fails on purpose, saying why: a demo has no cloud account to wake anything with.
const DEMO_WAKEABLE: &str = "\n[[wakeable]]\nid = \"demo-gpu\"\nprovider = \"example\"\n\
    models = [\"llama-70b\"]\nvram_gb = 80\n\
    wake_command = \"echo 'demo: no cloud account is configured, so nothing wakes' >&2; exit 1\"\n";

struct Demo {
    root: PathBuf,
    model_dir: PathBuf,
    nodes: Vec<Node>,
    notices: Notices,
    /// Every node's `config.toml`: trusts `operator`.
    operator_config: String,
    key_path: PathBuf,
    operator: ed25519_dalek::SigningKey,
}

impl Demo {
    /// `up` flags common to every node; ports 0 pick free ones.
    fn args(&self, ports: (u16, u16), join: Option<&str>) -> Vec<OsString> {
        let mut a: Vec<OsString> = ["--port", &ports.0.to_string()].map(Into::into).into();
        a.extend(["--gossip-port", &ports.1.to_string()].map(OsString::from));
        a.extend([
            "--model-dir".into(),
            self.model_dir.clone().into_os_string(),
        ]);
        // Peers are routed to only once a validation round admitted them: the fast schedule
        // (a round every 20 s) gets the demo routing within seconds rather than hours.
        a.extend(["--schedule", "fast"].map(OsString::from));
        // Nine nodes on one machine's cores: one engine thread each (see `up --threads`).
        a.extend(["--threads", "1"].map(OsString::from));
        if let Some(j) = join {
            a.extend(["--join", j].map(OsString::from));
        }
        a
    }

    async fn boot(&mut self, roles: &[NodeRole]) -> Result<()> {
        let fetching = !has_gguf(&self.model_dir);
        self.nodes.push(
            Node::start(
                0,
                roles[0],
                &self.root,
                &format!("{}{DEMO_WAKEABLE}", self.operator_config),
                &self.args((0, 0), None),
            )
            .await?,
        );
        if fetching {
            eprintln!(
                "fetching the default model (first run only)… into {}",
                self.model_dir.display()
            );
        }
        let limit = Duration::from_secs(if fetching { 900 } else { 120 });
        // A first fetch reports its progress (bytes, rate, time left) in the node's log every
        // 2 s: passed on as it comes rather than every 15 s.
        let every = Duration::from_secs(if fetching { 2 } else { 15 });
        self.wait_serving(0, limit, every).await?;

        let seed = self.nodes[0].invite.clone();
        let mut pending = Vec::new();
        for (i, role) in roles.iter().enumerate().skip(1) {
            let mut args = self.args((0, 0), Some(&seed));
            match role {
                NodeRole::Serving => {}
                NodeRole::Standby => args.push("--standby".into()),
                NodeRole::Client => args.push("--client".into()),
                NodeRole::Loading => {
                    let (name, fifo) = slow_disk::prepare(&self.root, &self.model_dir)?;
                    args.extend(["--model".into(), fifo.into_os_string()]);
                    args.extend(["--model-name".into(), name.into()]);
                }
            }
            // Started together, each reading its own address lines: boot time stays flat in N.
            let root = self.root.clone();
            let config = self.operator_config.clone();
            let role = *role;
            pending.push(tokio::spawn(async move {
                Node::start(i, role, &root, &config, &args).await
            }));
        }
        // Every start is awaited, even after a failure: the ones that did start must be in
        // `nodes` to be stopped gracefully.
        let mut first_err = None;
        for p in pending {
            match p.await.map_err(|e| anyhow!("node start task failed: {e}")) {
                Ok(Ok(node)) => self.nodes.push(node),
                Ok(Err(e)) | Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        self.wait_converged().await;
        Ok(())
    }

    /// Node `i` answers `serving`; fails early (with its last log lines) if it dies or its model
    /// fails to load.
    async fn wait_serving(&mut self, i: usize, limit: Duration, every: Duration) -> Result<()> {
        let t0 = Instant::now();
        let mut said = Instant::now();
        let mut last_said = String::new();
        loop {
            let node = &mut self.nodes[i];
            if let Some(status) = node.exited() {
                bail!(
                    "{} exited ({status}) before serving; its last log lines:\n{}",
                    node.name,
                    node.log_tail(12)
                );
            }
            if let Ok(s) = node::status(&node.url).await {
                if s["node_state"] == "serving" {
                    return Ok(());
                }
                let failed = s["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|b| b["phase"] == "failed");
                if let Some(b) = failed {
                    bail!(
                        "{} cannot load its model: {}",
                        node.name,
                        b["detail"].as_str().unwrap_or("unknown error")
                    );
                }
            }
            if t0.elapsed() > limit {
                bail!(
                    "{} is not serving after {limit:?}; its last log lines:\n{}",
                    node.name,
                    node.log_tail(12)
                );
            }
            if said.elapsed() > every {
                said = Instant::now();
                let last = node.log_tail(1).trim().to_string();
                // The same line again says nothing new; the 15 s beat still shows it is alive.
                if last != last_said || every >= Duration::from_secs(15) {
                    eprintln!(
                        "  … still waiting for {} ({}s): {last}",
                        node.name,
                        t0.elapsed().as_secs(),
                    );
                    last_said = last;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every node is in its planned state and sees every other node in its planned state.
    async fn wait_converged(&mut self) {
        let t0 = Instant::now();
        loop {
            let mut missing = Vec::new();
            for node in &self.nodes {
                match node::status(&node.url).await {
                    Ok(s) => missing.extend(self.view_problems(node, &s)),
                    Err(e) => missing.push(format!("{} does not answer: {e}", node.name)),
                }
            }
            if missing.is_empty() {
                return;
            }
            if t0.elapsed() > CONVERGE_LIMIT {
                eprintln!(
                    "warning: the mesh has not converged after {CONVERGE_LIMIT:?}; starting anyway:\n  {}",
                    missing.join("\n  ")
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn view_problems(&self, me: &Node, s: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        if s["node_state"] != me.role.as_str() {
            out.push(format!(
                "{} is {} (want {})",
                me.name,
                s["node_state"],
                me.role.as_str()
            ));
        }
        let seen: BTreeMap<&str, &str> = s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?, p["state"].as_str()?)))
            .collect();
        for other in self.nodes.iter().filter(|o| o.index != me.index) {
            match seen.get(other.name.as_str()) {
                Some(st) if *st == other.role.as_str() => {}
                Some(st) => out.push(format!("{} sees {} as {st}", me.name, other.name)),
                None => out.push(format!("{} does not see {} yet", me.name, other.name)),
            }
        }
        out
    }

    fn print_table(&self, took: Duration, slow_rate: u64, deck: bool) {
        println!(
            "infermesh demo: {} nodes up in {:.1} s",
            self.nodes.len(),
            took.as_secs_f64()
        );
        println!();
        println!("  {:<8} {:<8} URL", "NODE", "ROLE");
        for n in &self.nodes {
            let note = match n.role {
                NodeRole::Loading => {
                    let secs = slow_disk::source(&self.model_dir)
                        .map_or(0, |(_, p)| slow_disk::expected_secs(&p, slow_rate));
                    format!("   (model arriving over a slow disk, ~{secs} s)")
                }
                NodeRole::Client => "   (routes only: send requests here)".into(),
                _ => String::new(),
            };
            println!("  {:<8} {:<8} {}{note}", n.name, n.role.as_str(), n.url);
        }
        println!();
        let key = self.key_path.display();
        println!(
            "open the deck: INFERMESH_OPERATOR_KEY={key} infermesh deck --url {}",
            self.nodes[0].url
        );
        println!("operator key: {key} (throwaway: only these nodes trust it; signs the deck's and CLI's admin actions)");
        println!("logs: {}/node-<i>.log", self.root.display());
        println!(
            "routing starts once a validation round admits the serving nodes (one every 20 s)"
        );
        let stop = if deck {
            "quitting the deck (q)"
        } else {
            "Ctrl-C"
        };
        println!("chatter: a short chat completion every ~1.5 s through the client nodes; {stop} stops the demo");
    }

    async fn run_until_stopped(
        &mut self,
        stop: &mut Stop,
        deck: bool,
        slow_rate: u64,
    ) -> Result<()> {
        let clients: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Client)
            .map(|n| n.url.clone())
            .collect();
        let targets = if clients.is_empty() {
            vec![self.nodes[0].url.clone()]
        } else {
            clients
        };
        let chatter = tokio::spawn(chatter::run(targets, self.notices.clone()));
        let mut feed = match self.nodes.iter().find(|n| n.role == NodeRole::Loading) {
            Some(n) => Some((n.index, slow_disk::start_feed(&self.model_dir, slow_rate)?)),
            None => None,
        };
        let url = self.nodes[0].url.clone();
        let key = self.operator.clone();
        let deck_ui = async move {
            if deck {
                crate::deck_cmd::open_with(&url, Some(key)).await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(deck_ui);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // Tending runs inside the select too, so the deck stays live during a node restart.
        let result = loop {
            tokio::select! {
                _ = stop.recv() => break Ok(()),
                r = &mut deck_ui => break r,
                _ = async { tick.tick().await; self.tend(&mut feed).await } => {}
            }
        };
        chatter.abort();
        result
    }

    async fn tend(&mut self, feed: &mut Option<(usize, slow_disk::Feed)>) {
        self.report_deaths();
        let Some((i, copied)) = feed.as_ref().and_then(|(i, f)| f.poll().map(|r| (*i, r))) else {
            return;
        };
        *feed = None;
        let switched = match copied {
            Ok(path) => self.finish_slow_load(i, &path).await,
            Err(e) => Err(anyhow!(e)),
        };
        match switched {
            Ok(()) => self.notices.say(&format!(
                "node-{i}: its model arrived over the slow disk; restarted on it (same name, \
                 identity and ports) to load and serve it"
            )),
            Err(e) => self.notices.say(&format!(
                "node-{i} could not be switched to its model from the slow disk: {e:#}"
            )),
        }
    }

    /// llama.cpp needs a seekable file, so the node that waited on the slow disk's pipe is
    /// restarted on the model file itself — same identity, ports and name, so peers, deck and URL
    /// all carry on and see it go `loading` → `serving`.
    async fn finish_slow_load(&mut self, i: usize, model: &Path) -> Result<()> {
        let (name, _) = slow_disk::source(&self.model_dir).context("model file disappeared")?;
        let ports = (self.nodes[i].port(), self.nodes[i].gossip_port());
        let mut args = self.args(ports, Some(&self.nodes[0].invite));
        args.extend(["--model".into(), model.as_os_str().to_owned()]);
        args.extend(["--model-name".into(), name.into()]);
        let node = &mut self.nodes[i];
        node.note_in_log(
            "infermesh demo: the model has arrived over the slow disk; restarting to load it",
        );
        node.relaunch(&args).await
    }

    fn report_deaths(&mut self) {
        for node in &mut self.nodes {
            if node.gone {
                continue;
            }
            if let Some(status) = node.exited() {
                node.gone = true;
                self.notices.say(&format!(
                    "{} ({}) exited unexpectedly ({status}); the others keep running. Its last log lines:\n{}",
                    node.name,
                    node.role.as_str(),
                    node.log_tail(10)
                ));
            }
        }
    }

    /// SIGTERM to all at once, then one shared grace period: stopping 64 nodes takes as long as
    /// stopping one.
    async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.terminate();
        }
        slow_disk::release(&self.root);
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for n in &mut self.nodes {
            n.wait_or_kill(deadline).await;
        }
    }
}

fn has_gguf(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "gguf"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeRole::*;

    #[test]
    fn nine_nodes_show_every_state() {
        assert_eq!(
            plan(9),
            [Serving, Serving, Serving, Serving, Serving, Loading, Standby, Client, Client]
        );
    }

    #[test]
    fn five_is_the_smallest_mix() {
        assert_eq!(plan(5), [Serving, Loading, Standby, Client, Client]);
    }

    #[test]
    fn small_meshes_serve_with_one_client() {
        assert_eq!(plan(1), [Serving]);
        assert_eq!(plan(2), [Serving, Client]);
        assert_eq!(plan(4), [Serving, Serving, Serving, Client]);
    }

    #[test]
    fn node_zero_always_serves_and_sizes_match() {
        for n in 1..=64 {
            let p = plan(n);
            assert_eq!(p.len(), n);
            assert_eq!(p[0], Serving, "n={n}");
            let count = |r| p.iter().filter(|x| **x == r).count();
            if n >= 5 {
                assert_eq!(
                    (count(Loading), count(Standby), count(Client)),
                    (1, 1, 2),
                    "n={n}"
                );
            }
        }
    }
}
