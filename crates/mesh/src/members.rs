//! The member table: every other member's latest signed record and heartbeat, what a peer's
//! digest lacks, and who is live. No I/O; the gossip loop feeds it verified bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use infermesh_state::membership::{
    judge_beat, judge_record, peer_lacks, Capacity, Counters, Lacks, Verdict,
};

use crate::signed::{
    parse_envelope, verify_beat, verify_envelope, Refused, SignedBeat, SignedRecord, Verified,
};
use crate::wire::DigestEntry;

/// Dead members are remembered (counters only) so a replayed old record cannot bring them back;
/// beyond this many the oldest are forgotten.
const MAX_TOMBSTONES: usize = 8192;

pub struct Member {
    pub v: Verified,
    pub signed: SignedRecord,
    pub beat: u64,
    pub beat_sig: Option<SignedBeat>,
    /// When its counters last advanced, on our clock.
    pub last_advance: Instant,
}

impl Member {
    pub fn counters(&self) -> Counters {
        self.v.counters(self.beat)
    }
}

/// What applying one statement did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A member we did not hold (or a new incarnation of one).
    Joined(String),
    /// A newer record of a member we held.
    Changed(String),
    /// A newer heartbeat.
    Beat,
    /// Nothing new.
    Stale,
    /// Refused: the table is full for this newcomer.
    Full(String),
}

pub struct Table {
    pub mesh: String,
    pub own_id: String,
    pub members: HashMap<String, Member>,
    tombstones: HashMap<String, (Counters, Instant)>,
    pub max_members: usize,
    pub max_per_ip: usize,
}

impl Table {
    pub fn new(mesh: String, own_id: String, max_members: usize, max_per_ip: usize) -> Self {
        Self {
            mesh,
            own_id,
            members: HashMap::new(),
            tombstones: HashMap::new(),
            max_members,
            max_per_ip,
        }
    }

    fn held(&self, id: &str) -> Option<Counters> {
        self.members
            .get(id)
            .map(Member::counters)
            .or_else(|| self.tombstones.get(id).map(|t| t.0))
    }

    /// Applies a record from gossip. Cheap checks (ordering, capacity) run before the signature
    /// check, so stale duplicates — most of gossip — cost no verification.
    pub fn apply_record(
        &mut self,
        signed: &SignedRecord,
        now: Instant,
    ) -> Result<Applied, Refused> {
        let env = parse_envelope(signed)?;
        if env.node_id == self.own_id {
            // Our own id: either a stale copy of our record or an impostor. Only a valid
            // signature makes it ours, and we never take our own state from gossip.
            return verify_envelope(&self.mesh, signed, env).map(|_| Applied::Stale);
        }
        let incoming = Counters {
            generation: env.generation,
            version: env.version,
            beat: 0,
        };
        let held = self.held(&env.node_id);
        let ip = infermesh_state::parse_host_port(&env.gossip_addr)
            .ok()
            .and_then(|h| h.ip());
        let cap = Capacity {
            members: self.members.len(),
            max_members: self.max_members,
            same_ip: self
                .members
                .values()
                .filter(|m| ip.is_some() && m.v.gossip_addr.ip() == ip)
                .count(),
            max_per_ip: self.max_per_ip,
        };
        match judge_record(held, incoming, cap) {
            Verdict::Stale => return Ok(Applied::Stale),
            Verdict::Full => return Ok(Applied::Full(env.node_id)),
            Verdict::Accept => {}
        }
        let generation = env.generation;
        let v = verify_envelope(&self.mesh, signed, env)?;
        if v.gossip_addr.ip().is_none() {
            return Err(Refused::BadAddress(format!(
                "gossip address {} is not an IP address",
                v.gossip_addr
            )));
        }
        let id = v.node_id.clone();
        self.tombstones.remove(&id);
        let prev = self.members.insert(
            id.clone(),
            Member {
                beat: 0,
                beat_sig: None,
                last_advance: now,
                signed: signed.clone(),
                v,
            },
        );
        Ok(match prev {
            Some(p) if p.v.generation == generation => {
                // Same incarnation: its latest beat still holds.
                if let Some(m) = self.members.get_mut(&id) {
                    m.beat = p.beat;
                    m.beat_sig = p.beat_sig;
                }
                Applied::Changed(id)
            }
            _ => Applied::Joined(id),
        })
    }

