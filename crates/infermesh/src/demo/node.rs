//! One demo node: an `infermesh up` child of this very executable, its log in a file.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use infermesh_backend::child::die_with_parent;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::NodeRole;

/// The address lines come before any model work (well under a second); this only allows for a
/// heavily loaded machine.
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct Node {
    pub index: usize,
    pub name: String,
    pub role: NodeRole,
    pub url: String,
    pub gossip: String,
    /// The invite token it printed, for other nodes' `--join`.
    pub invite: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Its exit was reported already (or asked for): say it once.
    pub gone: bool,
}

impl Node {
    /// Starts `infermesh up --name node-<index> --data-dir <root>/node-<index> <args…>` and waits
    /// for its address lines.
    pub async fn start(
        index: usize,
        role: NodeRole,
        root: &Path,
        config: &str,
        args: &[OsString],
    ) -> Result<Node> {
        let name = format!("node-{index}");
        let data_dir = root.join(&name);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let config_path = data_dir.join("config.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut node = Node {
            index,
            log: root.join(format!("{name}.log")),
            name,
            role,
            url: String::new(),
            gossip: String::new(),
            invite: String::new(),
            data_dir,
            child: None,
            gone: false,
        };
        node.launch(args).await?;
        Ok(node)
    }

    async fn launch(&mut self, args: &[OsString]) -> Result<()> {
        // Appending: a restarted node keeps one log with both lives in it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let exe = std::env::current_exe().context("cannot find the infermesh executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("up")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // The terminal sends Ctrl-C to its whole foreground group; kept out of it, nodes stop
            // only when the demo stops them, so none is mistaken for a crash.
            .process_group(0);
        // The log is a file for `less` and `grep`, not a terminal: no colour codes in it.
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            // llama.cpp's OpenMP threads spin between tokens; with many nodes sharing a few
            // cores the spinning starves the others (16-token answers took 15-30 s on 2 cores).
            cmd.env("OMP_WAIT_POLICY", "PASSIVE");
        }
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let read = async {
            let (mut url, mut gossip) = (None, None);
            while let Some(l) = lines.next_line().await? {
                if let Some(u) = l.strip_prefix("infermesh listening on ") {
                    url = Some(u.to_string());
                } else if let Some(g) = l.strip_prefix("infermesh gossip on ") {
                    gossip = Some(g.to_string());
                } else if let Some(t) = l.strip_prefix("infermesh invite ") {
                    return Ok::<_, std::io::Error>(
                        url.zip(gossip).map(|(u, g)| (u, g, t.to_string())),
                    );
                }
            }
            Ok(None)
        };
        let found = tokio::time::timeout(START_LIMIT, read).await;
        let Ok(Ok(Some((url, gossip, invite)))) = found else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let why = if found.is_err() {
                "did not start within 60 s"
            } else {
                "exited during start"
            };
            return Err(anyhow!(
                "{} {why}; its last log lines:\n{}",
                self.name,
                self.log_tail(12)
            ));
        };
        // Keep draining: a node blocked on a full stdout pipe would freeze.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.url = url;
        self.gossip = gossip;
        self.invite = invite;
        self.child = Some(child);
        self.gone = false;
        Ok(())
    }

    /// Replaces the process with one started with `args`. SIGKILL, not SIGTERM: the only caller
    /// restarts a node blocked opening a pipe, which would hold a graceful exit for seconds.
    pub async fn relaunch(&mut self, args: &[OsString]) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        self.gone = true;
        self.launch(args).await
    }

    pub fn port(&self) -> u16 {
        port_of(self.url.trim_end_matches('/'))
    }

    pub fn gossip_port(&self) -> u16 {
        port_of(&self.gossip)
    }

    /// `Some` once the process has ended (whatever reaped it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    pub fn terminate(&mut self) {
        self.gone = true;
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            return;
        };
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) on a child we spawned and have not reaped; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    pub async fn wait_or_kill(&mut self, deadline: tokio::time::Instant) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    pub fn note_in_log(&self, line: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = writeln!(f, "--- {line} ---");
        }
    }

    /// The last `n` lines of its log, indented for quoting.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        if tail.is_empty() {
            return "    (no log output)".into();
        }
        tail.iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            // Loopback only: a configured HTTP proxy must not see (or break) the demo's traffic.
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("plain HTTP client")
    })
}

pub async fn status(url: &str) -> Result<serde_json::Value> {
    let v = client()
        .get(format!("{url}/api/status"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v)
}

/// Ctrl-C (SIGINT) or SIGTERM.
pub struct Stop {
    int: Signal,
    term: Signal,
}

impl Stop {
    pub fn new() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
    }
}
