//! Wakeable capacity: suspended, provider-backed machines declared in `config.toml`
//! (`[[wakeable]]`) that this node knows how to wake.
//!
//! They are listed in `/api/status` `wakeable[]` only — never among peers, in peer counts, in
//! `/v1/models` or in routing: nothing about them is gossiped. `POST /admin/v1/wakeable/:id/wake`
//! runs the entry's wake command (bounded by `timeout_s`, output logged line by line) and moves
//! it to `waking`; it becomes `failed` with the reason if the command fails or its node has not
//! joined the mesh within `grace_s`, and `joined` (leaving the list) once its node is a live peer.
//!
//! Every transition is decided by the pure [`next_state`]; this module only feeds it events.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use infermesh_mesh::PeerView;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::plain_error;
use crate::members::Members;

pub const DEFAULT_GRACE_S: u64 = 300;
pub const DEFAULT_TIMEOUT_S: u64 = 60;
/// How often a wake in progress looks for its node among the live peers.
const JOIN_POLL: Duration = Duration::from_millis(500);
/// After the wake command exits, how long its output is still read (a background process it
/// started may hold the pipes open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);
/// Output lines kept to explain a failure.
const TAIL_LINES: usize = 5;

/// How a machine is woken: one string run by `sh -c`, or an argv run directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WakeCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl WakeCommand {
    fn is_empty(&self) -> bool {
        match self {
            Self::Shell(s) => s.trim().is_empty(),
            Self::Argv(v) => v.first().is_none_or(|p| p.is_empty()),
        }
    }

    fn display(&self) -> String {
        match self {
            Self::Shell(s) => s.clone(),
            Self::Argv(v) => v.join(" "),
        }
    }
}

/// One `[[wakeable]]` entry of `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeableConfig {
    pub id: String,
    /// Who hosts the machine (`aws`, `lambda`, `home-lab`): shown, not interpreted.
    pub provider: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub vram_gb: f32,
    pub wake_command: WakeCommand,
    /// The name its node uses in the mesh (`infermesh up --name`); default: the `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Seconds from the wake until its node must have joined.
    #[serde(default = "default_grace_s")]
    pub grace_s: u64,
    /// Seconds the wake command may run.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_grace_s() -> u64 {
    DEFAULT_GRACE_S
}

fn default_timeout_s() -> u64 {
    DEFAULT_TIMEOUT_S
}

impl WakeableConfig {
    /// The peer name (or node id) that means this machine has joined.
    pub fn expected_node(&self) -> &str {
        self.node_name.as_deref().unwrap_or(&self.id)
    }
}

/// Checks the `[[wakeable]]` list: valid, unique ids, a command, positive limits.
pub fn validate(list: &[WakeableConfig]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in list.iter().enumerate() {
        let id_ok = !w.id.is_empty()
            && w.id.len() <= 64
            && w.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return Err(format!(
                "wakeable[{i}]: invalid `id` `{}`: use 1-64 letters, digits, `-`, `_` or `.`",
                w.id
            ));
        }
        if !seen.insert(&w.id) {
            return Err(format!("wakeable[{i}]: `id` `{}` is listed twice", w.id));
        }
        if w.wake_command.is_empty() {
            return Err(format!("wakeable `{}`: `wake_command` is empty", w.id));
        }
        if w.timeout_s == 0 || w.grace_s == 0 {
            return Err(format!(
                "wakeable `{}`: `timeout_s` and `grace_s` must be positive",
                w.id
            ));
        }
        if !(w.vram_gb.is_finite() && w.vram_gb >= 0.0) {
            return Err(format!("wakeable `{}`: `vram_gb` must be >= 0", w.id));
        }
    }
    Ok(())
}

/// Where a wakeable machine is. `joined` entries are live peers and leave the inventory list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeState {
    Sleeping,
    Waking,
    Failed,
    Joined,
}

impl WakeState {
    pub const ALL: [WakeState; 4] = [Self::Sleeping, Self::Waking, Self::Failed, Self::Joined];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sleeping => "sleeping",
            Self::Waking => "waking",
            Self::Failed => "failed",
            Self::Joined => "joined",
        }
    }
}

/// What can happen to a wakeable machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeEvent {
    /// An operator asked to wake it.
    Wake,
    /// The wake command exited 0 (the machine is booting; its node has not joined yet).
    CommandSucceeded,
    /// The wake command failed, timed out or could not run.
    CommandFailed,
    /// Its node did not join within the grace period.
    GraceExpired,
    /// Its node is a live peer.
    PeerJoined,
    /// Its node is no longer a live peer.
    PeerGone,
}

