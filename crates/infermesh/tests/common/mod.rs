//! Test harness: real `infermesh` processes on 127.0.0.1, talked to over real HTTP.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MODEL: &str = "smollm2-135m-instruct";

/// One model cache for every test of a run (and across runs): the default model is fetched once.
pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("models")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_infermesh")
}

/// `--schedule-spec` arguments whose first round is an hour away (one-minute epochs after it):
/// far beyond the auto-test lead, so a registration is auto-tested whatever the time of day.
/// With the mesh schedule (4 h epochs) that would hold only three hours in four.
pub fn far_round_schedule() -> [String; 2] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    [
        "--schedule-spec".into(),
        format!("{}:60000:5000", now + 3_600_000),
    ]
}

/// A node told to serve a file that is not a GGUF (kept in its data dir), and its status once
/// the load has failed.
pub fn node_with_a_broken_model() -> (NodeProc, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"this is not a gguf file").unwrap();
    let bad = bad.to_str().unwrap().to_string();
    let schedule = far_round_schedule();
    let node = NodeProc::start_in(dir, &["--model", &bad, &schedule[0], &schedule[1]]);
    let s = poll(
        "a failed load",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || node.status(),
        |s| s["backends"][0]["phase"] == "failed",
    );
    (node, s)
}

/// A running node. Killed (SIGKILL, a crash) when dropped.
pub struct NodeProc {
    pub child: Child,
    pub url: String,
    /// The node's gossip address.
    pub gossip: String,
    /// The invite token it printed, for other nodes' `--join`.
    pub invite: String,
    pub data_dir: tempfile::TempDir,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl NodeProc {
    pub fn start(extra: &[&str]) -> NodeProc {
        let data_dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(data_dir, extra)
    }

    pub fn start_in(data_dir: tempfile::TempDir, extra: &[&str]) -> NodeProc {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, url, gossip, invite, stderr) = spawn(data_dir.path(), &args);
        NodeProc {
            child,
            url,
            gossip,
            invite,
            data_dir,
            stderr,
            args,
        }
    }

    /// SIGKILL: a crash, no goodbye to the mesh.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the node again in the same data dir (same identity) with the same arguments and
    /// the same gossip port, as a restarted machine would: peers that joined through it know it
    /// by that address.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.gossip.rsplit(':').next().unwrap_or("0").to_string();
        match self.args.iter().position(|a| a == "--gossip-port") {
            Some(i) => self.args[i + 1] = port,
            None => self.args.extend(["--gossip-port".to_string(), port]),
        }
        let (child, url, gossip, invite, stderr) = spawn(self.data_dir.path(), &self.args);
        self.child = child;
        self.url = url;
        self.gossip = gossip;
        self.invite = invite;
        self.stderr = stderr;
    }
    pub fn status(&self) -> Value {
        get_json(&format!("{}/api/status", self.url)).1
    }

    /// Polls `/api/status` until `node_state` is `want`.
    pub fn wait_state(&self, want: &str, timeout: Duration) -> Value {
        poll(
            &format!("node_state {want}"),
            timeout,
            Duration::from_millis(100),
            || self.status(),
            |s| s["node_state"] == want,
        )
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        send_signal(self.child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "node ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

type Spawned = (
    Child,
    String,
    String,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
);

fn spawn(data_dir: &std::path::Path, args: &[String]) -> Spawned {
    let mut child = Command::new(bin())
        .args(["up", "--port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("INFERMESH_MODEL_DIR", model_dir())
        // Unsigned admin calls, as in local experiments; signing has its own tests (auth.rs).
        .env("INFERMESH_ADMIN_OPEN", "1")
        // Tests run several nodes at once on few cores: see `up --threads`.
        .env("INFERMESH_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn infermesh");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = stderr.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[node] {line}");
            sink.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let (mut url, mut gossip) = (None, None);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("infermesh listening on ") {
                url = Some(u.to_string());
            }
            if let Some(g) = line.strip_prefix("infermesh gossip on ") {
                gossip = Some(g.to_string());
            }
            if let Some(t) = line.strip_prefix("infermesh invite ") {
                let _ = tx.send((
                    url.clone().unwrap_or_default(),
                    gossip.clone().unwrap_or_default(),
                    t.to_string(),
                ));
            }
        }
    });
    let (url, gossip, invite) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("node did not print its listening address, gossip address and invite");
    (child, url, gossip, invite, stderr)
}

pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Every backend's `{node, onboarding}` envelope from `GET /admin/v1/nodes` (unsigned: tests
/// talk to loopback, where admin reads are open).
pub fn backend_list(node: &NodeProc) -> Vec<Value> {
    let (code, v) = get_json(&format!("{}/admin/v1/nodes", node.url));
    assert_eq!(code, 200, "{v}");
    v.as_array().expect("a JSON array").clone()
}

pub fn backend_entry(node: &NodeProc, id: &str) -> Option<Value> {
    backend_list(node)
        .into_iter()
        .find(|e| e["node"]["id"] == id)
}

/// Calls `probe` every `every` until `done` accepts what it returned, and returns that; fails
/// after `limit`, naming `what` it waited for and showing the last value.
pub fn poll<T: std::fmt::Display>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "never reached {what} within {limit:?}; last: {v}"
        );
        std::thread::sleep(every);
    }
}

/// Polls backend `id`'s envelope (`null` while it is absent) until `done` holds.
pub fn wait_backend(
    node: &NodeProc,
    id: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    poll(
        &format!("backend {id}: {what}"),
        limit,
        Duration::from_millis(20),
        || backend_entry(node, id).unwrap_or(Value::Null),
        done,
    )
}

/// Backend `id`'s envelope once the test the node runs by itself (after a registration or a
/// change) has a result; fails at once, with the node's reason, if the node skipped it.
pub fn wait_for_auto_test(node: &NodeProc, id: &str, limit: Duration) -> Value {
    wait_backend(node, id, "an automatic test result", limit, |e| {
        let log = node.stderr_lines();
        if let Some(skip) = log.iter().find(|l| l.contains("auto-test skipped")) {
            panic!("the node skipped the auto-test of `{id}`: {skip}");
        }
        !e["onboarding"]["last_test"].is_null()
    })
}

pub fn get_json(url: &str) -> (u16, Value) {
    let r = agent().get(url).send().expect("GET");
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

pub fn post_raw(url: &str, body: &str) -> (u16, String) {
    let r = agent()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let (code, text) = post_raw(url, &body.to_string());
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Polls `f` every 50 ms until it holds; how long that took. Fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The port of a base URL such as `http://127.0.0.1:PORT/v1`.
pub fn port_of(url: &str) -> u16 {
    url.trim_end_matches("/v1")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url:?}"))
}
