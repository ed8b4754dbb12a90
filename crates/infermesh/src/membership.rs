//! What a node keeps in its data dir about the mesh it belongs to, and the lock that makes a
//! data dir one node's: the mesh secret (`mesh.secret`, 0600), the join addresses from its
//! invite (`mesh.seeds`), and `node.lock` held for the node's lifetime.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use infermesh_mesh::{Invite, MeshSecret};

use crate::identity::write_atomic;

const SECRET_FILE: &str = "mesh.secret";
const SEEDS_FILE: &str = "mesh.seeds";
const LOCK_FILE: &str = "node.lock";

/// Held while the node runs; the OS releases it when the process ends, however it ends.
pub struct DataDirLock {
    _file: File,
}

/// Takes the data dir for this process, or says which process has it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            bail!(
                "data dir {} is in use by a running node (pid {}); each node needs its own: \
                 pass --data-dir DIR (or set INFERMESH_DATA_DIR) for this one",
                dir.display(),
                if pid.is_empty() { "unknown" } else { pid }
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(DataDirLock { _file: file })
}

/// The secret this node's mesh uses, and the addresses to join through.
pub struct Membership {
    pub secret: MeshSecret,
    pub seeds: Vec<String>,
}

/// Decides the node's mesh: the invite's when `--join` gave one (saved for restarts), else the
/// one saved in the data dir, else a new mesh of which this node is the first member.
pub fn resolve(dir: &Path, joins: &[String]) -> Result<Membership> {
    let saved = load_secret(dir)?;
    if !joins.is_empty() {
        let mut invites = Vec::new();
        for j in joins {
            invites.push(Invite::parse(j).map_err(|e| anyhow::anyhow!("--join: {e}"))?);
        }
        let secret = invites[0].secret.clone();
        if invites.iter().any(|i| i.secret != secret) {
            bail!("--join: the invite tokens are for different meshes; pass tokens of one mesh");
        }
        let seeds: Vec<String> = invites.into_iter().flat_map(|i| i.bootstrap).collect();
        match &saved {
            Some(s) if *s == secret => {}
            Some(s) => tracing::info!(
                old = %s.mesh_id(), new = %secret.mesh_id(),
                "this data dir belonged to another mesh; switching to the invite's"
            ),
            None => {}
        }
        write_atomic(&dir.join(SECRET_FILE), secret.as_bytes(), 0o600)?;
        write_atomic(&dir.join(SEEDS_FILE), seeds.join("\n").as_bytes(), 0o600)?;
        return Ok(Membership { secret, seeds });
    }
    if let Some(secret) = saved {
        let seeds = fs::read_to_string(dir.join(SEEDS_FILE))
            .map(|s| {
                s.lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Membership { secret, seeds });
    }
    let secret = MeshSecret::generate()?;
    write_atomic(&dir.join(SECRET_FILE), secret.as_bytes(), 0o600)?;
    tracing::info!(mesh = %secret.mesh_id(), "created a new mesh; this node is its first member");
    Ok(Membership {
        secret,
        seeds: Vec::new(),
    })
}

pub fn load_secret(dir: &Path) -> Result<Option<MeshSecret>> {
    let path = dir.join(SECRET_FILE);
    match fs::read(&path) {
        Ok(b) => {
            let Ok(b) = <[u8; 32]>::try_from(b.as_slice()) else {
                bail!(
                    "{} is corrupt (expected 32 bytes); move it away and join again with \
                     `--join <TOKEN>`",
                    path.display()
                );
            };
            Ok(Some(MeshSecret::from_bytes(b)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_node_creates_a_mesh_and_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let a = resolve(d.path(), &[]).unwrap();
        let b = resolve(d.path(), &[]).unwrap();
        assert_eq!(a.secret, b.secret);
        assert!(b.seeds.is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn joining_saves_the_invite_for_restarts() {
        let d = tempfile::tempdir().unwrap();
        let inv = Invite {
            secret: MeshSecret::from_bytes([3; 32]),
            bootstrap: vec!["127.0.0.2:7337".into()],
        };
        let m = resolve(d.path(), &[inv.encode()]).unwrap();
        assert_eq!(m.secret, inv.secret);
        let again = resolve(d.path(), &[]).unwrap();
        assert_eq!(again.secret, inv.secret);
        assert_eq!(again.seeds, ["127.0.0.2:7337"]);
    }

    #[test]
    fn bare_addresses_are_refused_with_the_way_to_get_a_token() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve(d.path(), &["127.0.0.1:7337".into()]).err().unwrap();
        assert!(e.to_string().contains("infermesh invite"), "{e}");
        assert!(!d.path().join(SECRET_FILE).exists());
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(d.path()).unwrap();
        let e = lock_data_dir(d.path()).err().unwrap().to_string();
        assert!(
            e.contains(&std::process::id().to_string()) && e.contains("--data-dir"),
            "{e}"
        );
    }
}
