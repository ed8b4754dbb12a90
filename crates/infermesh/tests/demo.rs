//! `infermesh demo` as a user runs it: a real process booting real nodes, its printed table
//! checked against the nodes themselves, then a SIGTERM that must leave nothing behind.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, get_json, model_dir, post_json, MODEL};
use serde_json::json;

/// Stops the demo on every exit path, so a failing test does not leave a mesh running.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            sigterm(self.0.id());
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

struct Row {
    name: String,
    role: String,
    url: String,
}

/// Reads the demo's stdout up to the end of its table; returns the rows, the temp dir and the
/// throwaway operator key's file.
fn read_table(lines: &mpsc::Receiver<String>) -> (Vec<Row>, PathBuf, PathBuf) {
    let mut rows = Vec::new();
    let mut root = None;
    let mut key = None;
    // A first run fetches the model for the whole test suite.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the demo printed its node table (before exiting or timing out)");
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 3 && cols[0].starts_with("node-") && cols[2].starts_with("http://") {
            rows.push(Row {
                name: cols[0].into(),
                role: cols[1].into(),
                url: cols[2].into(),
            });
        }
        if let Some(rest) = line.strip_prefix("operator key: ") {
            key = rest.split_whitespace().next().map(PathBuf::from);
        }
        if let Some(logs) = line.strip_prefix("logs: ") {
            root = Some(PathBuf::from(logs.trim().trim_end_matches("/node-<i>.log")));
        }
        if line.starts_with("chatter:") {
            return (
                rows,
                root.expect("a `logs:` line before the `chatter:` line"),
                key.expect("an `operator key:` line before the `chatter:` line"),
            );
        }
    }
}

fn port_refuses(url: &str) -> bool {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    TcpStream::connect_timeout(&addr.parse().expect("host:port"), Duration::from_secs(1)).is_err()
}

/// Polls until `check` returns `Ok`, panicking with its last complaint after `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let t0 = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if t0.elapsed() > limit => panic!("after {limit:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn demo_boots_a_mesh_chatters_and_leaves_nothing_behind() {
    let mut child = Command::new(bin())
        .args(["demo", "--nodes", "4", "--no-deck"])
        .env("INFERMESH_MODEL_DIR", model_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start infermesh demo");
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let demo = Demo(child);
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[demo] {l}");
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            println!("[demo out] {l}");
            let _ = tx.send(l);
        }
    });

    let (rows, root, key) = read_table(&rx);
    let roles: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.role.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("node-0", "serving"),
            ("node-1", "serving"),
            ("node-2", "serving"),
            ("node-3", "client")
        ]
    );
    assert!(
        root.join("node-0.log").is_file(),
        "logs in {}",
        root.display()
    );

    for me in &rows {
        eventually(Duration::from_secs(15), || {
            let (_, s) = get_json(&format!("{}/api/status", me.url));
            if s["node_state"] != me.role.as_str() {
                return Err(format!("{} is {}", me.name, s["node_state"]));
            }
            let peers = s["peers"].as_array().cloned().unwrap_or_default();
            for other in rows.iter().filter(|o| o.name != me.name) {
                let seen = peers.iter().find(|p| p["name"] == other.name.as_str());
                match seen {
                    Some(p) if p["state"] == other.role.as_str() => {}
                    _ => return Err(format!("{} sees {}: {seen:?}", me.name, other.name)),
                }
            }
            if peers.len() != rows.len() - 1 {
                return Err(format!("{} has {} peers", me.name, peers.len()));
            }
            Ok(())
        });
    }

    // Chatter first, before this test sends anything: any chat record now is the demo's own.
    // The first validation round (one every 20 s) must have admitted the serving nodes.
    eventually(Duration::from_secs(60), || {
        let chatter = rows.iter().any(|r| {
            let (_, v) = get_json(&format!("{}/api/requests", r.url));
            v["requests"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|q| q["endpoint"] == "chat" && q["status"] == 200)
            })
        });
        chatter
            .then_some(())
            .ok_or_else(|| "no chatter record on any node".to_string())
    });

    // Routing follows the rounds' admissions; a request that lands while a replica is being
    // (re)admitted may need a retry, which is the mesh working, not the demo failing.
    let client = &rows[3];
    let body = json!({"model": MODEL, "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hi."}]});
    eventually(Duration::from_secs(60), || {
        let (code, v) = post_json(&format!("{}/v1/chat/completions", client.url), &body);
        match (code, v["choices"][0]["message"]["content"].is_string()) {
            (200, true) => Ok(()),
            _ => Err(format!("chat through {}: {code} {v}", client.name)),
        }
    });

    // Node 0 lists one wakeable machine, so the WAKEABLE tab and card are not empty.
    let (_, s0) = get_json(&format!("{}/api/status", rows[0].url));
    assert_eq!(s0["wakeable"][0]["id"], "demo-gpu", "{s0}");

    // The demo's nodes trust its throwaway operator key: a signed change is accepted (a group of
    // 3 replicas, which the 3 serving nodes already are), and the same change signed with any
    // other key is refused.
    let group = |key: &std::path::Path| {
        Command::new(bin())
            .args([
                "group",
                "set",
                MODEL,
                "--replicas",
                "3",
                "--node",
                &rows[0].url,
            ])
            .env("INFERMESH_OPERATOR_KEY", key)
            .output()
            .expect("run infermesh group set")
    };
    let ok = group(&key);
    assert!(
        ok.status.success(),
        "signed with the demo's key: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("other.key");
    let made = Command::new(bin())
        .args(["keygen", "--out", other.to_str().unwrap()])
        .output()
        .expect("run infermesh keygen");
    assert!(made.status.success(), "{made:?}");
    let refused = group(&other);
    assert!(
        !refused.status.success(),
        "a key the demo's nodes do not trust was accepted: {}",
        String::from_utf8_lossy(&refused.stdout)
    );

    let mut demo = demo;
    sigterm(demo.0.id());
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = demo.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "demo still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("demo stopped in {:?}", t0.elapsed());
    assert!(status.success(), "demo exit status {status}");
    for r in &rows {
        assert!(port_refuses(&r.url), "{} still accepts connections", r.name);
    }
    assert!(!root.exists(), "{} was not removed", root.display());
}
