//! Whether an authenticated membership update replaces what a node holds.
//!
//! Every update reaching this point carries its owner's signature (the I/O side checked it), so
//! the questions left are ordering and capacity: a record is newer only by its owner's own
//! counters, and a full table never evicts a live member to make room for a stranger.

/// The owner's counters for one member: `generation` is the start time of its current
/// incarnation, `version` counts its record changes within it, `beat` its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Counters {
    pub generation: u64,
    pub version: u64,
    pub beat: u64,
}

/// How full the member table is, for the node the update is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub members: usize,
    pub max_members: usize,
    /// Members already known whose advertised address has the same IP as the newcomer's.
    pub same_ip: usize,
    pub max_per_ip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Replace what is held (or insert): the update is newer.
    Accept,
    /// Already held, or older: ignore silently (normal in gossip).
    Stale,
    /// A stranger while the table (or its IP's share) is full.
    Full,
}

/// A full record update: a new incarnation, or a newer version of the current one.
pub fn judge_record(held: Option<Counters>, incoming: Counters, cap: Capacity) -> Verdict {
    match held {
        None if cap.members >= cap.max_members || cap.same_ip >= cap.max_per_ip => Verdict::Full,
        None => Verdict::Accept,
        Some(h) if incoming.generation > h.generation => Verdict::Accept,
        Some(h) if incoming.generation == h.generation && incoming.version > h.version => {
            Verdict::Accept
        }
        Some(_) => Verdict::Stale,
    }
}

/// A heartbeat: only for the incarnation held, and only forward. A beat for an unknown member or
/// another incarnation cannot be checked against a key we trust for it, so it is stale.
pub fn judge_beat(held: Option<Counters>, generation: u64, beat: u64) -> Verdict {
    match held {
        Some(h) if h.generation == generation && beat > h.beat => Verdict::Accept,
        _ => Verdict::Stale,
    }
}

/// What a peer lacks, given its digest entry for a member we hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lacks {
    Nothing,
    /// Only a newer heartbeat.
    Beat,
    /// The record itself (and the latest beat).
    Record,
}

pub fn peer_lacks(ours: Counters, theirs: Option<Counters>) -> Lacks {
    match theirs {
        None => Lacks::Record,
        Some(t) if (ours.generation, ours.version) > (t.generation, t.version) => Lacks::Record,
        Some(t) if ours.generation == t.generation && ours.beat > t.beat => Lacks::Beat,
        Some(_) => Lacks::Nothing,
    }
}

/// Live: the member's counters advanced within `dead_after_ms` of `now_ms` (both on this node's
/// monotonic clock; the owner's clock never enters).
pub fn is_live(last_advance_ms: u64, now_ms: u64, dead_after_ms: u64) -> bool {
    now_ms.saturating_sub(last_advance_ms) <= dead_after_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: Capacity = Capacity {
        members: 3,
        max_members: 10,
        same_ip: 1,
        max_per_ip: 4,
    };

    fn c(generation: u64, version: u64, beat: u64) -> Counters {
        Counters {
            generation,
            version,
            beat,
        }
    }

    #[test]
    fn records_replace_only_when_newer() {
        let held = Some(c(5, 3, 9));
        for (inc, want) in [
            (c(5, 4, 0), Verdict::Accept),
            (c(6, 1, 0), Verdict::Accept),
            (c(5, 3, 100), Verdict::Stale),
            (c(5, 2, 100), Verdict::Stale),
            (c(4, 99, 99), Verdict::Stale),
        ] {
            assert_eq!(judge_record(held, inc, ROOM), want, "{inc:?}");
        }
        assert_eq!(judge_record(None, c(1, 1, 1), ROOM), Verdict::Accept);
    }

    #[test]
    fn a_full_table_refuses_strangers_but_not_members() {
        for (members, same_ip, want) in [
            (10, 0, Verdict::Full),
            (9, 4, Verdict::Full),
            (9, 3, Verdict::Accept),
            (11, 9, Verdict::Full),
        ] {
            let cap = Capacity {
                members,
                same_ip,
                ..ROOM
            };
            assert_eq!(judge_record(None, c(1, 1, 1), cap), want);
            // A known member keeps updating whatever the table's fill.
            assert_eq!(
                judge_record(Some(c(1, 1, 1)), c(1, 2, 1), cap),
                Verdict::Accept
            );
        }
    }

    #[test]
    fn beats_only_move_forward_within_the_incarnation() {
        let held = Some(c(5, 3, 9));
        assert_eq!(judge_beat(held, 5, 10), Verdict::Accept);
        assert_eq!(judge_beat(held, 5, 9), Verdict::Stale);
        assert_eq!(judge_beat(held, 6, 100), Verdict::Stale);
        assert_eq!(judge_beat(held, 4, 100), Verdict::Stale);
        assert_eq!(judge_beat(None, 5, 10), Verdict::Stale);
    }

    #[test]
    fn what_a_peer_lacks() {
        let ours = c(5, 3, 9);
        assert_eq!(peer_lacks(ours, None), Lacks::Record);
        assert_eq!(peer_lacks(ours, Some(c(4, 9, 9))), Lacks::Record);
        assert_eq!(peer_lacks(ours, Some(c(5, 2, 20))), Lacks::Record);
        assert_eq!(peer_lacks(ours, Some(c(5, 3, 8))), Lacks::Beat);
        assert_eq!(peer_lacks(ours, Some(c(5, 3, 9))), Lacks::Nothing);
        assert_eq!(peer_lacks(ours, Some(c(6, 0, 0))), Lacks::Nothing);
        // A newer record of the same incarnation there, but our beat is still news to it.
        assert_eq!(peer_lacks(ours, Some(c(5, 4, 0))), Lacks::Beat);
        assert_eq!(peer_lacks(ours, Some(c(5, 4, 9))), Lacks::Nothing);
    }

    #[test]
    fn liveness_window() {
        assert!(is_live(1000, 5000, 4000));
        assert!(!is_live(1000, 5001, 4000));
        // A clock that reads earlier than the last advance (never on a monotonic clock) is live.
        assert!(is_live(5000, 1000, 4000));
    }
}
