//! Data safety under SIGKILL: the node identity key (`node.key`, written once at first start)
//! and the operator key (`infermesh keygen`) are written temp-file → fsync → rename → fsync dir,
//! so a kill at any instant leaves either no file / the old file, or the whole new one — never
//! a torn one. The process is killed at pseudo-random instants spread over its start, many times.
//! (Backend config writes under SIGKILL are covered by `admin_faults.rs`.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

/// Deterministic spread of kill delays (an LCG), so a failure reproduces.
struct Delays(u64);

impl Delays {
    fn next(&mut self, max_us: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_micros((self.0 >> 33) % max_us)
    }
}

/// Starts `cmd`, SIGKILLs it after `delay` (if it is still running); true if the kill landed.
fn run_and_kill(cmd: &mut Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn infermesh");
    let start = Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn node_identity_survives_sigkill_at_any_point_of_its_creation() {
    let mut delays = Delays(0x5eed_0001);
    let (mut before_write, mut after_write) = (0, 0);
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        // A fresh data dir: the key is created within the first milliseconds of `up`.
        let delay = delays.next(60_000);
        let killed = run_and_kill(
            Command::new(bin())
                .args([
                    "up",
                    "--client",
                    "--port",
                    "0",
                    "--gossip-port",
                    "0",
                    "--data-dir",
                ])
                .arg(dir.path()),
            delay,
        );
        assert!(killed, "round {round}: the node exited by itself");
        match std::fs::read(&key) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => before_write += 1,
            Ok(bytes) => {
                assert_eq!(bytes.len(), 32, "round {round} ({delay:?}): torn node.key");
                assert_eq!(mode(&key), 0o600, "round {round}");
                after_write += 1;
                // The key in place is the node's identity from now on: a restart keeps it.
                let again = run_and_kill(
                    Command::new(bin())
                        .args([
                            "up",
                            "--client",
                            "--port",
                            "0",
                            "--gossip-port",
                            "0",
                            "--data-dir",
                        ])
                        .arg(dir.path()),
                    Duration::from_millis(40),
                );
                assert!(again, "round {round}: restarted node exited by itself");
                assert_eq!(
                    std::fs::read(&key).unwrap(),
                    bytes,
                    "round {round}: key changed"
                );
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        // Whatever else is there is a leftover temp file, never a second key.
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                name == "node.key"
                    || name.starts_with(".node.key.tmp-")
                    || name == "config.toml"
                    // Written before the key, by the same atomic write; their own tests cover them.
                    || name == "node.lock"
                    || name == "mesh.secret"
                    || name.starts_with(".mesh.secret.tmp-"),
                "round {round}: unexpected {name}"
            );
        }
    }
    eprintln!("kills before the key existed: {before_write}, after: {after_write}");
    assert!(
        before_write > 0 && after_write > 0,
        "the kills missed the write window"
    );
}

#[test]
fn operator_key_survives_sigkill_during_keygen_force() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator.key");
    let ok = Command::new(bin())
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let mut delays = Delays(0x5eed_0002);
    let (mut changed, mut kept) = (0, 0);
    let mut last = std::fs::read_to_string(&key).unwrap();
    for round in 0..60 {
        // keygen runs a few milliseconds; kills land before, during and after its write.
        let delay = delays.next(12_000);
        run_and_kill(
            Command::new(bin())
                .args(["keygen", "--force", "--name", "t", "--out"])
                .arg(&key),
            delay,
        );
        let now = std::fs::read_to_string(&key)
            .unwrap_or_else(|e| panic!("round {round} ({delay:?}): key file gone: {e}"));
        assert!(
            now.len() == 65
                && now.ends_with('\n')
                && now[..64].chars().all(|c| c.is_ascii_hexdigit()),
            "round {round} ({delay:?}): torn operator key {now:?}"
        );
        assert_eq!(mode(&key), 0o600, "round {round}");
        if now == last {
            kept += 1;
        } else {
            changed += 1;
        }
        last = now;
    }
    eprintln!("kills that kept the old key: {kept}, that left a new one: {changed}");
    assert!(kept > 0 && changed > 0, "the kills missed the write window");
}
