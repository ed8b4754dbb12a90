//! `infermesh bench`: the router's overhead against a deterministic backend, the embedded engine's
//! speed directly and through HTTP, gossip convergence, and a node's cost with many peers. Each
//! suite adds rows to one table (measure, result, goal, PASS/MISS); ratios come from one run on
//! one machine. A benchmark, not a test: it exits 0 whatever the verdicts, and 1 only when a
//! suite could not run at all.

mod admission;
mod concurrency;
mod engine;
mod fixture;
mod mesh;
mod nginx;
mod nodes;
mod router;
mod scale;
mod split;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// Added latency and throughput of routing (local and through a peer) vs a direct backend.
    Router,
    /// Embedded llama.cpp tokens/s (prompt and generation), directly and through the HTTP API,
    /// and under 1, 4 and 8 concurrent clients at --slots 1, 2, 4 (one batch, and separate) and against llama-server.
    Engine,
    /// Gossip convergence, state propagation and dead-peer removal for 9 and 30 nodes.
    Mesh,
    /// /api/status and /api/events with many simulated peers; node RSS.
    Scale,
    /// Peer-verified admission with real nodes: join-to-routed for 3 and 9 nodes, and under load.
    Admission,
    /// A model split over 3 nodes (llama.cpp RPC through the peer channel) vs one llama-server:
    /// decode tok/s, TTFT and RPC bytes per token. Needs llama-server and rpc-server.
    Split,
    /// router, engine, mesh, scale, admission and split.
    All,
    /// Serve the deterministic OpenAI-compatible backend until killed (for tests).
    #[value(hide = true)]
    Fixture,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Suites to run.
    #[arg(value_enum, default_values_t = [Suite::All])]
    pub suites: Vec<Suite>,
    /// Sequential requests per path and mode for the router's latency percentiles.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Concurrent clients in the router's throughput runs.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds per router throughput run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Simulated peers (gossip members) for the scale suite. Each is a whole chitchat member
    /// holding the whole mesh's state, so this process needs O(N²) memory and CPU: on 2 cores
    /// about 500 is the most it keeps alive (1,000 reached only half of them listed).
    #[arg(long, default_value_t = 400)]
    pub peers: usize,
    /// Gossip interval of the simulated peers, in ms (the node itself keeps the default 200 ms).
    #[arg(long, default_value_t = 1000)]
    pub peer_gossip_ms: u64,
    /// Model cache for the engine suite [env: INFERMESH_MODEL_DIR; default as for `up`].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
    /// Also write the table, with the machine's details, as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// fixture: TCP port on 127.0.0.1 (0 picks one).
    #[arg(long, default_value_t = 0, hide = true)]
    pub port: u16,
    /// fixture: pause before each streamed chunk, in ms.
    #[arg(long, default_value_t = 0, hide = true)]
    pub chunk_delay_ms: u64,
}

/// One line of the result table.
pub struct Row {
    pub suite: &'static str,
    pub measure: String,
    pub result: String,
    pub goal: String,
    /// `None` when the row has no goal (context for another row).
    pub pass: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(
        &mut self,
        suite: &'static str,
        measure: impl Into<String>,
        result: impl Into<String>,
    ) {
        self.rows.push(Row {
            suite,
            measure: measure.into(),
            result: result.into(),
            goal: String::new(),
            pass: None,
        });
    }

