//! Throughput under concurrent clients: a node's embedded engine at `--slots` 1, 2 and 4 (one
//! continuous batch, and separate contexts), and
//! llama-server (`-np 4`, continuous batching) on the same GGUF when it is installed, each at
//! 1, 4 and 8 clients sending streamed chat requests back to back. Aggregate completion tokens/s
//! and time to first token, measured in the same run on the same machine, one server at a time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::nodes::BenchNode;
use super::Report;

const SUITE: &str = "engine";
const CLIENTS: [usize; 3] = [1, 4, 8];
/// The node configurations measured, the default first (the baseline of the run): slots as one
/// continuous batch, and as separate contexts.
const CONFIGS: [(&str, &[&str]); 5] = [
    ("--slots 1", &["--slots", "1"]),
    ("--slots 2 (batch)", &["--slots", "2"]),
    ("--slots 4 (batch)", &["--slots", "4"]),
    (
        "--slots 2 --separate-slots",
        &["--slots", "2", "--separate-slots"],
    ),
    (
        "--slots 4 --separate-slots",
        &["--slots", "4", "--separate-slots"],
    ),
];
const ANSWER_TOKENS: u32 = 64;
/// Requests each client sends per measurement.
const PER_CLIENT: usize = 2;

/// One server under test: where its `/v1` is, and what to call it in the table.
#[derive(Clone)]
struct Target {
    label: String,
    base: String,
    model: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub tok_s: f64,
    pub ttft_p50_s: f64,
}

/// One streamed answer as a client sees it.
pub(super) struct Streamed {
    /// Completion tokens (the usage block's count, else the content chunks).
    pub tokens: u64,
    /// Time to the first content token.
    pub first: Duration,
    /// Time to the end of the stream.
    pub total: Duration,
}

/// POSTs `body` (a streamed chat request) to `url` and reads the answer to its end.
pub(super) async fn streamed(http: &reqwest::Client, url: &str, body: &Value) -> Result<Streamed> {
    let t0 = Instant::now();
    let mut resp = http.post(url).json(body).send().await?;
    if !resp.status().is_success() {
        bail!("{url} answered {}", resp.status());
    }
    let (mut first, mut tokens, mut chunks, mut buf) = (None, None, 0u64, String::new());
    while let Some(bytes) = resp.chunk().await? {
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:").map(str::trim) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            let content = v["choices"][0]["delta"]["content"].as_str();
            if content.is_some_and(|c| !c.is_empty()) {
                chunks += 1;
                first.get_or_insert_with(|| t0.elapsed());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = Some(n);
            }
        }
    }
    Ok(Streamed {
        tokens: tokens.unwrap_or(chunks),
        first: first.ok_or_else(|| anyhow!("{url}: a stream without content"))?,
        total: t0.elapsed(),
    })
}

