//! nginx as a plain reverse proxy in front of the same fixture: the router suite's yardstick for
//! what one HTTP hop costs when it does nothing but relay (issue 18: added p50 ≤ 2× nginx's,
//! throughput ≥ 0.5× nginx's). Used when an `nginx` binary is found; the suite says so when not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running nginx, stopped (and its temp dir removed) on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `http://ADDR/v1`, as the fixture's base.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `INFERMESH_NGINX`, else `nginx` on PATH, else the Debian location (`/usr/sbin` is not on
/// every user's PATH).
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("INFERMESH_NGINX") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Proxy settings an operator would use in front of an LLM server: HTTP/1.1 keep-alive to the
/// upstream, no response buffering (streams pass chunk by chunk), no access log.
fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes auto;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         upstream fixture {{ server {upstream}; keepalive 256; }}\n  \
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://fixture;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_buffering off;\n    }}\n  }}\n}}\n"
    )
}

/// Starts `binary` proxying to `upstream` and waits until it accepts connections.
pub async fn start(binary: &Path, upstream: SocketAddr) -> Result<Nginx> {
    let dir = tempfile::tempdir()?;
    let listen: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), listen, upstream))?;
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(Nginx {
                child,
                addr: listen,
                _dir: dir,
            });
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            bail!("nginx exited ({status}) before listening: {}", log.trim());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not listen on {listen} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
