//! A node with many peers: one real `infermesh up --client` process, and N simulated peers in
//! this process, each a real membership handle (its own key, its own loopback IP and UDP socket,
//! gossiping a serving node's signed record). Measures how long the node takes to list them all,
//! `/api/status` latency and size, the first `/api/events` status event, and the node's RSS idle
//! and under a status-polling load.
//!
//! Every simulated member holds the whole table, as a node would, so this process does O(N²)
//! work; the figures that matter are the node's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use infermesh_mesh::{Invite, Mesh, MeshConfig, MeshHandle, NodeRecord};
use infermesh_state::NodeState;

use super::nodes::{rss_of, BenchNode};
use super::{ms, percentile, BenchArgs, Report};

const SUITE: &str = "scale";
const JOIN_LIMIT: Duration = Duration::from_secs(90);

/// One simulated member: a real [`Mesh`] handle (sealed gossip, signed record and beats) with
/// its own key, on its own loopback IP (127.1.x.y) so the node's per-IP member cap does not
/// apply to the bench as it would to one host.
async fn sim(i: usize, invite: &Invite, interval: Duration) -> Result<MeshHandle> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    seed[8] = 0x5c;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
    let record = NodeRecord {
        v: infermesh_mesh::RECORD_SCHEMA_VERSION,
        name: format!("sim-{i}"),
        api_addr: format!("127.0.0.1:{}", 30000 + i),
        state: Some(NodeState::Serving),
        role: Some("worker".into()),
        models: vec!["smollm2-135m-instruct".into()],
        vram_gb: 8.0,
        ram_gb: 32.0,
        version: env!("CARGO_PKG_VERSION").into(),
        load: (i % 4) as u32,
        ..Default::default()
    };
    let mut cfg = MeshConfig::new(
        key,
        invite.secret.clone(),
        SocketAddr::from((ip, 0)),
        record,
    );
    cfg.seeds = invite.bootstrap.clone();
    cfg.gossip_interval = interval;
    cfg.dead_after = interval * 20;
    Mesh::start(cfg).await
}

fn peer_count(s: &serde_json::Value) -> usize {
    s["peers"].as_array().map_or(0, Vec::len)
}

/// Time to the end of the first `status` event of `/api/events`, and its peer count.
async fn first_status_event(http: &reqwest::Client, url: &str) -> Result<(Duration, usize)> {
    let t0 = Instant::now();
    let resp = http.get(format!("{url}/api/events")).send().await?;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        // An event ends at a blank line; the first one on connect is the status.
        if let Some(end) = buf.find("\n\n") {
            let event = &buf[..end];
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let v: serde_json::Value = serde_json::from_str(&data).with_context(|| {
                format!(
                    "first event is not JSON: {}",
                    &event[..event.len().min(200)]
                )
            })?;
            return Ok((t0.elapsed(), peer_count(&v)));
        }
    }
    anyhow::bail!("the event stream ended before a status event")
}

