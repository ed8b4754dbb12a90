//! The admin API (`/admin/v1/nodes`) and its CLI (`infermesh status`, `infermesh test`) against
//! real node processes on loopback: every status code, the tester's lock and results, config
//! persistence across restarts and SIGKILLs, and an `openai` backend tested against a second
//! real node.
//!
//! Nodes run with `--schedule learn` and no peers, so the schedule stays unknown: no validation
//! round and no auto-test ever starts behind a test's back (with the mesh schedule an auto-test
//! after a registration would depend on the time of day).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use infermesh_api::config::{self, DriverConfig};
use infermesh_backend::model_fetch::{ensure_model, SMOLLM2_135M};
use serde_json::{json, Value};

/// A node that accepts admin changes unsigned (`--admin-open`), with `--schedule learn`: no
/// round, no auto-test (see the module comment).
fn quiet(extra: &[&str]) -> NodeProc {
    NodeProc::start(&[extra, &["--schedule", "learn", "--admin-open"]].concat())
}

/// A node that requires operator signatures: its `config.toml` lists [`operator_key`] before
/// it starts, as an operator's node would.
fn signed(extra: &[&str]) -> NodeProc {
    let dir = tempfile::tempdir().unwrap();
    let public = hex::encode(operator_key().verifying_key().as_bytes());
    std::fs::write(
        dir.path().join("config.toml"),
        format!("[[operator]]\nname = \"admin-tests\"\npublic_key = \"{public}\"\n"),
    )
    .unwrap();
    NodeProc::start_in(dir, &[extra, &["--schedule", "learn"]].concat())
}

/// The operator key every admin mutation of these tests is signed with (ignored by
/// `--admin-open` nodes).
fn operator_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// Signs one mutation. Each signature gets its own timestamp: the node refuses a signed request
/// it has already accepted, and two identical requests signed in the same millisecond would be
/// the same signed request.
fn authorization(method: &str, url: &str, body: &[u8]) -> String {
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
    let path = &url[url.find("/admin/").expect("an admin URL")..];
    infermesh_api::auth::sign_request(&operator_key(), method, path, body, ts)
}

/// Held by the tests that run a model: two llama.cpp engines decoding at once on two cores slow
/// each other down many times over (see tests/drivers.rs).
static ONE_ENGINE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn engine_turn() -> MutexGuard<'static, ()> {
    ONE_ENGINE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn agent() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Any method, a raw body; admin mutations are signed (see [`authorization`]).
