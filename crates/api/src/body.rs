//! What one client may cost the node: request body sizes, how long a body may take, and how much
//! memory all bodies being read or handled may hold together (the budget), so many large bodies
//! at once get 503 and a retry hint instead of growing the process without bound.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error;

/// Budget permits are KiB: a semaphore counts in u32-sized chunks, and no body is smaller than
/// its headers anyway.
const KIB: usize = 1024;

/// What one client may cost the server: body sizes and how long it may take to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Largest request body on `/v1/*` (chat histories can be long): 8 MiB.
    pub v1_body: usize,
    /// Largest request body anywhere else (admin bodies are small JSON): 1 MiB.
    pub other_body: usize,
    /// Time to send the whole body; a slower client gets 408. 30 s.
    pub body_timeout: Duration,
    /// Time to send a request's headers, idle keep-alive time included; then the connection is
    /// closed. 30 s.
    pub header_timeout: Duration,
    /// After the shutdown signal, how long open connections (event streams never end) get. 5 s.
    pub drain_timeout: Duration,
    /// Bytes all request bodies may hold at once, from the first byte read until the handler
    /// is done with them: 128 MiB (16 maximal chat bodies). Beyond it: 503 with `Retry-After`.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            v1_body: 8 * 1024 * 1024,
            other_body: 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            body_budget: 128 * 1024 * 1024,
        }
    }
}

fn body_error(v1: bool, status: StatusCode, message: String) -> Response {
    if v1 {
        let mut e = error::OpenAiError::bad_request(message, None);
        e.status = status;
        e.into_response()
    } else {
        error::plain_error(status, message)
    }
}

/// The shared budget of one router's bodies ([`Limits::body_budget`]).
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total: u32,
}

impl Budget {
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(KIB).max(1)).unwrap_or(u32::MAX);
        Self {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Bytes held by bodies right now.
    pub fn held(&self) -> usize {
        (self.total as usize - self.sem.available_permits()) * KIB
    }

    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> bool {
        let want = u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX);
        let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
        if want <= have {
            return true;
        }
        match self.sem.clone().try_acquire_many_owned(want - have) {
            Ok(more) => {
                match held {
                    Some(p) => p.merge(more),
                    None => *held = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Gives freed heap back to the OS once no large body is held any more: glibc keeps what 100
/// concurrent 8 MiB bodies used (≈ 0.9 GiB measured) otherwise, long after they are gone.
struct TrimWhenIdle {
    budget: Budget,
    large: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for TrimWhenIdle {
    fn drop(&mut self) {
        drop(self.permit.take());
        if self.large && self.budget.held() == 0 {
            // SAFETY: malloc_trim only releases free heap pages; it has no other effect.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Bodies of at least this size ask for a heap trim when they are gone.
const TRIM_AFTER: usize = 1024 * 1024;

/// Reads the request body whole, refusing one over its route's limit (413) or one that does not
/// arrive within [`Limits::body_timeout`] (408), so a huge or trickling body cannot hold memory
/// or a connection, and errors are JSON like every other answer. Past the [`Budget`]: 503.
pub async fn limit_body(limits: Limits, budget: Budget, req: Request, next: Next) -> Response {
    let v1 = req.uri().path().starts_with("/v1/");
    let limit = if v1 {
        limits.v1_body
    } else {
        limits.other_body
    };
    let too_large = || {
        body_error(
            v1,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, mut body) = req.into_parts();
    let mut guard = TrimWhenIdle {
        budget: budget.clone(),
        large: false,
        permit: None,
    };
    let busy = || {
        error::OpenAiError::overloaded(
            "this node is holding as many request bodies as its memory budget allows; retry shortly",
            1,
        )
        .into_response()
    };
    // A declared length is reserved up front, so a crowd of large uploads is turned away before
    // any of them is read.
    if let Some(n) = declared {
        if !budget.take(&mut guard.permit, n as usize) {
            return busy();
        }
    }
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyFail::Read(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyFail::TooLarge);
                }
                if !budget.take(&mut guard.permit, buf.len() + data.len()) {
                    return Err(BodyFail::Busy);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    let read = tokio::time::timeout(limits.body_timeout, read).await;
    match read {
        Ok(Ok(bytes)) => {
            guard.large = bytes.len() >= TRIM_AFTER;
            let resp = next
                .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await;
            drop(guard);
            resp
        }
        Ok(Err(BodyFail::TooLarge)) => too_large(),
        Ok(Err(BodyFail::Busy)) => busy(),
        Ok(Err(BodyFail::Read(e))) => body_error(
            v1,
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        ),
        Err(_) => body_error(
            v1,
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {:?}", limits.body_timeout),
        ),
    }
}

enum BodyFail {
    TooLarge,
    Busy,
    Read(String),
}
