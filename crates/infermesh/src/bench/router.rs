//! Router overhead: the same streamed and non-streamed chat completions sent (a) straight to the
//! deterministic fixture, (b) to node A whose `openai` backend is the fixture (local routing) and
//! (c) to client node C, which routes to A (one peer hop), and (d) when nginx is installed, to
//! nginx as a plain reverse proxy in front of the fixture: the yardstick for one relaying hop.
//! Latency from sequential requests, interleaved across paths so drift hits all alike;
//! throughput from concurrent clients, streamed and not.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::fixture::{self, FixtureOptions, MODEL, PACED_MODEL};
use super::nodes::{cpu_time, rss_of, BenchNode};
use super::{ms, percentile, BenchArgs, Report};

const SUITE: &str = "router";
const NGINX: &str = "nginx (client → nginx → backend)";
/// Goals from the issue: what routing may add at the median, and the throughput it must keep.
const GOAL_P50_ADDED: Duration = Duration::from_micros(500);
const GOAL_THROUGHPUT: f64 = 0.9;
/// Against nginx relaying the same requests: at most this multiple of its added p50 …
const GOAL_VS_NGINX_P50: f64 = 2.0;
/// … and at least this share of its throughput.
const GOAL_VS_NGINX_THROUGHPUT: f64 = 0.5;

#[derive(Clone)]
struct Route {
    name: &'static str,
    /// Base URL ending in `/v1`.
    base: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("plain HTTP client")
}

fn body(model: &str, stream: bool) -> Vec<u8> {
    json!({"model": model, "stream": stream, "max_tokens": 16, "temperature": 0,
           "messages": [{"role": "user", "content": "Say something."}]})
    .to_string()
    .into_bytes()
}

/// One request to the end of its body; `Err` when the answer is not a whole completion.
async fn one(http: &reqwest::Client, url: &str, body: &[u8], stream: bool) -> Result<Duration> {
    let t0 = Instant::now();
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&bytes);
    let whole = if stream {
        text.contains("[DONE]") && text.contains("farm.")
    } else {
        text.contains("farm.")
    };
    if !status.is_success() || !whole {
        bail!(
            "{url}: {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    Ok(took)
}

async fn register(
    http: &reqwest::Client,
    node: &BenchNode,
    id: &str,
    model: &str,
    base: &str,
) -> Result<()> {
    let resp = http
        .post(format!("{}/admin/v1/nodes", node.url))
        .json(&json!({"id": id, "driver": "openai", "url": base,
                      "models": [{"name": model}], "serve": model}))
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "registering {id}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Requests completed per second by `conc` clients looping for `secs`; errors counted apart.
async fn throughput(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    stream: bool,
    conc: usize,
    secs: f64,
) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.to_string(), body.to_vec());
            let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match one(&http, &url, &body, stream).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

/// Samples both nodes' RSS every 50 ms until dropped; returns the peaks.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(f64, f64)>,
}

impl RssSampler {
    fn start(a: u32, c: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut pa, mut pc) = (0f64, 0f64);
            while !s.load(Ordering::Relaxed) {
                pa = pa.max(rss_of(a).0);
                pc = pc.max(rss_of(c).0);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (pa, pc)
        });
        Self { stop, task }
    }

    async fn peaks(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or((0.0, 0.0))
    }
}

