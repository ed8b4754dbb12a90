//! The gossip task: push-pull anti-entropy of signed statements over sealed UDP, under a
//! supervisor that restarts it if it ever ends, and a guard that rate-limits senders and logs
//! each offender once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use infermesh_state::FirstSeen;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::members::{Applied, Table};
use crate::own::{unix_ms, Own};
use crate::peer::{MeshHealth, PeerView};
use crate::wire::{DigestEntry, Message, Packet, Sealer, WireError, MAX_DATAGRAM};

/// Peers each round gossips to.
const FANOUT: usize = 3;
/// Heartbeats every this many rounds (0.4 s at the default 200 ms): ten per `dead_after`.
const BEAT_EVERY_ROUNDS: u64 = 2;
/// Seeds are contacted every this many rounds even when peers are known, so a partition heals.
const SEED_EVERY_ROUNDS: u64 = 25;
/// Datagrams one reply may take: bounds what one `Syn` (possibly replayed) can make us send.
const MAX_REPLY_DATAGRAMS: usize = 8;
/// Per sender address: sustained packets per second and burst.
const RATE_PER_SEC: f64 = 200.0;
const RATE_BURST: f64 = 400.0;
/// Remembered senders (rate buckets, logged offenders) at most; then the oldest are forgotten.
const MAX_TRACKED: usize = 4096;

pub(crate) struct Shared {
    pub table: Mutex<Table>,
    pub own: Mutex<Own>,
    pub changes: watch::Sender<u64>,
    pub health: Mutex<MeshHealth>,
    pub sealer: Sealer,
    pub socket: Arc<UdpSocket>,
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub dead_after: Duration,
    pub gc_grace: Duration,
    pub guard: Mutex<Guard>,
    /// The live set last announced through `changes`, so a join is announced once (when its
    /// record arrives) and not again by the next tick.
    pub announced: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn own(&self) -> MutexGuard<'_, Own> {
        lock(&self.own)
    }

    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    pub fn health(&self) -> MeshHealth {
        lock(&self.health).clone()
    }

    fn view(&self, m: &crate::members::Member, now: Instant) -> Option<PeerView> {
        let gossip_addr = m.v.gossip_addr.socket_addr()?;
        Some(PeerView {
            state: m.v.record.effective_state(),
            record: m.v.record.clone(),
            gossip_addr,
            public_key: m.v.key.to_bytes(),
            generation: m.v.generation,
            last_seen_ms: now.saturating_duration_since(m.last_advance).as_millis() as u64,
        })
    }

    pub fn peers(&self, now: Instant) -> Vec<PeerView> {
        let t = self.table();
        let mut v: Vec<PeerView> = t
            .members
            .values()
            .filter(|m| t.is_live(m, now, self.dead_after))
            .filter_map(|m| self.view(m, now))
            .collect();
        v.sort_by(|a, b| a.record.node_id.cmp(&b.record.node_id));
        v
    }

    pub fn peer(&self, id: &str, now: Instant) -> Option<PeerView> {
        let t = self.table();
        let m = t.members.get(id)?;
        if !t.is_live(m, now, self.dead_after) {
            return None;
        }
        self.view(m, now)
    }

    fn bump(&self) {
        self.changes.send_modify(|c| *c += 1);
    }
}

/// Per-sender rate limits and the once-per-offender log.
pub(crate) struct Guard {
    buckets: HashMap<SocketAddr, (f64, Instant)>,
    logged: FirstSeen<String>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            logged: FirstSeen::new(MAX_TRACKED),
        }
    }
}

