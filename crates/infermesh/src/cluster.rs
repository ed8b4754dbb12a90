//! Node processes on 127.0.0.1 driven by `selfcheck`: spawn, read the address lines, keep the
//! log, stop (SIGTERM, then SIGKILL), each in a temp data dir removed on drop.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub struct Child {
    pub url: String,
    /// The invite token the node printed, for other nodes' `--join`.
    pub invite: String,
    proc: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Signals the child; `die_with_parent` (killed on drop, or when this process dies) covers every
/// path that does not reach here.
fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

impl Child {
    /// Starts a node in a fresh data dir holding `config_toml` (e.g. the operator keys it
    /// accepts) as its `config.toml`.
    pub async fn spawn(
        index: usize,
        args: &[String],
        model_dir: &Path,
        config_toml: &str,
    ) -> Result<Child> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("infermesh-node-{index}-"))
            .tempdir()
            .context("cannot create a temp dir for a node")?;
        std::fs::write(dir.path().join("config.toml"), config_toml)
            .context("cannot write the node's config")?;
        let mut c = Child {
            url: String::new(),
            invite: String::new(),
            proc: None,
            dir,
            logs: Arc::new(Mutex::new(Vec::new())),
        };
        c.start(args, model_dir).await?;
        Ok(c)
    }

    async fn start(&mut self, args: &[String], model_dir: &Path) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find the infermesh executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["up", "--port", "0", "--data-dir"])
            .arg(self.dir.path())
            .arg("--model-dir")
            .arg(model_dir)
            // Several nodes share this machine's cores: one engine thread each, or llama.cpp's
            // spinning threads oversubscribe the cores and a round's inference takes seconds.
            .args(["--threads", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        infermesh_backend::child::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("cannot start a node process")?;
        let logs = self.logs.clone();
        let err = child.stderr.take().expect("piped stderr");
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                logs.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let read = async {
            let (mut url, mut invite) = (None, None);
            while let Some(l) = out.next_line().await? {
                if let Some(u) = l.strip_prefix("infermesh listening on ") {
                    url = Some(u.to_string());
                }
                if let Some(g) = l.strip_prefix("infermesh invite ") {
                    invite = Some(g.to_string());
                    break;
                }
            }
            Ok::<_, std::io::Error>((url, invite))
        };
        let (url, invite) = tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| anyhow!("node did not start within 60 s"))??;
        let (Some(url), Some(invite)) = (url, invite) else {
            let tail = self
                .logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n");
            return Err(anyhow!("node exited during start:\n{tail}"));
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
        self.url = url;
        self.invite = invite;
        self.proc = Some(child);
        Ok(())
    }

    /// Stops and starts again in the same data dir (same identity, same registered backends).
    pub async fn restart(&mut self, args: &[String], model_dir: &Path) -> Result<()> {
        self.stop().await;
        self.start(args, model_dir).await
    }

    pub async fn stop(&mut self) {
        let Some(mut p) = self.proc.take() else {
            return;
        };
        if let Some(pid) = p.id() {
            terminate(pid);
        }
        if tokio::time::timeout(Duration::from_secs(5), p.wait())
            .await
            .is_err()
        {
            let _ = p.kill().await;
        }
    }

    pub async fn node_id(&self) -> Result<String> {
        let s = http::get(&format!("{}/api/status", self.url)).await?;
        Ok(s["node_id"].as_str().unwrap_or_default().to_string())
    }

    /// The last `n` log messages with their level and fields, for a failure report.
    pub fn last_messages(&self, n: usize) -> Vec<String> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let skip = logs.len().saturating_sub(n);
        logs.iter()
            .skip(skip)
            .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(v) => format!("{} {}", v["level"].as_str().unwrap_or(""), v["fields"]),
                Err(_) => l.clone(),
            })
            .collect()
    }

    /// JSON log lines at `WARN` or `ERROR`.
    pub fn log_lines_at_least_warn(&self) -> Vec<String> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["level"].as_str().map(|s| s == "WARN" || s == "ERROR"))
                    .unwrap_or(false)
            })
            .cloned()
            .collect()
    }
}

/// JSON over HTTP with errors that carry the node's own `{"error": ...}` sentence.
pub mod http {
    use anyhow::{anyhow, Result};
    use ed25519_dalek::SigningKey;
    use serde_json::Value;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .expect("plain HTTP client")
    }

    async fn read(resp: reqwest::Response) -> Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let msg = body["error"]["message"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no error message");
            Err(anyhow!("HTTP {status}: {msg}"))
        }
    }

    pub async fn get(url: &str) -> Result<Value> {
        read(client().get(url).send().await?).await
    }

    /// A signed admin mutation (or any POST when `key` is `None`).
    pub async fn post(url: &str, body: &Value, key: Option<&SigningKey>) -> Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let mut req = client()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            let parsed = reqwest::Url::parse(url)?;
            let path = parsed.path().to_string();
            // A signature names its node: ask the node which one it is.
            let status = get(parsed.join("/api/status")?.as_str()).await?;
            let node_id = status["node_id"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{url}: status has no node_id"))?;
            req = req.header(
                reqwest::header::AUTHORIZATION,
                infermesh_api::auth::authorization_header(key, node_id, "POST", &path, &bytes),
            );
        }
        read(req.body(bytes).send().await?).await
    }
}
