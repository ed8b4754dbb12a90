//! The `llama-server` child process: start, output capture, readiness, shutdown.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::api::BackendError;

/// Output lines kept for error messages: enough to show why llama.cpp gave up.
const TAIL_LINES: usize = 8;
const POLL_EVERY: Duration = Duration::from_millis(100);
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The last lines the child printed, shared with the tasks reading its output.
#[derive(Debug, Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut t = self.0.lock().expect("tail lock");
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }

    /// `"; last output: a | b"`, or nothing if the child printed nothing.
    pub fn describe(&self) -> String {
        let t = self.0.lock().expect("tail lock");
        if t.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = t.iter().map(String::as_str).collect();
        format!("; last output: {}", lines.join(" | "))
    }
}

/// What a start waits for, in the words its errors use: "`what` did not `goal` within 20s
/// `during`", "`what` exited (…) `during`".
pub struct Readiness<'a> {
    pub what: &'a str,
    pub goal: &'a str,
    pub during: &'a str,
    pub timeout: Duration,
    pub every: Duration,
}

/// A started child with its output readers.
pub struct Proc {
    pub child: Child,
    pub tail: Tail,
    readers: Vec<JoinHandle<()>>,
}

/// The free port the child should listen on. Another process could take it before the child
/// binds; the child then exits with a bind error, which `wait_healthy` reports.
pub fn free_port() -> Result<u16, BackendError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BackendError::Failed(format!("cannot find a free local port: {e}")))
}

pub fn spawn(binary: &Path, args: &[String], id: &str) -> Result<Proc, BackendError> {
    spawn_named(
        "llama-server",
        "install it or set the backend's `binary`",
        binary,
        args,
        id,
    )
}

/// [`spawn`] for any of llama.cpp's programs: `what` names it in errors, `hint` says how to
/// get it.
pub fn spawn_named(
    what: &str,
    hint: &str,
    binary: &Path,
    args: &[String],
    id: &str,
) -> Result<Proc, BackendError> {
    let not_found = || {
        BackendError::Failed(format!(
            "{what} binary not found at {} ({hint})",
            binary.display()
        ))
    };
    // A path that names a missing file; a bare name is looked up on PATH by the spawn itself.
    if binary.components().count() > 1 && !binary.exists() {
        return Err(not_found());
    }
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // If the node stops, dies or abandons a load, the model server must not outlive it.
    crate::child::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(),
        std::io::ErrorKind::PermissionDenied => BackendError::Failed(format!(
            "{what} binary at {} is not executable",
            binary.display()
        )),
        _ => BackendError::Failed(format!("cannot start {what} at {}: {e}", binary.display())),
    })?;
    let tail = Tail::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(capture(out, id.to_string(), tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(capture(err, id.to_string(), tail.clone()));
    }
    Ok(Proc {
        child,
        tail,
        readers,
    })
}

/// Forwards the child's output to the log line by line, keeping the tail for error messages.
/// Reads bytes rather than `String` lines: one non-UTF-8 byte must not stop the reader, or the
/// pipe fills up and the child blocks.
fn capture(
    stream: impl AsyncRead + Unpin + Send + 'static,
    id: String,
    tail: Tail,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if line.is_empty() {
                continue;
            }
            if is_notable(&line) {
                tracing::info!(target: "llama_server", "[{id}] {line}");
            } else {
                tracing::debug!(target: "llama_server", "[{id}] {line}");
            }
            tail.push(line);
        }
    })
}

/// Startup milestones, warnings and failures matter to operators; per-request slot chatter does
/// not. llama.cpp prefixes lines with a timestamp and a level letter (`0.00.409 W srv ...`);
/// lines without one are judged by their words.
fn is_notable(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let stamped = words
        .next()
        .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if stamped && matches!(words.next(), Some("E" | "W")) {
        return true;
    }
    let lower = line.to_lowercase();
    [
        "error",
        "failed",
        "listening",
        "model loaded",
        "loading model",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

impl Proc {
    /// Waits until `GET /health` answers 200 (llama-server answers 503 while loading).
    pub async fn wait_healthy(
        &mut self,
        port: u16,
        timeout: Duration,
        model: &str,
    ) -> Result<(), BackendError> {
        let url = format!("http://127.0.0.1:{port}/health");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BackendError::Failed(format!("cannot create HTTP client: {e}")))?;
        let readiness = Readiness {
            what: "llama-server",
            goal: "become healthy",
            during: &format!("while loading `{model}`"),
            timeout,
            every: POLL_EVERY,
        };
        self.wait_ready(readiness, || {
            let (client, url) = (&client, &url);
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200)
            }
        })
        .await
    }

    /// Polls `ready` every `r.every` until it holds. Fails, in `r`'s words and with the
    /// child's last output, when the child exits first or `r.timeout` passes.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        r: Readiness<'_>,
        mut ready: F,
    ) -> Result<(), BackendError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + r.timeout;
        loop {
            if let Some(status) = self.exited() {
                self.drain_output().await;
                return Err(BackendError::Failed(format!(
                    "{} exited ({status}) {}{}",
                    r.what,
                    r.during,
                    self.tail.describe()
                )));
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BackendError::Failed(format!(
                    "{} did not {} within {}s {}{}",
                    r.what,
                    r.goal,
                    r.timeout.as_secs_f32(),
                    r.during,
                    self.tail.describe()
                )));
            }
            tokio::time::sleep(r.every).await;
        }
    }

    /// The exit status, if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Lets the readers take in the dead child's last lines before they are reported.
    async fn drain_output(&mut self) {
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
    }

    /// SIGTERM so llama-server can finish cleanly, SIGKILL if it has not exited after a grace
    /// period.
    pub async fn terminate(mut self) -> Result<(), BackendError> {
        if self.exited().is_some() {
            return Ok(());
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions;
            // the pid is our own unreaped child, so it cannot have been recycled.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(TERM_GRACE, self.child.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::warn!(target: "llama_server", "llama-server ignored SIGTERM for {}s; killing it", TERM_GRACE.as_secs());
        self.child
            .kill()
            .await
            .map_err(|e| BackendError::Failed(format!("cannot kill llama-server: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_warnings_and_errors_are_notable_slot_chatter_is_not() {
        for line in [
            "0.00.003.510 W srv  llama_server: security: no API key is set",
            "0.00.003.510 E srv  load_model: failed to load model",
            "0.00.409.549 I srv  llama_server: model loaded",
            "0.00.409.575 I srv  llama_server: listening on http://127.0.0.1:18555",
            "error: unknown argument: --bogus",
        ] {
            assert!(is_notable(line), "{line}");
        }
        for line in [
            "0.05.725.106 I slot print_timing: id  3 | task 0 | eval time = 1251.37 ms",
            "0.00.265.157 I cmn          init: llama threadpool init, n_threads = 2",
        ] {
            assert!(!is_notable(line), "{line}");
        }
    }

    #[test]
    fn tail_keeps_the_last_lines_only() {
        let t = Tail::default();
        assert_eq!(t.describe(), "");
        for i in 0..20 {
            t.push(format!("l{i}"));
        }
        assert_eq!(
            t.describe(),
            "; last output: l12 | l13 | l14 | l15 | l16 | l17 | l18 | l19"
        );
    }
}
