//! What a node *uses* of its machine (CPU and memory), as opposed to what the machine has.
//!
//! The text formats are Linux's `/proc` files; reading them is the caller's I/O, parsing and the
//! arithmetic between two samples live here so they are tested without a kernel. Anything that
//! does not parse reads as "unknown" (`None`), never as zero: a dashboard that says 0 % CPU for a
//! node it cannot measure would lie.

use serde::{Deserialize, Serialize};

/// One node's use of its machine, as gossiped and shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// CPU time of the node's own process (engine threads included) over the last sample
    /// interval, in percent of the whole machine (all cores = 100).
    pub cpu_pct: f32,
    /// The whole machine's CPU use over the same interval, percent.
    pub machine_cpu_pct: f32,
    /// Cores the machine has.
    pub cores: u32,
    /// Resident memory of the node's process, bytes.
    pub rss_bytes: u64,
    /// Machine memory in use (total minus available), bytes.
    pub mem_used_bytes: u64,
    /// Machine memory, bytes.
    pub mem_total_bytes: u64,
    /// GPU use where the machine has NVIDIA GPUs (`nvidia-smi`), over all of them: utilisation
    /// percent (their mean) and VRAM in use and in all. `vram_total_bytes` 0: no GPU known.
    pub gpu_pct: f32,
    pub vram_used_bytes: u64,
    pub vram_total_bytes: u64,
}

/// What all the GPUs of a machine use now: mean utilisation percent, VRAM used and total bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuUse {
    pub pct: f32,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// The GPUs in `nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total
/// --format=csv,noheader,nounits` (one line per GPU, MiB), summed; `None` when no line parses.
/// A GPU that reports `[N/A]` for utilisation still counts its memory.
pub fn parse_nvidia_smi(text: &str) -> Option<GpuUse> {
    const MIB: u64 = 1 << 20;
    let (mut pcts, mut used, mut total, mut gpus) = (Vec::new(), 0u64, 0u64, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [util, mem_used, mem_total] = f[..] else {
            continue;
        };
        let (Ok(u), Ok(t)) = (mem_used.parse::<u64>(), mem_total.parse::<u64>()) else {
            continue;
        };
        if let Ok(p) = util.parse::<f32>() {
            pcts.push(p);
        }
        used += u.min(t) * MIB;
        total += t * MIB;
        gpus += 1;
    }
    (gpus > 0).then(|| GpuUse {
        pct: if pcts.is_empty() {
            0.0
        } else {
            pcts.iter().sum::<f32>() / pcts.len() as f32
        },
        used_bytes: used,
        total_bytes: total,
    })
}

impl Usage {
    /// A peer's claim made safe to show and compare: NaN and out-of-range percentages (a hostile
    /// or broken peer) are clamped, used memory never exceeds total.
    pub fn sanitized(mut self) -> Self {
        let pct = |x: f32| {
            if x.is_finite() {
                x.clamp(0.0, 100.0)
            } else {
                0.0
            }
        };
        self.cpu_pct = pct(self.cpu_pct);
        self.machine_cpu_pct = pct(self.machine_cpu_pct);
        self.gpu_pct = pct(self.gpu_pct);
        self.mem_used_bytes = self.mem_used_bytes.min(self.mem_total_bytes);
        self.vram_used_bytes = self.vram_used_bytes.min(self.vram_total_bytes);
        self
    }

    /// Coarsened for gossip: a record is republished to every member when it changes, so CPU in
    /// 5 % steps and memory in 16 MiB steps keep sampling noise from republishing it each time.
    pub fn coarse(mut self) -> Self {
        const STEP: u64 = 16 << 20;
        let five = |x: f32| (x / 5.0).round() * 5.0;
        self.cpu_pct = five(self.cpu_pct);
        self.machine_cpu_pct = five(self.machine_cpu_pct);
        self.gpu_pct = five(self.gpu_pct);
        self.rss_bytes = self.rss_bytes / STEP * STEP;
        self.mem_used_bytes = self.mem_used_bytes / STEP * STEP;
        self.vram_used_bytes = self.vram_used_bytes / STEP * STEP;
        self
    }
}

/// Cumulative CPU counters at one moment: the machine's busy and total jiffies (`/proc/stat`)
/// and the process's own (`/proc/self/stat`, user + system).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub machine_busy: u64,
    pub machine_total: u64,
    pub process: u64,
}

/// Percent of the machine used by the process and by everything, between two samples; `None`
/// when no time passed or a counter went backwards (a reset, a wrapped counter).
pub fn cpu_between(before: CpuSample, after: CpuSample) -> Option<(f32, f32)> {
    let total = after.machine_total.checked_sub(before.machine_total)?;
    let busy = after.machine_busy.checked_sub(before.machine_busy)?;
    let process = after.process.checked_sub(before.process)?;
    if total == 0 {
        return None;
    }
    let pct = |x: u64| (x as f64 * 100.0 / total as f64).min(100.0) as f32;
    Some((pct(process), pct(busy)))
}

