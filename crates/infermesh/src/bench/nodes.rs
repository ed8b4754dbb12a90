//! Node processes for the benchmark: `infermesh up` children on 127.0.0.1 in temp data dirs,
//! with their pid (for RSS) and addresses. Killed when dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub struct BenchNode {
    pub url: String,
    /// The invite token the node printed, for other nodes' `--join`.
    pub invite: String,
    pub pid: u32,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl BenchNode {
    /// `infermesh up --port 0 --gossip-port 0 --admin-open` plus `args`, quiet logs.
    pub async fn start(name: &str, args: &[String], model_dir: &Path) -> Result<BenchNode> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("infermesh-bench-{name}-"))
            .tempdir()
            .context("temp dir for a bench node")?;
        let exe = std::env::current_exe().context("cannot find the infermesh executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["up", "--port", "0", "--gossip-port", "0", "--admin-open"])
            .args(["--name", name, "--data-dir"])
            .arg(dir.path())
            .arg("--model-dir")
            .arg(model_dir)
            .args(args)
            // A benchmark measures the node, not its terminal output.
            .env("INFERMESH_LOG", "warn,llama-cpp-2=error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        infermesh_backend::child::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("cannot start a node process")?;
        let pid = child.id().ok_or_else(|| anyhow!("node exited at once"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let read = async {
            let mut url = None;
            while let Some(l) = out.next_line().await? {
                if let Some(u) = l.strip_prefix("infermesh listening on ") {
                    url = Some(u.to_string());
                }
                if let Some(g) = l.strip_prefix("infermesh invite ") {
                    return Ok::<_, std::io::Error>(url.map(|u| (u, g.to_string())));
                }
            }
            Ok(None)
        };
        let Some((url, invite)) = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| anyhow!("node {name} did not start within 60 s"))??
        else {
            bail!("node {name} exited during start");
        };
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        Ok(BenchNode {
            url,
            invite,
            pid,
            child,
            _dir: dir,
        })
    }

    /// A node serving the GGUF at `path` under `model` with its embedded engine (`extra` flags
    /// added), once it is `serving`.
    pub async fn serving_file(
        name: &str,
        path: &Path,
        model: &str,
        extra: &[String],
        model_dir: &Path,
        http: &reqwest::Client,
    ) -> Result<BenchNode> {
        let mut args = vec![
            "--model".to_string(),
            path.display().to_string(),
            "--model-name".into(),
            model.into(),
        ];
        args.extend_from_slice(extra);
        let node = BenchNode::start(name, &args, model_dir).await?;
        node.wait_status(
            http,
            "the engine node serving",
            Duration::from_secs(60),
            |s| s["node_state"] == "serving",
        )
        .await?;
        Ok(node)
    }

    pub async fn status(&self, http: &reqwest::Client) -> Result<Value> {
        Ok(http
            .get(format!("{}/api/status", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Polls `/api/status` until `pred` holds.
    pub async fn wait_status(
        &self,
        http: &reqwest::Client,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.status(http).await {
                if pred(&s) {
                    return Ok(s);
                }
            }
            if start.elapsed() > timeout {
                bail!("{what}: not within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory now and at peak, in MiB (`VmRSS`, `VmHWM` of /proc/PID/status).
    pub fn rss_mib(&self) -> (f64, f64) {
        rss_of(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

pub fn rss_of(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) the process has used so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::time::Duration::from_micros(ticks * 1_000_000 / hz)
}
