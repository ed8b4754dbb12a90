//! The real deck binary in a real terminal (tmux) against real nodes: it shows the node, moves
//! between tabs on keys, quits cleanly on `q`, and its migrate action (MODELS, `m`, confirm, `y`)
//! moves a replica between two nodes with the operator's signature.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use std::os::unix::fs::PermissionsExt;

use common::{bin, poll, NodeProc, MODEL};

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
        self.wait_for_within(text, Duration::from_secs(20))
    }

    fn wait_for_within(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
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

/// `infermesh deck --url URL` in a detached tmux session of the given size.
fn open_deck(url: &str, env: &[(&str, &str)], tag: &str) -> Tmux {
    let session = format!("deck-test-{tag}-{}", std::process::id());
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cmd = format!("env {} {} deck --url {url}", vars.join(" "), bin());
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
    Tmux(session)
}

#[test]
fn deck_shows_the_node_switches_tabs_and_quits() {
    let node = NodeProc::start(&["--name", "decknode", "--gossip-port", "0"]);
    node.wait_state("serving", Duration::from_secs(60));
    let t = open_deck(&node.url, &[], "tabs");

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

#[test]
fn the_decks_migrate_assign_and_wake_actions_do_what_their_confirm_said() {
    let operator = ed25519_dalek::SigningKey::from_bytes(&[23; 32]);
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("operator.key");
    std::fs::write(&key, format!("{}\n", hex::encode(operator.to_bytes()))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // deck-a also knows one wakeable machine, whose wake command fails saying why.
    let trusted = |extra: &[&str], more: &str| {
        let dir = tempfile::tempdir().unwrap();
        let public = hex::encode(operator.verifying_key().as_bytes());
        std::fs::write(
            dir.path().join("config.toml"),
            format!("[[operator]]\nname = \"deck-tests\"\npublic_key = \"{public}\"\n{more}"),
        )
        .unwrap();
        NodeProc::start_in(dir, &[extra, &["--admin-open=false"]].concat())
    };
    let a = trusted(
        &["--name", "deck-a"],
        "[[wakeable]]\nid = \"gpu-9\"\nprovider = \"example\"\nmodels = [\"big\"]\n\
         wake_command = \"echo 'no capacity in region' >&2; exit 1\"\n",
    );
    a.wait_state("serving", Duration::from_secs(60));
    let b = trusted(&["--standby", "--name", "deck-b", "--join", &a.invite], "");
    poll(
        "deck-b standby in deck-a's view",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || a.status(),
        |s| {
            s["peers"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["name"] == "deck-b" && p["state"] == "standby")
            })
        },
    );

    let t = open_deck(
        &a.url,
        &[("INFERMESH_OPERATOR_KEY", key.to_str().unwrap())],
        "migrate",
    );
    t.wait_for("connected");
    t.keys("2");
    t.wait_for(MODEL);
    t.keys("m");
    // The blast radius is on screen before anything is signed.
    let modal = t.wait_for("y signs and sends");
    assert!(modal.contains("deck-b loads"), "{modal}");
    assert!(modal.contains("deck-a drains"), "{modal}");
    assert!(a.status()["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == MODEL));
    t.keys("y");
    let done = t.wait_for_within("3/3", Duration::from_secs(120));
    assert!(done.contains("moved from deck-a to deck-b"), "{done}");

    let b_models = b.status()["models"].clone();
    assert!(
        b_models.as_array().unwrap().iter().any(|m| m == MODEL),
        "deck-b serves {MODEL} after the migration: {b_models}"
    );
    let a_now = a.status();
    assert!(
        !a_now["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == MODEL),
        "deck-a stopped serving it: {a_now}"
    );
    assert_eq!(a_now["node_state"], "standby", "{a_now}");

    // MODELS `a`: deck-a, standby again, is asked to start a replica; `u` then takes it away.
    let serves = |n: &NodeProc| {
        n.status()["models"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m == MODEL))
    };
    // The deck's own view of deck-a must say standby before `a` can offer it.
    t.wait_for("standby  deck-a");
    t.keys("a");
    let modal = t.wait_for("y signs and sends");
    assert!(
        modal.contains("Assign") && modal.contains("to deck-a"),
        "{modal}"
    );
    assert!(!serves(&a), "nothing is sent before y");
    t.keys("y");
    t.wait_for("deck-a is loading");
    // Both replicas serving in the deck's own view (ROUTABLE 2/2) before `u` lists them.
    t.wait_for_within("2/2", Duration::from_secs(60));
    assert_eq!(a.status()["node_state"], "serving");
    t.keys("u");
    let modal = t.wait_for("y signs and sends");
    assert!(
        modal.contains("Unassign") && modal.contains("from deck-a"),
        "{modal}"
    );
    assert!(modal.contains("2 serving replicas to 1"), "{modal}");
    t.keys("y");
    t.wait_for_within("deck-a stopped serving", Duration::from_secs(60));
    assert!(!serves(&a), "deck-a drained: {}", a.status());
    assert!(serves(&b), "deck-b still serves");

    // WAKEABLE: `w` asks, `y` sends the signed wake; the node runs the command, which fails.
    t.keys("6");
    t.wait_for("gpu-9");
    t.keys("w");
    let modal = t.wait_for("y signs and sends");
    assert!(modal.contains("Wake gpu-9"), "{modal}");
    t.keys("y");
    t.wait_for("wake of gpu-9 started");
    poll(
        "the failed wake on deck-a",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || a.status(),
        |s| s["wakeable"][0]["state"] == "failed",
    );
}