/// The aggregate `cpu` line of `/proc/stat`: (busy, total) jiffies. Idle and iowait are idle;
/// guest time is already inside user and nice, so it is not added twice.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `/proc/self/stat`: the process's utime + stime, in jiffies. The command name (field 2) is
/// in parentheses and may contain spaces or ')' itself, so fields are counted from the last ')'.
pub fn parse_self_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `/proc/self/statm`: resident pages, times the page size.
pub fn parse_statm_rss(text: &str, page_bytes: u64) -> Option<u64> {
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_bytes)
}

/// `/proc/meminfo`: (used, total) bytes, used = MemTotal - MemAvailable.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = kib("MemTotal:")?.checked_mul(1024)?;
    let available = kib("MemAvailable:")?.checked_mul(1024)?;
    Some((total.saturating_sub(available), total))
}

/// "87 %" for a known share of the machine.
pub fn format_pct(pct: f32) -> String {
    format!("{:.0}%", pct)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nvidia_smi_lines_are_summed_over_gpus() {
        // Two GPUs as `nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total
        // --format=csv,noheader,nounits` prints them; a third reports no utilisation.
        let g = parse_nvidia_smi("30, 1024, 81920\n50, 2048, 81920\n[N/A], 0, 16384\n").unwrap();
        assert_eq!(g.pct, 40.0);
        assert_eq!(g.used_bytes, 3072 << 20);
        assert_eq!(g.total_bytes, (81920 * 2 + 16384) << 20);
        assert_eq!(parse_nvidia_smi(""), None);
        assert_eq!(parse_nvidia_smi("No devices were found"), None);
        // Used above total (a broken report) is capped.
        assert_eq!(
            parse_nvidia_smi("1, 900, 100").unwrap().used_bytes,
            100 << 20
        );
    }

    use super::*;

    const STAT: &str = "cpu  4705 356 584 3699 23 0 15 0 0 0\ncpu0 1393 280 290 1822 7 0 8 0 0 0\n";

    #[test]
    fn the_machine_line_of_proc_stat_splits_into_busy_and_total() {
        // user+nice+system+irq+softirq = 4705+356+584+0+15; idle+iowait = 3699+23.
        assert_eq!(parse_proc_stat(STAT), Some((5660, 9382)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None, "no aggregate line");
        assert_eq!(parse_proc_stat("cpu  1 2 x 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn process_times_are_read_after_the_last_parenthesis() {
        let stat = "4242 (infer mesh) x) S 1 4242 4242 0 -1 4194560 2500 0 0 0 150 30 0 0 20 0 9 0";
        assert_eq!(parse_self_stat(stat), Some(180));
        assert_eq!(parse_self_stat("4242 (no end"), None);
        assert_eq!(parse_self_stat("4242 (x) S 1 2"), None, "too few fields");
    }

    #[test]
    fn memory_comes_from_statm_and_meminfo() {
        assert_eq!(
            parse_statm_rss("12000 5000 300 1 0 900 0\n", 4096),
            Some(5000 * 4096)
        );
        assert_eq!(parse_statm_rss("12000\n", 4096), None);
        let info = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            parse_meminfo(info),
            Some((4_000_000 * 1024, 24_000_000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None, "no MemAvailable");
    }

    #[test]
    fn cpu_use_between_samples_is_a_share_of_the_machine() {
        let a = CpuSample {
            machine_busy: 1000,
            machine_total: 2000,
            process: 100,
        };
        let b = CpuSample {
            machine_busy: 1150,
            machine_total: 2200,
            process: 150,
        };
        assert_eq!(cpu_between(a, b), Some((25.0, 75.0)));
        assert_eq!(cpu_between(a, a), None, "no time passed");
        assert_eq!(cpu_between(b, a), None, "counters went back");
    }

    #[test]
    fn a_peers_claim_is_clamped_and_gossip_is_coarse() {
        let u = Usage {
            cpu_pct: f32::NAN,
            machine_cpu_pct: 250.0,
            cores: 2,
            rss_bytes: (232 << 20) + 12345,
            mem_used_bytes: 10,
            mem_total_bytes: 5,
            gpu_pct: 300.0,
            vram_used_bytes: 9,
            vram_total_bytes: 4,
        }
        .sanitized();
        assert_eq!((u.gpu_pct, u.vram_used_bytes), (100.0, 4));
        assert_eq!(
            (u.cpu_pct, u.machine_cpu_pct, u.mem_used_bytes),
            (0.0, 100.0, 5)
        );
        let c = Usage { cpu_pct: 37.6, ..u }.coarse();
        assert_eq!((c.cpu_pct, c.rss_bytes), (40.0, 224 << 20));
        assert_eq!(format_pct(37.6), "38%");
    }
}
