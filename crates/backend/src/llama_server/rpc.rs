//! llama.cpp's `rpc-server` as a managed child: a split worker's share of a model lives in it.
//!
//! Its protocol has no authentication, so it listens on loopback only (`-H 127.0.0.1`) and the
//! host reaches it through the mesh's peer channel; see `infermesh_api::split`.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::process::{free_port, spawn_named, Proc, Readiness};
use crate::api::BackendError;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(50);

/// A running `rpc-server`; dropping it kills the process.
pub struct RpcServer {
    proc: Proc,
    port: u16,
}

impl RpcServer {
    /// Starts `binary` on a free loopback port with `threads` CPU threads and waits until it
    /// accepts connections.
    pub async fn start(binary: &Path, threads: u32, id: &str) -> Result<Self, BackendError> {
        let port = free_port()?;
        let args: Vec<String> = [
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            &threads.max(1).to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut proc = spawn_named(
            "rpc-server",
            "build it with scripts/build-llama-server, or pass --rpc-server PATH",
            binary,
            &args,
            id,
        )?;
        let readiness = Readiness {
            what: "rpc-server",
            goal: "listen",
            during: "at start",
            timeout: READY_TIMEOUT,
            every: POLL_EVERY,
        };
        // rpc-server serves one client at a time and drops one that closes at once.
        proc.wait_ready(readiness, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await?;
        Ok(Self { proc, port })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Why it stopped, if it has: its exit status and last output.
    pub fn exited(&mut self) -> Option<String> {
        let status: ExitStatus = self.proc.exited()?;
        Some(format!(
            "rpc-server exited ({status}){}",
            self.proc.tail.describe()
        ))
    }

    /// Stops it (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(self) -> Result<(), BackendError> {
        self.proc.terminate().await
    }
}
