//! Workload groups: the operator's mesh-wide "keep N replicas of this model served".
//!
//! A group is one operator-signed statement ([`GroupDecl`]) that every member carries in its
//! record, so it survives the node it was given to and any node can be asked about it. What a
//! member relays grants nothing by itself: each reader verifies the operator signature against
//! its own `[[operator]]` registry. The signature binds the mesh (a declaration cannot be
//! replayed into another mesh), the model, every number and the time; the newest declaration
//! per model wins, so replaying an old one changes nothing. Removal is a declaration with all
//! counts 0 (a tombstone), so a relayed older one cannot bring the group back.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// First line of a signed group: never valid as an admin request or anything else the key signs.
pub const GROUP_DOMAIN: &str = "infermesh-group-v1";
/// Groups one record carries (and a node keeps); each is ~350 bytes on the wire.
pub const MAX_GROUPS: usize = 16;
/// Most replicas a group may ask for.
pub const MAX_REPLICAS: u32 = 64;
const MAX_MODEL_CHARS: usize = 128;
const MAX_URL_CHARS: usize = 512;

/// One operator-signed group declaration, as it travels in records and is kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDecl {
    pub model: String,
    pub replicas: u32,
    pub min: u32,
    pub max: u32,
    /// Where a node without the file downloads it (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The operator's clock when signing, Unix ms: orders declarations of one model.
    pub ts_ms: i64,
    /// The first 16 hex digits of sha256(operator public key).
    pub key_id: String,
    /// Hex ed25519 signature over [`GroupDecl::canonical`].
    pub sig: String,
}

/// Why a declaration is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    Malformed(String),
    UnknownKey(String),
    BadSignature,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "{m}"),
            Self::UnknownKey(k) => write!(
                f,
                "signed by key {k}, which is not in this node's [[operator]] registry"
            ),
            Self::BadSignature => write!(f, "the operator signature does not verify"),
        }
    }
}

/// The first 16 hex digits of sha256(public key), as admin signatures name keys.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

impl GroupDecl {
    /// A new declaration signed with `key` for the mesh `mesh_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        key: &SigningKey,
        mesh_id: &str,
        model: &str,
        replicas: u32,
        min: u32,
        max: u32,
        url: Option<String>,
        ts_ms: i64,
    ) -> Self {
        let mut d = Self {
            model: model.to_string(),
            replicas,
            min,
            max,
            url,
            ts_ms,
            key_id: key_id(&key.verifying_key()),
            sig: String::new(),
        };
        d.sig = hex::encode(key.sign(d.canonical(mesh_id).as_bytes()).to_bytes());
        d
    }

    /// The exact string the operator signs.
    pub fn canonical(&self, mesh_id: &str) -> String {
        format!(
            "{GROUP_DOMAIN}\n{mesh_id}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.model,
            self.replicas,
            self.min,
            self.max,
            self.url.as_deref().unwrap_or(""),
            self.ts_ms
        )
    }

    /// A tombstone: the operator removed the group.
    pub fn is_removal(&self) -> bool {
        self.replicas == 0 && self.min == 0 && self.max == 0
    }

    /// Shape checks that need no key: bounded strings, sane counts.
    pub fn check_shape(&self) -> Result<(), GroupError> {
        let bad = |m: String| Err(GroupError::Malformed(m));
        if self.model.is_empty() || self.model.chars().count() > MAX_MODEL_CHARS {
            return bad(format!("model name must be 1–{MAX_MODEL_CHARS} characters"));
        }
        if self.model.chars().any(|c| c.is_control() || c == '\n') {
            return bad("model name has control characters".into());
        }
        if self.max > MAX_REPLICAS || self.replicas > MAX_REPLICAS {
            return bad(format!("at most {MAX_REPLICAS} replicas"));
        }
        if self.min > self.max || self.replicas < self.min || self.replicas > self.max {
            return bad(format!(
                "need min ≤ replicas ≤ max (got min {}, replicas {}, max {})",
                self.min, self.replicas, self.max
            ));
        }
        if let Some(url) = &self.url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > MAX_URL_CHARS || url.chars().any(char::is_control) {
                return bad(format!(
                    "url must be http:// or https:// and at most {MAX_URL_CHARS} characters"
                ));
            }
        }
        if self.key_id.len() != 16 || self.sig.len() != 128 {
            return bad("key_id must be 16 hex digits and sig 128".into());
        }
        Ok(())
    }

    /// Verifies shape and the operator signature; `key` looks an operator key up by key id.
    pub fn verify(
        &self,
        mesh_id: &str,
        key: impl Fn(&str) -> Option<VerifyingKey>,
    ) -> Result<(), GroupError> {
        self.check_shape()?;
        let Some(pk) = key(&self.key_id) else {
            return Err(GroupError::UnknownKey(self.key_id.clone()));
        };
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(&self.sig, &mut bytes).map_err(|_| GroupError::BadSignature)?;
        pk.verify_strict(
            self.canonical(mesh_id).as_bytes(),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| GroupError::BadSignature)?;
        Ok(())
    }

    /// Whether `self` supersedes `other` (same model): newer time, then the larger signature so
    /// two nodes holding different declarations of one instant still agree.
    pub fn supersedes(&self, other: &GroupDecl) -> bool {
        (self.ts_ms, &self.sig) > (other.ts_ms, &other.sig)
    }
}

