//! The mesh credential: a 32-byte secret shared by every member, and the invite token that hands
//! it (with bootstrap addresses) to a newcomer.
//!
//! The secret keys the gossip AEAD, so without it a datagram can be neither read nor forged. It
//! never leaves the data dir except inside an invite token; logs and status show only the
//! [`MeshSecret::mesh_id`], a one-way fingerprint.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use infermesh_state::parse_host_port;
use sha2::Sha256;

/// Token prefix: the format version, so a future format is refused with a clear message.
const TOKEN_PREFIX: &str = "im1";
/// At most this many bootstrap addresses travel in a token (a few live members are plenty).
pub const MAX_TOKEN_ADDRS: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct MeshSecret([u8; 32]);

impl std::fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MeshSecret(mesh {})", self.mesh_id())
    }
}

impl MeshSecret {
    pub fn generate() -> anyhow::Result<Self> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        Ok(Self(b))
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"infermesh-mesh-v1"), &self.0);
        let mut out = [0u8; 32];
        hk.expand(label, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// Public fingerprint of the mesh (12 hex digits): safe to log and show; signatures bind it
    /// so nothing signed for one mesh is accepted in another.
    pub fn mesh_id(&self) -> String {
        hex::encode(&self.derive(b"mesh id")[..6])
    }

    /// The key of the gossip AEAD.
    pub fn gossip_key(&self) -> [u8; 32] {
        self.derive(b"gossip aead key")
    }
}

/// What a newcomer needs: the secret, and where live members are.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    pub secret: MeshSecret,
    /// Gossip addresses (`host:port`) of members.
    pub bootstrap: Vec<String>,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("mesh", &self.secret.mesh_id())
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// Why a `--join` value is not a usable token. The messages are for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteError {
    /// A bare `HOST:PORT`: the old way to join, refused now that membership needs the secret.
    BareAddress(String),
    Malformed(String),
}

impl std::fmt::Display for InviteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BareAddress(a) => write!(
                f,
                "`{a}` is an address, not an invite token: joining a mesh needs its credential. \
                 On any member run `infermesh invite` (or copy the `infermesh invite <TOKEN>` line \
                 it printed at start) and pass `--join <TOKEN>`"
            ),
            Self::Malformed(why) => write!(
                f,
                "not a valid invite token ({why}); copy the whole `im1…` token that \
                 `infermesh invite` prints on a member"
            ),
        }
    }
}

impl std::error::Error for InviteError {}

impl Invite {
    pub fn encode(&self) -> String {
        let mut bytes = self.secret.0.to_vec();
        bytes.extend_from_slice(self.bootstrap.join(",").as_bytes());
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(s: &str) -> Result<Self, InviteError> {
        let s = s.trim();
        let Some(body) = s.strip_prefix(TOKEN_PREFIX) else {
            if parse_host_port(s).is_ok() || s.contains(':') {
                return Err(InviteError::BareAddress(s.to_string()));
            }
            return Err(InviteError::Malformed(
                "it does not start with `im1`".into(),
            ));
        };
        if body.len() > 8192 {
            return Err(InviteError::Malformed("longer than 8 KiB".into()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| InviteError::Malformed(format!("not base64url: {e}")))?;
        if bytes.len() < 32 {
            return Err(InviteError::Malformed("too short".into()));
        }
        let (secret, rest) = bytes.split_at(32);
        let addrs = std::str::from_utf8(rest)
            .map_err(|_| InviteError::Malformed("addresses are not UTF-8".into()))?;
        let mut bootstrap = Vec::new();
        for a in addrs.split(',').filter(|a| !a.is_empty()) {
            let hp = parse_host_port(a)
                .map_err(|e| InviteError::Malformed(format!("bootstrap address: {e}")))?;
            bootstrap.push(hp.to_string());
        }
        if bootstrap.len() > MAX_TOKEN_ADDRS {
            return Err(InviteError::Malformed(format!(
                "more than {MAX_TOKEN_ADDRS} addresses"
            )));
        }
        let mut b = [0u8; 32];
        b.copy_from_slice(secret);
        Ok(Self {
            secret: MeshSecret(b),
            bootstrap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_hides_the_secret_in_debug() {
        let inv = Invite {
            secret: MeshSecret::from_bytes([7; 32]),
            bootstrap: vec!["127.0.0.2:7337".into(), "node.lan:9".into()],
        };
        let t = inv.encode();
        assert!(t.starts_with("im1"));
        assert_eq!(Invite::parse(&t).unwrap(), inv);
        assert_eq!(Invite::parse(&format!("  {t}\n")).unwrap(), inv);
        let dbg = format!("{inv:?}");
        assert!(!dbg.contains("7, 7") && dbg.contains(&inv.secret.mesh_id()));
    }

    #[test]
    fn bare_addresses_and_garbage_are_refused_with_the_fix() {
        let e = Invite::parse("127.0.0.1:7337").unwrap_err();
        assert!(matches!(e, InviteError::BareAddress(_)));
        assert!(e.to_string().contains("infermesh invite"));
        for bad in ["", "im1", "im1!!", "hello", "im1AAAA"] {
            assert!(
                matches!(Invite::parse(bad), Err(InviteError::Malformed(_))),
                "{bad}"
            );
        }
        let mut bytes = vec![1u8; 32];
        bytes.extend_from_slice(b"127.0.0.1:80/x");
        let t = format!("im1{}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(Invite::parse(&t).is_err());
    }

    #[test]
    fn derived_keys_differ_per_mesh_and_purpose() {
        let a = MeshSecret::from_bytes([1; 32]);
        let b = MeshSecret::from_bytes([2; 32]);
        assert_ne!(a.mesh_id(), b.mesh_id());
        assert_ne!(a.gossip_key(), b.gossip_key());
        assert_ne!(a.gossip_key()[..6], a.derive(b"mesh id")[..6]);
        assert_eq!(a.mesh_id().len(), 12);
    }
}
