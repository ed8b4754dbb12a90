//! Helpers for the operator-facing tests (auth, wakeable, metrics, dashboard): real `infermesh`
//! processes started with an exact environment (admin signatures on unless a test opens them),
//! real operator keys from `infermesh keygen`, and signed admin requests.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::Value;

pub const MODEL: &str = "smollm2-135m-instruct";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_infermesh")
}

/// The model cache shared with the other integration tests (fetched once per target dir).
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("models")
}

/// `target/artifacts` (or `$INFERMESH_ARTIFACTS_DIR`): files a test leaves for people to look at.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("INFERMESH_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target/tmp has a parent")
                .join("artifacts")
        })
}

/// A running node; killed when dropped.
pub struct Node {
    pub child: Child,
    pub url: String,
    /// The invite token the node printed, for other nodes' `--join`.
    pub invite: String,
    pub data_dir: tempfile::TempDir,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `infermesh up --port 0` in a fresh data dir holding `config` as `config.toml`.
    /// The environment's `INFERMESH_ADMIN_OPEN` is removed: signatures are required unless
    /// `args` or `env` say otherwise.
    pub fn start(config: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_in(tempfile::tempdir().expect("tempdir"), config, args, env)
    }

    /// [`Node::start`] in `data_dir` (an existing one: a restart keeps identity and config).
    pub fn start_in(
        data_dir: tempfile::TempDir,
        config: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        if let Some(c) = config {
            std::fs::write(data_dir.path().join("config.toml"), c).unwrap();
        }
        let mut cmd = Command::new(bin());
        cmd.args(["up", "--port", "0", "--gossip-port", "0", "--data-dir"])
            .arg(data_dir.path())
            .args(args)
            .env("INFERMESH_MODEL_DIR", model_dir())
            .env_remove("INFERMESH_ADMIN_OPEN")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn infermesh");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                eprintln!("[node] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut url = None;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("infermesh listening on ") {
                    url = Some(u.to_string());
                }
                if let Some(g) = line.strip_prefix("infermesh invite ") {
                    let _ = tx.send((url.clone().unwrap_or_default(), g.to_string()));
                }
            }
        });
        let (url, invite) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node did not print its listening and gossip addresses");
        Node {
            child,
            url,
            invite,
            data_dir,
            stderr,
        }
    }

    pub fn status(&self) -> Value {
        get_json(&format!("{}/api/status", self.url)).1
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until the node's stderr has a line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> String {
        wait_until(timeout, &format!("a log line with {parts:?}"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Drops terminal colour sequences (`ESC [ ... m`) so log lines can be matched as text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .unwrap()
}

pub fn get_json(url: &str) -> (u16, Value) {
    let r = agent().get(url).send().expect("GET");
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

pub fn get_text(url: &str) -> (u16, String, String) {
    let r = agent().get(url).send().expect("GET");
    let code = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (code, ct, r.text().unwrap_or_default())
}

/// Sends `method path` with `body` and, when given, an `Authorization` header.
pub fn send(
    method: &str,
    base: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = agent()
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().expect("request");
    let code = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The operator's clock, as the CLI reads it.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Sends a request signed by `key` at `ts_ms` (the CLI's own signing function).
pub fn send_signed(
    key: &SigningKey,
    method: &str,
    base: &str,
    path: &str,
    body: &str,
    ts_ms: i64,
) -> (u16, Value) {
    let h = infermesh_api::auth::sign_request(
        key,
        &node_id_of(base),
        method,
        path,
        body.as_bytes(),
        ts_ms,
    );
    send(method, base, path, body, Some(&h))
}

/// The node id the node at `base` reports: what a signature for it must name.
pub fn node_id_of(base: &str) -> String {
    let (_, s) = get_json(&format!("{base}/api/status"));
    s["node_id"]
        .as_str()
        .expect("status has node_id")
        .to_string()
}

/// An operator key made by the real `infermesh keygen`: the key as the CLI loads it, and the
/// `[[operator]]` snippet keygen printed for config.toml.
pub struct Operator {
    pub key: SigningKey,
    pub snippet: String,
    pub path: PathBuf,
}

pub fn keygen(dir: &Path, name: &str) -> Operator {
    let path = dir.join(format!("{name}.key"));
    let out = Command::new(bin())
        .args(["keygen", "--name", name, "--out"])
        .arg(&path)
        .output()
        .expect("run infermesh keygen");
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let snippet = stdout[stdout.find("[[operator]]").expect("snippet printed")..].to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).expect("key file is 64 hex digits");
    Operator {
        key: SigningKey::from_bytes(&seed),
        snippet,
        path,
    }
}