/// Merges `incoming` (already verified) into `book`; returns the models whose declaration
/// changed. Over [`MAX_GROUPS`], the oldest tombstones go first, then the oldest groups.
pub fn merge(book: &mut BTreeMap<String, GroupDecl>, incoming: &[GroupDecl]) -> Vec<String> {
    let mut changed = Vec::new();
    for d in incoming {
        let newer = book.get(&d.model).is_none_or(|cur| d.supersedes(cur));
        if newer {
            book.insert(d.model.clone(), d.clone());
            changed.push(d.model.clone());
        }
    }
    while book.len() > MAX_GROUPS {
        let victim = book
            .values()
            .min_by_key(|d| (!d.is_removal(), d.ts_ms))
            .map(|d| d.model.clone())
            .expect("book is not empty");
        book.remove(&victim);
        changed.retain(|m| *m != victim);
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "a1b2c3d4e5f6";

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn lookup(k: &SigningKey) -> impl Fn(&str) -> Option<VerifyingKey> + '_ {
        move |id| (id == key_id(&k.verifying_key())).then(|| k.verifying_key())
    }

    fn decl(ts: i64, replicas: u32) -> GroupDecl {
        GroupDecl::sign(&key(1), MESH, "m", replicas, 0, 4, None, ts)
    }

    #[test]
    fn a_signed_declaration_verifies_only_for_its_mesh_and_key() {
        let k = key(1);
        let d = decl(1000, 2);
        assert_eq!(d.verify(MESH, lookup(&k)), Ok(()));
        assert_eq!(
            d.verify("ffffffffffff", lookup(&k)),
            Err(GroupError::BadSignature)
        );
        let other = key(2);
        assert!(matches!(
            d.verify(MESH, lookup(&other)),
            Err(GroupError::UnknownKey(_))
        ));
    }

    #[test]
    fn every_signed_field_is_bound() {
        let k = key(1);
        let d = GroupDecl::sign(&k, MESH, "m", 2, 1, 3, Some("http://h/m.gguf".into()), 5);
        let tamper: [fn(&mut GroupDecl); 7] = [
            |d| d.model = "n".into(),
            |d| d.replicas = 3,
            |d| d.min = 2,
            |d| d.max = 4,
            |d| d.url = Some("http://evil/m.gguf".into()),
            |d| d.url = None,
            |d| d.ts_ms = 6,
        ];
        for t in tamper {
            let mut x = d.clone();
            t(&mut x);
            assert_eq!(x.verify(MESH, lookup(&k)), Err(GroupError::BadSignature));
        }
    }

    #[test]
    fn shape_is_checked_before_any_key() {
        let k = key(1);
        for (min, replicas, max) in [(2, 1, 3), (0, 5, 3), (3, 3, 2), (0, 65, 65)] {
            let d = GroupDecl::sign(&k, MESH, "m", replicas, min, max, None, 1);
            assert!(matches!(d.check_shape(), Err(GroupError::Malformed(_))));
        }
        let d = GroupDecl::sign(&k, MESH, "m", 1, 0, 1, Some("file:///etc/passwd".into()), 1);
        assert!(matches!(d.check_shape(), Err(GroupError::Malformed(_))));
        let d = GroupDecl::sign(&k, MESH, "", 1, 0, 1, None, 1);
        assert!(matches!(d.check_shape(), Err(GroupError::Malformed(_))));
        let mut d = decl(1, 1);
        d.sig = "zz".repeat(64);
        assert_eq!(d.verify(MESH, lookup(&k)), Err(GroupError::BadSignature));
    }

    #[test]
    fn the_newest_wins_and_replaying_an_old_one_changes_nothing() {
        let mut book = BTreeMap::new();
        assert_eq!(merge(&mut book, &[decl(10, 2)]), vec!["m".to_string()]);
        assert_eq!(merge(&mut book, &[decl(20, 3)]), vec!["m".to_string()]);
        assert!(merge(&mut book, &[decl(10, 2), decl(20, 3)]).is_empty());
        assert_eq!(book["m"].replicas, 3);
        let gone = GroupDecl::sign(&key(1), MESH, "m", 0, 0, 0, None, 30);
        merge(&mut book, &[gone]);
        assert!(book["m"].is_removal());
        assert!(merge(&mut book, &[decl(20, 3)]).is_empty());
    }

    #[test]
    fn over_the_cap_old_tombstones_go_first() {
        let k = key(1);
        let mut book = BTreeMap::new();
        let dead = GroupDecl::sign(&k, MESH, "dead", 0, 0, 0, None, 100);
        merge(&mut book, &[dead]);
        for i in 0..MAX_GROUPS {
            let d = GroupDecl::sign(&k, MESH, &format!("m{i:02}"), 1, 0, 1, None, i as i64);
            merge(&mut book, &[d]);
        }
        assert_eq!(book.len(), MAX_GROUPS);
        assert!(!book.contains_key("dead"));
        let d = GroupDecl::sign(&k, MESH, "late", 1, 0, 1, None, 1000);
        merge(&mut book, &[d]);
        assert!(!book.contains_key("m00") && book.contains_key("late"));
    }
}
