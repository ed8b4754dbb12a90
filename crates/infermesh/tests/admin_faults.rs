//! Admin API under faults: SIGKILL during config writes, and races between tests, deletes,
//! re-registrations and callers that hang up.

mod admin_support;
mod common;

use admin_support::*;
use common::backend_entry;
use std::io::Write as _;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use infermesh_api::config::{self, DriverConfig};
use serde_json::{json, Value};
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
    // The newest change known to be in the file: the floor when a round acknowledges nothing.
    // Not `first - 1`: that is the last round's in-flight change, never acknowledged, which the
    // kill may well have cut off.
    let mut on_disk = 0u64;
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
        let acked_i = acked.unwrap_or(on_disk);
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
            acked.map_or(0, |a| a + 1 - first)
        );
        leftovers.extend(tmp.into_iter().cloned());
        next = last_sent + 1;
        on_disk = i;

        // The node comes back from that file, with that change.
        node.restart();
        let e = backend_entry(&node, "kx").expect("restored");
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
    let o = backend_entry(&node, "x").unwrap()["onboarding"].clone();
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
