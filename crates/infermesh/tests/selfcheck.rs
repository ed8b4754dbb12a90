//! `infermesh selfcheck` end to end: every stage passes on one node and on a 3-node mesh, it
//! reports per stage on stderr, and it leaves no node process or temp dir behind.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{bin, model_dir};

fn leftover_dirs() -> Vec<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("infermesh-node-"))
                .collect()
        })
        .unwrap_or_default()
}

fn selfcheck(extra: &[&str]) {
    let before = leftover_dirs();
    let started = Instant::now();
    let out = Command::new(bin())
        .arg("selfcheck")
        .args(extra)
        .env("INFERMESH_MODEL_DIR", model_dir())
        .env_remove("INFERMESH_ADMIN_OPEN")
        .output()
        .expect("run selfcheck");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "selfcheck {extra:?} failed:\n{stderr}"
    );
    let alone = !extra.contains(&"--nodes");
    for stage in [
        "node registered",
        "backend tested",
        "before the round: the state crate's sentence",
        "round runs and result published",
        if alone {
            "alone: serving, waiting for a peer to verify it"
        } else {
            "node admitted by its peers (active, serving)"
        },
        "request routed and answered",
        if alone {
            "restart → serving again"
        } else {
            "restart → re-verified by peers"
        },
        "onboarding logs are info-only",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(stage)),
            "no PASS line for {stage:?}"
        );
    }
    assert!(!stderr.contains("FAIL"), "{stderr}");
    eprintln!(
        "selfcheck {extra:?} took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Nothing left behind: its temp dirs are gone and no node it started is still running.
    let after = leftover_dirs();
    let new: Vec<_> = after.iter().filter(|d| !before.contains(d)).collect();
    assert!(new.is_empty(), "selfcheck left {new:?}");
    let ps = Command::new("pgrep")
        .args(["-f", "infermesh-node-"])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "a node process outlived selfcheck"
    );
}

#[test]
fn selfcheck_one_node_and_three_nodes_pass_and_clean_up() {
    selfcheck(&[]);
    selfcheck(&["--nodes", "3"]);
}
