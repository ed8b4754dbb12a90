//! Request chatter: short chat completions through the client nodes, so routing, request
//! records and logs keep moving while someone watches.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

const PROMPTS: &[&str] = &[
    "Say hello in French.",
    "Name a prime number.",
    "What colour is the sky?",
    "Give me one word that rhymes with mesh.",
    "Count to five.",
    "What is 2 + 3?",
    "Name a planet.",
    "Finish this: the quick brown fox",
    "Suggest a name for a cat.",
    "What is the capital of Italy?",
    "Write a four-word poem.",
    "Which is bigger, 7 or 9?",
];

/// Failures are summarised at most this often: a stopped mesh must not flood the terminal.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Three fast-schedule epochs without any routable model is no longer the mesh starting up or
/// between rounds.
const QUIET_LIMIT: Duration = Duration::from_secs(60);

/// Where the demo's own messages go: stderr, or a file while the deck owns the terminal.
#[derive(Clone)]
pub struct Notices {
    file: Option<Arc<PathBuf>>,
}

impl Notices {
    pub fn new(file: Option<PathBuf>) -> Self {
        Self {
            file: file.map(Arc::new),
        }
    }

    pub fn say(&self, msg: &str) {
        let Some(path) = &self.file else {
            eprintln!("{msg}");
            return;
        };
        // Appends of one line each: concurrent notices do not interleave.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.as_path());
        if let Ok(mut f) = f {
            let _ = writeln!(f, "{msg}");
        }
    }
}

/// xorshift64*: enough to vary prompts and pauses; no crate needed for that.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// Runs until aborted: one request every ~1.5 s (1–2 s, jittered so nodes do not beat in step)
/// to a random target. One at a time, so a slow mesh slows the chatter rather than piling up.
pub async fn run(targets: Vec<String>, notices: Notices) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("plain HTTP client");
    let mut rng = Rng::seeded();
    let (mut sent, mut failed) = (0u32, 0u32);
    let mut last_report: Option<Instant> = None;
    let mut last_routable = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.between(1_000, 2_000))).await;
        let target = rng.pick(&targets).clone();
        let e = match once(&http, &target, &mut rng).await {
            Ok(Sent::Answered) => {
                (sent, last_routable) = (sent + 1, Instant::now());
                continue;
            }
            // Peers are routable only once a validation round admitted them: until the first
            // round (within ~20 s) nothing is, and that is the mesh starting, not a failure.
            Ok(Sent::NothingRoutable) if last_routable.elapsed() < QUIET_LIMIT => continue,
            Ok(Sent::NothingRoutable) => {
                last_routable = Instant::now();
                anyhow!("no model has been routable for {} s", QUIET_LIMIT.as_secs())
            }
            Err(e) => e,
        };
        (sent, failed) = (sent + 1, failed + 1);
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            notices.say(&format!(
                "chatter: {failed} of {sent} requests failed since the last report; latest, \
                 through {target}: {e:#}"
            ));
            (sent, failed, last_report) = (0, 0, Some(Instant::now()));
        }
    }
}

enum Sent {
    Answered,
    NothingRoutable,
}

async fn once(http: &reqwest::Client, target: &str, rng: &mut Rng) -> Result<Sent> {
    let models: Value = http
        .get(format!("{target}/v1/models"))
        .send()
        .await?
        .json()
        .await?;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    if ids.is_empty() {
        return Ok(Sent::NothingRoutable);
    }
    let body = json!({
        "model": rng.pick(&ids),
        "messages": [{"role": "user", "content": rng.pick(PROMPTS)}],
        "max_tokens": rng.between(8, 24),
        // Some streamed, some not: both paths show up in the request records.
        "stream": rng.between(0, 2) == 0,
    });
    let resp = http
        .post(format!("{target}/v1/chat/completions"))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let msg = v["error"]["message"].as_str().unwrap_or(&text);
        return Err(anyhow!("HTTP {status}: {msg}"));
    }
    Ok(Sent::Answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_in_range_and_varies() {
        let mut r = Rng(42);
        let xs: Vec<u64> = (0..200).map(|_| r.between(8, 24)).collect();
        assert!(xs.iter().all(|x| (8..=24).contains(x)));
        assert!(xs.contains(&8) && xs.contains(&24));
    }
}
