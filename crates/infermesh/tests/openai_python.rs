//! The official OpenAI Python client, and langchain-openai on top of it, must work against a
//! node unchanged.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `tests/<script> URL MODEL` against a fresh node when Python can import `module`; CI
/// installs the packages and sets `require`, so there the test can never silently pass.
fn client_against_a_node(module: &str, package: &str, require: &str, script: &str) {
    let has_client = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        assert!(
            std::env::var_os(require).is_none(),
            "the `{package}` Python package is required but not installed"
        );
        eprintln!("SKIPPED: `pip install {package}` to run the {package} client test");
        return;
    }
    let node = NodeProc::start(&[]);
    node.wait_state("serving", Duration::from_secs(180));
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args([&script, &node.url, MODEL])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{package} client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn official_python_client_works_unchanged() {
    client_against_a_node(
        "openai",
        "openai",
        "INFERMESH_REQUIRE_PYTHON_OPENAI",
        "openai_client.py",
    );
}

#[test]
fn langchain_openai_works_unchanged() {
    client_against_a_node(
        "langchain_openai",
        "langchain-openai",
        "INFERMESH_REQUIRE_LANGCHAIN",
        "langchain_client.py",
    );
}
