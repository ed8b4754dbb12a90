//! Membership over chitchat: one UDP gossip socket per node, the node's [`NodeRecord`] under one
//! key, and a peer table derived from chitchat's failure detector.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    Heartbeat, ProtocolVersion,
};
use infermesh_state::NodeState;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use crate::record::{decode_record, NodeRecord, RECORD_KEY, RECORD_SCHEMA_VERSION};

/// 200 ms rounds converge 9 nodes in well under 2 s (fan-out 3, every digest carries every node).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Leaves a 1 s margin under the 5 s promise for a killed node to leave `peers()`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(4);
/// How long a dead node's state lingers in chitchat before it is garbage-collected. Long enough
/// that a partitioned node coming back is not resurrected from stale gossip; it is invisible in
/// `peers()` the whole time.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(10 * 60);
pub const DEFAULT_CLUSTER_ID: &str = "infermesh";

/// Attempts when the caller leaves the port to us (`:0`): the port is picked before chitchat binds
/// it, so another process can take it in between.
const PORT_PICK_ATTEMPTS: usize = 8;

pub struct MeshConfig {
    /// Stable identity across restarts; the generation (start time) tells restarts apart.
    pub node_id: String,
    /// UDP address to bind. Port 0 lets [`Mesh::start`] pick a free port (chitchat itself needs the
    /// real port up front, because it is part of the advertised identity).
    pub gossip_addr: SocketAddr,
    /// Address peers should gossip to, when it differs from `gossip_addr` (binding `0.0.0.0`).
    pub advertise_addr: Option<SocketAddr>,
    /// `host:port` gossip addresses of any live members; empty for the first node.
    pub seeds: Vec<String>,
    /// Nodes with another cluster id are refused, so two meshes on one LAN cannot merge.
    pub cluster_id: String,
    pub gossip_interval: Duration,
    /// Upper bound for a silent peer to leave [`MeshHandle::peers`].
    pub dead_after: Duration,
    /// Delay before a dead node's state is garbage-collected.
    pub gc_grace: Duration,
    pub record: NodeRecord,
}

impl MeshConfig {
    /// A config with the default cluster id, timings and no seeds.
    pub fn new(node_id: impl Into<String>, gossip_addr: SocketAddr, record: NodeRecord) -> Self {
        Self {
            node_id: node_id.into(),
            gossip_addr,
            advertise_addr: None,
            seeds: Vec::new(),
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            gc_grace: DEFAULT_GC_GRACE,
            record,
        }
    }
}

/// One live peer as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// The peer's record; `node_id` is always the gossip identity, whatever the record claimed.
    pub record: NodeRecord,
    pub gossip_addr: SocketAddr,
    /// Start time (ms since the Unix epoch) of the peer's current incarnation.
    pub generation: u64,
    /// Milliseconds since we last saw its heartbeat advance (resolution: one poll, ≤ 100 ms).
    pub last_seen_ms: u64,
    pub state: NodeState,
}

/// Picks a currently free UDP port on 127.0.0.1. Racy by nature (the port is released before
/// use); prefer port 0 in [`MeshConfig::gossip_addr`], which retries.
///
/// # Panics
/// If no UDP socket can be bound on loopback at all.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must succeed")
}

/// Generation = start time in ms, forced strictly increasing within the process so that two
/// incarnations started in the same millisecond (tests) still order correctly.
fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

