//! Every tab at 80 and 160 columns, as an operator with a narrow and a wide terminal sees it:
//! each screen is saved under `target/artifacts/deck/` (TAB-WIDTHxHEIGHT.txt) for a person to
//! read, and checked for what that tab must show at that width.

mod common;

use std::path::PathBuf;

use common::{assert_shows, ch, screen, with_admin};
use infermesh_deck::fixtures::{self, SELF_NAME};
use infermesh_deck::{update, Msg};

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("INFERMESH_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("target/tmp has a parent")
                .join("artifacts")
        })
        .join("deck");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_tab_at_80_and_160_columns() {
    let mut m = fixtures::model(12, 4);
    let mut s = fixtures::status(12);
    s.wakeable = fixtures::wakeable();
    update(&mut m, Msg::Status(Box::new(s)));
    let dir = artifacts();
    // (key, tab title, what it must show at both widths)
    let tabs: [(char, &str, &[&str]); 7] = [
        ('1', "NODES", &[SELF_NAME, "node-0000", "CPU", " serving "]),
        ('2', "MODELS", &["model-0", "SmolLM2"]),
        (
            '3',
            "ONBOARDING",
            &[SELF_NAME, "embedded", "gpu-llama", "schedule syncing"],
        ),
        ('4', "LOGS", &["LOGS"]),
        ('5', "REQUESTS", &["REQUESTS", "model-0"]),
        ('6', "WAKEABLE", &["gpu-7", "llama-70b"]),
        (
            '7',
            "TOPOLOGY",
            &["ROUTERS", "model-0", "─┬── ● node-0000", "IDLE"],
        ),
    ];
    for (k, title, must) in tabs {
        if k == '3' {
            with_admin(&mut m);
        } else {
            ch(&mut m, k);
        }
        for (w, h) in [(80u16, 24u16), (160, 45)] {
            let text = screen(&m, w, h);
            std::fs::write(dir.join(format!("{title}-{w}x{h}.txt")), &text).unwrap();
            // The tab bar marks this tab, and nothing is cut mid-screen by a panic or overflow.
            assert_shows(&text, &format!(" {k} {title} "));
            for needle in must {
                assert_shows(&text, needle);
            }
            assert_eq!(text.lines().count(), usize::from(h), "{title} at {w}");
            assert!(
                text.lines().all(|l| l.chars().count() == usize::from(w)),
                "{title} at {w}: a row is not {w} cells wide"
            );
        }
    }
}
