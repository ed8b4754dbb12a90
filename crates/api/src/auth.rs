//! Operator identity: every admin mutation carries an ed25519 signature by a key the node lists in
//! its operator registry (`[[operator]]` in `config.toml`).
//!
//! Wire format (DESIGN §4):
//!
//! ```text
//! Authorization: Infermesh <key-id>:<ts_ms>:<sig-hex>
//! ```
//!
//! `key-id` is the first 16 hex digits of sha256(operator public key), `ts_ms` the signer's clock
//! in Unix milliseconds, `sig-hex` the ed25519 signature (128 hex digits) over the canonical
//! string
//!
//! ```text
//! infermesh-admin-v2\n{NODE_ID}\n{METHOD}\n{PATH}\n{hex sha256(body)}\n{ts_ms}
//! ```
//!
//! where `NODE_ID` is the node the signer means (its 16-hex id), and `PATH` the request target
//! as sent: the path, plus `?query` when there is one. A request is accepted when the key is
//! registered, the signature verifies for *this* node's id (strictly: one message has one valid
//! signature), the timestamp is within ±60 s of the node's clock and not older than this process
//! (so a restart cannot forget a request it already accepted), and the same signed request has
//! not been accepted before (replay cache, pruned by time). Anything else is a 401 naming the
//! reason, and the handler never runs, so nothing changes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use infermesh_state::FirstSeen;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::plain_error;

/// The `Authorization` scheme word.
pub const SCHEME: &str = "Infermesh";
/// First line of every signed string: an admin signature can never pass for anything else the
/// operator key might sign. Bumped whenever the canonical string changes.
pub const DOMAIN: &str = "infermesh-admin-v2";
/// How far a signature's timestamp may be from the node's clock, either way.
pub const MAX_SKEW_MS: i64 = 60_000;
/// Largest admin body read for verification; admin bodies are small JSON documents.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most signed requests remembered at once (each is remembered for about two minutes).
pub const REPLAY_CAPACITY: usize = 100_000;

/// Shown when mutations are refused because no operator key is configured.
pub const NO_OPERATORS: &str = "no operator keys configured: run `infermesh keygen` and add the \
public key to config.toml [[operator]], or start with --admin-open for local experiments";

/// One `[[operator]]` entry of `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorConfig {
    /// Who holds the key, for logs (`alice@laptop`).
    pub name: String,
    /// Hex ed25519 public key, as `infermesh keygen` prints it.
    pub public_key: String,
}

/// The first 16 hex digits of sha256(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The exact string that is signed for the node `node_id`.
pub fn canonical(node_id: &str, method: &str, path: &str, body: &[u8], ts_ms: i64) -> String {
    format!(
        "{DOMAIN}\n{node_id}\n{}\n{path}\n{}\n{ts_ms}",
        method.to_ascii_uppercase(),
        hex::encode(Sha256::digest(body))
    )
}

/// The `Authorization` header value for a request to `node_id` signed at `ts_ms`.
pub fn sign_request(
    key: &SigningKey,
    node_id: &str,
    method: &str,
    path: &str,
    body: &[u8],
    ts_ms: i64,
) -> String {
    let sig = key.sign(canonical(node_id, method, path, body, ts_ms).as_bytes());
    format!(
        "{SCHEME} {}:{ts_ms}:{}",
        key_id(&key.verifying_key()),
        hex::encode(sig.to_bytes())
    )
}