/// Maps `dead_after` onto chitchat's failure detector.
///
/// chitchat's phi is `elapsed / mean_interval` (exponential model), so a peer is declared dead
/// after `phi_threshold × mean` of silence. The mean is how often any gossip brings a fresher
/// heartbeat: every node hears each peer from several directions per round, so it settles near
/// half a gossip interval (measured), and the prior (`initial_interval`, weighted as 5 samples) is
/// set there so freshly joined peers are not judged more leniently. The threshold is sized for a
/// mean of a *whole* interval minus two rounds of evaluation lag (the detector runs once per round,
/// our poll adds one more), so even sparse gossip stays inside `dead_after`; typical detection is
/// about half of it. `snapshot` enforces `dead_after` as a hard cap on top.
fn failure_detector_config(cfg: &MeshConfig) -> FailureDetectorConfig {
    let budget = cfg.dead_after.saturating_sub(cfg.gossip_interval * 2);
    let phi = (budget.as_secs_f64() / cfg.gossip_interval.as_secs_f64()).max(3.0);
    FailureDetectorConfig {
        phi_threshold: phi,
        sampling_window_size: 200,
        // A gap this long is an outage, not a sample of normal jitter.
        max_interval: cfg.dead_after,
        initial_interval: cfg.gossip_interval / 2,
        dead_node_grace_period: cfg.gc_grace,
    }
}

pub struct Mesh;

impl Mesh {
    /// Binds the gossip socket, publishes `cfg.record` and starts gossiping. Must run inside a
    /// tokio runtime.
    pub async fn start(cfg: MeshConfig) -> anyhow::Result<MeshHandle> {
        if cfg.node_id.is_empty() {
            bail!("mesh node_id must not be empty");
        }
        if cfg.gossip_interval.is_zero() || cfg.dead_after < cfg.gossip_interval * 3 {
            bail!(
                "dead_after ({:?}) must be at least 3 gossip intervals ({:?})",
                cfg.dead_after,
                cfg.gossip_interval
            );
        }
        // Checked before binding anything: a wildcard address must fail without being used.
        if cfg.advertise_addr.is_none_or(|a| a.ip().is_unspecified())
            && cfg.gossip_addr.ip().is_unspecified()
        {
            bail!(
                "gossip address {} cannot be advertised; set advertise_addr",
                cfg.gossip_addr
            );
        }
        let mut last_err = None;
        let attempts = if cfg.gossip_addr.port() == 0 {
            PORT_PICK_ATTEMPTS
        } else {
            1
        };
        for _ in 0..attempts {
            let mut listen = cfg.gossip_addr;
            if listen.port() == 0 {
                let probe = std::net::UdpSocket::bind(SocketAddr::new(listen.ip(), 0))
                    .context("probing for a free gossip port")?;
                listen.set_port(probe.local_addr()?.port());
            }
            match start_on(&cfg, listen).await {
                Ok(h) => return Ok(h),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }
}

async fn start_on(cfg: &MeshConfig, listen: SocketAddr) -> anyhow::Result<MeshHandle> {
    let mut advertise = cfg.advertise_addr.unwrap_or(listen);
    if advertise.ip().is_unspecified() {
        bail!("gossip address {advertise} cannot be advertised; set advertise_addr");
    }
    if advertise.port() == 0 {
        advertise.set_port(listen.port());
    }
    let id = ChitchatId::new(cfg.node_id.as_str(), next_generation(), advertise);
    let record = own_record(&cfg.node_id, cfg.record.clone());
    let config = ChitchatConfig {
        chitchat_id: id.clone(),
        cluster_id: cfg.cluster_id.clone(),
        gossip_interval: cfg.gossip_interval,
        listen_addr: listen,
        seed_nodes: cfg.seeds.clone(),
        failure_detector_config: failure_detector_config(cfg),
        // We never delete keys (the record is overwritten), so this only bounds tombstones a
        // future feature might leave behind.
        marked_for_deletion_grace_period: cfg.gc_grace,
        catchup_callback: None,
        extra_liveness_predicate: None,
        // Every infermesh node speaks V1 (compressed digests) from the first release, so there is
        // no V0 population to stay compatible with.
        protocol_version: ProtocolVersion::V1,
    };
    let initial = vec![(RECORD_KEY.to_string(), record.encode())];
    let handle = spawn_chitchat(config, initial, &UdpTransport)
        .await
        .with_context(|| format!("starting gossip on {listen}"))?;

    let (changes, _) = watch::channel(0u64);
    let inner = Arc::new(Inner {
        node_id: cfg.node_id.clone(),
        dead_after: cfg.dead_after,
        peers: RwLock::new(Vec::new()),
        changes,
    });
    let (record_tx, record_rx) = watch::channel(record);
    let poll = (cfg.gossip_interval / 2).min(Duration::from_millis(100));
    let watcher = tokio::spawn(watch_loop(
        handle.chitchat(),
        inner.clone(),
        record_rx,
        poll,
    ));
    tracing::info!(node_id = %cfg.node_id, generation = id.generation_id, %listen,
        advertise = %advertise, seeds = ?cfg.seeds, "mesh started");
    Ok(MeshHandle {
        chitchat: handle,
        inner,
        record_tx,
        watcher,
        id,
    })
}

/// The mesh identity is authoritative for `node_id`, and this build writes its own schema
/// version, whatever the caller filled in.
fn own_record(node_id: &str, mut record: NodeRecord) -> NodeRecord {
    record.node_id = node_id.to_string();
    record.v = RECORD_SCHEMA_VERSION;
    record
}

/// A running mesh membership. Dropping it stops gossip too; [`MeshHandle::shutdown`] also waits
/// for the socket to be released.
pub struct MeshHandle {
    chitchat: ChitchatHandle,
    inner: Arc<Inner>,
    record_tx: watch::Sender<NodeRecord>,
    watcher: JoinHandle<()>,
    id: ChitchatId,
}

impl MeshHandle {
    /// Replaces this node's record. Applied within one poll and gossiped in the next rounds
    /// (peers see it in well under 1 s). Rapid publishes coalesce to the latest.
    pub fn publish(&self, record: NodeRecord) {
        self.record_tx
            .send_replace(own_record(&self.inner.node_id, record));
    }

    /// The record this node currently publishes.
    pub fn record(&self) -> NodeRecord {
        self.record_tx.borrow().clone()
    }

    /// Live peers, excluding this node, one entry per node_id (its newest live incarnation),
    /// sorted by node_id.
    pub fn peers(&self) -> Vec<PeerView> {
        let now = Instant::now();
        let peers = self.inner.peers.read().unwrap_or_else(|e| e.into_inner());
        peers
            .iter()
            .filter(|t| now.duration_since(t.last_seen) <= self.inner.dead_after)
            .map(|t| PeerView {
                last_seen_ms: now.duration_since(t.last_seen).as_millis() as u64,
                ..t.view.clone()
            })
            .collect()
    }

    /// A counter bumped whenever the peer set or any peer's record changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The address peers gossip to (use it as another node's seed).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.id.gossip_advertise_addr
    }

    /// This incarnation's generation (start time, ms since the Unix epoch).
    pub fn generation(&self) -> u64 {
        self.id.generation_id
    }

    /// Incarnations chitchat still holds state for, self and dead ones included (dead ones go
    /// after `gc_grace`). For diagnostics and metrics; membership is [`MeshHandle::peers`].
    pub async fn known_incarnations(&self) -> usize {
        self.chitchat
            .with_chitchat(|cc| cc.node_states().len())
            .await
    }

    /// Stops gossiping and waits until the socket is closed. chitchat has no leave message, so
    /// peers see this exactly like a crash and drop us after `dead_after`.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.watcher.abort();
        self.chitchat.shutdown().await
    }
}

