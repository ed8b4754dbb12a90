//! `infermesh selfcheck`: drives real nodes (child processes: real HTTP, real embedded backend,
//! real gossip on 127.0.0.1) through a whole onboarding cycle on a short synthetic schedule and
//! says, stage by stage, whether each step works. Leaves nothing behind: temp dirs are removed
//! and every child is stopped, whatever happened.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use infermesh_backend::model_fetch::SMOLLM2_135M;
use infermesh_state::{
    backend_message, BackendBrief, BackendState, Duty, Participation, ScheduleSpec, Source, Timing,
};
use serde_json::json;

use crate::cluster::{http, Child};

#[derive(clap::Args, Debug)]
pub struct SelfcheckArgs {
    /// Nodes to run: 1 (one serving node) or more (the first serves, one more serves, the rest
    /// are clients that route).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
}

/// Short enough to finish in seconds (three epochs: ~9.5 s for 3 nodes, goal 10 s), long
/// enough for a CPU to answer one validation prompt inside a round (~0.6 s measured, release).
const EPOCH_MS: i64 = 3_000;
const ROUND_MS: i64 = 1_500;
/// Time before the first round for start, registration and the test.
const LEAD_MS: i64 = 2_500;

struct Stages {
    failed: usize,
    started: Instant,
}

impl Stages {
    fn run(&mut self, name: &str, result: Result<String>) -> bool {
        let t = self.started.elapsed().as_secs_f64();
        match result {
            Ok(detail) => {
                eprintln!("PASS  {name:<44} {detail} [{t:.1}s]");
                true
            }
            Err(e) => {
                self.failed += 1;
                eprintln!("FAIL  {name:<44} {e:#} [{t:.1}s]");
                false
            }
        }
    }
}

fn now_ms() -> i64 {
    infermesh_mesh::unix_now_ms()
}

/// Polls `f` until it yields `Some`, up to `limit`.
async fn until<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sleep_until_ms(t: i64) {
    let d = t - now_ms();
    if d > 0 {
        tokio::time::sleep(Duration::from_millis(d as u64)).await;
    }
}

pub async fn run(args: SelfcheckArgs) -> Result<()> {
    let started = Instant::now();
    let spec = ScheduleSpec {
        genesis_ms: now_ms() + LEAD_MS,
        epoch_ms: EPOCH_MS,
        round_ms: ROUND_MS,
    };
    let model_dir = infermesh_backend::model_fetch::default_model_dir();
    let spec_arg = format!("{}:{}:{}", spec.genesis_ms, spec.epoch_ms, spec.round_ms);
    let mut st = Stages { failed: 0, started };
    eprintln!(
        "selfcheck: {} node(s) on 127.0.0.1, epochs of {}s opening with {}s rounds",
        args.nodes,
        EPOCH_MS / 1000,
        ROUND_MS as f64 / 1000.0
    );
    let mut nodes: Vec<Child> = Vec::new();
    let result = stages(
        &mut st, &mut nodes, &spec, &spec_arg, &model_dir, args.nodes,
    )
    .await;
    if st.failed > 0 || result.is_err() {
        // What the nodes said last is usually the reason.
        for (i, n) in nodes.iter().enumerate() {
            for line in n.last_messages(8) {
                eprintln!("      check-{i}: {line}");
            }
        }
    }
    for n in &mut nodes {
        n.stop().await;
    }
    let total = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        st.failed += 1;
        eprintln!("FAIL  {:<44} {e:#}", "selfcheck aborted");
    }
    if st.failed == 0 {
        eprintln!("selfcheck: all stages passed in {total:.1}s");
        Ok(())
    } else {
        Err(anyhow!("{} stage(s) failed in {total:.1}s", st.failed))
    }
}

fn node_args(i: usize, spec_arg: &str, join: Option<&str>, client: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--name",
        &format!("check-{i}"),
        "--gossip-port",
        "0",
        "--schedule-spec",
        spec_arg,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(if client { "--client" } else { "--standby" }.into());
    if let Some(j) = join {
        a.extend(["--join".into(), j.to_string()]);
    }
    a
}

