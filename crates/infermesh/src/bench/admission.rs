//! Peer-verified admission with real nodes (`infermesh up` processes on 127.0.0.1, the default
//! model, one thread each): in a mesh of 3 and of 9 nodes (one seed server, the rest clients), a
//! new server joins; measured is the time from that server reading `serving` until *every* other
//! node lists it as `active` (its verifiers checked it and their attestations reached everyone).
//! Then the same join while the seed is busy with a long generation, against a join to an idle
//! seed measured in the same run: the ratio shows what user load costs the admission check,
//! which runs in the validation lane.

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
        let args = vec![
            "--client".to_string(),
            "--join".to_string(),
            seed.invite.clone(),
        ];
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

/// Join to an idle seed, then to the same seed busy with a long generation.
async fn under_load(http: &reqwest::Client, model_dir: &Path, report: &mut Report) -> Result<()> {
    let seed = BenchNode::start("adm-busy", &server_args(None), model_dir).await?;
    seed.wait_status(http, "seed serving", READY_LIMIT, |s| {
        s["node_state"] == "serving"
    })
    .await?;
    let seed_id = seed.status(http).await?["node_id"]
        .as_str()
        .context("no node_id")?
        .to_string();
    let time_client = |name: &'static str| {
        let invite = seed.invite.clone();
        let seed_id = seed_id.clone();
        async move {
            let args = vec!["--client".to_string(), "--join".to_string(), invite];
            let t0 = Instant::now();
            let c = BenchNode::start(name, &args, model_dir).await?;
            c.wait_status(http, "client routes to the seed", ROUTED_LIMIT, |s| {
                lists_active(s, &seed_id)
            })
            .await?;
            let took = t0.elapsed();
            c.stop().await;
            Ok::<_, anyhow::Error>(took)
        }
    };
    let idle = time_client("adm-idle").await?;
    // One user request that holds the user slot for many seconds.
    let url = format!("{}/v1/chat/completions", seed.url);
    let body = json!({"model": "smollm2-135m-instruct", "max_tokens": 1500, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}]});
    let long = {
        let http = http.clone();
        tokio::spawn(async move { http.post(url).json(&body).send().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy_now = seed.status(http).await?["in_flight"].as_u64().unwrap_or(0);
    if busy_now == 0 {
        bail!("the long request did not start");
    }
    let busy = time_client("adm-loaded").await?;
    let still = seed.status(http).await?["in_flight"].as_u64().unwrap_or(0);
    long.abort();
    report.row(SUITE, "client start → routes to an idle server", secs(idle));
    report.goal(
        SUITE,
        format!(
            "same, server busy with a 1,500-token generation (still busy after: {})",
            still > 0
        ),
        format!(
            "{} ({:.2}× idle)",
            secs(busy),
            busy.as_secs_f64() / idle.as_secs_f64().max(1e-3)
        ),
        "≤ 10 s",
        busy <= GOAL,
    );
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
    under_load(&http, model_dir, report).await
}
