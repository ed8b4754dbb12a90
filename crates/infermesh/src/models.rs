//! Which model a node serves at start: the one named with `--model`, else the one the mesh needs
//! among the models already on disk, else the default model (fetched once into the cache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use infermesh_backend::embedded::ModelSource;
use infermesh_backend::model_fetch::SMOLLM2_135M;
use infermesh_mesh::MeshHandle;
use infermesh_state::{choose_model, NodeState};

pub use infermesh_backend::disk::model_name_of;

/// `--model PATH`: the file must be there now, not discovered missing after the node is up.
pub fn explicit(path: &Path, name: Option<String>) -> Result<(String, ModelSource)> {
    // Not `is_file()`: a named pipe or device is a legitimate (if slow) model source.
    let problem = if !path.exists() {
        Some("does not exist")
    } else if path.is_dir() {
        Some("is a directory")
    } else {
        None
    };
    if let Some(problem) = problem {
        bail!(
            "model file {} {problem} (pass a .gguf file, or omit --model to use the default model)",
            path.display()
        );
    }
    let name = name.unwrap_or_else(|| model_name_of(path));
    Ok((name, ModelSource::File(path.to_path_buf())))
}

/// Every `.gguf` in the cache directory, by served name.
fn on_disk(dir: &Path) -> BTreeMap<String, ModelSource> {
    infermesh_backend::disk::on_disk(dir)
        .into_iter()
        .map(|(name, f)| (name, ModelSource::of_disk(f, dir)))
        .collect()
}

/// Serving replicas of each model among the live peers.
fn replicas(mesh: &MeshHandle) -> BTreeMap<String, u32> {
    let mut r = BTreeMap::new();
    for p in mesh.peers() {
        if p.state == NodeState::Serving {
            for m in p.record.models {
                *r.entry(m).or_default() += 1;
            }
        }
    }
    r
}

/// Picks the model for a node started without `--model`, logging one line that says why.
/// With seeds to join, it first gives gossip a moment so the choice sees the mesh. A `standby`
/// node only registers a model as available and says so.
pub async fn auto_assign(
    dir: PathBuf,
    mesh: &MeshHandle,
    joining: bool,
    standby: bool,
) -> (String, ModelSource) {
    let mut disk = on_disk(&dir);
    if disk.is_empty() && standby {
        tracing::info!(
            "standby: no model on disk; {} is registered and fetched when assigned",
            SMOLLM2_135M.name
        );
    } else if disk.is_empty() {
        tracing::info!(
            model = SMOLLM2_135M.name,
            "serving {}: no model on disk yet, fetching the default model into {}",
            SMOLLM2_135M.name,
            dir.display()
        );
    }
    if disk.is_empty() {
        return (
            SMOLLM2_135M.name.to_string(),
            ModelSource::Fetch {
                model: SMOLLM2_135M,
                cache_dir: dir,
            },
        );
    }
    if standby {
        let (name, source) = disk.pop_first().expect("disk is not empty");
        tracing::info!(model = %name, "standby: idle capacity, {name} on disk but not assigned");
        return (name, source);
    }
    if joining {
        wait_for_peers(mesh, Duration::from_secs(2)).await;
    }
    let names: Vec<String> = disk.keys().cloned().collect();
    let choice = choose_model(&names, &replicas(mesh)).expect("disk is not empty");
    tracing::info!(model = %choice.model, "{}", choice.reason);
    let source = disk.remove(&choice.model).expect("chosen from disk");
    (choice.model, source)
}

/// Returns once some peer is visible and the view has been quiet briefly, or at `limit`.
async fn wait_for_peers(mesh: &MeshHandle, limit: Duration) {
    let start = Instant::now();
    let mut changes = mesh.subscribe();
    while start.elapsed() < limit {
        let quiet = tokio::time::timeout(Duration::from_millis(300), changes.changed()).await;
        if quiet.is_err() && !mesh.peers().is_empty() {
            return;
        }
    }
}