pub async fn run(args: &BenchArgs, model_dir: &Path, report: &mut Report) -> Result<()> {
    let node = BenchNode::start("bench-scale", &["--client".into()], model_dir).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    node.wait_status(&http, "scale node up", Duration::from_secs(20), |s| {
        s["node_state"] == "client"
    })
    .await?;
    let (bare, _) = node.rss_mib();
    let interval = Duration::from_millis(args.peer_gossip_ms.max(50));
    let n = args.peers;
    // The simulated peers run on one thread of their own at low priority (nice 10), so the
    // node under test and the measuring client get the CPU first.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-sim")
        .enable_all()
        .on_thread_start(|| {
            // SAFETY: setpriority has no memory effects; who = 0 is the calling thread on Linux.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
        })
        .build()?;
    let t0 = Instant::now();
    let seed =
        Invite::parse(&node.invite).map_err(|e| anyhow::anyhow!("bench node's invite: {e}"))?;
    let sims = sim_rt
        .spawn(async move {
            let mut sims = Vec::with_capacity(n);
            for i in 0..n {
                sims.push(sim(i, &seed, interval).await?);
                // Start in waves so the first gossip rounds do not all land at once.
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok::<_, anyhow::Error>(sims)
        })
        .await??;
    // Joined: the node lists every simulated peer (or as many as it reached in the limit).
    let mut best = 0;
    let joined = loop {
        let seen = node
            .status(&http)
            .await
            .map(|s| peer_count(&s))
            .unwrap_or(0);
        best = best.max(seen);
        if seen >= n {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > JOIN_LIMIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    match joined {
        Some(d) => report.row(
            SUITE,
            format!("{n} simulated peers: all listed by the node"),
            format!("{:.1} s after the first start", d.as_secs_f64()),
        ),
        None => report.goal(
            SUITE,
            format!("{n} simulated peers: all listed by the node"),
            format!("{best} of {n} within {} s", JOIN_LIMIT.as_secs()),
            format!("{n}"),
            false,
        ),
    }
    // Let gossip settle, then measure idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle, _) = node.rss_mib();

    let mut lat = Vec::new();
    let mut size = 0;
    let mut listed = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let bytes = http
            .get(format!("{}/api/status", node.url))
            .send()
            .await?
            .bytes()
            .await?;
        lat.push(t.elapsed());
        size = bytes.len();
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        listed.push(peer_count(&v));
    }
    lat.sort();
    let p50 = percentile(&lat, 50);
    let goal = Duration::from_millis(100);
    report.goal(
        SUITE,
        format!(
            "GET /api/status with {} peers: p50 / p99 (40 req)",
            listed.iter().min().copied().unwrap_or(0)
        ),
        format!(
            "{} / {} ({} KiB)",
            ms(p50),
            ms(percentile(&lat, 99)),
            size / 1024
        ),
        format!("p50 ≤ {}", ms(goal)),
        p50 <= goal,
    );
    let (first, peers_in_event) = first_status_event(&http, &node.url).await?;
    let goal = Duration::from_millis(250);
    report.goal(
        SUITE,
        format!("GET /api/events: first status event ({peers_in_event} peers)"),
        ms(first),
        format!("≤ {}", ms(goal)),
        first <= goal,
    );

    // Under load: 8 clients polling /api/status and 4 event streams, for 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let min_listed = Arc::new(AtomicU64::new(u64::MAX));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, stop, polls, min_listed) = (
            http.clone(),
            node.url.clone(),
            stop.clone(),
            polls.clone(),
            min_listed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{url}/api/status")).send().await {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        polls.fetch_add(1, Ordering::Relaxed);
                        min_listed.fetch_min(peer_count(&v) as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), node.url.clone());
            tokio::spawn(async move {
                if let Ok(r) = http.get(format!("{url}/api/events")).send().await {
                    let mut b = r.bytes_stream();
                    while b.next().await.is_some() {}
                }
            })
        })
        .collect();
    let t_load = Instant::now();
    let mut peak = 0f64;
    while t_load.elapsed() < Duration::from_secs(5) {
        peak = peak.max(rss_of(node.pid).0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    for s in streams {
        s.abort();
    }
    let rate = polls.load(Ordering::Relaxed) as f64 / t_load.elapsed().as_secs_f64();
    report.row(
        SUITE,
        "status polling load: 8 clients + 4 event streams",
        format!(
            "{rate:.0} status req/s, fewest peers listed {}",
            min_listed.load(Ordering::Relaxed)
        ),
    );
    report.row(
        SUITE,
        "node RSS: no peers → idle with peers → peak under load",
        format!("{bare:.1} → {idle:.1} → {peak:.1} MiB"),
    );
    if interval != Duration::from_millis(200) {
        report.note(format!(
            "scale: simulated peers gossip every {} ms (real nodes: 200 ms) to fit {n} of them in one process on this machine; the node under test keeps its defaults",
            interval.as_millis()
        ));
    }
    let (_, sim_peak) = rss_of(std::process::id());
    report.row(
        SUITE,
        format!("bench process holding the {n} simulated peers: peak RSS"),
        format!("{sim_peak:.0} MiB"),
    );
    node.stop().await;
    drop(sims);
    sim_rt.shutdown_background();
    Ok(())
}