    pub fn apply_beat(&mut self, beat: &SignedBeat, now: Instant) -> Result<Applied, Refused> {
        let Some(m) = self.members.get_mut(&beat.node_id) else {
            return Ok(Applied::Stale);
        };
        if judge_beat(Some(m.counters()), beat.generation, beat.beat) != Verdict::Accept {
            return Ok(Applied::Stale);
        }
        verify_beat(&self.mesh, &m.v.key, beat)?;
        m.beat = beat.beat;
        m.beat_sig = Some(beat.clone());
        m.last_advance = now;
        Ok(Applied::Beat)
    }

    pub fn is_live(&self, m: &Member, now: Instant, dead_after: Duration) -> bool {
        now.saturating_duration_since(m.last_advance) <= dead_after
    }

    /// The digest entries of live members, plus `own`.
    pub fn digest(&self, own: DigestEntry, now: Instant, dead_after: Duration) -> Vec<DigestEntry> {
        let mut d = vec![own];
        for (id, m) in &self.members {
            if self.is_live(m, now, dead_after) {
                d.push((id.clone(), m.v.generation, m.v.version, m.beat));
            }
        }
        d
    }

    /// Statements of live members (and `own`) that a peer's digest shows it lacks.
    pub fn lacking<'a>(
        &'a self,
        their: &[DigestEntry],
        own: (&'a SignedRecord, Counters, &'a SignedBeat),
        now: Instant,
        dead_after: Duration,
    ) -> (Vec<&'a SignedRecord>, Vec<&'a SignedBeat>) {
        let theirs: HashMap<&str, Counters> = their
            .iter()
            .map(|(id, g, v, b)| {
                (
                    id.as_str(),
                    Counters {
                        generation: *g,
                        version: *v,
                        beat: *b,
                    },
                )
            })
            .collect();
        let mut records = Vec::new();
        let mut beats = Vec::new();
        let mut consider =
            |id: &str, ours: Counters, rec: &'a SignedRecord, beat: Option<&'a SignedBeat>| {
                match peer_lacks(ours, theirs.get(id).copied()) {
                    Lacks::Record => {
                        records.push(rec);
                        beats.extend(beat);
                    }
                    Lacks::Beat => beats.extend(beat),
                    Lacks::Nothing => {}
                }
            };
        consider(&self.own_id, own.1, own.0, Some(own.2));
        for (id, m) in &self.members {
            if self.is_live(m, now, dead_after) {
                consider(id, m.counters(), &m.signed, m.beat_sig.as_ref());
            }
        }
        (records, beats)
    }

    /// Entries of a peer's digest that are newer than what we hold (or unknown to us), as our
    /// own counters for them: sent back so the peer fills us in.
    pub fn behind(&self, their: &[DigestEntry]) -> Vec<DigestEntry> {
        their
            .iter()
            .filter(|(id, ..)| *id != self.own_id)
            .filter_map(|(id, g, v, b)| {
                let t = Counters {
                    generation: *g,
                    version: *v,
                    beat: *b,
                };
                let ours = self.held(id).unwrap_or_default();
                (peer_lacks(t, Some(ours)) != Lacks::Nothing)
                    .then(|| (id.clone(), ours.generation, ours.version, ours.beat))
            })
            .collect()
    }

    /// Moves members silent for `gc_grace` to tombstones. Returns how many went.
    pub fn gc(&mut self, now: Instant, gc_grace: Duration) -> usize {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_advance) > gc_grace)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(m) = self.members.remove(id) {
                self.tombstones.insert(id.clone(), (m.counters(), now));
            }
        }
        if self.tombstones.len() > MAX_TOMBSTONES {
            let mut by_age: Vec<(String, Instant)> = self
                .tombstones
                .iter()
                .map(|(k, v)| (k.clone(), v.1))
                .collect();
            by_age.sort_by_key(|e| e.1);
            for (id, _) in by_age.iter().take(self.tombstones.len() - MAX_TOMBSTONES) {
                self.tombstones.remove(id);
            }
        }
        gone.len()
    }

    /// Makes room for newcomers when full: dead members leave first (never live ones).
    pub fn evict_dead(&mut self, now: Instant, dead_after: Duration) {
        if self.members.len() >= self.max_members {
            self.gc(now, dead_after);
        }
    }
}
