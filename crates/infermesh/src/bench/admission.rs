//! Peer-verified admission with real nodes (`infermesh up` processes on 127.0.0.1, the default
//! model, one thread each): in a mesh of 3 and of 9 nodes (one seed server, the rest clients), a
//! new server joins; measured is the time from that server reading `serving` until *every* other
//! node lists it as `active` (its verifiers checked it and their attestations reached everyone).
//! Then a fresh server + client pair (client start → routed), and the server's round check idle
//! and while a long user generation holds its slot, both in the same run: the ratio shows what
//! user load costs the check, which runs in the validation lane.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::nodes::BenchNode;
use super::{secs, Report};

const SUITE: &str = "admission";
const READY_LIMIT: Duration = Duration::from_secs(180);
const ROUTED_LIMIT: Duration = Duration::from_secs(60);
/// The goal of issue 14: routed to by every peer within 10 s of serving.
const GOAL: Duration = Duration::from_secs(10);

fn server_args(join: Option<&str>) -> Vec<String> {
    let mut a = vec!["--threads".to_string(), "1".to_string()];
    if let Some(t) = join {
        a.extend(["--join".to_string(), t.to_string()]);
    }
    a
}

fn client_args(invite: &str) -> Vec<String> {
    ["--client", "--join", invite].map(str::to_string).to_vec()
}

fn lists_active(status: &Value, node_id: &str) -> bool {
    status["peers"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["node_id"] == node_id && p["participation"] == "active")
    })
}

fn peer_count(status: &Value) -> usize {
    status["peers"].as_array().map_or(0, Vec::len)
}

/// Starts a server joining `invite`, waits for it to serve, then for every node in `others` to
/// list it active. Returns (serving → routed by all, the new node).
async fn join_and_time(
    http: &reqwest::Client,
    name: &str,
    invite: &str,
    others: &[&BenchNode],
    model_dir: &Path,
) -> Result<(Duration, BenchNode)> {
    let node = BenchNode::start(name, &server_args(Some(invite)), model_dir).await?;
    let status = node
        .wait_status(http, &format!("{name} serving"), READY_LIMIT, |s| {
            s["node_state"] == "serving"
        })
        .await?;
    let serving = Instant::now();
    let id = status["node_id"]
        .as_str()
        .context("no node_id")?
        .to_string();
    for other in others {
        other
            .wait_status(http, &format!("{name} routed"), ROUTED_LIMIT, |s| {
                lists_active(s, &id)
            })
            .await?;
    }
    Ok((serving.elapsed(), node))
}

/// A mesh of `n` nodes with one seed server; the last (a server) is the one that joins.
async fn mesh_of(
    http: &reqwest::Client,
    n: usize,
    model_dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let seed = BenchNode::start("adm-seed", &server_args(None), model_dir).await?;
    seed.wait_status(http, "seed serving", READY_LIMIT, |s| {
        s["node_state"] == "serving"
    })
    .await?;
    let mut clients = Vec::new();
    for i in 0..n.saturating_sub(2) {
        let args = client_args(&seed.invite);
        clients.push(BenchNode::start(&format!("adm-client-{i}"), &args, model_dir).await?);
    }
    for c in &clients {
        c.wait_status(http, "client sees the mesh", ROUTED_LIMIT, |s| {
            peer_count(s) >= n - 2
        })
        .await?;
    }
    let mut others: Vec<&BenchNode> = clients.iter().collect();
    others.push(&seed);
    let (took, joined) = join_and_time(http, "adm-new", &seed.invite, &others, model_dir).await?;
    report.goal(
        SUITE,
        format!("{n} nodes: new server serving → routed to by all {}", n - 1),
        secs(took),
        "≤ 10 s",
        took <= GOAL,
    );
    joined.stop().await;
    for c in clients {
        c.stop().await;
    }
    seed.stop().await;
    Ok(())
}

/// A fresh server and one client (the README's two commands): client start → routed. Then the
/// server's own round check, once idle and once while a long user generation holds its user
/// slot: the check runs in the reserved validation lane, so the ratio should stay near 1.
async fn fresh_pair_and_rounds(
    http: &reqwest::Client,
    model_dir: &Path,
    report: &mut Report,
) -> Result<()> {
    // Round 0 a few seconds after start-up, round 1 one epoch later.
    const EPOCH_MS: i64 = 25_000;
    let genesis = infermesh_mesh::unix_now_ms() + 12_000;
    let spec = format!("{genesis}:{EPOCH_MS}:5000");
    let mut args = server_args(None);
    // One user slot, the worst case: the long request holds all user capacity.
    args.extend([
        "--schedule-spec".to_string(),
        spec,
        "--slots".into(),
        "1".into(),
    ]);
    let seed = BenchNode::start("adm-pair", &args, model_dir).await?;
    let status = seed
        .wait_status(http, "server serving", READY_LIMIT, |s| {
            s["node_state"] == "serving"
        })
        .await?;
    let seed_id = status["node_id"]
        .as_str()
        .context("no node_id")?
        .to_string();
    let t0 = Instant::now();
    let client = BenchNode::start("adm-client", &client_args(&seed.invite), model_dir).await?;
    client
        .wait_status(http, "client routes to the server", ROUTED_LIMIT, |s| {
            lists_active(s, &seed_id)
        })
        .await?;
    let pair = t0.elapsed();
    report.goal(
        SUITE,
        "fresh server + client: client start → routed to the server",
        secs(pair),
        "≤ 10 s",
        pair <= GOAL,
    );
    let round_ms = |epoch: u64| {
        let seed = &seed;
        async move {
            let s = seed
                .wait_status(
                    http,
                    &format!("round {epoch}"),
                    Duration::from_secs(60),
                    |s| s["validation"]["epoch"] == epoch,
                )
                .await?;
            s["validation"]["backends"][0]["infer_ms"]
                .as_u64()
                .context("round result without a backend timing")
        }
    };
    let idle = round_ms(0).await?;
    // A user request that holds the user slot across round 1.
    let url = format!("{}/v1/chat/completions", seed.url);
    let body = json!({"model": "smollm2-135m-instruct", "max_tokens": 100000, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}]});
    let long = {
        let http = reqwest::Client::builder().no_proxy().build()?;
        tokio::spawn(async move { http.post(url).json(&body).send().await })
    };
    let busy = round_ms(1).await?;
    let loaded = seed.status(http).await?["in_flight"].as_u64().unwrap_or(0) > 0;
    long.abort();
    if !loaded {
        bail!("the long request ended before round 1; the load measurement would be idle");
    }
    report.row(SUITE, "round check, idle server", format!("{idle} ms"));
    report.goal(
        SUITE,
        "round check while a max_tokens 100000 request holds the user slot",
        format!("{busy} ms ({:.2}× idle)", busy as f64 / idle.max(1) as f64),
        "≤ 3× idle",
        busy <= idle.max(1) * 3,
    );
    client.stop().await;
    seed.stop().await;
    Ok(())
}

pub async fn run(model_dir: &Path, report: &mut Report) -> Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    for n in [3, 9] {
        mesh_of(&http, n, model_dir, report).await?;
    }
    fresh_pair_and_rounds(&http, model_dir, report).await
}