impl Guard {
    /// Token bucket per sender address: `false` drops the packet.
    fn admit(&mut self, from: SocketAddr, now: Instant) -> bool {
        if self.buckets.len() > MAX_TRACKED {
            self.buckets
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(10));
        }
        let (tokens, at) = self.buckets.entry(from).or_insert((RATE_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * RATE_PER_SEC;
        *tokens = (*tokens + refill).min(RATE_BURST);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }

    /// `true` the first time `key` is seen: the caller logs then, and stays quiet after.
    fn first(&mut self, key: String) -> bool {
        self.logged.first(key)
    }
}

impl Shared {
    fn offence(&self, key: String, log: impl FnOnce()) {
        if lock(&self.guard).first(key) {
            log();
        }
    }
}

/// Runs the gossip loop, restarting it whenever it ends (it should not: every input is handled,
/// but a membership that silently stopped would leave a node serving stale peers forever).
pub(crate) async fn supervise(shared: Arc<Shared>) {
    loop {
        // Aborting the supervisor (the handle is dropped) must stop the loop too.
        let mut task = AbortOnDrop(tokio::spawn(run(shared.clone())));
        let why = match (&mut task.0).await {
            Ok(()) => "gossip loop returned".to_string(),
            Err(e) if e.is_panic() => {
                let p = e.into_panic();
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                format!("gossip task panicked: {msg}")
            }
            Err(_) => return, // cancelled: the handle is shutting down
        };
        {
            let mut h = lock(&shared.health);
            h.restarts += 1;
            h.last_failure = Some(why.clone());
            h.running = false;
        }
        tracing::error!(error = %why, "membership stopped; restarting it (report this as a bug)");
        shared.bump();
        tokio::time::sleep(Duration::from_millis(200)).await;
        lock(&shared.health).running = true;
        shared.bump();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    let mut round: u64 = 0;
    let mut seed_addrs: Vec<SocketAddr> = Vec::new();
    loop {
        tokio::select! {
            got = shared.socket.recv_from(&mut buf) => match got {
                Ok((n, from)) => on_datagram(&shared, &buf[..n], from).await,
                Err(e) => {
                    // ICMP port-unreachable surfaces here on Linux; nothing to do but go on.
                    tracing::debug!(error = %e, "gossip receive error");
                }
            },
            _ = tick.tick() => {
                round += 1;
                if round.is_multiple_of(BEAT_EVERY_ROUNDS) {
                    shared.own().next_beat();
                }
                if seed_addrs.is_empty() || round.is_multiple_of(SEED_EVERY_ROUNDS) {
                    seed_addrs = resolve(&shared.seeds).await;
                }
                let now = Instant::now();
                let live = live_ids(&shared, now);
                let moved = {
                    let mut a = lock(&shared.announced);
                    let moved = *a != live;
                    a.clone_from(&live);
                    moved
                };
                if moved {
                    shared.bump();
                }
                if round.is_multiple_of(50) {
                    let mut t = shared.table();
                    t.gc(now, shared.gc_grace);
                }
                let targets = pick_targets(&shared, &seed_addrs, round, now);
                let digest = own_digest(&shared, now);
                for to in targets {
                    send(&shared, to, Message::Syn { digest: digest.clone(), reply: false }).await;
                }
            }
        }
    }
}

fn live_ids(shared: &Shared, now: Instant) -> Vec<String> {
    let t = shared.table();
    let mut v: Vec<String> = t
        .members
        .iter()
        .filter(|(_, m)| t.is_live(m, now, shared.dead_after))
        .map(|(id, _)| id.clone())
        .collect();
    v.sort();
    v
}

async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in seeds {
        let lookup = tokio::time::timeout(Duration::from_secs(1), tokio::net::lookup_host(s));
        match lookup.await {
            Ok(Ok(addrs)) => out.extend(addrs.take(4)),
            Ok(Err(e)) => tracing::debug!(seed = %s, error = %e, "cannot resolve join address"),
            Err(_) => tracing::debug!(seed = %s, "resolving join address timed out"),
        }
    }
    out
}

fn pick_targets(
    shared: &Shared,
    seeds: &[SocketAddr],
    round: u64,
    now: Instant,
) -> Vec<SocketAddr> {
    let mut live: Vec<SocketAddr> = {
        let t = shared.table();
        t.members
            .values()
            .filter(|m| t.is_live(m, now, shared.dead_after))
            .filter_map(|m| m.v.gossip_addr.socket_addr())
            .collect()
    };
    let mut out = Vec::with_capacity(FANOUT + seeds.len());
    for _ in 0..FANOUT.min(live.len()) {
        let i = (random_u64() % live.len() as u64) as usize;
        out.push(live.swap_remove(i));
    }
    if out.is_empty() || round.is_multiple_of(SEED_EVERY_ROUNDS) {
        let own = shared.own().gossip_addr;
        for s in seeds {
            if *s != own && !out.contains(s) {
                out.push(*s);
            }
        }
    }
    out
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn own_digest(shared: &Shared, now: Instant) -> Vec<DigestEntry> {
    let own = {
        let o = shared.own();
        (o.node_id.clone(), o.generation, o.version, o.beat)
    };
    shared.table().digest(own, now, shared.dead_after)
}

async fn send(shared: &Shared, to: SocketAddr, msg: Message) {
    let from = shared.own().node_id.clone();
    let packet = Packet {
        sent_ms: unix_ms(),
        from,
        msg,
    };
    if let Some(bytes) = shared.sealer.seal(&packet) {
        if let Err(e) = shared.socket.send_to(&bytes, to).await {
            tracing::debug!(%to, error = %e, "gossip send failed");
        }
    }
}

async fn on_datagram(shared: &Shared, bytes: &[u8], from: SocketAddr) {
    let now = Instant::now();
    if !lock(&shared.guard).admit(from, now) {
        shared.offence(format!("rate {from}"), || {
            tracing::warn!(%from, "gossip sender over its rate limit; dropping its packets");
        });
        return;
    }
    let packet = match shared.sealer.open(bytes, unix_ms()) {
        Ok(p) => p,
        Err(e) => {
            let key = match &e {
                WireError::Unauthenticated => format!("unauth {}", from.ip()),
                _ => format!("bad {from}"),
            };
            shared.offence(key, || {
                tracing::warn!(%from, error = %e, "refused a gossip datagram (logged once per sender)");
            });
            return;
        }
    };
    match packet.msg {
        Message::Syn { digest, reply } => on_syn(shared, &digest, reply, from, now).await,
        Message::Update { records, beats } => {
            on_update(shared, &packet.from, from, &records, &beats, now)
        }
    }
}

async fn on_syn(
    shared: &Shared,
    digest: &[DigestEntry],
    reply: bool,
    from: SocketAddr,
    now: Instant,
) {
    let (datagrams, behind) = {
        let own = shared.own();
        let t = shared.table();
        let (records, beats) = t.lacking(
            digest,
            (&own.signed, own.counters(), &own.beat_sig),
            now,
            shared.dead_after,
        );
        let behind = if reply { Vec::new() } else { t.behind(digest) };
        (pack(&records, &beats), behind)
    };
    for msg in datagrams {
        send(shared, from, msg).await;
    }
    if !behind.is_empty() {
        send(
            shared,
            from,
            Message::Syn {
                digest: behind,
                reply: true,
            },
        )
        .await;
    }
}

/// Splits statements into `Update`s that each fit a datagram, at most [`MAX_REPLY_DATAGRAMS`].
fn pack(
    records: &[&crate::signed::SignedRecord],
    beats: &[&crate::signed::SignedBeat],
) -> Vec<Message> {
    // JSON + AEAD overhead per datagram, and per statement, with a generous margin.
    let budget = MAX_DATAGRAM - 2048;
    let mut out = Vec::new();
    let (mut recs, mut bts, mut size) = (Vec::new(), Vec::new(), 0usize);
    let flush = |recs: &mut Vec<_>, bts: &mut Vec<_>, size: &mut usize, out: &mut Vec<Message>| {
        if !recs.is_empty() || !bts.is_empty() {
            out.push(Message::Update {
                records: std::mem::take(recs),
                beats: std::mem::take(bts),
            });
        }
        *size = 0;
    };
    for r in records {
        let n = r.body.len() * 2 + r.sig.len() + 64;
        if size + n > budget {
            flush(&mut recs, &mut bts, &mut size, &mut out);
        }
        size += n;
        recs.push((*r).clone());
    }
    for b in beats {
        let n = b.node_id.len() + b.sig.len() + 96;
        if size + n > budget {
            flush(&mut recs, &mut bts, &mut size, &mut out);
        }
        size += n;
        bts.push((*b).clone());
    }
    flush(&mut recs, &mut bts, &mut size, &mut out);
    out.truncate(MAX_REPLY_DATAGRAMS);
    out
}

fn on_update(
    shared: &Shared,
    claimed: &str,
    from: SocketAddr,
    records: &[crate::signed::SignedRecord],
    beats: &[crate::signed::SignedBeat],
    now: Instant,
) {
    let mut changed = false;
    let mut t = shared.table();
    t.evict_dead(now, shared.dead_after);
    for r in records {
        match t.apply_record(r, now) {
            Ok(Applied::Joined(id)) => {
                changed = true;
                let mut a = lock(&shared.announced);
                if let Err(at) = a.binary_search(&id) {
                    a.insert(at, id);
                }
            }
            Ok(Applied::Changed(_)) => changed = true,
            Ok(Applied::Full(id)) => shared.offence(format!("full {id}"), || {
                tracing::warn!(node_id = %id, relayed_by = %claimed, %from,
                    members = t.members.len(), "member table full; not admitting a new member");
            }),
            Ok(_) => {}
            Err(e) => shared.offence(format!("record {claimed} {from}"), || {
                tracing::warn!(offender = %claimed, %from, error = %e,
                    "refused a member record relayed by this peer (logged once per offender)");
            }),
        }
    }
    for b in beats {
        if let Err(e) = t.apply_beat(b, now) {
            shared.offence(format!("beat {claimed} {from}"), || {
                tracing::warn!(offender = %claimed, %from, node_id = %b.node_id, error = %e,
                    "refused a forged heartbeat relayed by this peer (logged once per offender)");
            });
        }
    }
    drop(t);
    if changed {
        shared.bump();
    }
}
