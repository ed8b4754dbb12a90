//! `infermesh console`: a node's dashboard served on the operator's loopback, whose actions are
//! signed there. Checked as a user and an attacker would:
//! - the page and every read are the node's own; the page carries a per-run token, never the key;
//! - the node's own page offers no action and says how to get them;
//! - the page's chat reaches the node through the console, and clients are shown the node's URL;
//! - a signing request without the token is 403, one for a path outside `/admin/` is 400;
//! - in real headless Chromium, with a standby peer: migrate opens a confirm with the blast
//!   radius, Cancel sends nothing, Sign and send moves the model (0 cut off); assign brings it
//!   back; unassign (two replicas to one) drains it; the page says what each did. Screenshots
//!   under `target/artifacts/console-*.png`.

mod browser_support;
mod common;
mod web_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use browser_support::Driver;
use serde_json::{json, Value};
use web_support::*;

/// `infermesh console` on a free loopback port; killed when dropped.
struct Console {
    child: Child,
    url: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn console(node: &str, key: &std::path::Path) -> Console {
    let mut child = Command::new(bin())
        .args(["console", "--port", "0", "--url", node])
        .env("INFERMESH_OPERATOR_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the console");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .strip_prefix("infermesh console on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("console said {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Console { child, url }
}

fn serves(node: &Node) -> bool {
    node.status()["models"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == MODEL))
}

fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut rb = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/json");
    if let Some(t) = token {
        rb = rb.header("x-infermesh-console", t);
    }
    let r = rb.body(body.to_string()).send().unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

#[test]
fn the_console_signs_the_dashboards_actions_and_the_page_holds_no_key() {
    let keys = tempfile::tempdir().unwrap();
    let op = keygen(keys.path(), "console");
    let node = Node::start(Some(&op.snippet), &["--name", "con-a"], &[]);
    wait_until(Duration::from_secs(180), "con-a serving", || {
        (node.status()["node_state"] == "serving").then_some(())
    });
    let standby = Node::start(
        Some(&op.snippet),
        &["--standby", "--name", "con-b", "--join", &node.invite],
        &[],
    );
    wait_until(
        Duration::from_secs(60),
        "con-a seeing con-b standby",
        || {
            node.status()["peers"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == "con-b" && p["state"] == "standby")
                .then_some(())
        },
    );
    let c = console(&node.url, &op.path);

    // The page: the node's own, plus the token; the key appears nowhere.
    let (code, _, page) = get_text(&format!("{}/", c.url));
    assert_eq!(code, 200);
    let key_hex = hex::encode(op.key.to_bytes());
    assert!(!page.contains(&key_hex), "the private key is in the page");
    let token = page
        .split(r#"<meta name="infermesh-console" content=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the console's page carries its token")
        .to_string();
    assert_eq!(token.len(), 32);
    let (_, _, own) = get_text(&format!("{}/", node.url));
    assert!(
        !own.contains("infermesh-console"),
        "the node's own page has no token"
    );
    let (code, status) = get_json(&format!("{}/api/status", c.url));
    assert_eq!(code, 200);
    assert_eq!(status["name"], "con-a", "reads are the node's own");
    assert!(!status.to_string().contains(&key_hex));

    // Requests the console refuses, with nothing signed.
    let sign = format!("{}/console/v1/sign", c.url);
    let drain = json!({"method": "POST", "path": format!("/admin/v1/replicas/{MODEL}/drain")});
    let (code, v) = post(&sign, None, &drain);
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("reload"));
    let (code, v) = post(&sign, Some("0".repeat(32).as_str()), &drain);
    assert_eq!(code, 403, "a wrong token: {v}");
    let (code, v) = post(
        &sign,
        Some(&token),
        &json!({"method": "POST", "path": "/v1/chat/completions"}),
    );
    assert_eq!(code, 400, "{v}");
    let (code, _) = post(
        &format!("{}/admin/v1/nodes", c.url),
        Some(&token),
        &json!({}),
    );
    assert_eq!(code, 405, "writes never pass through unsigned");
    assert!(serves(&node), "nothing above reached the node");
    // The page's chat goes through to the node's public API.
    let (code, v) = post(
        &format!("{}/v1/chat/completions", c.url),
        None,
        &json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(code, 200, "{v}");

    let Some((chromium, chromedriver)) = browser_support::tools() else {
        return;
    };
    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let s = driver.session(&chromium, profile.path());
    let shots = artifacts_dir();

    // The node's own page: read-only, saying how to get actions.
    s.goto(&format!("{}/", node.url));
    let readonly = common::poll(
        "the read-only note",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            s.eval("const e = document.querySelector('#actions-readonly'); return e ? e.textContent : '';")
        },
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("infermesh console --url"))
        },
    );
    assert!(readonly.as_str().unwrap().contains(&node.url), "{readonly}");