/// The `Authorization` header value for a request to `node_id` signed now: what the CLI and deck
/// send. The id must be the node the signer means (from membership, or the node's own status),
/// never one an untrusted address reported for someone else.
pub fn authorization_header(
    key: &SigningKey,
    node_id: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    sign_request(key, node_id, method, path, body, now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why a signed request was refused. Each message says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// The header is there but not `Infermesh <key-id>:<ts_ms>:<sig-hex>`.
    Malformed(String),
    /// The key id is not in this node's operator registry.
    UnknownKey(String),
    /// The signature does not match this method, path, body and timestamp.
    BadSignature,
    /// The timestamp is more than [`MAX_SKEW_MS`] away; positive `skew_ms` is in the past.
    Expired { skew_ms: i64 },
    /// This exact signed request was already accepted once.
    Replayed,
    /// Signed before this node process started: a previous run may have accepted it.
    BeforeStart,
    /// Signed requests are refused because the registry is empty (and the node is not admin-open).
    NoOperators,
    /// The replay cache is full of live entries: too many signed requests in two minutes.
    Busy,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => write!(
                f,
                "this admin request must be signed (every change, and reads from another machine): missing `Authorization: {SCHEME} <key-id>:<ts_ms>:<signature>` header (the infermesh CLI and deck sign with the key from `infermesh keygen`)"
            ),
            Self::Malformed(why) => write!(
                f,
                "malformed Authorization header: {why} (expected `{SCHEME} <key-id>:<ts_ms>:<signature>`)"
            ),
            Self::UnknownKey(id) => write!(
                f,
                "operator key `{id}` is not accepted by this node: add its public key to config.toml [[operator]] and restart the node"
            ),
            Self::BadSignature => write!(
                f,
                "signature does not match this request (node id, method, path, body and timestamp are signed): sign the exact bytes sent, for this node's id (`node_id` in /api/status)"
            ),
            Self::Expired { skew_ms } => {
                let secs = skew_ms.unsigned_abs().div_ceil(1000);
                let when = if *skew_ms >= 0 {
                    format!("{secs}s old")
                } else {
                    format!("{secs}s in the future")
                };
                write!(
                    f,
                    "signature timestamp is {when}; the node accepts ±{}s: sign again, and check this machine's clock",
                    MAX_SKEW_MS / 1000
                )
            }
            Self::Replayed => write!(
                f,
                "this signed request was already accepted once; each signature is accepted only once: sign it again"
            ),
            Self::BeforeStart => f.write_str(
                "this request was signed before the node (re)started, so it may already have been accepted once: sign it again",
            ),
            Self::NoOperators => f.write_str(NO_OPERATORS),
            Self::Busy => write!(
                f,
                "too many signed admin requests in the last {}s; retry shortly",
                2 * MAX_SKEW_MS / 1000
            ),
        }
    }
}

impl std::error::Error for AuthError {}

/// Who signed an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorId {
    pub key_id: String,
    pub name: String,
}

/// The operator keys a node accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct OperatorRegistry {
    keys: BTreeMap<String, (String, VerifyingKey)>,
}

impl OperatorRegistry {
    /// Builds the registry from config entries; an entry that is not a valid key is an error
    /// naming it (a typo must not silently lock the operator out).
    pub fn from_config(ops: &[OperatorConfig]) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let key = parse_public_key(&op.public_key)
                .map_err(|e| format!("operator[{i}] (`{}`): public_key {e}", op.name))?;
            keys.insert(key_id(&key), (op.name.clone(), key));
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key registered under `key_id`: what verifies an operator's workload groups.
    pub fn verifying_key(&self, key_id: &str) -> Option<VerifyingKey> {
        self.get(key_id).map(|(_, k)| *k)
    }

    fn get(&self, key_id: &str) -> Option<&(String, VerifyingKey)> {
        self.keys.get(key_id)
    }
}

/// Parses a hex ed25519 public key (64 hex digits).
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut bytes).map_err(|e| format!("is not 64 hex digits: {e}"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("is not an ed25519 key: {e}"))
}

/// Signed requests accepted recently, remembered until their timestamp leaves the window (after
/// which the timestamp check refuses them anyway). Keyed by the signed message and key, not the
/// signature bytes, so a re-encoded signature of the same request is still a replay.
#[derive(Debug, Default)]
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
}

#[derive(Debug, Default)]
struct ReplayInner {
    seen: HashSet<[u8; 32]>,
    /// The same entries ordered by signature timestamp, so expiry is a pop from the front.
    by_ts: BTreeSet<(i64, [u8; 32])>,
}