fn call(method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
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

fn nodes_url(node: &NodeProc) -> String {
    format!("{}/admin/v1/nodes", node.url)
}

fn list(node: &NodeProc) -> Vec<Value> {
    let (code, v) = get_json(&nodes_url(node));
    assert_eq!(code, 200, "{v}");
    v.as_array().expect("a JSON array").clone()
}

fn entry(node: &NodeProc, id: &str) -> Option<Value> {
    list(node).into_iter().find(|e| e["node"]["id"] == id)
}

fn register(node: &NodeProc, body: &Value) -> (u16, Value) {
    call("POST", &nodes_url(node), Some(&body.to_string()))
}

fn change(node: &NodeProc, id: &str, body: &Value) -> (u16, Value) {
    call(
        "PUT",
        &format!("{}/{id}", nodes_url(node)),
        Some(&body.to_string()),
    )
}

fn remove(node: &NodeProc, id: &str) -> (u16, Value) {
    call("DELETE", &format!("{}/{id}", nodes_url(node)), None)
}

fn run_test(node: &NodeProc, id: &str) -> (u16, Value) {
    call("POST", &format!("{}/{id}/test", nodes_url(node)), None)
}

/// The error sentence of a `{"error": "..."}` body.
fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error sentence: {v}"))
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn openai_body(id: &str, url: &str, models: &[&str]) -> Value {
    let models: Vec<Value> = models.iter().map(|m| json!({"name": m})).collect();
    json!({"id": id, "driver": "openai", "url": url, "models": models})
}

/// The default model's GGUF in the shared model cache.
fn real_gguf() -> PathBuf {
    ensure_model(&SMOLLM2_135M, &model_dir(), &mut |l| eprintln!("{l}")).expect("model")
}

fn garbage_gguf(dir: &Path) -> PathBuf {
    let p = dir.join("garbage.gguf");
    std::fs::write(&p, "this is not a GGUF model\n".repeat(200)).unwrap();
    p
}

/// A FIFO with no writer: llama.cpp blocks opening it, so a load or test stays in flight until
/// [`unblock`].
fn mkfifo(dir: &Path) -> PathBuf {
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
fn unblock(fifo: &Path) {
    std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
}

fn wait_phase(node: &NodeProc, id: &str, phase: &str) -> Value {
    wait_entry(node, id, &format!("phase {phase}"), |e| {
        e["node"]["phase"] == phase
    })
}

fn wait_entry(node: &NodeProc, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let e = entry(node, id).unwrap_or(Value::Null);
        if f(&e) {
            return e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "backend {id} never reached {what}: {e}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cli(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("INFERMESH_URL")
        .output()
        .expect("run infermesh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Files in the data dir other than the identity key.
fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "node.key")
        .collect();
    names.sort();
    names
}

#[test]
fn register_change_remove_status_codes_and_persistence() {
    let mut node = signed(&["--standby"]);

    // The list: one envelope per backend, the command-line one included.
    let all = list(&node);
    assert_eq!(all.len(), 1, "{all:?}");
    let e = &all[0];
    assert_eq!(e["node"]["id"], "embedded");
    assert_eq!(e["node"]["driver"], "embedded");
    assert_eq!(e["node"]["source"], "command_line");
    assert_eq!(e["node"]["phase"], "idle");
    assert_eq!(e["node"]["serve"], Value::Null, "standby assigns no model");
    assert_eq!(e["node"]["models"][0]["name"], MODEL);
    let o = &e["onboarding"];
    assert_eq!(o["backend_state"], "waiting");
    assert_eq!(o["validated"], false);
    assert_eq!(o["last_test"], Value::Null);
    assert_eq!(o["failing_model"], Value::Null);
    assert!(o["participation"].is_string(), "{o}");
    assert!(o["timing"].is_object(), "{o}");
    assert!(o["message"].as_str().is_some_and(|m| !m.is_empty()), "{o}");

    // This node requires operator signatures: an unsigned change is refused and changes
    // nothing (the signature itself is covered by the api crate's tests).
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    let unsigned = agent()
        .post(nodes_url(&node))
        .header("content-type", "application/json")
        .body(openai_body("remote", &dead, &["m1"]).to_string())
        .send()
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    assert_eq!(list(&node).len(), 1);

    // Register: 201 with the new envelope; listed; persisted.
    let (code, v) = register(&node, &openai_body("remote", &dead, &["m1"]));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["node"]["id"], "remote");
    assert_eq!(v["node"]["source"], "config");
    assert_eq!(v["node"]["url"], dead.as_str());
    assert_eq!(v["onboarding"]["backend_state"], "waiting");
    let got = entry(&node, "remote").expect("registered backend is listed");
    assert_eq!(got["node"]["driver"], "openai");
    assert_eq!(got["node"]["models"], json!([{"name": "m1", "args": {}}]));
    let saved = config::load(node.data_dir.path()).unwrap();
    assert_eq!(saved.backends.len(), 1, "{saved:?}");
    assert_eq!(
        saved.operators.len(),
        1,
        "rewrites keep [[operator]]: {saved:?}"
    );
    assert_eq!(saved.backends[0].id, "remote");
    assert_eq!(
        saved.backends[0].driver,
        DriverConfig::Openai {
            url: dead.clone(),
            api_key: None
        }
    );
    let (code, v) = register(
        &node,
        &json!({"id": "second", "driver": "openai", "url": dead, "api_key": "k",
                "models": [{"name": "m2", "args": {"top_k": 4}}]}),
    );
    assert_eq!(code, 201, "{v}");

    // A duplicate id is a conflict that says how to change it instead.
    let (code, v) = register(&node, &openai_body("remote", &dead, &["m1"]));
    assert_eq!(code, 409, "{v}");
    assert!(error_of(&v).contains("PUT"), "{v}");
    let (code, v) = register(
        &node,
        &json!({"id": "embedded", "driver": "embedded", "models": [{"name": MODEL}]}),
    );
    assert_eq!(code, 409, "the command-line id is taken too: {v}");

    // Invalid bodies: 400 naming the field, and nothing registered.
    let cases: [(&str, &str); 9] = [
        ("{not json", "JSON"),
        ("[1, 2]", "JSON object"),
        (
            r#"{"id": "x", "driver": "vllm", "models": [{"name": "m"}]}"#,
            "`driver`",
        ),
        (r#"{"id": "x", "models": [{"name": "m"}]}"#, "`driver`"),
        (
            r#"{"id": "x", "driver": "openai", "url": "http://h/v1", "urll": "x", "models": [{"name": "m"}]}"#,
            "`urll`",
        ),
        (
            r#"{"id": "x", "driver": "openai", "models": [{"name": "m"}]}"#,
            "`url`",
        ),
        (
            r#"{"id": "x", "driver": "openai", "url": "ftp://h/v1", "models": [{"name": "m"}]}"#,
            "`url`",
        ),
        (
            r#"{"id": "x", "driver": "embedded", "models": [{"name": "not-a-known-model"}]}"#,
            "args.path",
        ),
        (
            r#"{"id": "x", "driver": "embedded", "models": [{"name": "m"}], "serve": "n"}"#,
            "`serve`",
        ),
    ];
    for (body, field) in cases {
        let (code, v) = call("POST", &nodes_url(&node), Some(body));
        assert_eq!(code, 400, "{body} -> {v}");
        assert!(error_of(&v).contains(field), "{body} -> {v}");
    }
    assert!(entry(&node, "x").is_none());
    assert_eq!(
        config::load(node.data_dir.path()).unwrap().backends.len(),
        2
    );

    // PUT / DELETE: unknown → 404, the command-line backend → 409, a bad body → 400.
    let body = openai_body("ghost", &dead, &["m"]);
    let (code, v) = change(&node, "ghost", &body);
    assert_eq!(code, 404, "{v}");
    assert!(error_of(&v).contains("ghost"), "{v}");
    let (code, v) = remove(&node, "ghost");
    assert_eq!(code, 404, "{v}");
    let emb = json!({"driver": "embedded", "models": [{"name": MODEL}]});
    let (code, v) = change(&node, "embedded", &emb);
    assert_eq!(code, 409, "{v}");
    assert!(error_of(&v).contains("command line"), "{v}");
    let (code, v) = remove(&node, "embedded");
    assert_eq!(code, 409, "{v}");
    assert!(error_of(&v).contains("command line"), "{v}");
    let (code, v) = change(&node, "remote", &openai_body("other-id", &dead, &["m"]));
    assert_eq!(code, 400, "{v}");
    assert!(error_of(&v).contains("`id`"), "{v}");
    let (code, v) = change(&node, "remote", &json!({"driver": "openai", "models": []}));
    assert_eq!(code, 400, "{v}");

    // PUT changes the backend (the id may be left out of the body) and the file.
    let (code, v) = change(
        &node,
        "remote",
        &json!({"driver": "openai", "url": dead, "models": [{"name": "m1"}, {"name": "m0"}]}),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["node"]["models"].as_array().unwrap().len(), 2, "{v}");
    let saved = config::load(node.data_dir.path()).unwrap();
    let remote = saved.backends.iter().find(|b| b.id == "remote").unwrap();
    assert_eq!(remote.models.len(), 2);

    // Tests: unknown → 404; a dead remote fails on its first model in sorted order.
    let (code, v) = run_test(&node, "ghost");
    assert_eq!(code, 404, "{v}");
    assert!(error_of(&v).contains("ghost"), "{v}");
    let (code, r) = run_test(&node, "remote");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["backend_id"], "remote");
    assert_eq!(r["failing_model"], "m0", "{r}");
    let models: Vec<&str> = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["m0", "m1"], "every model, sorted: {r}");
    for m in r["models"].as_array().unwrap() {
        let err = m["error"].as_str().unwrap();
        assert!(err.starts_with("load failed: cannot connect"), "{m}");
        assert_eq!(m["load_ms"], 0, "{m}");
    }
    let o = entry(&node, "remote").unwrap()["onboarding"].clone();
    assert_eq!(o["backend_state"], "test_failed", "{o}");
    assert_eq!(o["failing_model"], "m0", "{o}");
    assert!(
        o["message"]
            .as_str()
            .unwrap()
            .contains("`infermesh test remote`"),
        "{o}"
    );
    assert_eq!(o["last_test"], r, "last_test is the result just returned");

    // DELETE → 200, gone from the list and the file.
    let (code, v) = remove(&node, "second");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["deleted"], "second");
    assert!(entry(&node, "second").is_none());
    let (code, _) = remove(&node, "second");
    assert_eq!(code, 404, "deleting twice");
    let saved = config::load(node.data_dir.path()).unwrap();
    let ids: Vec<&str> = saved.backends.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["remote"]);
    assert_eq!(
        data_files(node.data_dir.path()),
        ["config.toml"],
        "atomic writes leave no temp files behind"
    );

    // A restart (SIGKILL, same data dir) brings back exactly the persisted backends; a test
    // result is not persisted, so the restored backend starts untested.
    node.restart();
    let all = list(&node);
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["embedded", "remote"], "{all:?}");
    let remote = &all[1];
    assert_eq!(remote["node"]["source"], "config");
    assert_eq!(remote["node"]["url"], dead.as_str());
    assert_eq!(remote["node"]["models"].as_array().unwrap().len(), 2);
    assert_eq!(remote["onboarding"]["backend_state"], "waiting");
    assert_eq!(remote["onboarding"]["last_test"], Value::Null);
    assert_eq!(all[0]["node"]["source"], "command_line");
    // Still signed-only, with the same operator, after the restart.
    let (code, v) = remove(&node, "remote");
    assert_eq!(code, 200, "{v}");
    let saved = config::load(node.data_dir.path()).unwrap();
    assert_eq!((saved.backends.len(), saved.operators.len()), (0, 1));
}