    // Through the console: each action's confirm, Cancel, then Sign and send.
    s.goto(&format!("{}/", c.url));
    let base = s.eval("return document.querySelector('#base-url').textContent;");
    assert_eq!(
        base,
        json!(format!("{}/v1", node.url)),
        "clients are shown the node, not the console"
    );
    let b_id = standby.status()["node_id"].as_str().unwrap().to_string();
    let confirm = |action: &str| -> String {
        common::poll(
            &format!("the {action} action"),
            Duration::from_secs(60),
            Duration::from_millis(200),
            || s.eval("return document.querySelector('#actions').dataset.actions || '';"),
            |v| {
                v.as_str()
                    .is_some_and(|a| a.split(' ').any(|x| x == action))
            },
        );
        // A click can land while the page lays itself out (the live table growing under it):
        // it is sent again, as a user would click again, until the confirm is open.
        let opened = || -> Option<String> {
            let v = s.eval(
                "const d = document.querySelector('#confirm'); return d.open ? d.textContent : '';",
            );
            v.as_str().filter(|t| !t.is_empty()).map(str::to_string)
        };
        for _ in 0..5 {
            s.click(&format!("button[data-action=\"{action}\"]"));
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Some(text) = opened() {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("the {action} confirm never opened")
    };
    let result = |want: &str| {
        common::poll(
            &format!("the page saying {want:?}"),
            Duration::from_secs(120),
            Duration::from_millis(200),
            || s.eval("return document.querySelector('#action-result').textContent;"),
            |v| v.as_str().is_some_and(|t| t.contains(want)),
        )
    };

    // Migrate to the standby peer: the blast radius, Cancel sends nothing, then the move.
    let migrate = format!("migrate-{MODEL}-{b_id}");
    let lines = confirm(&migrate);
    for want in [
        format!("Migrate {MODEL} from con-a to con-b"),
        format!("con-b loads {MODEL} and must pass its peers' admission check"),
        "keeps 1 through the move".to_string(),
    ] {
        assert!(lines.contains(&want), "{want:?} in {lines}");
    }
    s.screenshot(&shots.join("console-confirm.png"));
    s.click("#confirm-no");
    result("nothing was sent");
    assert_eq!(
        standby.status()["node_state"],
        "standby",
        "Cancel sent nothing"
    );
    confirm(&migrate);
    s.click("#confirm-yes");
    let moved = result("moved from con-a to con-b");
    assert!(moved.as_str().unwrap().contains("0 cut off"), "{moved}");
    assert!(!serves(&node) && serves(&standby), "the model moved");

    // con-a is standby now: assign the model back to it.
    let lines = confirm(&format!("assign-{MODEL}"));
    assert!(
        lines.contains(&format!("Assign {MODEL} to con-a")),
        "{lines}"
    );
    s.click("#confirm-yes");
    result("done (202)");
    wait_until(Duration::from_secs(60), "con-a serving again", || {
        (node.status()["node_state"] == "serving").then_some(())
    });

    // And unassign it: two replicas become one.
    let unassign = format!("unassign-{MODEL}");
    let lines = confirm(&unassign);
    assert!(
        lines.contains(&format!("Unassign {MODEL} from con-a")),
        "{lines}"
    );
    assert!(
        lines.contains("goes from 2 serving replicas to 1"),
        "{lines}"
    );
    s.click("#confirm-yes");
    let done = result("stopped serving");
    assert!(done.as_str().unwrap().contains("done (200)"), "{done}");
    assert!(
        !serves(&node),
        "the signed drain stopped the model: {}",
        node.status()
    );
    assert!(serves(&standby), "con-b still serves");
    s.screenshot(&shots.join("console-done.png"));
    let errors: Vec<Value> = s
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
}