impl ReplayCache {
    /// Records `entry` (timestamp `ts_ms`) as accepted. `Err(Replayed)` if it was already;
    /// `Err(Busy)` if the cache is full of entries that cannot be forgotten yet.
    fn accept_once(&self, entry: [u8; 32], ts_ms: i64, now_ms: i64) -> Result<(), AuthError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Forget everything whose timestamp left the window: the time check refuses it anyway.
        while let Some(&(ts, e)) = g.by_ts.first() {
            if now_ms.saturating_sub(ts) <= MAX_SKEW_MS {
                break;
            }
            g.by_ts.pop_first();
            g.seen.remove(&e);
        }
        if g.seen.contains(&entry) {
            return Err(AuthError::Replayed);
        }
        if g.seen.len() >= REPLAY_CAPACITY {
            return Err(AuthError::Busy);
        }
        g.seen.insert(entry);
        g.by_ts.insert((ts_ms, entry));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits `Infermesh <key-id>:<ts_ms>:<sig-hex>`.
fn parse_header(h: &str) -> Result<(&str, i64, [u8; 64]), AuthError> {
    let malformed = |why: &str| AuthError::Malformed(why.to_string());
    let (scheme, rest) = h
        .trim()
        .split_once(' ')
        .ok_or_else(|| malformed("no credentials after the scheme"))?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::Malformed(format!(
            "scheme `{scheme}` is not `{SCHEME}`"
        )));
    }
    let mut parts = rest.trim().split(':');
    let (Some(id), Some(ts), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("want three `:`-separated fields"));
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("key id must be 16 hex digits"));
    }
    let ts: i64 = ts
        .parse()
        .map_err(|_| malformed("timestamp must be Unix milliseconds"))?;
    let mut sig_bytes = [0u8; 64];
    hex::decode_to_slice(sig, &mut sig_bytes)
        .map_err(|_| malformed("signature must be 128 hex digits"))?;
    Ok((id, ts, sig_bytes))
}

/// Checks one admin request. Order: shape, key, signature, then time and replay — so a forged
/// request reads as a bad signature, never as "expired", and only a genuine request can occupy
/// the replay cache.
pub fn verify(
    header: Option<&str>,
    me: &Binding,
    AdminRequest { method, path, body }: AdminRequest<'_>,
    now_ms: i64,
    registry: &OperatorRegistry,
    replay: &ReplayCache,
) -> Result<OperatorId, AuthError> {
    if registry.is_empty() {
        return Err(AuthError::NoOperators);
    }
    let header = header.ok_or(AuthError::Missing)?;
    let (id, ts_ms, sig) = parse_header(header)?;
    let id = id.to_ascii_lowercase();
    let (name, key) = registry
        .get(&id)
        .ok_or_else(|| AuthError::UnknownKey(id.clone()))?;
    let message = canonical(&me.node_id, method, path, body, ts_ms);
    key.verify_strict(message.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| AuthError::BadSignature)?;
    let skew_ms = now_ms.saturating_sub(ts_ms);
    if skew_ms.abs() > MAX_SKEW_MS {
        return Err(AuthError::Expired { skew_ms });
    }
    if ts_ms < me.started_ms {
        return Err(AuthError::BeforeStart);
    }
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(b"\n");
    h.update(message.as_bytes());
    replay.accept_once(h.finalize().into(), ts_ms, now_ms)?;
    Ok(OperatorId {
        key_id: id,
        name: name.clone(),
    })
}

/// What was sent: the parts of a request its signature covers (with the node and timestamp).
#[derive(Debug, Clone, Copy)]
pub struct AdminRequest<'a> {
    pub method: &'a str,
    /// The request target as sent: path plus `?query` when there is one.
    pub path: &'a str,
    pub body: &'a [u8],
}

/// What a signature must be for: this node's id, and no earlier than this process's start. The
/// replay cache lives in memory, so without the start bound a request accepted just before a
/// restart would be accepted again just after it; with it, nothing needs to reach the disk.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub node_id: String,
    pub started_ms: i64,
}

impl Binding {
    /// Bound to `node_id`, starting now.
    pub fn now(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            started_ms: now_ms(),
        }
    }
}

/// The node's admin gate: its registry, replay cache and whether checks are off.
#[derive(Debug, Default)]
pub struct AdminAuth {
    pub registry: OperatorRegistry,
    pub binding: Binding,
    pub replay: ReplayCache,
    /// `--admin-open`: mutations are accepted unsigned (local experiments only).
    pub open: bool,
    /// Client addresses whose refused change was logged at `warn`: one line per offender.
    refused: Mutex<FirstSeen<Option<IpAddr>>>,
}