/// Why a wake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeRefusal {
    AlreadyWaking,
    AlreadyJoined,
}

/// The outcome of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    To(WakeState),
    /// Nothing changes (a stale or irrelevant event).
    Stay,
    Refuse(WakeRefusal),
}

/// The wakeable state machine.
pub fn next_state(current: WakeState, event: WakeEvent) -> Step {
    use WakeEvent as E;
    use WakeState as S;
    match (current, event) {
        (S::Sleeping | S::Failed, E::Wake) => Step::To(S::Waking),
        (S::Waking, E::Wake) => Step::Refuse(WakeRefusal::AlreadyWaking),
        (S::Joined, E::Wake) => Step::Refuse(WakeRefusal::AlreadyJoined),
        (S::Waking, E::CommandFailed | E::GraceExpired) => Step::To(S::Failed),
        (S::Sleeping | S::Waking | S::Failed, E::PeerJoined) => Step::To(S::Joined),
        (S::Joined, E::PeerGone) => Step::To(S::Sleeping),
        _ => Step::Stay,
    }
}

/// One entry as `/api/status` `wakeable[]` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeableStatus {
    pub id: String,
    pub provider: String,
    pub models: Vec<String>,
    pub vram_gb: f32,
    pub state: WakeState,
    /// Why it failed (state `failed` only).
    pub reason: Option<String>,
    /// When it entered `state` (Unix ms; 0 = since the node started).
    pub since_ms: i64,
    /// The mesh name its node will join under.
    pub node_name: String,
}

struct Entry {
    cfg: WakeableConfig,
    state: WakeState,
    reason: Option<String>,
    since_ms: i64,
    /// Bumped on every wake, so a late report of an older attempt changes nothing.
    attempt: u64,
}

impl Entry {
    fn view(&self) -> WakeableStatus {
        WakeableStatus {
            id: self.cfg.id.clone(),
            provider: self.cfg.provider.clone(),
            models: self.cfg.models.clone(),
            vram_gb: self.cfg.vram_gb,
            state: self.state,
            reason: self.reason.clone(),
            since_ms: self.since_ms,
            node_name: self.cfg.expected_node().to_string(),
        }
    }

    /// Applies `event`; returns whether the state changed.
    fn apply(&mut self, event: WakeEvent, reason: Option<String>, now_ms: i64) -> bool {
        match next_state(self.state, event) {
            Step::To(s) => {
                self.state = s;
                self.reason = if s == WakeState::Failed { reason } else { None };
                self.since_ms = now_ms;
                true
            }
            Step::Stay | Step::Refuse(_) => false,
        }
    }
}

/// Why `POST /admin/v1/wakeable/:id/wake` did not start a wake.
#[derive(Debug, Clone, PartialEq)]
pub enum WakeError {
    Unknown(String),
    Refused(WakeRefusal, Box<WakeableStatus>),
}

impl WakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unknown(_) => StatusCode::NOT_FOUND,
            Self::Refused(..) => StatusCode::CONFLICT,
        }
    }
}

impl std::fmt::Display for WakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(id) => write!(
                f,
                "no wakeable machine `{id}` on this node (declare it as [[wakeable]] in config.toml)"
            ),
            Self::Refused(WakeRefusal::AlreadyWaking, s) => write!(
                f,
                "`{}` is already waking; wait for its node `{}` to join or for the wake to fail",
                s.id, s.node_name
            ),
            Self::Refused(WakeRefusal::AlreadyJoined, s) => write!(
                f,
                "`{}` has joined the mesh as node `{}`; it is a live peer now",
                s.id, s.node_name
            ),
        }
    }
}

/// A wake to run: what [`Inventory::begin_wake`] hands to [`run_wake`].
#[derive(Debug, Clone)]
pub struct WakeJob {
    pub id: String,
    pub attempt: u64,
    pub command: WakeCommand,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
}

/// The node's wakeable machines and their states.
pub struct Inventory {
    entries: Mutex<Vec<Entry>>,
    /// Extra environment for wake commands: where the woken node should join.
    env: Vec<(String, String)>,
}

