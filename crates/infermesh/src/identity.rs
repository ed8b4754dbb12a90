//! The node's ed25519 identity, persisted in the data dir. The node id is derived from the public
//! key, so it is stable across restarts and cannot be claimed by another node without its key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

pub struct Identity {
    pub key: SigningKey,
    pub node_id: String,
}

const KEY_FILE: &str = "node.key";

/// `--data-dir`, else `$XDG_DATA_HOME/infermesh`, else `~/.local/share/infermesh`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("infermesh")
}

/// The first 16 hex digits of sha256(public key): short enough to read, long enough not to collide.
pub fn node_id_of(key: &SigningKey) -> String {
    hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8])
}

pub fn load_or_create(data_dir: &Path) -> Result<Identity> {
    let path = data_dir.join(KEY_FILE);
    let key = match fs::read(&path) {
        Ok(bytes) => {
            let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                bail!(
                    "{} is corrupt ({} bytes, expected 32); move it away to create a new identity",
                    path.display(),
                    bytes.len()
                );
            };
            SigningKey::from_bytes(&seed)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            write_atomic(&path, &seed, 0o600)?;
            tracing::info!(path = %path.display(), "created a new node identity");
            SigningKey::from_bytes(&seed)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(Identity {
        node_id: node_id_of(&key),
        key,
    })
}

/// Write-to-temp, fsync, rename, fsync dir: a crash at any point leaves either the old file or
/// the new one, never a torn one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("path has no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.node_id, b.node_id);
        assert_eq!(a.node_id.len(), 16);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let err = load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