/// One streamed request: (completion tokens, time to the first content token).
async fn one(http: &reqwest::Client, t: &Target, n: usize) -> Result<(u64, Duration)> {
    let body = json!({
        "model": t.model,
        // A different question per request: no server may answer from a prompt cache.
        "messages": [{"role": "user", "content": format!("Question {n}: in two sentences, why do meshes of machines fail over?")}],
        "max_tokens": ANSWER_TOKENS,
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let s = streamed(http, &format!("{}/chat/completions", t.base), &body)
        .await
        .with_context(|| t.label.clone())?;
    Ok((s.tokens, s.first))
}

async fn measure(http: &reqwest::Client, t: &Target, clients: usize) -> Result<Load> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, t) = (http.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..PER_CLIENT {
                out.push(one(&http, &t, c * PER_CLIENT + i).await?);
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let (mut tokens, mut ttft) = (0u64, Vec::new());
    for task in tasks {
        for (n, first) in task.await?? {
            tokens += n;
            ttft.push(first.as_secs_f64());
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    ttft.sort_by(f64::total_cmp);
    Ok(Load {
        tok_s: tokens as f64 / wall,
        ttft_p50_s: ttft[ttft.len() / 2],
    })
}

/// Warm-up, then each client count; one table row per count.
async fn sweep(
    http: &reqwest::Client,
    t: &Target,
    report: &mut Report,
) -> Result<Vec<(usize, Load)>> {
    one(http, t, 999).await.context("warm-up")?;
    let mut out = Vec::new();
    for clients in CLIENTS {
        let load = measure(http, t, clients).await?;
        report.row(
            SUITE,
            format!(
                "{} · {clients} client(s), {ANSWER_TOKENS}-token answers",
                t.label
            ),
            format!("{:.0} tok/s, TTFT p50 {:.2} s", load.tok_s, load.ttft_p50_s),
        );
        out.push((clients, load));
    }
    Ok(out)
}

/// `llama-server` on PATH, or where `scripts/build-llama-server` puts it.
fn llama_server() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("llama-server"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let built = PathBuf::from("target/llama-server/llama-server");
        built.is_file().then_some(built)
    })
}

/// `binary` on `model` with `extra` flags on a free loopback port, once `/health` answers:
/// the child (killed when dropped) and its base URL.
pub(super) async fn start_llama_server(
    binary: &Path,
    model: &Path,
    extra: &[&str],
    http: &reqwest::Client,
) -> Result<(tokio::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("-m")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    infermesh_backend::child::die_with_parent(&mut cmd);
    let child = cmd.spawn().context("cannot start llama-server")?;
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("llama-server did not become healthy within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((child, base))
}

async fn with_llama_server(
    binary: &Path,
    model: &Path,
    report: &mut Report,
) -> Result<Vec<(usize, Load)>> {
    // Unpooled: llama-server closes idle keep-alive connections on its own (even between one
    // client's back-to-back requests under load), and a request on one fails with "connection
    // closed before message completed". A fresh loopback connection costs well under 1 ms.
    let unpooled = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(300))
        .build()?;
    // Four sequences of 2,048 tokens each, batched together: llama-server's own way.
    let (mut child, base) =
        start_llama_server(binary, model, &["-np", "4", "-c", "8192"], &unpooled).await?;
    let t = Target {
        label: "llama-server -np 4".into(),
        base: format!("{base}/v1"),
        model: "smollm2".into(),
    };
    let out = sweep(&unpooled, &t, report).await;
    let _ = child.kill().await;
    out
}

/// The sweep for every slot count, each against `--slots 1` in the same run, then llama-server.
pub async fn run(model_path: &Path, model_dir: &Path, report: &mut Report) -> Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()?;
    let name = infermesh_backend::model_fetch::SMOLLM2_135M.name;
    // tok/s per slot count, at each client count.
    let mut by_slots: Vec<(&str, Vec<(usize, Load)>)> = Vec::new();
    for (k, (label, flags)) in CONFIGS.iter().enumerate() {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let node = BenchNode::serving_file(
            &format!("bench-slots-{k}"),
            model_path,
            name,
            &flags,
            model_dir,
            &http,
        )
        .await?;
        let t = Target {
            label: format!("infermesh {label}"),
            base: format!("{}/v1", node.url),
            model: name.into(),
        };
        let loads = sweep(&http, &t, report).await;
        node.stop().await;
        let loads = loads?;
        by_slots.push((label, loads));
    }
    // `--slots 1` (the default) is the baseline of the same run.
    let base = by_slots.first().map(|(_, l)| l.clone()).unwrap_or_default();
    for (k, clients) in CLIENTS.iter().enumerate() {
        let one = base
            .get(k)
            .map_or(0.0, |(_, l)| l.tok_s)
            .max(f64::MIN_POSITIVE);
        let ratios: Vec<String> = by_slots
            .iter()
            .skip(1)
            .filter_map(|(slots, loads)| {
                loads
                    .get(k)
                    .map(|(_, l)| format!("{slots}: {:.2}×", l.tok_s / one))
            })
            .collect();
        report.row(
            SUITE,
            format!("{clients} client(s): tok/s against --slots 1 (the default)"),
            ratios.join(", "),
        );
    }
    if let Some(quick) = llama_server()
        .and_then(|bin| std::fs::read_to_string(bin.with_file_name("QUICK_BUILD")).ok())
    {
        // CI's build: comparing against it would flatter infermesh.
        report.note(format!(
            "the llama-server used below was {}; scripts/build-llama-server without \
             INFERMESH_QUICK_TOOLS rebuilds it at full optimisation",
            quick.trim().trim_start_matches("built ")
        ));
    }
    match llama_server() {
        Some(bin) => match with_llama_server(&bin, model_path, report).await {
            Ok(theirs) => {
                for (label, ours) in &by_slots {
                    let ratios: Vec<String> = theirs
                        .iter()
                        .zip(ours)
                        .map(|((clients, l), (_, ours))| {
                            format!(
                                "{clients}: {:.2}×",
                                ours.tok_s / l.tok_s.max(f64::MIN_POSITIVE)
                            )
                        })
                        .collect();
                    report.row(
                        SUITE,
                        format!("infermesh {label} tok/s against llama-server -np 4, by clients"),
                        ratios.join(", "),
                    );
                }
            }
            Err(e) => report.note(format!("llama-server comparison skipped: {e:#}")),
        },
        None => report.note(
            "llama-server comparison skipped: no llama-server on PATH or in target/llama-server \
             (scripts/build-llama-server builds one)",
        ),
    }
    Ok(())
}
