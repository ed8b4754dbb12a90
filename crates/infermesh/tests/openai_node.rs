//! The official OpenAI Node.js package must work against a node unchanged.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn official_node_client_works_unchanged() {
    // `.ci/run` installs the package here (`npm install --prefix target/tmp/node-openai openai`).
    let modules = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-openai/node_modules");
    let has_client = Command::new("node")
        .args(["-e", "require('openai')"])
        .env("NODE_PATH", &modules)
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        // CI installs the package and sets this, so there the test can never silently pass.
        assert!(
            std::env::var_os("INFERMESH_REQUIRE_NODE_OPENAI").is_none(),
            "node and the `openai` npm package are required but not installed under {}",
            modules.display()
        );
        eprintln!(
            "SKIPPED: `npm install --prefix {} openai` to run the OpenAI Node.js client test",
            modules.parent().unwrap().display()
        );
        return;
    }
    let node = NodeProc::start(&[]);
    node.wait_state("serving", Duration::from_secs(180));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.js");
    let out = Command::new("node")
        .args([script, &node.url, MODEL])
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