impl Inventory {
    /// `join_addr` is this node's invite token and `api_addr` its HTTP address, passed to
    /// wake commands as `INFERMESH_JOIN` and `INFERMESH_API_ADDR`.
    pub fn new(configs: &[WakeableConfig], join_addr: Option<String>, api_addr: &str) -> Self {
        let mut env = vec![("INFERMESH_API_ADDR".to_string(), api_addr.to_string())];
        if let Some(j) = join_addr {
            env.push(("INFERMESH_JOIN".into(), j));
        }
        Self {
            entries: Mutex::new(
                configs
                    .iter()
                    .map(|cfg| Entry {
                        cfg: cfg.clone(),
                        state: WakeState::Sleeping,
                        reason: None,
                        since_ms: 0,
                        attempt: 0,
                    })
                    .collect(),
            ),
            env,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every entry, `joined` included (metrics).
    pub fn all(&self) -> Vec<WakeableStatus> {
        self.lock().iter().map(Entry::view).collect()
    }

    pub fn get(&self, id: &str) -> Option<WakeableStatus> {
        self.lock().iter().find(|e| e.cfg.id == id).map(Entry::view)
    }

    /// The inventory list of `/api/status`: every entry not (yet, or any more) a live peer.
    pub fn list(&self) -> Vec<WakeableStatus> {
        self.lock()
            .iter()
            .filter(|e| e.state != WakeState::Joined)
            .map(Entry::view)
            .collect()
    }

    /// Brings every entry up to date with the live peers and the clock: a machine whose node is
    /// a peer has joined; one whose node left is sleeping again; a wake past its grace failed.
    pub fn observe(&self, peers: &[PeerView], now_ms: i64) {
        let mut entries = self.lock();
        for e in entries.iter_mut() {
            let want = e.cfg.expected_node();
            let peer = peers
                .iter()
                .find(|p| p.record.name == want || p.record.node_id == want);
            match peer {
                Some(p) => {
                    if e.apply(WakeEvent::PeerJoined, None, now_ms) {
                        tracing::info!(wakeable = %e.cfg.id, peer = %p.record.name, node_id = %p.record.node_id, "wakeable machine joined the mesh; it is a live peer now");
                    }
                }
                None if e.state == WakeState::Joined => {
                    if e.apply(WakeEvent::PeerGone, None, now_ms) {
                        tracing::info!(wakeable = %e.cfg.id, "wakeable machine left the mesh; listed as sleeping capacity again");
                    }
                }
                None => {
                    let grace_ms =
                        i64::try_from(e.cfg.grace_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                    if e.state == WakeState::Waking && now_ms.saturating_sub(e.since_ms) > grace_ms
                    {
                        let reason = format!(
                            "node `{want}` has not joined the mesh within {}s of the wake",
                            e.cfg.grace_s
                        );
                        e.apply(WakeEvent::GraceExpired, Some(reason.clone()), now_ms);
                        tracing::error!(wakeable = %e.cfg.id, reason = %reason, "wake failed; check the machine at its provider, then wake it again");
                    }
                }
            }
        }
    }

    /// Moves `id` to `waking` and returns the job to run, or why not.
    pub fn begin_wake(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<(WakeableStatus, WakeJob), WakeError> {
        let mut entries = self.lock();
        let e = entries
            .iter_mut()
            .find(|e| e.cfg.id == id)
            .ok_or_else(|| WakeError::Unknown(id.to_string()))?;
        if let Step::Refuse(why) = next_state(e.state, WakeEvent::Wake) {
            return Err(WakeError::Refused(why, Box::new(e.view())));
        }
        e.apply(WakeEvent::Wake, None, now_ms);
        e.attempt += 1;
        let mut env = self.env.clone();
        env.push(("INFERMESH_WAKEABLE_ID".into(), e.cfg.id.clone()));
        env.push((
            "INFERMESH_NODE_NAME".into(),
            e.cfg.expected_node().to_string(),
        ));
        Ok((
            e.view(),
            WakeJob {
                id: e.cfg.id.clone(),
                attempt: e.attempt,
                command: e.cfg.wake_command.clone(),
                timeout: Duration::from_secs(e.cfg.timeout_s),
                env,
            },
        ))
    }

    /// Records how attempt `attempt` of the wake command ended; a stale attempt changes nothing.
    pub fn command_finished(
        &self,
        id: &str,
        attempt: u64,
        outcome: Result<(), String>,
        now_ms: i64,
    ) {
        let mut entries = self.lock();
        let Some(e) = entries.iter_mut().find(|e| e.cfg.id == id) else {
            return;
        };
        if e.attempt != attempt {
            return;
        }
        match outcome {
            Ok(()) => {
                if e.state == WakeState::Waking {
                    tracing::info!(wakeable = %id, node = %e.cfg.expected_node(), grace_s = e.cfg.grace_s, "wake command finished; waiting for the node to join");
                }
                e.apply(WakeEvent::CommandSucceeded, None, now_ms);
            }
            Err(reason) => {
                if e.apply(WakeEvent::CommandFailed, Some(reason.clone()), now_ms) {
                    tracing::error!(wakeable = %id, reason = %reason, "wake failed; fix the wake_command or the machine at its provider, then wake it again");
                }
            }
        }
    }

    fn waking_attempt(&self, id: &str) -> Option<u64> {
        self.lock()
            .iter()
            .find(|e| e.cfg.id == id && e.state == WakeState::Waking)
            .map(|e| e.attempt)
    }
}

/// Runs a wake command to its end: `Ok` when it exits 0 within the timeout, else the reason.
/// Every output line is logged at `info` with the wakeable id.
pub async fn run_command(job: &WakeJob) -> Result<(), String> {
    let mut cmd = match &job.command {
        WakeCommand::Shell(s) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(s);
            c
        }
        WakeCommand::Argv(v) => {
            let Some((program, args)) = v.split_first() else {
                return Err("wake command is empty".into());
            };
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    tracing::info!(wakeable = %job.id, command = %job.command.display(), timeout_s = job.timeout.as_secs(), "running wake command");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run wake command `{}`: {e}", job.command.display()))?;
    // Last lines of each stream: stderr explains a failure best, stdout is the fallback.
    let tails = [
        Arc::new(Mutex::new(std::collections::VecDeque::new())),
        Arc::new(Mutex::new(std::collections::VecDeque::new())),
    ];
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(log_lines(
            out,
            job.id.clone(),
            "stdout",
            tails[1].clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(log_lines(
            err,
            job.id.clone(),
            "stderr",
            tails[0].clone(),
        )));
    }
    let result = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(match st.code() {
            Some(c) => format!("wake command exited with status {c}"),
            None => format!("wake command was killed ({st})"),
        }),
        Ok(Err(e)) => Err(format!("wake command could not be waited for: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
            let _ = child.kill().await;
            Err(format!(
                "wake command timed out after {}s",
                job.timeout.as_secs()
            ))
        }
    };
    let drain = async {
        for r in readers.iter_mut() {
            let _ = r.await;
        }
    };
    let _ = tokio::time::timeout(OUTPUT_DRAIN, drain).await;
    for r in &readers {
        r.abort();
    }
    result.map_err(|mut reason| {
        let last = tails
            .iter()
            .find_map(|t| t.lock().unwrap_or_else(|e| e.into_inner()).back().cloned());
        if let Some(last) = last {
            reason.push_str(": ");
            reason.push_str(&last);
        }
        reason
    })
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: killpg only sends a signal; the group is the one the child leads.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

async fn log_lines<R: tokio::io::AsyncRead + Unpin>(
    r: R,
    id: String,
    stream: &'static str,
    tail: Arc<Mutex<std::collections::VecDeque<String>>>,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(wakeable = %id, stream, "{line}");
        let line = line.trim().to_string();
        if !line.is_empty() {
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

fn now_ms() -> i64 {
    infermesh_mesh::schedule::unix_now_ms()
}

/// Runs `job` and then watches for its node until it joins or the grace ends. `peers` is read
/// each poll (the live mesh view).
pub async fn run_wake(
    inv: Arc<Inventory>,
    job: WakeJob,
    peers: impl Fn() -> Vec<PeerView> + Send + Sync + 'static,
) {
    let peers = Arc::new(peers);
    // The watcher runs alongside the command: a machine may join before its command returns.
    let watcher = {
        let (inv, peers, id, attempt) = (inv.clone(), peers.clone(), job.id.clone(), job.attempt);
        tokio::spawn(async move {
            while inv.waking_attempt(&id) == Some(attempt) {
                inv.observe(&peers(), now_ms());
                tokio::time::sleep(JOIN_POLL).await;
            }
        })
    };
    let outcome = run_command(&job).await;
    inv.command_finished(&job.id, job.attempt, outcome, now_ms());
    let _ = watcher.await;
}

/// `POST /admin/v1/wakeable/:id/wake` → 202 with the entry (now `waking`); 404 unknown id;
/// 409 already waking or joined. The command runs in the background.
pub async fn wake(
    State(inv): State<Arc<Inventory>>,
    State(members): State<Members>,
    Path(id): Path<String>,
) -> Response {
    inv.observe(&members.peers(), now_ms());
    match inv.begin_wake(&id, now_ms()) {
        Ok((view, job)) => {
            tracing::info!(wakeable = %id, provider = %view.provider, node = %view.node_name, "waking machine");
            tokio::spawn(run_wake(inv, job, move || members.peers()));
            (StatusCode::ACCEPTED, Json(view)).into_response()
        }
        Err(e) => plain_error(e.status(), e),
    }
}

#[cfg(test)]
#[path = "wakeable_tests.rs"]
mod tests;