#[test]
fn tester_lock_results_and_invalidation() {
    let _turn = engine_turn();
    let node = quiet(&["--standby"]);
    let files = tempfile::tempdir().unwrap();
    let good = real_gguf();

    // Two simultaneous tests of one backend: one runs, the other is refused (not queued), and
    // the backend reads `testing` while it runs.
    let barrier = Arc::new(Barrier::new(3));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (b, url) = (
                barrier.clone(),
                format!("{}/embedded/test", nodes_url(&node)),
            );
            std::thread::spawn(move || {
                b.wait();
                call("POST", &url, None)
            })
        })
        .collect();
    barrier.wait();
    let mut seen_testing = false;
    while !callers.iter().all(|c| c.is_finished()) {
        if let Some(e) = entry(&node, "embedded") {
            seen_testing |= e["onboarding"]["backend_state"] == "testing";
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut answers: Vec<(u16, Value)> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    answers.sort_by_key(|(code, _)| *code);
    assert_eq!(
        answers.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [200, 409],
        "{answers:?}"
    );
    assert!(
        error_of(&answers[1].1).contains("already running"),
        "{answers:?}"
    );
    assert!(
        seen_testing,
        "the backend never read `testing` while tested"
    );

    // The passing result: real timings, and the backend is validated by it.
    let r = &answers[0].1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["backend_id"], "embedded");
    assert_eq!(r["failing_model"], Value::Null);
    let m = &r["models"][0];
    assert_eq!(m["model"], MODEL);
    assert_eq!(m["error"], Value::Null);
    for k in ["load_ms", "health_ms", "infer_ms"] {
        assert!(m[k].as_u64().unwrap() > 0, "{k}: {m}");
    }
    eprintln!("embedded tester timings over the admin API: {m}");
    let e = entry(&node, "embedded").unwrap();
    assert_eq!(e["onboarding"]["validated"], true, "{e}");
    assert_eq!(e["onboarding"]["backend_state"], "waiting", "{e}");
    assert_eq!(&e["onboarding"]["last_test"], r);
    assert_eq!(
        e["node"]["phase"], "idle",
        "the tester stops what it loaded"
    );
    assert_eq!(e["node"]["loaded"], Value::Null);

    // Every model in sorted order: `a-good` passes, `b-junk` (a non-GGUF file, registered
    // first) fails, and the failing one is reported.
    let junk = garbage_gguf(files.path());
    let body = json!({"id": "multi", "driver": "embedded", "models": [
        {"name": "b-junk", "args": {"path": junk}},
        {"name": "a-good", "args": {"path": good}},
    ]});
    let (code, v) = register(&node, &body);
    assert_eq!(code, 201, "{v}");
    let (code, r) = run_test(&node, "multi");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["failing_model"], "b-junk", "{r}");
    assert_eq!(r["models"][0]["model"], "a-good");
    assert_eq!(r["models"][0]["error"], Value::Null, "{r}");
    assert!(r["models"][0]["infer_ms"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["models"][1]["model"], "b-junk");
    let err = r["models"][1]["error"].as_str().unwrap();
    assert!(err.starts_with("load failed"), "{err}");
    let e = entry(&node, "multi").unwrap();
    let o = &e["onboarding"];
    assert_eq!(o["backend_state"], "test_failed", "{e}");
    assert_eq!(o["validated"], false, "{e}");
    assert_eq!(o["failing_model"], "b-junk", "{e}");
    assert!(
        o["message"]
            .as_str()
            .unwrap()
            .contains("`infermesh test multi`"),
        "{e}"
    );
    // Another backend's pass vouches for nothing here, and this failure taints nothing there.
    let other = entry(&node, "embedded").unwrap();
    assert_eq!(other["onboarding"]["validated"], true, "{other}");

    // A config change voids the result at once: the PUT's own answer is already untested.
    let fixed =
        json!({"driver": "embedded", "models": [{"name": "a-good", "args": {"path": good}}]});
    let (code, v) = change(&node, "multi", &fixed);
    assert_eq!(code, 200, "{v}");
    for o in [
        &v["onboarding"],
        &entry(&node, "multi").unwrap()["onboarding"],
    ] {
        assert_eq!(o["backend_state"], "waiting", "{o}");
        assert_eq!(o["last_test"], Value::Null, "{o}");
        assert_eq!(o["failing_model"], Value::Null, "{o}");
        assert_eq!(o["validated"], false, "{o}");
    }
    let (code, r) = run_test(&node, "multi");
    assert_eq!((code, &r["ok"]), (200, &json!(true)), "{r}");
    assert_eq!(
        entry(&node, "multi").unwrap()["onboarding"]["validated"],
        true
    );
    let (code, v) = change(&node, "multi", &fixed);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["onboarding"]["validated"], false,
        "even an identical PUT: {v}"
    );
    assert_eq!(v["onboarding"]["last_test"], Value::Null, "{v}");

    // test_failed is the tester's *most recent* result: the same config, fixed on disk (the
    // path is a link, re-pointed), passes on the next test and is validated again.
    let link = files.path().join("model.gguf");
    std::os::unix::fs::symlink(&junk, &link).unwrap();
    let body = json!({"id": "linked", "driver": "embedded",
                      "models": [{"name": "m", "args": {"path": link}}]});
    assert_eq!(register(&node, &body).0, 201);
    let (_, r) = run_test(&node, "linked");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        entry(&node, "linked").unwrap()["onboarding"]["backend_state"],
        "test_failed"
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let (_, r) = run_test(&node, "linked");
    assert_eq!(r["ok"], true, "{r}");
    let o = entry(&node, "linked").unwrap()["onboarding"].clone();
    assert_eq!(o["backend_state"], "waiting", "{o}");
    assert_eq!(o["validated"], true, "{o}");
    assert_eq!(o["failing_model"], Value::Null, "{o}");

    // A backend loading the model it was told to serve is not taken away for a test either. A
    // FIFO with no writer holds llama.cpp in the load until it is opened and closed.
    let fifo = mkfifo(files.path());
    let body = json!({"id": "slow", "driver": "embedded", "serve": "m",
                      "models": [{"name": "m", "args": {"path": fifo}}]});
    assert_eq!(register(&node, &body).0, 201);
    wait_phase(&node, "slow", "loading");
    let (code, v) = run_test(&node, "slow");
    assert_eq!(code, 409, "{v}");
    assert!(error_of(&v).contains("is loading"), "{v}");
    unblock(&fifo);
    let e = wait_phase(&node, "slow", "failed");
    // An operational failure is not a test failure: only the tester makes a backend
    // `test_failed`, not a model that failed to load for serving.
    assert_eq!(e["onboarding"]["backend_state"], "waiting", "{e}");

    let body = json!({"id": "broken", "driver": "embedded", "serve": "m",
                      "models": [{"name": "m", "args": {"path": junk}}]});
    assert_eq!(register(&node, &body).0, 201);
    let e = wait_phase(&node, "broken", "failed");
    assert_eq!(e["onboarding"]["backend_state"], "waiting", "{e}");
    assert_eq!(e["node"]["serve"], "m", "{e}");
    let (code, r) = run_test(&node, "broken");
    assert_eq!(
        code, 200,
        "a failed (not serving) backend may be tested: {r}"
    );
    assert_eq!(r["ok"], false);
    assert_eq!(
        entry(&node, "broken").unwrap()["onboarding"]["backend_state"],
        "test_failed"
    );
}