struct Inner {
    node_id: String,
    dead_after: Duration,
    peers: RwLock<Vec<Tracked>>,
    changes: watch::Sender<u64>,
}

struct Tracked {
    view: PeerView,
    /// Detects record changes without comparing floats.
    record_version: u64,
    last_seen: Instant,
}

impl Inner {
    fn replace_peers(&self, next: Vec<Tracked>) {
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let same = peers.len() == next.len()
            && peers.iter().zip(&next).all(|(a, b)| {
                a.view.record.node_id == b.view.record.node_id
                    && a.view.generation == b.view.generation
                    && a.record_version == b.record_version
            });
        *peers = next;
        drop(peers);
        if !same {
            self.changes.send_modify(|c| *c += 1);
        }
    }
}

/// Applies publishes and turns chitchat's state into the peer table. Polling (rather than
/// chitchat's live-nodes watcher) is what lets us time heartbeats for `last_seen_ms` and enforce
/// `dead_after` ourselves. Ends when the handle is dropped.
async fn watch_loop(
    chitchat: Arc<Mutex<Chitchat>>,
    inner: Arc<Inner>,
    mut record_rx: watch::Receiver<NodeRecord>,
    poll: Duration,
) {
    let mut seen: HashMap<ChitchatId, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = record_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let encoded = record_rx.borrow_and_update().encode();
                if encoded.len() > 16 * 1024 {
                    // One UDP datagram carries all deltas; a fat record crowds out the others.
                    tracing::warn!(bytes = encoded.len(), "large node record");
                }
                chitchat.lock().await.self_node_state().set(RECORD_KEY, encoded);
            }
            _ = tick.tick() => {
                let next = {
                    let cc = chitchat.lock().await;
                    snapshot(&cc, &inner, &mut seen, Instant::now())
                };
                inner.replace_peers(next);
            }
        }
    }
}