    pub fn goal(
        &mut self,
        suite: &'static str,
        measure: impl Into<String>,
        result: impl Into<String>,
        goal: impl Into<String>,
        pass: bool,
    ) {
        self.rows.push(Row {
            suite,
            measure: measure.into(),
            result: result.into(),
            goal: goal.into(),
            pass: Some(pass),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("bench: {note}");
        self.notes.push(note);
    }

    fn markdown(&self, machine: &str, took: Duration) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{machine}\n");
        let _ = writeln!(s, "| suite | measure | result | goal | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for r in &self.rows {
            let verdict = match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {verdict} |",
                r.suite, r.measure, r.result, r.goal
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        let _ = writeln!(s, "\n(whole run {:.0} s)", took.as_secs_f64());
        s
    }

    fn print(&self, machine: &str, took: Duration) {
        let w = |f: fn(&Row) -> &str, min: usize| {
            self.rows
                .iter()
                .map(|r| f(r).chars().count())
                .max()
                .unwrap_or(0)
                .max(min)
        };
        let (ws, wm, wr, wg) = (
            w(|r| r.suite, 5),
            w(|r| &r.measure, 7),
            w(|r| &r.result, 6),
            w(|r| &r.goal, 4),
        );
        let pad =
            |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
        println!();
        println!("{machine}");
        println!(
            "{}  {}  {}  {}  verdict",
            pad("suite", ws),
            pad("measure", wm),
            pad("result", wr),
            pad("goal", wg)
        );
        for r in &self.rows {
            let verdict = match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            };
            println!(
                "{}  {}  {}  {}  {verdict}",
                pad(r.suite, ws),
                pad(&r.measure, wm),
                pad(&r.result, wr),
                pad(&r.goal, wg)
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!("(whole run {:.0} s)", took.as_secs_f64());
    }
}

/// Percentile (nearest rank, `p` in 1..=100) of sorted samples; zero for none.
pub fn percentile(sorted: &[Duration], p: u32) -> Duration {
    infermesh_state::stats::nearest_rank(sorted, p).unwrap_or(Duration::ZERO)
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// CPU model, cores, memory and OS, in one line.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = infermesh_api::app::machine_ram_gb();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string());
    format!(
        "machine: {cpu}, {cores} cores, {mem:.1} GB RAM, Linux {kernel}; infermesh {} ({} build)",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// The bench's own log lines: warnings only (1,000 simulated peers would each say hello).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFERMESH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,llama-cpp-2=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub async fn run(args: BenchArgs) -> Result<()> {
    init_logging();
    if args.suites.contains(&Suite::Fixture) {
        let opts = fixture::FixtureOptions {
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        };
        return fixture::serve_forever(args.port, opts).await;
    }
    let all = args.suites.contains(&Suite::All);
    let want = |s: Suite| all || args.suites.contains(&s);
    let started = Instant::now();
    let machine = machine();
    let mut report = Report::default();
    let mut failed = Vec::new();
    let model_dir = args
        .model_dir
        .clone()
        .unwrap_or_else(infermesh_backend::model_fetch::default_model_dir);
    if cfg!(debug_assertions) {
        report.note("debug build: timings are not representative; use `cargo build --release`");
    }
    for (suite, name) in [
        (Suite::Router, "router"),
        (Suite::Engine, "engine"),
        (Suite::Mesh, "mesh"),
        (Suite::Scale, "scale"),
        (Suite::Admission, "admission"),
        (Suite::Split, "split"),
    ] {
        if !want(suite) {
            continue;
        }
        eprintln!("bench: {name} …");
        let t0 = Instant::now();
        let result = match suite {
            Suite::Router => router::run(&args, &model_dir, &mut report).await,
            Suite::Engine => engine::run(&model_dir, &mut report).await,
            Suite::Mesh => mesh::run(&mut report).await,
            Suite::Scale => scale::run(&args, &model_dir, &mut report).await,
            Suite::Admission => admission::run(&model_dir, &mut report).await,
            Suite::Split => split::run(&model_dir, &mut report).await,
            Suite::All | Suite::Fixture => Ok(()),
        };
        match result {
            Ok(()) => eprintln!("bench: {name} done in {:.1} s", t0.elapsed().as_secs_f64()),
            Err(e) => {
                report.note(format!("{name} suite could not run: {e:#}"));
                failed.push(name);
            }
        }
    }
    let took = started.elapsed();
    report.print(&machine, took);
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown(&machine, took))?;
        eprintln!("bench: table written to {}", path.display());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "suites that could not run: {}",
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&xs, 50), Duration::from_millis(50));
        assert_eq!(percentile(&xs, 99), Duration::from_millis(99));
        assert_eq!(percentile(&xs, 100), Duration::from_millis(100));
        assert_eq!(percentile(&xs[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }
}
