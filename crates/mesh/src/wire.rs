//! Gossip datagrams: every one sealed with XChaCha20-Poly1305 under the mesh's gossip key, so an
//! outsider can neither read nor inject one, and opened into a bounded [`Message`] or refused.
//!
//! Layout: `IMG1` ‖ 24-byte random nonce ‖ ciphertext of the JSON [`Packet`] ‖ 16-byte tag.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::signed::{SignedBeat, SignedRecord};

const MAGIC: &[u8; 4] = b"IMG1";
const NONCE_LEN: usize = 24;
/// Largest datagram sent: under the 65,507-byte UDP payload limit with room to spare.
pub const MAX_DATAGRAM: usize = 60 * 1024;
/// Packets stamped further from this node's clock than this are refused, so a captured
/// datagram cannot be replayed later (a replay inside the window carries only stale, signed
/// statements, which are ignored).
pub const PACKET_WINDOW_MS: u64 = 120_000;
/// A digest lists at most this many members (the table's cap bounds it too).
pub const MAX_DIGEST: usize = 2048;

/// One member as a digest lists it: `(node_id, generation, version, beat)`.
pub type DigestEntry = (String, u64, u64, u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// "This is what I hold." `reply` marks an answer to a `Syn`, which is never answered with
    /// another `Syn`, so an exchange ends.
    Syn {
        digest: Vec<DigestEntry>,
        reply: bool,
    },
    /// Statements the receiver lacked.
    Update {
        records: Vec<SignedRecord>,
        beats: Vec<SignedBeat>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Packet {
    /// The sender's clock (unix ms) when sealing.
    pub sent_ms: u64,
    /// The sender's claimed node id (an insider's claim: used for logs, never for trust).
    pub from: String,
    pub msg: Message,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not ours at all, or sealed with another key: an outsider, another mesh, or noise.
    Unauthenticated,
    /// Sealed with our key (so from a member) yet not a well-formed packet.
    Malformed(String),
    /// Authentic but stamped outside [`PACKET_WINDOW_MS`]: a replay, or a badly wrong clock.
    Stale { skew_ms: i64 },
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthenticated => {
                f.write_str("datagram not sealed with this mesh's key (outsider or other mesh)")
            }
            Self::Malformed(w) => write!(f, "malformed packet from a key holder: {w}"),
            Self::Stale { skew_ms } => write!(
                f,
                "packet stamped {skew_ms} ms from our clock (replay, or the sender's clock is \
                 off by more than {} s)",
                PACKET_WINDOW_MS / 1000
            ),
        }
    }
}

pub struct Sealer {
    aead: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// `None` when the packet would not fit one datagram (callers split before that).
    pub fn seal(&self, packet: &Packet) -> Option<Vec<u8>> {
        let plain = serde_json::to_vec(packet).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let ct = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .ok()?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        (out.len() <= MAX_DATAGRAM).then_some(out)
    }

    pub fn open(&self, bytes: &[u8], now_ms: u64) -> Result<Packet, WireError> {
        if bytes.len() > MAX_DATAGRAM + 1024
            || bytes.len() < MAGIC.len() + NONCE_LEN + 16
            || &bytes[..4] != MAGIC
        {
            return Err(WireError::Unauthenticated);
        }
        let (nonce, ct) = bytes[4..].split_at(NONCE_LEN);
        let plain = self
            .aead
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| WireError::Unauthenticated)?;
        let packet: Packet =
            serde_json::from_slice(&plain).map_err(|e| WireError::Malformed(e.to_string()))?;
        let skew = packet.sent_ms as i64 - now_ms as i64;
        if skew.unsigned_abs() > PACKET_WINDOW_MS {
            return Err(WireError::Stale { skew_ms: skew });
        }
        if let Message::Syn { digest, .. } = &packet.msg {
            if digest.len() > MAX_DIGEST {
                return Err(WireError::Malformed(format!(
                    "digest of {} entries",
                    digest.len()
                )));
            }
        }
        Ok(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn() -> Packet {
        Packet {
            sent_ms: 1_000_000,
            from: "a".into(),
            msg: Message::Syn {
                digest: vec![("n".into(), 1, 2, 3)],
                reply: false,
            },
        }
    }

    #[test]
    fn seals_and_opens_with_the_same_key_only() {
        let s = Sealer::new(&[1; 32]);
        let bytes = s.seal(&syn()).unwrap();
        assert_eq!(s.open(&bytes, 1_000_000).unwrap(), syn());
        assert_eq!(
            Sealer::new(&[2; 32]).open(&bytes, 1_000_000),
            Err(WireError::Unauthenticated)
        );
        // No plaintext leaks: the node id and digest are not visible in the datagram.
        assert!(!bytes.windows(3).any(|w| w == b"Syn"));
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let s = Sealer::new(&[1; 32]);
        let bytes = s.seal(&syn()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(s.open(&b, 1_000_000).is_err(), "byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(s.open(&bytes[..n], 1_000_000).is_err());
        }
    }

    #[test]
    fn old_packets_are_refused() {
        let s = Sealer::new(&[1; 32]);
        let bytes = s.seal(&syn()).unwrap();
        assert!(s.open(&bytes, 1_000_000 + PACKET_WINDOW_MS).is_ok());
        assert!(matches!(
            s.open(&bytes, 1_000_001 + PACKET_WINDOW_MS),
            Err(WireError::Stale { .. })
        ));
    }
}