async fn stages(
    st: &mut Stages,
    nodes: &mut Vec<Child>,
    spec: &ScheduleSpec,
    spec_arg: &str,
    model_dir: &std::path::Path,
    n: u8,
) -> Result<()> {
    // A throwaway operator key: the nodes accept it, admin calls are signed like an operator's.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("no randomness for a key: {e}"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let config = format!(
        "[[operator]]\nname = \"selfcheck\"\npublic_key = \"{}\"\n",
        hex::encode(key.verifying_key().as_bytes())
    );
    let key = Some(&key);
    // Stage 1: the node is up and lists its backend.
    let first = Child::spawn(0, &node_args(0, spec_arg, None, false), model_dir, &config).await?;
    let join = first.invite.clone();
    nodes.push(first);
    for i in 1..n as usize {
        // Node 1 serves as a second replica; the rest are clients.
        let client = i >= 2 || n == 2;
        nodes.push(
            Child::spawn(
                i,
                &node_args(i, spec_arg, Some(&join), client),
                model_dir,
                &config,
            )
            .await?,
        );
    }
    let url = nodes[0].url.clone();
    let ok = st.run(
        "node registered",
        async {
            let list = http::get(&format!("{url}/admin/v1/nodes")).await?;
            let ids: Vec<&str> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["node"]["id"].as_str())
                .collect();
            if !ids.contains(&"embedded") {
                bail!("backend `embedded` not listed: {list}");
            }
            if n > 1 {
                let want = n as usize - 1;
                until(
                    "every peer to be seen",
                    Duration::from_secs(5),
                    async || {
                        let s = http::get(&format!("{url}/api/status")).await.ok()?;
                        (s["peers"].as_array()?.len() == want).then_some(())
                    },
                )
                .await?;
            }
            Ok(format!("{url}, backend `embedded`, {} peer(s)", n - 1))
        }
        .await,
    );
    if !ok {
        return Ok(());
    }

    // Stage 2: the tester passes on the standby backend.
    st.run(
        "backend tested",
        async {
            let r = http::post(
                &format!("{url}/admin/v1/nodes/embedded/test"),
                &json!({}),
                key,
            )
            .await?;
            if r["ok"] != true {
                bail!("test failed: {r}");
            }
            let m = &r["models"][0];
            Ok(format!(
                "load {}ms, health {}ms, inference {}ms",
                m["load_ms"], m["health_ms"], m["infer_ms"]
            ))
        }
        .await,
    );

    // Stage 3: before the round, a serving backend says what the state crate says of its state.
    let serve = json!({"id": "check", "driver": "embedded",
        "models": [{"name": SMOLLM2_135M.name}], "serve": SMOLLM2_135M.name});
    for node in nodes.iter().take(if n >= 3 { 2 } else { 1 }) {
        http::post(&format!("{}/admin/v1/nodes", node.url), &serve, key).await?;
    }
    // On a slow machine the first round may come before the backend is ready; the check then
    // waits for the next one rather than failing: what is checked is the behaviour, not speed.
    let mut target_epoch = None;
    st.run(
        "before the round: the state crate's sentence",
        async {
            let env = until(
                "backend `check` to be ready outside a round",
                Duration::from_secs(60),
                async || {
                    let list = http::get(&format!("{url}/admin/v1/nodes")).await.ok()?;
                    let e = list
                        .as_array()?
                        .iter()
                        .find(|e| e["node"]["id"] == "check")?
                        .clone();
                    let ob = &e["onboarding"];
                    // Peers may admit it before the round (admission is their check), so the
                    // participation is whatever it is: the sentence must match it.
                    let idle = ob["timing"]["in_round"] == false
                        && ob["timing"]["seconds_until_next_round"].as_i64()? >= 1;
                    (e["node"]["phase"] == "ready" && idle).then_some(e)
                },
            )
            .await?;
            let ob = &env["onboarding"];
            let timing: Timing = serde_json::from_value(ob["timing"].clone())?;
            let state: BackendState = serde_json::from_value(ob["backend_state"].clone())?;
            let part: Participation = serde_json::from_value(ob["participation"].clone())?;
            let validated = ob["validated"] == true;
            // Ready, registered through the admin API: the brief the node composes it from.
            let brief = BackendBrief {
                id: "check",
                duty: Duty::Serving,
                source: Source::Config,
                validated,
            };
            let want = backend_message(&brief, state, part, &timing);
            // Waiting until the round, or serving once its peers admitted it; never failed.
            if !matches!(state, BackendState::Waiting | BackendState::Serving) {
                bail!("expected `waiting` or `serving`, got `{state}`");
            }
            if ob["message"] != want.as_str() {
                bail!(
                    "message {:?} is not the state crate's {want:?} (timing {timing:?})",
                    ob["message"]
                );
            }
            target_epoch = timing.target_round_epoch;
            Ok(format!("\"{}\"", want))
        }
        .await,
    );

    // Stage 4: the round runs and the signed result is in the node's status.
    st.run(
        "round runs and result published",
        async {
            let epoch = target_epoch
                .ok_or_else(|| anyhow!("no round to wait for (previous stage failed)"))?;
            let v = until(
                "the round's result",
                Duration::from_millis((EPOCH_MS * 2) as u64),
                async || {
                    let s = http::get(&format!("{url}/api/status")).await.ok()?;
                    (s["validation"]["epoch"] == epoch).then(|| s["validation"].clone())
                },
            )
            .await?;
            if v["passed"] != true {
                bail!("the round failed: {v}");
            }
            Ok(format!(
                "epoch {epoch}: {}ms for the validation prompt, signed and gossiped",
                v["backends"][0]["infer_ms"]
            ))
        }
        .await,
    );

    // Stage 5: admitted by its peers' checks (active, backend serving) and peers agree; alone,
    // nobody can verify it, and it says so while it serves its own clients.
    if n == 1 {
        st.run(
            "alone: serving, waiting for a peer to verify it",
            async {
                // On selfcheck's 3 s epochs the sentence is always about the round; what matters
                // is that nothing admitted a node nobody verified.
                let s = http::get(&format!("{url}/api/status")).await?;
                let msg = s["message"].as_str().unwrap_or("");
                if s["participation"] != "inactive_waiting" || s["node_state"] != "serving" {
                    bail!(
                        "a node with no peer must serve and not read as admitted: {} {} \"{msg}\"",
                        s["node_state"],
                        s["participation"]
                    );
                }
                Ok(format!("\"{msg}\""))
            }
            .await,
        );
    } else {
        st.run(
            "node admitted by its peers (active, serving)",
            async {
                until("active + serving", Duration::from_secs(3), async || {
                    let s = http::get(&format!("{url}/api/status")).await.ok()?;
                    let list = http::get(&format!("{url}/admin/v1/nodes")).await.ok()?;
                    let b = list
                        .as_array()?
                        .iter()
                        .find(|e| e["node"]["id"] == "check")?
                        .clone();
                    (s["participation"] == "active"
                        && b["onboarding"]["backend_state"] == "serving")
                        .then_some(())
                })
                .await?;
                let last = nodes.last().expect("nodes").url.clone();
                let me = nodes[0].node_id().await?;
                until(
                    "peers to see it active",
                    Duration::from_secs(3),
                    async || {
                        let s = http::get(&format!("{last}/api/status")).await.ok()?;
                        s["peers"]
                            .as_array()?
                            .iter()
                            .any(|p| p["node_id"] == me.as_str() && p["participation"] == "active")
                            .then_some(())
                    },
                )
                .await?;
                Ok("participation active, backend `check` serving".into())
            }
            .await,
        );
    }

    // Stage 6: a request through the mesh (from a client node when there is one).
    let entry = nodes.last().expect("nodes").url.clone();
    st.run(
        "request routed and answered",
        async {
            let body = json!({"model": SMOLLM2_135M.name, "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]});
            let r = http::post(&format!("{entry}/v1/chat/completions"), &body, None).await?;
            let text = r["choices"][0]["message"]["content"].as_str().unwrap_or("");
            if text.trim().is_empty() {
                bail!("empty answer: {r}");
            }
            let reqs = http::get(&format!("{entry}/api/requests?limit=1")).await?;
            let to = reqs["requests"][0]["to_name"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            Ok(format!("answered by {to}: {:?}", text.trim()))
        }
        .await,
    );

    // Stage 7: node 0 crashes and misses a round; restarted (a new incarnation, checked anew),
    // it serves again, and with peers it is re-verified and routed to within seconds.
    nodes[0].stop().await;
    let e0 = spec.epoch_at(now_ms()).unwrap_or(0);
    let missed = e0 + 1;
    let (_, missed_round_end) = spec.round_window(missed);
    sleep_until_ms(missed_round_end + 200).await;
    // Same data dir, so the same identity and the registered backend come back from config.
    let via = (n > 1).then(|| nodes[1].invite.clone());
    let restarted = Instant::now();
    nodes[0]
        .restart(&node_args(0, spec_arg, via.as_deref(), false), model_dir)
        .await?;
    let url = nodes[0].url.clone();
    st.run(
        if n > 1 {
            "restart → re-verified by peers"
        } else {
            "restart → serving again"
        },
        async {
            until(
                "serving again (and active, with peers)",
                Duration::from_secs(10),
                async || {
                    let s = http::get(&format!("{url}/api/status")).await.ok()?;
                    let active = s["participation"] == "active";
                    (s["node_state"] == "serving" && (active || n == 1)).then_some(())
                },
            )
            .await?;
            Ok(format!(
                "after missing round {missed}: {:.1}s from restart",
                restarted.elapsed().as_secs_f64()
            ))
        }
        .await,
    );

    // Stage 9: normal onboarding never logs above info.
    st.run(
        "onboarding logs are info-only",
        async {
            let mut bad = Vec::new();
            for node in nodes.iter() {
                bad.extend(node.log_lines_at_least_warn());
            }
            if !bad.is_empty() {
                bail!("{} warn/error line(s), first: {}", bad.len(), bad[0]);
            }
            Ok("no warn/error lines".into())
        }
        .await,
    );
    Ok(())
}
