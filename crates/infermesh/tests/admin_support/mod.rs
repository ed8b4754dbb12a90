//! Helpers shared by the admin API test binaries.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::common::*;
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use serde_json::{json, Value};

/// A node that accepts admin changes unsigned (`--admin-open`), with `--schedule learn`: no
/// round, no auto-test (see the module comment).
pub fn quiet(extra: &[&str]) -> NodeProc {
    NodeProc::start(&[extra, &["--schedule", "learn", "--admin-open"]].concat())
}

/// A node that requires operator signatures: its `config.toml` lists [`operator_key`] before
/// it starts, as an operator's node would.
pub fn signed(extra: &[&str]) -> NodeProc {
    let dir = tempfile::tempdir().unwrap();
    let public = hex::encode(operator_key().verifying_key().as_bytes());
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[operator]]\nname = \"admin-tests\"\npublic_key = \"{public}\"\n"),
    )
    .unwrap();
    // The harness opens admin for every node; this one must check signatures.
    NodeProc::start_in(
        dir,
        &[extra, &["--schedule", "learn", "--admin-open=false"]].concat(),
    )
}

/// The operator key every admin mutation of these tests is signed with (ignored by
/// `--admin-open` nodes).
pub fn operator_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// Signs one mutation. Each signature gets its own timestamp: the node refuses a signed request
/// it has already accepted, and two identical requests signed in the same millisecond would be
/// the same signed request.
pub fn authorization(method: &str, url: &str, body: &[u8]) -> String {
    static LAST_TS: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let prev = LAST_TS
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .unwrap();
    let ts = now.max(prev + 1);
    let at = url.find("/admin/").expect("an admin URL");
    let (base, path) = url.split_at(at);
    infermesh_api::auth::sign_request(&operator_key(), &node_id_at(base), method, path, body, ts)
}

/// The id of the node at `base` (what a signature names); a node that is gone reads as an id
/// nothing accepts, so the request it signs fails like any other request to it.
fn node_id_at(base: &str) -> String {
    agent()
        .get(format!("{base}/api/status"))
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|s| s["node_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unreachable".to_string())
}

/// Held by the tests that run a model: two llama.cpp engines decoding at once on two cores slow
/// each other down many times over (see tests/drivers.rs).
pub static ONE_ENGINE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn engine_turn() -> MutexGuard<'static, ()> {
    ONE_ENGINE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Any method, a raw body; admin mutations are signed (see [`authorization`]).
pub fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let mut req = agent().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if method != "GET" && url.contains("/admin/") {
        let auth = authorization(method, url, body.unwrap_or("").as_bytes());
        req = req.header("authorization", auth);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().expect("request");
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

pub fn nodes_url(node: &NodeProc) -> String {
    format!("{}/admin/v1/nodes", node.url)
}

pub fn register(node: &NodeProc, body: &Value) -> (u16, Value) {
    call("POST", &nodes_url(node), Some(&body.to_string()))
}

pub fn change(node: &NodeProc, id: &str, body: &Value) -> (u16, Value) {
    call(
        "PUT",
        &format!("{}/{id}", nodes_url(node)),
        Some(&body.to_string()),
    )
}

pub fn remove(node: &NodeProc, id: &str) -> (u16, Value) {
    call("DELETE", &format!("{}/{id}", nodes_url(node)), None)
}

pub fn run_test(node: &NodeProc, id: &str) -> (u16, Value) {
    call("POST", &format!("{}/{id}/test", nodes_url(node)), None)
}

/// The error sentence of a `{"error": "..."}` body.
pub fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error sentence: {v}"))
}

/// A loopback port nothing listens on.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn openai_body(id: &str, url: &str, models: &[&str]) -> Value {
    let models: Vec<Value> = models.iter().map(|m| json!({"name": m})).collect();
    json!({"id": id, "driver": "openai", "url": url, "models": models})
}

/// The default model's GGUF in the shared model cache.
pub fn real_gguf() -> PathBuf {
    ensure_model(&SMOLLM2_135M, &model_dir(), &mut |l| eprintln!("{l}")).expect("model")
}

pub fn garbage_gguf(dir: &Path) -> PathBuf {
    let p = dir.join("garbage.gguf");
    std::fs::write(&p, "this is not a GGUF model\n".repeat(200)).unwrap();
    p
}

/// A FIFO with no writer: llama.cpp blocks opening it, so a load or test stays in flight until
/// [`unblock`].
pub fn mkfifo(dir: &Path) -> PathBuf {
    let p = dir.join("fifo.gguf");
    let ok = std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    p
}

/// Opens the FIFO for writing (which waits for its reader) and closes it empty: the blocked
/// load reads EOF and fails.
pub fn unblock(fifo: &Path) {
    std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
}

pub fn wait_phase(node: &NodeProc, id: &str, phase: &str) -> Value {
    wait_entry(node, id, &format!("phase {phase}"), |e| {
        e["node"]["phase"] == phase
    })
}

pub fn wait_entry(node: &NodeProc, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_backend(node, id, what, Duration::from_secs(20), f)
}

/// Runs the CLI with no node URL and no operator key from the environment: its requests are
/// unsigned (the nodes it tests are `--admin-open`, or refuse it on purpose).
pub fn cli(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("INFERMESH_URL")
        .env_remove("INFERMESH_OPERATOR_KEY")
        .env("XDG_CONFIG_HOME", "/nonexistent/infermesh-admin-tests")
        .output()
        .expect("run infermesh")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Files in the data dir other than the identity key.
pub fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The node's identity, mesh secret and data-dir lock are not config.
        .filter(|n| !["node.key", "mesh.secret", "mesh.seeds", "node.lock"].contains(&n.as_str()))
        .collect();
    names.sort();
    names
}