#[test]
fn serving_backends_refuse_tests_and_an_openai_backend_tests_against_a_real_node() {
    let _turn = engine_turn();
    let serving = quiet(&[]);
    let tester = quiet(&["--standby"]);
    serving.wait_state("serving", Duration::from_secs(180));

    // Testing a serving backend would take it out of service: 409, over HTTP and from the CLI.
    let (code, v) = run_test(&serving, "embedded");
    assert_eq!(code, 409, "{v}");
    assert!(error_of(&v).contains("is serving"), "{v}");
    let out = cli(&["test", "embedded", "--url", &serving.url]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is serving"), "{err}");
    assert!(
        err.contains("hint: tests run on backends that are not serving"),
        "{err}"
    );
    assert_eq!(
        serving.status()["node_state"],
        "serving",
        "a refused test changes nothing"
    );

    // An openai backend on the second node, pointing at the serving node's /v1: a real load,
    // health check and chat inference over HTTP.
    let url = format!("{}/v1", serving.url);
    let (code, v) = register(&tester, &openai_body("remote", &url, &[MODEL]));
    assert_eq!(code, 201, "{v}");
    let (code, r) = run_test(&tester, "remote");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    let m = &r["models"][0];
    for k in ["load_ms", "health_ms", "infer_ms"] {
        assert!(m[k].as_u64().unwrap() > 0, "{k}: {m}");
    }
    eprintln!("openai tester timings against a second node: {m}");
    let o = entry(&tester, "remote").unwrap()["onboarding"].clone();
    assert_eq!(o["validated"], true, "{o}");
    assert_eq!(o["backend_state"], "waiting", "{o}");
    // The remote stays serving: the openai driver's stop only forgets the model locally.
    assert_eq!(serving.status()["node_state"], "serving");

    // The CLI prints the same per-model table.
    let out = cli(&["test", "remote", "--url", &tester.url]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(MODEL) && stdout.contains("PASS"),
        "{stdout}"
    );
}

#[test]
fn cli_status_and_test() {
    let _turn = engine_turn();
    let node = quiet(&["--standby", "--name", "cli-node"]);

    let out = cli(&["status", "--url", &node.url]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    eprintln!("infermesh status:\n{stdout}");
    assert!(stdout.contains("cli-node"), "{stdout}");
    assert!(stdout.contains("STANDBY"), "{stdout}");
    assert!(stdout.contains("peers: none"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("embedded"))
        .unwrap_or_else(|| panic!("no backend line: {stdout}"));
    assert!(line.contains("waiting"), "{line}");
    let message = entry(&node, "embedded").unwrap()["onboarding"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(line.ends_with(&message), "{line} / {message}");

    // --json is the raw /api/status; INFERMESH_URL stands in for --url.
    let out = std::process::Command::new(bin())
        .args(["status", "--json"])
        .env("INFERMESH_URL", &node.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["name"], "cli-node");
    assert_eq!(v["node_state"], "standby");

    // A passing test: the announcement on stderr, the table and PASS on stdout, exit 0.
    let out = cli(&["test", "embedded", "--url", &node.url]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("infermesh test embedded:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("testing backend embedded on cli-node (load → health → inference → stop"),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("MODEL") && lines[0].contains("INFER"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(MODEL) && lines[1].contains(" ms") && lines[1].ends_with("ok"),
        "{stdout}"
    );
    assert!(lines.last().unwrap().starts_with("PASS"), "{stdout}");
    let out = cli(&["status", "--url", &node.url]);
    assert!(
        text(&out.stdout).contains("(validated)"),
        "{}",
        text(&out.stdout)
    );

    // A failing test: the failing model on the FAIL line, exit 1.
    let files = tempfile::tempdir().unwrap();
    let junk = garbage_gguf(files.path());
    let body = json!({"id": "junk", "driver": "embedded",
                      "models": [{"name": "m", "args": {"path": junk}}]});
    assert_eq!(register(&node, &body).0, 201);
    let out = cli(&["test", "junk", "--url", &node.url]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED: load failed"), "{stdout}");
    assert!(stdout.contains("FAIL: backend junk"), "{stdout}");
    assert!(stderr.contains("infermesh test junk"), "{stderr}");
    let out = cli(&["status", "--url", &node.url]);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("junk") && l.contains("test_failed")),
        "{stdout}"
    );

    // An unknown backend: the server's sentence and the ids there are, exit 2.
    let out = cli(&["test", "nope", "--url", &node.url]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no backend `nope`"), "{stderr}");
    assert!(
        stderr.contains("hint: backends on this node: embedded, junk"),
        "{stderr}"
    );

    // Nobody listening: a sentence, not a stack of transport errors, exit 2.
    let dead = format!("http://127.0.0.1:{}", dead_port());
    for args in [
        vec!["status", "--url", &dead],
        vec!["test", "embedded", "--url", &dead],
    ] {
        let out = cli(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the node at {dead}"))
                && stderr.contains("is `infermesh up` running?"),
            "{args:?}: {stderr}"
        );
    }
}

/// SIGKILL the node at a random instant while another thread changes a backend as fast as the
/// node accepts: the config on disk must always be a whole config holding at least every change
/// the node acknowledged, and the node must come back up from it.
#[test]
fn sigkill_during_config_writes_never_loses_the_config() {
    let mut node = signed(&["--client"]);
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    let body = {
        let dead = dead.clone();
        move |i: u64| {
            json!({"driver": "openai", "url": dead,
                   "models": [{"name": format!("m{i}"), "args": {"i": i, "pad": "x".repeat(2000)}}]})
        }
    };
    let (code, v) = register(&node, &{
        let mut b = body(0);
        b["id"] = json!("kx");
        b
    });
    assert_eq!(code, 201, "{v}");

    let mut leftovers = Vec::new();
    let mut next = 1u64;
    for round in 0..4 {
        let url = format!("{}/kx", nodes_url(&node));
        let first = next;
        let writer = {
            let body = body.clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let (mut i, mut acked) = (first, None);
                loop {
                    let b = body(i).to_string();
                    let r = http
                        .put(&url)
                        .header("content-type", "application/json")
                        .header("authorization", authorization("PUT", &url, b.as_bytes()))
                        .body(b)
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => acked = Some(i),
                        Ok(r) => panic!("PUT {i}: {}", r.status()),
                        Err(_) => return (acked, i), // the node is gone
                    }
                    i += 1;
                }
            })
        };
        // A pseudo-random instant in 150-650 ms: long enough for tens of writes.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(150 + u64::from(nanos % 500)));
        node.kill();
        let (acked, last_sent) = writer.join().unwrap();

        let cfg = config::load(node.data_dir.path()).expect("config.toml is whole and valid");
        assert_eq!(cfg.backends.len(), 1, "{cfg:?}");
        assert_eq!(
            cfg.operators.len(),
            1,
            "the operator registry survives: {cfg:?}"
        );
        let b = &cfg.backends[0];
        assert_eq!(b.id, "kx");
        assert!(
            matches!(&b.driver, DriverConfig::Openai { url, .. } if url == &dead),
            "{b:?}"
        );
        assert_eq!(b.models.len(), 1, "{b:?}");
        let i = b.models[0].args["i"].as_u64().unwrap();
        assert_eq!(b.models[0].name, format!("m{i}"));
        assert_eq!(b.models[0].args["pad"].as_str().unwrap().len(), 2000);
        let acked_i = acked.unwrap_or(first - 1);
        assert!(
            (acked_i..=last_sent).contains(&i),
            "round {round}: the file holds change {i}, the node had acknowledged {acked_i} \
             (last sent {last_sent})"
        );
        let files = data_files(node.data_dir.path());
        // Temp files left by earlier kills stay (nothing cleans them up); count this one's.
        let tmp: Vec<&String> = files
            .iter()
            .filter(|f| f.starts_with(".tmp") && !leftovers.contains(*f))
            .collect();
        assert!(
            files
                .iter()
                .all(|f| f == "config.toml" || f.starts_with(".tmp"))
                && tmp.len() <= 1,
            "round {round}: {files:?}"
        );
        eprintln!(
            "round {round}: {} changes acknowledged, file holds change {i} (acked {acked_i}, \
             last sent {last_sent}), leftover temp files {tmp:?}",
            acked_i + 1 - first
        );
        leftovers.extend(tmp.into_iter().cloned());
        next = last_sent + 1;

        // The node comes back from that file, with that change.
        node.restart();
        let e = entry(&node, "kx").expect("restored");
        assert_eq!(e["node"]["models"][0]["name"], format!("m{i}"), "{e}");
    }
    eprintln!("temp files left by the kills: {leftovers:?}");
}

// ----- Known bugs in crates/api (reported, not fixed here). Run with `-- --ignored`. ---------

/// `Node::put_backend` numbers config revisions per slot starting at 0, so a backend deleted
/// and registered again under the same id gets rev 0 again, and a test of the deleted config
/// that finishes afterwards passes `finish_test`'s rev check: its result is recorded against a
/// config it never tested.
#[test]
#[ignore = "api bug: a test result outlives DELETE + POST of the same id"]
fn a_result_from_before_a_delete_and_reregister_is_discarded() {
    let node = quiet(&["--client"]);
    let files = tempfile::tempdir().unwrap();
    let fifo = mkfifo(files.path());
    let body = json!({"id": "x", "driver": "embedded",
                      "models": [{"name": "m", "args": {"path": fifo}}]});
    assert_eq!(register(&node, &body).0, 201);
    let url = format!("{}/x/test", nodes_url(&node));
    let caller = std::thread::spawn(move || call("POST", &url, None));
    wait_entry(&node, "x", "testing", |e| {
        e["onboarding"]["backend_state"] == "testing"
    });
    assert_eq!(remove(&node, "x").0, 200);
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    assert_eq!(register(&node, &openai_body("x", &dead, &["other"])).0, 201);
    unblock(&fifo);
    let (code, old) = caller.join().unwrap();
    assert_eq!((code, &old["ok"]), (200, &json!(false)), "{old}");
    let o = entry(&node, "x").unwrap()["onboarding"].clone();
    assert_eq!(
        o["last_test"],
        Value::Null,
        "the new config was never tested: {o}"
    );
    assert_eq!(o["backend_state"], "waiting", "{o}");
}

/// `admin::test` runs the test inside the request's future. When the caller hangs up (a client
/// timeout, Ctrl-C on `infermesh test`), hyper drops that future: `finish_test` never runs, the
/// backend reads `testing` and answers 409 to every later test until its config changes or the
/// node restarts.
#[test]
#[ignore = "api bug: a caller hanging up leaves the backend's test lock held forever"]
fn a_test_whose_caller_hangs_up_still_releases_the_lock() {
    let node = quiet(&["--client"]);
    let files = tempfile::tempdir().unwrap();
    let fifo = mkfifo(files.path());
    let body = json!({"id": "y", "driver": "embedded",
                      "models": [{"name": "m", "args": {"path": fifo}}]});
    assert_eq!(register(&node, &body).0, 201);
    // The caller sends the request and closes its socket, as a Ctrl-C'd `curl` or a client
    // timeout does.
    let addr = node.url.trim_start_matches("http://").to_string();
    let mut caller = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        caller,
        "POST /admin/v1/nodes/y/test HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    wait_entry(&node, "y", "testing", |e| {
        e["onboarding"]["backend_state"] == "testing"
    });
    drop(caller);
    std::thread::sleep(Duration::from_millis(300));
    unblock(&fifo);
    let e = wait_entry(&node, "y", "a recorded result", |e| {
        e["onboarding"]["backend_state"] != "testing"
    });
    assert_eq!(e["onboarding"]["backend_state"], "test_failed", "{e}");
}

/// `admin::register` checks the id is free before `persist` without holding the config lock
/// across both, so concurrent registrations of one id can all pass the check: several 201s,
/// and `config.toml` holds the id more than once.
#[test]
#[ignore = "api bug: concurrent POSTs of one id both succeed and duplicate it in config.toml"]
fn concurrent_registrations_of_one_id_admit_exactly_one() {
    let node = quiet(&["--client"]);
    let dead = format!("http://127.0.0.1:{}/v1", dead_port());
    // Several tries: the window is between the id check and the save (two fsyncs).
    for attempt in 0..5 {
        let id = format!("dup{attempt}");
        let barrier = Arc::new(Barrier::new(8));
        let posts: Vec<_> = (0..8)
            .map(|i| {
                let (b, url) = (barrier.clone(), nodes_url(&node));
                let body = openai_body(&id, &dead, &[&format!("m{i}")]).to_string();
                let http = agent();
                std::thread::spawn(move || {
                    b.wait();
                    let r = http
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .unwrap();
                    r.status().as_u16()
                })
            })
            .collect();
        let mut codes: Vec<u16> = posts.into_iter().map(|p| p.join().unwrap()).collect();
        codes.sort();
        let saved = config::load(node.data_dir.path()).unwrap();
        let copies = saved.backends.iter().filter(|b| b.id == id).count();
        assert_eq!(
            copies, 1,
            "config.toml lists `{id}` {copies} times; answers {codes:?}"
        );
        assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409], "{id}");
    }
}
