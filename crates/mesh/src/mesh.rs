//! Membership: one UDP socket per node speaking the sealed gossip of [`crate::wire`], the node's
//! own signed record and heartbeat, and the live peer table everything else reads.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::credential::MeshSecret;
use crate::gossip::{self, Shared};
use crate::members::Table;
use crate::own::{next_generation, Own};
pub use crate::peer::{MeshHealth, PeerView};
use crate::record::{NodeRecord, RECORD_SCHEMA_VERSION};
use crate::validation::node_id_from_public_key;

/// 200 ms rounds converge 9 nodes in well under 2 s (fan-out 3, push-pull).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Leaves a 1 s margin under the 5 s promise for a killed node to leave `peers()`.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(4);
/// How long a silent member's record is kept (invisible in `peers()`) before only its counters
/// remain.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(10 * 60);
/// Members one node tracks at most; a full table never evicts a live member.
pub const DEFAULT_MAX_MEMBERS: usize = 1024;
/// Members sharing one advertised IP at most, so one host cannot fill the table.
pub const DEFAULT_MAX_PER_IP: usize = 256;

pub struct MeshConfig {
    /// The node key: its fingerprint is the node id, and it signs the node's record and beats.
    pub key: SigningKey,
    pub secret: MeshSecret,
    /// UDP address to bind; port 0 picks a free one.
    pub gossip_addr: SocketAddr,
    /// Address peers should gossip to when it differs from `gossip_addr` (binding `0.0.0.0`);
    /// port 0 means "the bound port".
    pub advertise_addr: Option<SocketAddr>,
    /// `host:port` gossip addresses of live members; empty for the first node.
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    /// Upper bound for a silent peer to leave [`MeshHandle::peers`].
    pub dead_after: Duration,
    pub gc_grace: Duration,
    pub max_members: usize,
    pub max_per_ip: usize,
    pub record: NodeRecord,
}

impl MeshConfig {
    pub fn new(
        key: SigningKey,
        secret: MeshSecret,
        gossip_addr: SocketAddr,
        record: NodeRecord,
    ) -> Self {
        Self {
            key,
            secret,
            gossip_addr,
            advertise_addr: None,
            seeds: Vec::new(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            gc_grace: DEFAULT_GC_GRACE,
            max_members: DEFAULT_MAX_MEMBERS,
            max_per_ip: DEFAULT_MAX_PER_IP,
            record,
        }
    }
}

/// Picks a currently free UDP port on 127.0.0.1. Racy by nature; prefer port 0.
///
/// # Panics
/// If no UDP socket can be bound on loopback at all.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 must succeed")
}

pub struct Mesh;

impl Mesh {
    /// Binds the gossip socket, signs and publishes `cfg.record` and starts gossiping. Must run
    /// inside a tokio runtime.
    pub async fn start(cfg: MeshConfig) -> anyhow::Result<MeshHandle> {
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
                "gossip address {} cannot be advertised: peers need a real address; pass \
                 --advertise HOST:PORT (the address other machines reach this node at)",
                cfg.gossip_addr
            );
        }
        let socket = UdpSocket::bind(cfg.gossip_addr)
            .await
            .with_context(|| format!("binding udp {}", cfg.gossip_addr))?;
        let listen = socket.local_addr()?;
        let mut advertise = cfg.advertise_addr.unwrap_or(listen);
        if advertise.ip().is_unspecified() {
            bail!("gossip address {advertise} cannot be advertised; pass --advertise HOST:PORT");
        }
        if advertise.port() == 0 {
            advertise.set_port(listen.port());
        }
        let node_id = node_id_from_public_key(cfg.key.verifying_key().as_bytes());
        let mesh_id = cfg.secret.mesh_id();
        let mut record = cfg.record.clone();
        own_fields(&node_id, &mut record);
        let own = Own::new(
            cfg.key.clone(),
            mesh_id.clone(),
            next_generation(),
            advertise,
            record,
        );
        let generation = own.generation;

        let (changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::new(
                mesh_id.clone(),
                node_id.clone(),
                cfg.max_members,
                cfg.max_per_ip,
            )),
            own: Mutex::new(own),
            changes,
            health: Mutex::new(MeshHealth {
                running: true,
                ..MeshHealth::default()
            }),
            sealer: crate::wire::Sealer::new(&cfg.secret.gossip_key()),
            socket: Arc::new(socket),
            seeds: cfg.seeds.clone(),
            interval: cfg.gossip_interval,
            dead_after: cfg.dead_after,
            gc_grace: cfg.gc_grace,
            guard: Mutex::new(gossip::Guard::default()),
            announced: Mutex::new(Vec::new()),
        });
        let supervisor = tokio::spawn(gossip::supervise(shared.clone()));
        tracing::info!(node_id = %node_id, mesh = %mesh_id, generation, %listen,
            advertise = %advertise, seeds = ?cfg.seeds, "mesh started");
        Ok(MeshHandle {
            shared,
            supervisor,
            node_id,
            generation,
            advertise,
        })
    }
}

