//! The admin API (`/admin/v1/nodes`) and its CLI (`infermesh status`, `infermesh test`) against
//! real node processes on loopback: every status code, the tester's lock and results, config
//! persistence across restarts and SIGKILLs, and an `openai` backend tested against a second
//! real node.
//!
//! Nodes run with `--schedule learn` and no peers, so the schedule stays unknown: no validation
//! round and no auto-test ever starts behind a test's back (with the mesh schedule an auto-test
//! after a registration would depend on the time of day).

mod admin_support;
mod common;

use admin_support::*;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use infermesh_api::config::{self, DriverConfig};
use serde_json::{json, Value};
#[test]
fn register_change_remove_status_codes_and_persistence() {
    let mut node = signed(&["--standby"]);

    // The list: one envelope per backend, the command-line one included.
    let all = backend_list(&node);
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
    assert_eq!(backend_list(&node).len(), 1);
    let out = cli(&["test", "embedded", "--url", &node.url]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("signed") || err.contains("keygen"), "{err}");
    assert_eq!(
        backend_entry(&node, "embedded").unwrap()["onboarding"]["last_test"],
        Value::Null
    );

    // Register: 201 with the new envelope; listed; persisted.
    let (code, v) = register(&node, &openai_body("remote", &dead, &["m1"]));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["node"]["id"], "remote");
    assert_eq!(v["node"]["source"], "config");
    assert_eq!(v["node"]["url"], dead.as_str());
    assert_eq!(v["onboarding"]["backend_state"], "waiting");
    let got = backend_entry(&node, "remote").expect("registered backend is listed");
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
            api_key: None,
            ca_cert: None,
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
    assert!(backend_entry(&node, "x").is_none());
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
    let o = backend_entry(&node, "remote").unwrap()["onboarding"].clone();
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
    assert!(backend_entry(&node, "second").is_none());
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
    let all = backend_list(&node);
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
        if let Some(e) = backend_entry(&node, "embedded") {
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
    let e = backend_entry(&node, "embedded").unwrap();
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
    let e = backend_entry(&node, "multi").unwrap();
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
    let other = backend_entry(&node, "embedded").unwrap();
    assert_eq!(other["onboarding"]["validated"], true, "{other}");

    // A config change voids the result at once: the PUT's own answer is already untested.
    let fixed =
        json!({"driver": "embedded", "models": [{"name": "a-good", "args": {"path": good}}]});
    let (code, v) = change(&node, "multi", &fixed);
    assert_eq!(code, 200, "{v}");
    for o in [
        &v["onboarding"],
        &backend_entry(&node, "multi").unwrap()["onboarding"],
    ] {
        assert_eq!(o["backend_state"], "waiting", "{o}");
        assert_eq!(o["last_test"], Value::Null, "{o}");
        assert_eq!(o["failing_model"], Value::Null, "{o}");
        assert_eq!(o["validated"], false, "{o}");
    }
    let (code, r) = run_test(&node, "multi");
    assert_eq!((code, &r["ok"]), (200, &json!(true)), "{r}");
    assert_eq!(
        backend_entry(&node, "multi").unwrap()["onboarding"]["validated"],
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
        backend_entry(&node, "linked").unwrap()["onboarding"]["backend_state"],
        "test_failed"
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let (_, r) = run_test(&node, "linked");
    assert_eq!(r["ok"], true, "{r}");
    let o = backend_entry(&node, "linked").unwrap()["onboarding"].clone();
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
        backend_entry(&node, "broken").unwrap()["onboarding"]["backend_state"],
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
    let o = backend_entry(&tester, "remote").unwrap()["onboarding"].clone();
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
    let message = backend_entry(&node, "embedded").unwrap()["onboarding"]["message"]
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

    let out = cli(&["test", "../x", "--url", &node.url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a backend id"));

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
