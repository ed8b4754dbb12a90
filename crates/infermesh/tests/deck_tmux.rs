//! The real deck binary in a real terminal (tmux) against a real node: it shows the node, moves
//! between tabs on keys, and quits cleanly on `q`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, NodeProc};

struct Tmux(String);

impl Tmux {
    fn run(args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux must be installed to run this test (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self) -> String {
        Self::run(&["capture-pane", "-p", "-t", &self.0])
    }

    fn keys(&self, keys: &str) {
        Self::run(&["send-keys", "-t", &self.0, keys]);
    }

    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "deck never showed {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn deck_shows_the_node_switches_tabs_and_quits() {
    let node = NodeProc::start(&["--name", "decknode", "--gossip-port", "0"]);
    node.wait_state("serving", Duration::from_secs(60));
    let session = format!("deck-test-{}", std::process::id());
    let cmd = format!("{} deck --url {}", bin(), node.url);
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "36",
            &cmd,
        ])
        .status()
        .expect("tmux must be installed to run this test (.ci/run installs it)");
    assert!(status.success());
    let t = Tmux(session);

    let screen = t.wait_for("decknode");
    assert!(screen.contains("NODES"), "{screen}");
    t.wait_for("serving");
    t.wait_for("connected");

    // LOGS: the node's own lines, pulled from /api/logs.
    t.keys("4");
    t.wait_for("model loaded");

    // ONBOARDING: the backend with its state word and sentence from the node.
    t.keys("3");
    t.wait_for("embedded");

    // Help lists the keys; q quits and the pane's process ends.
    t.keys("?");
    t.wait_for("quit");
    t.keys("Escape");
    t.keys("q");
    let start = Instant::now();
    while t.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "deck did not quit on q; screen:\n{}",
            t.capture()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
