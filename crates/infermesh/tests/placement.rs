//! The mesh places work, on real nodes over loopback: an operator-signed workload group of 2
//! is placed on 4 standby nodes, a killed replica is re-placed, sustained load adds a third
//! replica and its end releases it, and a live migration under continuous load (streamed and
//! not) loses no request. Every step goes through the operator's CLI and a client node.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{bin, poll, NodeProc, MODEL};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(120);

fn operator() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[11; 32])
}

/// A node whose config trusts the test operator (admin changes and groups must be signed).
fn node(extra: &[&str]) -> NodeProc {
    let dir = tempfile::tempdir().unwrap();
    let public = hex::encode(operator().verifying_key().as_bytes());
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[operator]]\nname = \"placement-tests\"\npublic_key = \"{public}\"\n"),
    )
    .unwrap();
    NodeProc::start_in(dir, &[extra, &["--admin-open=false"]].concat())
}

/// Runs the CLI with the operator key.
fn cli(key: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .env_remove("INFERMESH_URL")
        .env("INFERMESH_OPERATOR_KEY", key)
        .output()
        .expect("run infermesh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn group(client: &NodeProc) -> Value {
    client.status()["groups"][0].clone()
}

/// Peers (as the client sees them) that list the model as served.
fn replicas(client: &NodeProc) -> Vec<String> {
    client.status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["models"].as_array().unwrap().iter().any(|m| m == MODEL))
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn state_of(client: &NodeProc, name: &str) -> String {
    client.status()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map_or("gone".into(), |p| p["state"].as_str().unwrap().to_string())
}

/// Closed-loop clients through `url` until stopped: (answered, failed, failures seen).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: &str, clients: usize, max_tokens: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU32::new(0));
        let threads = (0..clients)
            .map(|i| {
                let (url, stop, ok, failed) =
                    (url.to_string(), stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()
                        .unwrap();
                    let mut errors = Vec::new();
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let stream = (i as u32 + n) % 2 == 1;
                        n += 1;
                        let body = json!({"model": MODEL, "max_tokens": max_tokens,
                            "temperature": 0, "stream": stream,
                            "messages": [{"role": "user", "content": "Name a color."}]});
                        let r = http
                            .post(format!("{url}/v1/chat/completions"))
                            .json(&body)
                            .send()
                            .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
                        let good = match &r {
                            Ok((200, text)) if stream => text.contains("data: [DONE]"),
                            Ok((200, text)) => text.contains("\"choices\""),
                            _ => false,
                        };
                        if good {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{r:?}"));
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (u32, u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[test]
fn a_group_is_placed_replaced_scaled_by_demand_and_migrated_without_a_failed_request() {
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("operator.key");
    std::fs::write(&key, format!("{}\n", hex::encode(operator().to_bytes()))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let client = node(&["--client", "--name", "C"]);
    let mut standby: Vec<NodeProc> = (1..=4)
        .map(|i| {
            node(&[
                "--standby",
                "--name",
                &format!("N{i}"),
                "--join",
                &client.invite,
                "--demand-grow-s",
                "2",
                "--demand-shrink-s",
                "3",
                "--demand-busy",
                "2",
            ])
        })
        .collect();
    poll(
        "4 standby peers",
        LIMIT,
        Duration::from_millis(100),
        || client.status(),
        |s| {
            s["peers"]
                .as_array()
                .is_some_and(|p| p.iter().filter(|p| p["state"] == "standby").count() == 4)
        },
    );

    // A bad group is refused before anything is signed or sent.
    let (ok, text) = cli(
        &key,
        &[
            "group",
            "set",
            MODEL,
            "--replicas",
            "4",
            "--max",
            "2",
            "--node",
            &client.url,
        ],
    );
    assert!(!ok && text.contains("min ≤ replicas ≤ max"), "{text}");
    let (ok, text) = cli(
        &key,
        &[
            "group",
            "set",
            MODEL,
            "--replicas",
            "2",
            "--max",
            "3",
            "--node",
            &client.url,
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("group {MODEL}: 2 replicas (min 2, max 3)")),
        "{text}"
    );

    // Placed: two standby nodes load it by themselves; the client routes to them.
    let placed = poll(
        "the group placed",
        LIMIT,
        Duration::from_millis(100),
        || group(&client),
        |g| g["serving"] == 2,
    );
    assert_eq!(placed["sentence"], "2 of 2 replicas serving", "{placed}");
    let first = replicas(&client);
    assert_eq!(first.len(), 2, "{first:?}");
    let (ok, text) = cli(&key, &["group", "ls", "--node", &client.url]);
    assert!(ok && text.contains("2 serving"), "{text}");
    let (code, body) = common::post_json(
        &format!("{}/v1/chat/completions", client.url),
        &json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(code, 200, "{body}");
    // Every node knows the group, so any node can be asked.
    for n in &standby {
        assert_eq!(n.status()["groups"][0]["model"], MODEL);
    }

    // A replica dies: another standby node takes its place.
    let victim = standby
        .iter()
        .position(|n| first.contains(&n.status()["name"].as_str().unwrap().to_string()))
        .unwrap();
    let victim_name = standby[victim].status()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let killed_at = Instant::now();
    standby[victim].kill();
    let survivor = first.iter().find(|n| **n != victim_name).unwrap().clone();
    let replacement = poll(
        "a replacement loading",
        LIMIT,
        Duration::from_millis(50),
        || {
            let s = client.status();
            s["peers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| {
                    p["name"] != survivor.as_str()
                        && p["name"] != victim_name.as_str()
                        && p["last_seen_ms"].as_u64().unwrap_or(u64::MAX) < 2000
                        && (p["state"] == "loading" || p["state"] == "serving")
                })
                .map_or(Value::Null, |p| p["name"].clone())
        },
        |v| !v.is_null(),
    );
    let replaced_s = killed_at.elapsed().as_secs_f64();
    eprintln!("re-placement: {replacement} started loading {replaced_s:.2} s after the kill");
    assert!(replaced_s < 5.0, "re-placed after {replaced_s:.2} s");
    poll(
        "2 serving again",
        LIMIT,
        Duration::from_millis(100),
        || group(&client),
        |g| g["serving"] == 2,
    );

    // Sustained load saturates both replicas: demand adds the third, on the last idle node.
    let load = Load::start(&client.url, 6, 16);
    let grown = poll(
        "a third replica",
        LIMIT,
        Duration::from_millis(100),
        || group(&client),
        |g| g["wanted"] == 3 && g["serving"] == 3,
    );
    let (ok, failed, errors) = load.finish();
    eprintln!("load phase: {ok} answered, {failed} failed: {errors:?}; {grown}");
    assert_eq!(failed, 0, "{errors:?}");
    assert_eq!(replicas(&client).len(), 3);
    // Demand falls: the extra replica is drained and released, back to the group's 2.
    poll(
        "back to 2",
        LIMIT,
        Duration::from_millis(100),
        || group(&client),
        |g| g["wanted"] == 2 && g["serving"] == 2 && g["loading"] == 0,
    );
    let (from, to) = poll(
        "a serving and an idle node",
        LIMIT,
        Duration::from_millis(100),
        || {
            let serving = replicas(&client);
            let idle = (1..=4)
                .map(|i| format!("N{i}"))
                .find(|n| state_of(&client, n) == "standby");
            json!([serving.first(), idle])
        },
        |v| v[0].is_string() && v[1].is_string(),
    )
    .as_array()
    .map(|v| {
        (
            v[0].as_str().unwrap().to_string(),
            v[1].as_str().unwrap().to_string(),
        )
    })
    .unwrap();

    // Live migration under continuous load, streamed and not: no request fails.
    let load = Load::start(&client.url, 2, 24);
    std::thread::sleep(Duration::from_secs(1));
    let (ok, text) = migrate(&key, &from, &to, &client.url);
    std::thread::sleep(Duration::from_secs(1));
    let (answered, failed, errors) = load.finish();
    eprintln!("migration {from} → {to}: {answered} answered, {failed} failed\n{text}");
    assert!(ok, "{text}");
    assert!(text.contains("3/3") && text.contains("drained"), "{text}");
    assert_eq!(failed, 0, "{errors:?}");
    assert!(answered > 0);
    poll(
        "the move visible",
        LIMIT,
        Duration::from_millis(100),
        || json!(replicas(&client)),
        |r| {
            r.as_array().unwrap().iter().any(|n| n == to.as_str())
                && !r.as_array().unwrap().iter().any(|n| n == from.as_str())
        },
    );
    assert_eq!(group(&client)["serving"], 2);
    assert_eq!(state_of(&client, &from), "standby");

    // Migrating from a node that serves nothing is an operator error, with a non-zero exit.
    let (ok, text) = migrate(&key, &from, &to, &client.url);
    assert!(!ok && text.contains("does not serve"), "{text}");
}

fn migrate(key: &std::path::Path, from: &str, to: &str, node: &str) -> (bool, String) {
    cli(
        key,
        &["migrate", MODEL, "--from", from, "--to", to, "--node", node],
    )
}
