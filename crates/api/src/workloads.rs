//! What placement keeps: the workload groups this node knows (verified before they got here,
//! persisted in `groups.json`), and how its own replicas came to be (placed by the mesh or by
//! an operator, replacing whom), which its record tells the mesh.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use infermesh_mesh::group::{merge, GroupDecl};
use infermesh_mesh::record::{DiskModel, ReplicaClaim};
use infermesh_state::demand::DemandPolicy;

pub const GROUPS_FILE: &str = "groups.json";

/// How one of this node's replicas came to be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Started by placement: placement may release it.
    pub placed: bool,
    /// A migration's target: the node it replaces.
    pub replaces: Option<String>,
}

#[derive(Debug, Default)]
pub struct Placement {
    groups: Mutex<BTreeMap<String, GroupDecl>>,
    file: Option<PathBuf>,
    origins: Mutex<BTreeMap<String, Origin>>,
    on_disk: Mutex<Vec<DiskModel>>,
    demand: Mutex<BTreeMap<String, u32>>,
    /// The model a start or stop task is working on here now: one engine, one change at a time.
    busy: Mutex<Option<String>>,
    pub policy: DemandPolicy,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Placement {
    /// Reads `groups.json` from `data_dir`. An unreadable file is set aside (`.bad`) and named
    /// in the log: groups come back from the mesh, which every member relays.
    pub fn load(data_dir: Option<&Path>, policy: DemandPolicy) -> Self {
        let file = data_dir.map(|d| d.join(GROUPS_FILE));
        let mut groups = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Vec<GroupDecl>>(&bytes) {
                    Ok(list) => {
                        merge(&mut groups, &list);
                    }
                    Err(e) => {
                        let bad = path.with_extension("json.bad");
                        let _ = std::fs::rename(path, &bad);
                        tracing::warn!(error = %e, moved_to = %bad.display(),
                            "workload groups file unreadable; set aside, groups will be relearnt from the mesh");
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot read workload groups")
                }
            }
        }
        Self {
            groups: Mutex::new(groups),
            file,
            policy,
            ..Self::default()
        }
    }

    /// Every declaration held, tombstones included (what the record relays).
    pub fn groups(&self) -> Vec<GroupDecl> {
        lock(&self.groups).values().cloned().collect()
    }

    pub fn group(&self, model: &str) -> Option<GroupDecl> {
        lock(&self.groups).get(model).cloned()
    }

    /// Whether `d` would change what is held (so it is worth verifying).
    pub fn is_news(&self, d: &GroupDecl) -> bool {
        lock(&self.groups)
            .get(&d.model)
            .is_none_or(|cur| d.supersedes(cur))
    }

    /// Takes verified declarations; returns the models that changed, after saving them.
    pub fn offer(&self, verified: &[GroupDecl]) -> Result<Vec<String>, String> {
        let mut groups = lock(&self.groups);
        let mut next = groups.clone();
        let changed = merge(&mut next, verified);
        if changed.is_empty() {
            return Ok(changed);
        }
        if let Some(path) = &self.file {
            save(path, &next.values().cloned().collect::<Vec<_>>())?;
        }
        *groups = next;
        Ok(changed)
    }

    pub fn origin(&self, model: &str) -> Origin {
        lock(&self.origins).get(model).cloned().unwrap_or_default()
    }

    /// This node's replica claims for its record: each assigned model (and whether it is
    /// ready) with how it came to be.
    pub fn claims(&self, assigned: Vec<(String, bool)>) -> Vec<ReplicaClaim> {
        assigned
            .into_iter()
            .map(|(model, ready)| {
                let origin = self.origin(&model);
                ReplicaClaim {
                    model,
                    ready,
                    placed: origin.placed,
                    replaces: origin.replaces,
                }
            })
            .collect()
    }

    pub fn set_origin(&self, model: &str, origin: Option<Origin>) {
        let mut o = lock(&self.origins);
        match origin {
            Some(x) => o.insert(model.to_string(), x),
            None => o.remove(model),
        };
    }

    pub fn on_disk(&self) -> Vec<DiskModel> {
        lock(&self.on_disk).clone()
    }

    pub fn set_on_disk(&self, list: Vec<DiskModel>) {
        *lock(&self.on_disk) = list;
    }

    pub fn demand(&self) -> BTreeMap<String, u32> {
        lock(&self.demand).clone()
    }

    pub fn set_demand(&self, d: BTreeMap<String, u32>) {
        *lock(&self.demand) = d;
    }

    /// Claims this node for one start or stop of `model`: false while any start or stop runs
    /// (one engine, one change at a time), so two callers racing for an idle node cannot both
    /// think they started it.
    pub fn begin(&self, model: &str) -> bool {
        let mut busy = lock(&self.busy);
        if busy.is_some() {
            return false;
        }
        *busy = Some(model.to_string());
        true
    }

    pub fn end(&self, model: &str) {
        let mut busy = lock(&self.busy);
        if busy.as_deref() == Some(model) {
            *busy = None;
        }
    }

    pub fn is_busy(&self) -> bool {
        lock(&self.busy).is_some()
    }
}

fn save(path: &Path, groups: &[GroupDecl]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let text = serde_json::to_vec_pretty(groups).map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".groups")
            .tempfile_in(dir)?;
        tmp.write_all(&text)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn decl(ts: i64, n: u32) -> GroupDecl {
        GroupDecl::sign(
            &SigningKey::from_bytes(&[3; 32]),
            "m0",
            "m",
            n,
            0,
            8,
            None,
            ts,
        )
    }

    #[test]
    fn groups_survive_a_restart_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::load(Some(dir.path()), DemandPolicy::default());
        assert_eq!(p.offer(&[decl(1, 2)]).unwrap(), vec!["m".to_string()]);
        assert!(p.offer(&[decl(1, 2)]).unwrap().is_empty());
        let again = Placement::load(Some(dir.path()), DemandPolicy::default());
        assert_eq!(again.group("m").unwrap().replicas, 2);
        assert!(!again.is_news(&decl(1, 2)) && again.is_news(&decl(2, 3)));
        std::fs::write(dir.path().join(GROUPS_FILE), b"{not json").unwrap();
        let broken = Placement::load(Some(dir.path()), DemandPolicy::default());
        assert!(broken.groups().is_empty());
        assert!(dir.path().join("groups.json.bad").exists());
    }

    #[test]
    fn one_start_or_stop_at_a_time_whatever_the_model() {
        let p = Placement::default();
        assert!(p.begin("a"));
        assert!(
            !p.begin("a") && !p.begin("b"),
            "a second claim while one runs"
        );
        assert!(p.is_busy());
        p.end("a");
        assert!(!p.is_busy() && p.begin("b"));
    }
}