pub async fn run(args: &BenchArgs, model_dir: &Path, report: &mut Report) -> Result<()> {
    let fixture = fixture::start(([127, 0, 0, 1], 0).into(), FixtureOptions::default()).await?;
    // A schedule whose first round starts in 4 s and whose epoch outlasts the bench: A is
    // validated once and stays in the active set C routes to.
    let now = infermesh_mesh::unix_now_ms();
    let spec = format!("{}:600000:3000", now + 4000);
    let a = BenchNode::start(
        "bench-a",
        &["--standby".into(), "--schedule-spec".into(), spec.clone()],
        model_dir,
    )
    .await?;
    let http = client();
    for (id, model) in [("fixture", MODEL), ("fixture-paced", PACED_MODEL)] {
        register(&http, &a, id, model, &fixture.base_url()).await?;
    }
    let c = BenchNode::start(
        "bench-c",
        &[
            "--client".into(),
            "--schedule-spec".into(),
            spec,
            "--join".into(),
            a.invite.clone(),
        ],
        model_dir,
    )
    .await?;
    a.wait_status(
        &http,
        "A serving both fixture models",
        Duration::from_secs(20),
        |s| s["node_state"] == "serving" && s["models"].as_array().is_some_and(|m| m.len() == 2),
    )
    .await?;
    let (idle_a, _) = a.rss_mib();
    let (idle_c, _) = c.rss_mib();
    c.wait_status(
        &http,
        "C routes to A (A validated in the round)",
        Duration::from_secs(30),
        |s| {
            s["peers"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["name"] == "bench-a"
                        && p["state"] == "serving"
                        && p["participation"] == "active"
                })
            })
        },
    )
    .await
    .context("A never became routable from C")?;

    let mut paths = vec![
        Route {
            name: "direct",
            base: fixture.base_url(),
        },
        Route {
            name: "local (client → A → backend)",
            base: format!("{}/v1", a.url),
        },
        Route {
            name: "peer (client → C → A → backend)",
            base: format!("{}/v1", c.url),
        },
    ];
    // Held until the suite ends: dropping it stops nginx.
    let _nginx = match super::nginx::find() {
        Some(bin) => match super::nginx::start(&bin, fixture.addr).await {
            Ok(n) => {
                paths.push(Route {
                    name: NGINX,
                    base: n.base_url(),
                });
                Some(n)
            }
            Err(e) => {
                report.note(format!(
                    "nginx found but not started, so no nginx column: {e:#}"
                ));
                None
            }
        },
        None => {
            report.note(
                "no nginx (PATH, /usr/sbin or INFERMESH_NGINX): the comparison with a plain \
                 reverse proxy was skipped (Debian: apt-get install nginx)",
            );
            None
        }
    };
    let nginx_at = paths.iter().position(|p| p.name == NGINX);

    // Warm up every path (connections, allocator, first-request lazies).
    for p in &paths {
        for stream in [true, false] {
            for _ in 0..50 {
                one(
                    &http,
                    &format!("{}/chat/completions", p.base),
                    &body(MODEL, stream),
                    stream,
                )
                .await
                .with_context(|| format!("warm-up on {}", p.name))?;
            }
        }
    }

    // Latency: sequential, one request at a time, paths interleaved.
    for (model, stream, mode, n) in [
        (MODEL, true, "stream", args.requests),
        (MODEL, false, "json", args.requests),
    ] {
        let b = body(model, stream);
        let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); paths.len()];
        for _ in 0..n {
            for (i, p) in paths.iter().enumerate() {
                samples[i]
                    .push(one(&http, &format!("{}/chat/completions", p.base), &b, stream).await?);
            }
        }
        for s in &mut samples {
            s.sort();
        }
        let (d50, d99) = (percentile(&samples[0], 50), percentile(&samples[0], 99));
        report.row(
            SUITE,
            format!("{mode}: direct p50 / p99 ({} req)", args.requests),
            format!("{} / {}", ms(d50), ms(d99)),
        );
        let added = |i: usize| {
            (
                percentile(&samples[i], 50).saturating_sub(d50),
                percentile(&samples[i], 99).saturating_sub(d99),
            )
        };
        if let Some(n) = nginx_at {
            let (a50, a99) = added(n);
            report.row(
                SUITE,
                format!("{mode}: {NGINX} p50 added (p99 added)"),
                format!("{} ({})", ms(a50), ms(a99)),
            );
        }
        for (i, p) in paths.iter().enumerate().skip(1) {
            if Some(i) == nginx_at {
                continue;
            }
            let (added50, added99) = added(i);
            report.goal(
                SUITE,
                format!("{mode}: {} p50 added (p99 added)", p.name),
                format!("{} ({})", ms(added50), ms(added99)),
                format!("p50 added ≤ {}", ms(GOAL_P50_ADDED)),
                added50 <= GOAL_P50_ADDED,
            );
            if let Some(n) = nginx_at {
                // A floor of 10 µs: nginx adding "nothing" must not make any cost infinite.
                let base = added(n).0.max(Duration::from_micros(10));
                let ratio = added50.as_secs_f64() / base.as_secs_f64();
                report.goal(
                    SUITE,
                    format!("{mode}: {} p50 added vs nginx's", p.name),
                    format!("{ratio:.1}× nginx's {}", ms(added(n).0)),
                    format!("≤ {GOAL_VS_NGINX_P50}× nginx's"),
                    ratio <= GOAL_VS_NGINX_P50,
                );
            }
        }
    }

    // Throughput: concurrent clients, the same fixed answer; then the paced model, which takes
    // ~20 ms like a fast real backend, so the router's cost is seen next to some backend time.
    let sampler = RssSampler::start(a.pid, c.pid);
    for (model, label, stream) in [
        (MODEL, "instant backend, streamed", true),
        (MODEL, "instant backend, json", false),
        (PACED_MODEL, "paced backend (~20 ms), streamed", true),
    ] {
        let b = body(model, stream);
        let mut rates = vec![0.0; paths.len()];
        for (i, p) in paths.iter().enumerate() {
            let cpu0 = (cpu_time(a.pid), cpu_time(c.pid));
            let (rps, errors) = throughput(
                &http,
                &format!("{}/chat/completions", p.base),
                &b,
                stream,
                args.concurrency,
                args.seconds,
            )
            .await;
            rates[i] = rps;
            let cpu = (cpu_time(a.pid) - cpu0.0, cpu_time(c.pid) - cpu0.1);
            if (i == 1 || i == 2) && model == MODEL {
                let n = rps * args.seconds;
                let per = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / n.max(1.0));
                let what = if i == 1 {
                    per(cpu.0)
                } else {
                    format!("{} on C + {} on A", per(cpu.1), per(cpu.0))
                };
                report.row(
                    SUITE,
                    format!("node CPU per request, {label}, {}", p.name),
                    what,
                );
            }
            if errors > 0 {
                report.note(format!(
                    "{label}, {}: {errors} failed requests during the throughput run",
                    p.name
                ));
            }
        }
        let direct = rates[0];
        report.row(
            SUITE,
            format!("throughput, {label}, {} clients: direct", args.concurrency),
            format!("{direct:.0} req/s"),
        );
        let of = |r: f64, by: f64| if by > 0.0 { r / by } else { 0.0 };
        for (i, p) in paths.iter().enumerate().skip(1) {
            let rps = rates[i];
            if Some(i) == nginx_at {
                report.row(
                    SUITE,
                    format!("throughput, {label}: {}", p.name),
                    format!("{rps:.0} req/s = {:.2}× direct", of(rps, direct)),
                );
                continue;
            }
            report.goal(
                SUITE,
                format!("throughput, {label}: {}", p.name),
                format!("{rps:.0} req/s = {:.2}× direct", of(rps, direct)),
                format!("≥ {GOAL_THROUGHPUT}× direct"),
                of(rps, direct) >= GOAL_THROUGHPUT,
            );
            if let Some(n) = nginx_at {
                let ratio = of(rps, rates[n]);
                report.goal(
                    SUITE,
                    format!("throughput, {label}: {} vs nginx", p.name),
                    format!("{ratio:.2}× nginx's {:.0} req/s", rates[n]),
                    format!("≥ {GOAL_VS_NGINX_THROUGHPUT}× nginx's"),
                    ratio >= GOAL_VS_NGINX_THROUGHPUT,
                );
            }
        }
    }
    let (peak_a, peak_c) = sampler.peaks().await;
    report.row(
        SUITE,
        "node RSS idle → peak under load: A (serving)",
        format!("{idle_a:.1} → {peak_a:.1} MiB"),
    );
    report.row(
        SUITE,
        "node RSS idle → peak under load: C (client)",
        format!("{idle_c:.1} → {peak_c:.1} MiB"),
    );
    let check: Value = http
        .get(format!("{}/api/requests?limit=1", c.url))
        .send()
        .await?
        .json()
        .await?;
    if check["requests"][0]["to_name"] != "bench-a" {
        report.note(format!("C's last request record does not name A: {check}"));
    }
    c.stop().await;
    a.stop().await;
    Ok(())
}
