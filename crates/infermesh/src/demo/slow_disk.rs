//! The loading node's "slow disk": it is started on a named pipe (so it sits in `loading`,
//! blocked opening its model, like a node reading from slow storage) while a thread reads the
//! real model at a throttled rate; once all of it has been read the node is restarted on it.
//!
//! Why not stream the model through the pipe: llama.cpp sizes and seeks the GGUF file
//! (`ftell`/`fseek` in gguf.cpp and llama-mmap.cpp), so a pipe can never finish loading.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use infermesh_backend::model_fetch::SMOLLM2_135M;

const PIPE: &str = "slow-disk.pipe";

/// The model the loading node will serve: the default model when cached (the one node 0
/// serves), else the first GGUF in the cache. Returns (served name, file).
pub fn source(model_dir: &Path) -> Option<(String, PathBuf)> {
    let default = model_dir.join(SMOLLM2_135M.file_name);
    if default.is_file() {
        return Some((SMOLLM2_135M.name.to_string(), default));
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    let path = ggufs.into_iter().next()?;
    // Served under its file stem, as `up --model` would name it.
    let name = path.file_stem()?.to_str()?.to_string();
    Some((name, path))
}

pub fn expected_secs(model: &Path, rate: u64) -> u64 {
    let size = std::fs::metadata(model).map_or(0, |m| m.len());
    size / rate.max(1)
}

/// Creates the pipe the loading node starts on; returns (model name, pipe path).
pub fn prepare(root: &Path, model_dir: &Path) -> Result<(String, PathBuf)> {
    let (name, _) = source(model_dir).context("no model in the cache for the loading node")?;
    let pipe = root.join(PIPE);
    if !pipe.exists() {
        // The mkfifo(1) tool rather than libc: one less unsafe call for a one-off.
        let ok = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .context("cannot run mkfifo")?
            .success();
        if !ok {
            bail!("mkfifo {} failed", pipe.display());
        }
    }
    Ok((name, pipe))
}

/// Lets a node still blocked opening the pipe go (its load fails and it can exit promptly).
pub fn release(root: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: with no reader left this fails at once instead of waiting for one.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(root.join(PIPE));
}

/// The throttled read in progress. Dropping it stops the read.
pub struct Feed {
    done: Arc<Mutex<Option<Result<PathBuf, String>>>>,
    cancel: Arc<AtomicBool>,
}

impl Feed {
    /// The path once all of it has been read, or why not (once; later calls return `None`).
    pub fn poll(&self) -> Option<Result<PathBuf, String>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

pub fn start_feed(model_dir: &Path, rate: u64) -> Result<Feed> {
    let (_, src) = source(model_dir).context("no model in the cache for the loading node")?;
    let done = Arc::new(Mutex::new(None));
    let cancel = Arc::new(AtomicBool::new(false));
    let (d, c) = (done.clone(), cancel.clone());
    std::thread::Builder::new()
        .name("demo-slow-disk".into())
        .spawn(move || {
            let r = read_throttled(&src, rate.max(1), &c).map_err(|e| format!("{e:#}"));
            *d.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.map(|()| src));
        })
        .context("cannot start the slow-disk thread")?;
    Ok(Feed { done, cancel })
}

/// Reads the whole file at `rate` bytes/s. Read and dropped rather than copied: the pacing is
/// the point, and a demo should not write a second copy of a model to disk.
fn read_throttled(src: &Path, rate: u64, cancel: &AtomicBool) -> Result<()> {
    let mut from = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut buf = vec![0u8; 64 * 1024];
    let (t0, mut read) = (Instant::now(), 0u64);
    loop {
        if cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        read += n as u64;
        let due = Duration::from_secs_f64(read as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_is_paced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.gguf");
        std::fs::write(&src, vec![7u8; 300_000]).unwrap();
        let t0 = Instant::now();
        read_throttled(&src, 1_000_000, &AtomicBool::new(false)).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        assert!(read_throttled(&src, 1, &AtomicBool::new(true)).is_err());
    }

    #[test]
    fn the_default_model_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.gguf"), b"x").unwrap();
        assert_eq!(source(dir.path()).unwrap().0, "a");
        std::fs::write(dir.path().join(SMOLLM2_135M.file_name), b"x").unwrap();
        assert_eq!(source(dir.path()).unwrap().0, SMOLLM2_135M.name);
    }
}