/// The signed identity is authoritative for `node_id`, and this build writes its own schema
/// version, whatever the caller filled in.
fn own_fields(node_id: &str, record: &mut NodeRecord) {
    record.node_id = node_id.to_string();
    record.v = RECORD_SCHEMA_VERSION;
}

/// Live members by id; see [`MeshHandle::directory`].
#[derive(Clone)]
pub struct Directory(std::sync::Weak<Shared>);

impl Directory {
    /// Live peers, excluding this node, sorted by node id; none once the membership is gone.
    pub fn peers(&self) -> Vec<PeerView> {
        self.0
            .upgrade()
            .map_or_else(Vec::new, |s| s.peers(Instant::now()))
    }

    /// `None` also once the membership is gone: nobody is a member of a stopped mesh.
    pub fn peer(&self, node_id: &str) -> Option<PeerView> {
        self.0.upgrade()?.peer(node_id, Instant::now())
    }
}

/// A running membership. Dropping it stops gossip; [`MeshHandle::shutdown`] also waits for it.
pub struct MeshHandle {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
    node_id: String,
    generation: u64,
    advertise: SocketAddr,
}

impl Drop for MeshHandle {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl MeshHandle {
    /// Replaces this node's record: re-signed at once, gossiped in the next rounds.
    pub fn publish(&self, mut record: NodeRecord) {
        own_fields(&self.node_id, &mut record);
        self.shared.own().set_record(record);
        self.shared.changes.send_modify(|c| *c += 1);
    }

    /// The record this node currently publishes.
    pub fn record(&self) -> NodeRecord {
        self.shared.own().record.clone()
    }

    /// Live peers, excluding this node, sorted by node id.
    pub fn peers(&self) -> Vec<PeerView> {
        self.shared.peers(Instant::now())
    }

    /// The live peer with this id, if any.
    pub fn peer(&self, node_id: &str) -> Option<PeerView> {
        self.shared.peer(node_id, Instant::now())
    }

    /// A cheap, cloneable read-only view of the live members, for code that must check an
    /// identity without holding the handle (the peer transport's TLS verifiers).
    pub fn directory(&self) -> Directory {
        Directory(Arc::downgrade(&self.shared))
    }

    /// A counter bumped whenever the peer set or any peer's record (or our own) changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The mesh's public fingerprint.
    pub fn mesh_id(&self) -> String {
        self.shared.own().mesh.clone()
    }

    /// The address peers gossip to (and reach the peer API at, over TCP).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.advertise
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Members held, live or silent (silent ones go after `gc_grace`), excluding self.
    pub fn known_members(&self) -> usize {
        self.shared.table().members.len()
    }

    pub fn health(&self) -> MeshHealth {
        self.shared.health()
    }

    /// Stops gossiping. There is no leave message: peers see this like a crash and drop us
    /// after `dead_after`.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.supervisor.abort();
        Ok(())
    }
}
