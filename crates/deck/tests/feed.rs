//! The client against a throwaway node on loopback: SSE, polling fallback, reconnect after a
//! restart, and the signer hook on mutations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infermesh_deck::client::Client;
use infermesh_deck::model::Via;
use infermesh_deck::update::Target;
use infermesh_deck::{Cmd, Msg, NoopSigner, Signer};
use reqwest::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinSet;

const STATUS: &str = r#"{"node_id":"n1","name":"fake-node","node_state":"serving","peers":[]}"#;
const LOG: &str = r#"{"seq":1,"at_ms":1790000000000,"node_id":"n1","level":"info","target":"t","message":"hello from sse"}"#;

#[derive(Clone, Copy)]
struct Mode {
    sse: bool,
    logs: bool,
}

/// Answers one request per connection; SSE connections stay open until the server task dies.
async fn serve(listener: TcpListener, mode: Mode, auth: Arc<Mutex<Vec<String>>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        conns.spawn(handle(sock, mode, auth.clone()));
    }
}

async fn handle(mut sock: TcpStream, mode: Mode, auth: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let first = head.lines().next().unwrap_or("").to_string();
    for l in head.lines() {
        if let Some(v) = l
            .strip_prefix("authorization: ")
            .or(l.strip_prefix("Authorization: "))
        {
            auth.lock().unwrap().push(format!("{first} {v}"));
        }
    }
    let path = first.split(' ').nth(1).unwrap_or("/");
    let json = |code: &str, body: &str| {
        format!(
            "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = match path {
        "/api/events" if mode.sse => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
            let events = format!("event: status\ndata: {STATUS}\n\nevent: log\ndata: {LOG}\n\n");
            if sock.write_all(head.as_bytes()).await.is_err()
                || sock.write_all(events.as_bytes()).await.is_err()
            {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if sock.write_all(b": keepalive\n\n").await.is_err() {
                    return;
                }
            }
        }
        "/api/status" => json("200 OK", STATUS),
        p if p.starts_with("/api/logs") && mode.logs => json(
            "200 OK",
            r#"{"lines":[{"seq":0,"at_ms":1789999999000,"node_id":"n1","level":"warn","message":"backlog"}]}"#,
        ),
        p if p.starts_with("/api/requests") => json(
            "200 OK",
            r#"{"requests":[{"id":1,"model":"m","status":200}]}"#,
        ),
        "/admin/v1/nodes/good/test" => json(
            "200 OK",
            r#"{"ok":true,"models":[{"model":"m","load_ms":1}]}"#,
        ),
        "/admin/v1/nodes/busy/test" => json(
            "409 Conflict",
            r#"{"error":"a test of this backend is already running"}"#,
        ),
        _ => json("404 Not Found", r#"{"error":"no such route"}"#),
    };
    let _ = sock.write_all(reply.as_bytes()).await;
}

async fn start(
    port: u16,
    mode: Mode,
    auth: Arc<Mutex<Vec<String>>>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, tokio::spawn(serve(listener, mode, auth)))
}

/// Waits for the first message matching `pred`, failing after 10 s.
async fn expect(rx: &mut UnboundedReceiver<Msg>, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) if pred(&m) => return m,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("channel closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn sse_feed_reconnects_after_a_node_restart() {
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (port, server) = start(
        0,
        Mode {
            sse: true,
            logs: true,
        },
        auth.clone(),
    )
    .await;
    let (tx, mut rx) = unbounded_channel();
    let client = Client::new(Arc::new(NoopSigner), tx).unwrap();
    let feed = tokio::spawn(client.feed(format!("http://127.0.0.1:{port}")));

    expect(&mut rx, "connected", |m| {
        matches!(m, Msg::Connected(Via::Sse))
    })
    .await;
    expect(
        &mut rx,
        "status",
        |m| matches!(m, Msg::Status(s) if s.name == "fake-node"),
    )
    .await;
    expect(
        &mut rx,
        "sse log",
        |m| matches!(m, Msg::Log(l) if l.message == "hello from sse"),
    )
    .await;
    expect(&mut rx, "backlog", |m| matches!(m, Msg::Logs { node_id, lines } if node_id == "n1" && lines[0].message == "backlog")).await;
    expect(
        &mut rx,
        "requests",
        |m| matches!(m, Msg::Requests(r) if r.len() == 1),
    )
    .await;

    server.abort();
    let _ = server.await;
    let m = expect(&mut rx, "disconnected", |m| {
        matches!(m, Msg::Disconnected { .. })
    })
    .await;
    let Msg::Disconnected { attempt, .. } = m else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    // While the node is down, attempts count up with an error the header can show.
    let m = expect(&mut rx, "second attempt", |m| {
        matches!(m, Msg::Disconnected { attempt: 2, .. })
    })
    .await;
    let Msg::Disconnected { error, .. } = m else {
        unreachable!()
    };
    assert!(!error.is_empty());

    let (_, server) = start(
        port,
        Mode {
            sse: true,
            logs: true,
        },
        auth,
    )
    .await;
    expect(&mut rx, "reconnected", |m| {
        matches!(m, Msg::Connected(Via::Sse))
    })
    .await;
    expect(&mut rx, "status again", |m| matches!(m, Msg::Status(_))).await;
    feed.abort();
    server.abort();
}