/// What the poll remembers about one incarnation between ticks.
struct Seen {
    heartbeat: Heartbeat,
    /// When `heartbeat` last advanced.
    at: Instant,
    /// chitchat version of the record key, so a record is decoded (and a bad one logged) once
    /// per change rather than once per poll.
    record_version: u64,
    record: Option<NodeRecord>,
}

fn snapshot(
    cc: &Chitchat,
    inner: &Inner,
    seen: &mut HashMap<ChitchatId, Seen>,
    now: Instant,
) -> Vec<Tracked> {
    let states = cc.node_states();
    seen.retain(|id, _| states.contains_key(id));
    for (id, st) in states {
        let s = seen.entry(id.clone()).or_insert(Seen {
            heartbeat: st.heartbeat(),
            at: now,
            record_version: 0,
            record: None,
        });
        if st.heartbeat() > s.heartbeat {
            s.heartbeat = st.heartbeat();
            s.at = now;
        }
        // A node can be known before its first delta arrives: no record yet, not a peer yet.
        if let Some(v) = st.get_versioned(RECORD_KEY).filter(|v| !v.is_deleted()) {
            if v.version != s.record_version {
                s.record_version = v.version;
                s.record = decode_record(&v.value);
            }
        }
    }

    // A restarted node briefly has two live incarnations (the old one until the detector gives up
    // on it); the newest generation is the real one. Our own old incarnations are never peers.
    let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in cc.live_nodes() {
        if *id.node_id == *inner.node_id {
            continue;
        }
        let slot = newest.entry(&id.node_id).or_insert(id);
        if id.generation_id > slot.generation_id {
            *slot = id;
        }
    }

    newest
        .into_values()
        .filter_map(|id| {
            let s = seen.get(id)?;
            if now.duration_since(s.at) > inner.dead_after {
                return None;
            }
            let mut record = s.record.clone()?;
            if record.node_id != *id.node_id {
                tracing::debug!(gossip_id = %id.node_id, claimed = %record.node_id,
                    "peer record names another node; using the gossip identity");
                record.node_id = id.node_id.to_string();
            }
            let state = record.effective_state();
            Some(Tracked {
                view: PeerView {
                    record,
                    gossip_addr: id.gossip_advertise_addr,
                    generation: id.generation_id,
                    last_seen_ms: 0,
                    state,
                },
                record_version: s.record_version,
                last_seen: s.at,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_strictly_increase() {
        let a = next_generation();
        let b = next_generation();
        assert!(b > a);
    }

    #[test]
    fn default_detector_fits_dead_after() {
        let cfg = MeshConfig::new("n", (Ipv4Addr::LOCALHOST, 0).into(), NodeRecord::default());
        let fd = failure_detector_config(&cfg);
        let worst = cfg.gossip_interval.mul_f64(fd.phi_threshold) + cfg.gossip_interval * 2;
        assert!(worst <= cfg.dead_after, "{worst:?}");
        assert!(fd.initial_interval < cfg.gossip_interval);
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_udp_port(), 0);
    }
}
