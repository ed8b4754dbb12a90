//! The deterministic fixture backend as a process of its own (so a test can kill it), and what
//! the fault tests ask of a mesh of nodes that serve it.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub use crate::common::wait_for;
use crate::common::{bin, post_json, NodeProc};
use serde_json::{json, Value};

pub const MODEL: &str = "bench-fixture";
/// The fixture's whole answer.
pub const TEXT: &str =
    "The quick brown fox jumps over the lazy dog and runs far away from the farm.";

/// The deterministic OpenAI-compatible backend as a process of its own, so it can be killed.
pub struct Fixture {
    child: Child,
    pub port: u16,
}

impl Fixture {
    pub fn start(port: u16) -> Fixture {
        Self::paced(port, 2)
    }

    /// A fixture that waits `delay_ms` before each of its 16 chunks.
    pub fn paced(port: u16, delay_ms: u64) -> Fixture {
        let mut child = Command::new(bin())
            .args(["bench", "fixture", "--chunk-delay-ms"])
            .arg(delay_ms.to_string())
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("infermesh fixture on ")
            .unwrap_or_else(|| panic!("fixture said {line:?}"));
        Fixture {
            child,
            port: crate::common::port_of(url),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn peers(node: &NodeProc) -> Vec<Value> {
    node.status()["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn peer<'a>(ps: &'a [Value], name: &str) -> Option<&'a Value> {
    ps.iter().find(|p| p["name"] == name)
}

pub fn routable(node: &NodeProc, name: &str) -> bool {
    peer(&peers(node), name)
        .is_some_and(|p| p["state"] == "serving" && p["participation"] == "active")
}

pub fn register(node: &NodeProc, url: &str) {
    let (code, v) = post_json(
        &format!("{}/admin/v1/nodes", node.url),
        &json!({"id": "fixture", "driver": "openai", "url": url,
                "models": [{"name": MODEL}], "serve": MODEL}),
    );
    assert_eq!(code, 201, "{v}");
}

/// A streamed answer as the client saw it.
#[derive(Debug, Default)]
pub struct Streamed {
    /// The text of every chunk, in order (chat deltas or completion text).
    pub text: String,
    /// Every distinct chunk `id`, in order of appearance.
    pub ids: Vec<String>,
    pub done: bool,
    /// In-band error events.
    pub errors: Vec<Value>,
    /// `usage.completion_tokens` of the closing usage chunk, when there was one.
    pub completion_tokens: Option<u64>,
    /// Opening chunks (a chat delta with a role).
    pub openings: usize,
}

impl Streamed {
    /// Reads the `data` of each event.
    pub fn of<'a>(datas: impl IntoIterator<Item = &'a str>) -> Streamed {
        let mut s = Streamed::default();
        for d in datas {
            if d == "[DONE]" {
                s.done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(d) else {
                s.errors.push(json!({"unreadable": d}));
                continue;
            };
            if !v["error"].is_null() {
                s.errors.push(v);
                continue;
            }
            if let Some(id) = v["id"].as_str() {
                if !s.ids.iter().any(|i| i == id) {
                    s.ids.push(id.to_string());
                }
            }
            let c = &v["choices"][0];
            if !c["delta"]["role"].is_null() {
                s.openings += 1;
            }
            if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                s.text.push_str(t);
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                s.completion_tokens = Some(n);
            }
        }
        s
    }

    /// The fixture's whole answer, once, as one stream.
    pub fn is_whole(&self) -> bool {
        self.done && self.errors.is_empty() && self.text == TEXT && self.ids.len() == 1
    }
}