#[tokio::test]
async fn falls_back_to_polling_without_sse() {
    let (port, server) = start(
        0,
        Mode {
            sse: false,
            logs: true,
        },
        Arc::default(),
    )
    .await;
    let (tx, mut rx) = unbounded_channel();
    let client = Client::new(Arc::new(NoopSigner), tx).unwrap();
    let feed = tokio::spawn(client.feed(format!("http://127.0.0.1:{port}")));
    expect(&mut rx, "polling", |m| {
        matches!(m, Msg::Connected(Via::Polling))
    })
    .await;
    expect(
        &mut rx,
        "status",
        |m| matches!(m, Msg::Status(s) if s.node_id == "n1"),
    )
    .await;
    expect(
        &mut rx,
        "logs",
        |m| matches!(m, Msg::Logs { lines, .. } if lines.len() == 1),
    )
    .await;
    feed.abort();
    server.abort();
}

struct TestSigner;
impl Signer for TestSigner {
    fn sign_request(
        &self,
        node_id: &str,
        method: &str,
        path: &str,
        _body: &[u8],
    ) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("Infermesh op1:{node_id}:{method}{path}")).ok()
    }
}

#[tokio::test]
async fn post_test_is_signed_and_reports_results_and_errors() {
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (port, server) = start(
        0,
        Mode {
            sse: false,
            logs: true,
        },
        auth.clone(),
    )
    .await;
    let (tx, mut rx) = unbounded_channel();
    let client = Client::new(Arc::new(TestSigner), tx).unwrap();
    let target = Target {
        node_id: "n1".into(),
        base: format!("http://127.0.0.1:{port}"),
    };
    client.perform(Cmd::PostTest {
        target: target.clone(),
        backend_id: "good".into(),
    });
    let m = expect(&mut rx, "test result", |m| {
        matches!(m, Msg::TestDone { .. })
    })
    .await;
    let Msg::TestDone { result, .. } = m else {
        unreachable!()
    };
    assert!(result.unwrap().ok);
    assert_eq!(
        auth.lock().unwrap().as_slice(),
        ["POST /admin/v1/nodes/good/test HTTP/1.1 Infermesh op1:n1:POST/admin/v1/nodes/good/test"]
    );

    client.perform(Cmd::PostTest {
        target,
        backend_id: "busy".into(),
    });
    let m = expect(&mut rx, "409", |m| matches!(m, Msg::TestDone { .. })).await;
    let Msg::TestDone { result, .. } = m else {
        unreachable!()
    };
    assert_eq!(
        result.unwrap_err(),
        "HTTP 409: a test of this backend is already running"
    );
    server.abort();
}

#[tokio::test]
async fn export_writes_the_file_and_says_where() {
    let (tx, mut rx) = unbounded_channel();
    let client = Client::new(Arc::new(NoopSigner), tx).unwrap();
    let dir = std::env::temp_dir().join(format!("deck-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("infermesh-deck-logs-test.txt");
    client.perform(Cmd::Export {
        path: path.clone(),
        contents: "a\nb\n".into(),
        lines: 2,
    });
    let m = expect(&mut rx, "exported", |m| matches!(m, Msg::Exported(_))).await;
    let Msg::Exported(Ok((shown, 2))) = m else {
        panic!("{m:?}")
    };
    assert_eq!(shown, path.display().to_string());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_node_without_api_logs_stays_connected() {
    let (port, server) = start(
        0,
        Mode {
            sse: false,
            logs: false,
        },
        Arc::default(),
    )
    .await;
    let (tx, mut rx) = unbounded_channel();
    let client = Client::new(Arc::new(NoopSigner), tx).unwrap();
    let feed = tokio::spawn(client.feed(format!("http://127.0.0.1:{port}")));
    expect(&mut rx, "polling", |m| {
        matches!(m, Msg::Connected(Via::Polling))
    })
    .await;
    let m = expect(&mut rx, "log failure", |m| {
        matches!(m, Msg::LogsFailed { .. })
    })
    .await;
    let Msg::LogsFailed { error, .. } = m else {
        unreachable!()
    };
    assert_eq!(error, "HTTP 404: no such route");
    // Two more status polls, and no disconnect among everything received meanwhile.
    for _ in 0..2 {
        let m = expect(&mut rx, "status or disconnect", |m| {
            matches!(m, Msg::Status(_) | Msg::Disconnected { .. })
        })
        .await;
        assert!(matches!(m, Msg::Status(_)), "{m:?}");
    }
    feed.abort();
    server.abort();
}
