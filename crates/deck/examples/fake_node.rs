//! A stand-in mesh on loopback for trying the deck by hand: one node with `/api/events` and
//! `PEERS` peers that answer `/api/logs`, each on its own port from `PORT`.
//!
//! `cargo run -p infermesh-deck --example fake_node -- 7399 4`, then
//! `cargo run -p infermesh-deck --example deck -- http://127.0.0.1:7399`.
//! Stop and restart it to watch the deck reconnect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn status(port: u16, peers: u16) -> String {
    let states = ["serving", "standby", "loading", "client"];
    let peer_list: Vec<String> = (1..=peers)
        .map(|k| {
            let st = states[usize::from(k) % 4];
            let models = if st == "serving" || st == "loading" { r#"["SmolLM2-135M-Instruct"]"# } else { "[]" };
            format!(
                r#"{{"node_id":"n{k}","name":"fake-{k}","addr":"127.0.0.1:{}","state":"{st}","models":{models},"vram_gb":{}.0,"ram_gb":32.0,"version":"0.1.0","load":{},"participation":"active","last_seen_ms":{}}}"#,
                port + k,
                k * 8,
                k % 3,
                now_ms() - i64::from(k) * 700
            )
        })
        .collect();
    format!(
        r#"{{"node_id":"n0","name":"fake-0","version":"0.1.0","node_state":"serving","node_status":"Serving","participation":"inactive_waiting","timing":{{"seconds_until_next_round":240}},"message":"Round starts in 4m — must be online now","models":["SmolLM2-135M-Instruct"],"vram_gb":0.1,"ram_gb":24.0,"in_flight":0,"backends":[{{"id":"embedded","driver":"embedded","phase":"ready"}}],"peers":[{}],"wakeable":[]}}"#,
        peer_list.join(",")
    )
}

/// The last 20 s of this node's log: derived from the clock, so the fake keeps no state.
fn log_line(node: u16, sec: i64) -> String {
    let levels = ["info", "debug", "warn", "info", "error"];
    format!(
        r#"{{"seq":{sec},"at_ms":{},"node_id":"n{node}","level":"{}","target":"fake","message":"tick {sec} on fake-{node}"}}"#,
        sec * 1000 + i64::from(node) * 37,
        levels[(sec as usize + usize::from(node)) % levels.len()]
    )
}

fn request(sec: i64) -> String {
    format!(
        r#"{{"id":{sec},"at_ms":{},"from":"n0","to":"n1","to_name":"fake-1","model":"SmolLM2-135M-Instruct","status":200,"latency_ms":{},"tokens":24}}"#,
        sec * 1000,
        80 + (sec * 37) % 300
    )
}

const ADMIN: &str = r#"[{"node":{"id":"embedded","driver":"embedded","models":[{"name":"SmolLM2-135M-Instruct"}],"phase":"ready"},
 "onboarding":{"backend_state":"serving","participation":"inactive_waiting","validated":true,
   "message":"Validated — safe to be offline until the next round (starts in 4m)","timing":{"seconds_until_next_round":240},"last_test":null}},
 {"node":{"id":"spare","driver":"openai","models":["m"],"phase":"idle"},
 "onboarding":{"backend_state":"waiting","participation":"inactive_waiting","validated":false,
   "message":"Schedule syncing","timing":{"seconds_until_next_round":-1},"last_test":null}}]"#;

async fn handle(mut sock: TcpStream, node: u16, base: u16, peers: u16) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let sec = now_ms() / 1000;
    let body = match (node, path.split('?').next().unwrap_or("")) {
        (0, "/api/events") => {
            let h = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
            if sock.write_all(h.as_bytes()).await.is_err() {
                return;
            }
            loop {
                let sec = now_ms() / 1000;
                let ev = format!(
                    "event: status\ndata: {}\n\nevent: log\ndata: {}\n\nevent: request\ndata: {}\n\n",
                    status(base, peers),
                    log_line(0, sec),
                    request(sec)
                );
                if sock.write_all(ev.as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        (0, "/api/status") => status(base, peers),
        (0, "/api/requests") => {
            let r: Vec<String> = (sec - 30..sec).map(request).collect();
            format!(r#"{{"requests":[{}]}}"#, r.join(","))
        }
        (0, "/admin/v1/nodes") => ADMIN.to_string(),
        (0, p) if p.ends_with("/test") => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            r#"{"ok":true,"models":[{"model":"SmolLM2-135M-Instruct","load_ms":120,"health_ms":2,"infer_ms":95}]}"#.into()
        }
        (_, "/api/logs") => {
            let l: Vec<String> = (sec - 20..=sec).map(|s| log_line(node, s)).collect();
            format!(r#"{{"lines":[{}]}}"#, l.join(","))
        }
        _ => r#"{"error":"no such route"}"#.into(),
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(reply.as_bytes()).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let base: u16 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7399);
    let peers: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    for node in 0..=peers {
        let listener = TcpListener::bind(("127.0.0.1", base + node)).await?;
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock, node, base, peers));
            }
        });
    }
    eprintln!("fake mesh: node on 127.0.0.1:{base}, {peers} peers on the next ports");
    std::future::pending::<()>().await;
    Ok(())
}
