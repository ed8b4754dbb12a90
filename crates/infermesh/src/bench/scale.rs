//! A node with many peers: one real `infermesh up --client` process, and N simulated peers in
//! this process, each a bare chitchat member (its own UDP socket, gossiping a serving node's
//! record under the same key a node uses). Measures how long the node takes to list them all,
//! `/api/status` latency and size, the first `/api/events` status event, and the node's RSS idle
//! and under a status-polling load.
//!
//! The simulated peers are bare chitchat rather than `infermesh_mesh::Mesh` handles: a handle
//! also polls its whole peer table every 100 ms, which with N handles in one process is N²
//! work per poll and measures this process, not the node.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chitchat::transport::UdpTransport;
use chitchat::ProtocolVersion;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use futures::StreamExt;
use infermesh_mesh::{NodeRecord, DEFAULT_CLUSTER_ID, RECORD_KEY};
use infermesh_state::NodeState;

use super::nodes::{rss_of, BenchNode};
use super::{ms, percentile, BenchArgs, Report};

const SUITE: &str = "scale";
const JOIN_LIMIT: Duration = Duration::from_secs(90);

async fn sim(i: usize, seed: &str, interval: Duration) -> Result<ChitchatHandle> {
    let record = NodeRecord {
        v: infermesh_mesh::RECORD_SCHEMA_VERSION,
        node_id: format!("sim{i:05}"),
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
    let mut last = None;
    for _ in 0..8 {
        let port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let generation = infermesh_mesh::unix_now_ms() as u64;
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(record.node_id.clone(), generation, addr),
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            gossip_interval: interval,
            listen_addr: addr,
            seed_nodes: vec![seed.to_string()],
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                // Each window is per peer: N members × N windows of f64s add up.
                sampling_window_size: 10,
                max_interval: interval * 10,
                initial_interval: interval,
                dead_node_grace_period: Duration::from_secs(600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Uncompressed digests: V1's zstd (run on every digest, even to size it) is most of a
            // member's CPU, and a node reads either version.
            protocol_version: ProtocolVersion::V0,
        };
        match spawn_chitchat(
            config,
            vec![(RECORD_KEY.to_string(), record.encode())],
            &UdpTransport,
        )
        .await
        {
            Ok(h) => return Ok(h),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried"))
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
    let seed = node.gossip.clone();
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
    let p50 = percentile(&lat, 50.0);
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
            ms(percentile(&lat, 99.0)),
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
