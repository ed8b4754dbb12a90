//! Samples what this node's process and machine use (CPU, memory, and NVIDIA GPUs through
//! `nvidia-smi` where it is installed) every few seconds, for `/api/status` and the gossiped
//! record. Linux `/proc` only; elsewhere the node reports no usage rather than zeros. Parsing
//! and arithmetic: `infermesh_state::usage`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_state::usage::{
    cpu_between, parse_meminfo, parse_nvidia_smi, parse_proc_stat, parse_self_stat,
    parse_statm_rss, CpuSample, GpuUse, Usage,
};

/// Often enough for a live chart, rare enough that reading four small files costs nothing.
pub const EVERY: Duration = Duration::from_secs(2);
/// Linux's page size on every platform this runs on; `statm` counts pages.
const PAGE_BYTES: u64 = 4096;

/// The latest sample, shared by status and record.
#[derive(Debug, Default)]
pub struct Meter {
    last: Mutex<Option<CpuSample>>,
    /// The GPUs' last sample; `None` on a machine without `nvidia-smi` (or where it fails).
    gpu: Mutex<Option<GpuUse>>,
    now: Mutex<Option<Usage>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Meter {
    /// The latest usage; `None` before the second sample (CPU use needs two) or off Linux.
    pub fn get(&self) -> Option<Usage> {
        *lock(&self.now)
    }

    /// Takes one sample now.
    pub fn sample(&self) {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let cpu = (|| {
            let (machine_busy, machine_total) = parse_proc_stat(&read("/proc/stat")?)?;
            let process = parse_self_stat(&read("/proc/self/stat")?)?;
            Some(CpuSample {
                machine_busy,
                machine_total,
                process,
            })
        })();
        let mem = read("/proc/meminfo").and_then(|t| parse_meminfo(&t));
        let rss = read("/proc/self/statm").and_then(|t| parse_statm_rss(&t, PAGE_BYTES));
        let before = std::mem::replace(&mut *lock(&self.last), cpu);
        let shares = before.zip(cpu).and_then(|(a, b)| cpu_between(a, b));
        let gpu = *lock(&self.gpu);
        let usage = match (shares, mem, rss) {
            (Some((cpu_pct, machine_cpu_pct)), Some((used, total)), Some(rss_bytes)) => {
                Some(Usage {
                    cpu_pct,
                    machine_cpu_pct,
                    cores: std::thread::available_parallelism()
                        .map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
                    rss_bytes,
                    mem_used_bytes: used,
                    mem_total_bytes: total,
                    gpu_pct: gpu.map_or(0.0, |g| g.pct),
                    vram_used_bytes: gpu.map_or(0, |g| g.used_bytes),
                    vram_total_bytes: gpu.map_or(0, |g| g.total_bytes),
                })
            }
            _ => None,
        };
        *lock(&self.now) = usage;
    }

    /// Samples every [`EVERY`]; `up`'s publish loop carries a changed sample to the mesh.
    pub fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut smi = true;
            loop {
                if smi {
                    smi = me.sample_gpus().await;
                }
                me.sample();
                tokio::time::sleep(EVERY).await;
            }
        });
    }

    /// Asks `nvidia-smi` what the GPUs use; `false` when there is none to ask (not installed,
    /// or it fails: a machine without a working NVIDIA driver), so it is not asked again.
    async fn sample_gpus(&self) -> bool {
        let run = tokio::process::Command::new("nvidia-smi")
            .args([
                "--query-gpu=utilization.gpu,memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(EVERY, run).await {
            Ok(Ok(out)) if out.status.success() => out,
            Ok(Ok(out)) => {
                tracing::info!(status = %out.status, "nvidia-smi failed; GPU use is not reported");
                return false;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "cannot run nvidia-smi; GPU use is not reported");
                return false;
            }
            // Slow this once (a driver waking up): try again next time.
            Err(_) => return true,
        };
        *lock(&self.gpu) = parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_samples_give_this_processs_use_on_linux() {
        let m = Meter::default();
        m.sample();
        assert_eq!(m.get(), None, "CPU use needs two samples");
        // Burn a little CPU so the second sample has something to measure.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(150) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(x);
        m.sample();
        let u = m.get().expect("a sample on Linux");
        assert!(u.rss_bytes > 1 << 20, "{u:?}");
        assert!(
            u.mem_used_bytes > 0 && u.mem_used_bytes <= u.mem_total_bytes,
            "{u:?}"
        );
        assert!(u.cpu_pct > 0.0 && u.machine_cpu_pct > 0.0, "{u:?}");
        assert!(u.cores >= 1);
    }
}