impl AdminAuth {
    pub fn new(registry: OperatorRegistry, open: bool, binding: Binding) -> Self {
        Self {
            registry,
            binding,
            replay: ReplayCache::default(),
            open,
            refused: Mutex::default(),
        }
    }

    /// Logs how the node treats admin mutations, once at start.
    pub fn log_mode(&self) {
        if self.open {
            tracing::warn!(
                "--admin-open: admin changes are accepted WITHOUT operator signatures; anyone who can reach this port can change this node. Use it only for local experiments"
            );
        } else if self.registry.is_empty() {
            // Every fresh node starts like this, and it serves fine: onboarding, not a fault.
            tracing::info!("admin changes are refused: {NO_OPERATORS}");
        } else {
            let names: Vec<&str> = self
                .registry
                .keys
                .values()
                .map(|(n, _)| n.as_str())
                .collect();
            tracing::info!(operators = ?names, "admin changes require an operator signature");
        }
    }
}

/// Whether a request is an admin mutation: any method but GET, HEAD and OPTIONS under
/// `/admin/`. Deny by default, so admin routes added later are covered too.
pub fn is_admin_mutation(method: &Method, path: &str) -> bool {
    is_admin(path) && !is_read(method)
}

/// Whether `path` is an admin route, gated by [`gate`]; clients use it to know what to sign.
pub fn is_admin(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD || method == Method::OPTIONS
}

/// What the admin gate asks of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Served as is.
    Pass,
    /// Served only with a valid operator signature.
    Sign,
}

/// The gate's rule. Outside `/admin/` everything is public (status, dashboard, `/v1`). Admin
/// changes always need a signature. Admin reads are open to this machine (loopback) only: they
/// carry the operator's config (backend URLs, binary paths, per-model args), so from another
/// machine they are signed like changes. `client` is `None` when the connection's address is
/// unknown, which counts as another machine (deny by default). `--admin-open` passes everything.
pub fn gate(method: &Method, path: &str, client: Option<IpAddr>, open: bool) -> Gate {
    if open || !is_admin(path) {
        return Gate::Pass;
    }
    let local = client.is_some_and(|ip| ip.to_canonical().is_loopback());
    if is_read(method) && local {
        Gate::Pass
    } else {
        Gate::Sign
    }
}

fn refuse(
    auth: &AdminAuth,
    client: Option<IpAddr>,
    err: &AuthError,
    method: &Method,
    path: &str,
) -> Response {
    let status = match err {
        AuthError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let first = !is_read(method)
        && auth
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first(client);
    if first {
        let from = client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
        tracing::warn!(%method, path, client = %from, reason = %err,
            "admin request refused (logged once per client address; later ones at debug)");
    } else {
        // A dashboard opened from another machine asks for reads on every poll, and one
        // offender's further attempts add nothing the operator has not been told.
        tracing::debug!(%method, path, reason = %err, "admin request refused");
    }
    let mut resp = plain_error(status, err);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(SCHEME));
    resp
}

/// Axum middleware (`from_fn_with_state`): applies [`gate`] (the client address comes from the
/// `ConnectInfo` that [`crate::serve`] attaches), checks signatures where it says so, and hands
/// the handler the exact body that was verified.
pub async fn require_operator(
    State(admin): State<Arc<AdminAuth>>,
    req: Request,
    next: Next,
) -> Response {
    check(&admin, req, next).await
}

/// The middleware body, usable with any state that owns an [`AdminAuth`].
pub async fn check(auth: &AdminAuth, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if gate(&method, &path, client, auth.open) == Gate::Pass {
        return next.run(req).await;
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |pq| pq.as_str().to_string());
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return plain_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("admin request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        }
    };
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let sent = AdminRequest {
        method: method.as_str(),
        path: &target,
        body: &bytes,
    };
    match verify(
        header,
        &auth.binding,
        sent,
        now_ms(),
        &auth.registry,
        &auth.replay,
    ) {
        Ok(op) => {
            if is_read(&method) {
                tracing::debug!(operator = %op.name, %method, path = %target, "remote admin read signed by operator");
            } else {
                tracing::info!(operator = %op.name, key_id = %op.key_id, %method, path = %target, "admin change signed by operator");
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => refuse(auth, client, &e, &method, &target),
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        plain_error(StatusCode::UNAUTHORIZED, self)
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
