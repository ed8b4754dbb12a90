//! `up`'s part in splitting models: what this node offers, where llama.cpp's programs are, and
//! whether the model it was asked to serve must be split across the mesh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use infermesh_api::split::host::HostSetup;
use infermesh_backend::embedded::ModelSource;
use infermesh_state::split::{format_gb, offer};
use infermesh_state::split_role::need_for;

/// The program `name`: the flag, the environment, next to this executable, the build script's
/// output, else the bare name for `PATH`.
pub fn find_tool(name: &str, flag: Option<&Path>, env: &str) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    let built = PathBuf::from("target/llama-server").join(name);
    beside
        .into_iter()
        .chain([built])
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Bytes of memory the kernel says are available now (`MemAvailable`), 0 if unknown.
fn available_bytes() -> u64 {
    infermesh_api::app::meminfo_kb("MemAvailable").map_or(0, |kb| kb.saturating_mul(1024))
}

/// What this node offers splits: `--max-mem` when given (an operator's cap, never more than the
/// machine has), else what is available now.
pub fn offer_bytes(max_mem_gb: Option<f64>) -> u64 {
    let available = available_bytes();
    match max_mem_gb {
        Some(gb) => {
            let cap = (gb * 1e9) as u64;
            if available == 0 {
                cap
            } else {
                cap.min(available)
            }
        }
        None => available,
    }
}

/// `--max-mem`'s parser: a positive number of decimal gigabytes.
pub fn parse_gb(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb > 0.0 => Ok(gb),
        _ => Err(format!(
            "`{s}` is not a positive number of gigabytes (e.g. 0.5 or 24)"
        )),
    }
}

/// The model's file, if it is on disk now (a known model not fetched yet is not).
fn local_file(source: &ModelSource) -> Option<PathBuf> {
    let p = match source {
        ModelSource::File(p) => p.clone(),
        ModelSource::Fetch { model, cache_dir } => cache_dir.join(model.file_name),
    };
    p.is_file().then_some(p)
}

/// What serving the model takes when this node cannot hold it alone, else `None` (it serves
/// it itself, as always). A file whose header cannot be read is served as always too: the
/// engine then says what is wrong with it.
pub struct SplitChoice<'a> {
    pub model: &'a str,
    pub source: &'a ModelSource,
    pub own_offer: u64,
    pub n_ctx: u32,
    pub threads: u32,
    pub llama_server: PathBuf,
}

pub fn host_setup(c: SplitChoice<'_>) -> Option<HostSetup> {
    let path = local_file(c.source)?;
    let shape = match infermesh_backend::gguf::model_shape(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot size {} for split planning: {e}", c.model);
            return None;
        }
    };
    let need = need_for(&shape, c.n_ctx);
    if offer(c.own_offer) >= need.total_bytes() {
        return None;
    }
    tracing::info!(model = c.model, need = %format_gb(need.total_bytes()), offer = %format_gb(offer(c.own_offer)),
        layers = need.layers, "the model does not fit on this node alone: it will be split across the mesh, with this node as host");
    Some(HostSetup {
        model: c.model.to_string(),
        path,
        need,
        own_offer: c.own_offer,
        llama_server: c.llama_server,
        n_ctx: c.n_ctx,
        threads: c.threads,
        startup: Duration::from_secs(180),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_mem_takes_positive_gigabytes_only() {
        assert_eq!(parse_gb("0.5"), Ok(0.5));
        assert_eq!(parse_gb(" 24 "), Ok(24.0));
        for bad in ["0", "-1", "abc", "inf", "NaN", ""] {
            assert!(
                parse_gb(bad).unwrap_err().contains("positive number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_explicit_tool_path_wins_and_a_missing_one_falls_back_to_the_bare_name() {
        let p = Path::new("/opt/x/llama-server");
        assert_eq!(
            find_tool("llama-server", Some(p), "INFERMESH_NO_SUCH_VAR"),
            p
        );
        assert_eq!(
            find_tool("no-such-tool-xyz", None, "INFERMESH_NO_SUCH_VAR"),
            PathBuf::from("no-such-tool-xyz")
        );
    }

    #[test]
    fn the_offer_is_capped_by_max_mem() {
        assert_eq!(offer_bytes(Some(0.1)), 100_000_000);
        assert!(offer_bytes(None) > 0, "MemAvailable is readable here");
    }
}
