//! What one client may cost a node: bodies over the limit get 413 (JSON, before the body is
//! read), a body that trickles gets 408, a client that never finishes its headers is cut off,
//! and none of them stops the server answering everyone else. A real server on loopback, with
//! short timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_api::{App, AppOptions, Limits, Node, NodeInfo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: Limits = Limits {
    v1_body: 8 * 1024 * 1024,
    other_body: 1024 * 1024,
    body_timeout: Duration::from_millis(800),
    header_timeout: Duration::from_millis(800),
    drain_timeout: Duration::from_millis(200),
    body_budget: 24 * 1024 * 1024,
};

/// A node's HTTP surface (no gossip, no backends, admin open) on 127.0.0.1; returns `host:port`.
async fn server() -> String {
    let node = Node::new(NodeInfo {
        node_id: "limits".into(),
        public_key: String::new(),
        name: "limits".into(),
        version: "test".into(),
        client_mode: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app: Arc<App> = App::with_options(
        node,
        None,
        addr.clone(),
        AppOptions {
            admin_open: true,
            ..AppOptions::default()
        },
    );
    let router = infermesh_api::router_with(app, LIMITS);
    tokio::spawn(infermesh_api::serve_with(
        listener,
        router,
        std::future::pending(),
        LIMITS,
    ));
    addr
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn status_ok(addr: &str) -> Duration {
    let t0 = Instant::now();
    let r = http()
        .get(format!("http://{addr}/api/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t0.elapsed()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_with_a_json_error() {
    let addr = server().await;
    let c = http();
    // Declared too large: refused without reading it.
    let big = vec![b' '; LIMITS.v1_body + 1];
    let r = c
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{v}"
    );
    // Streamed without a length (chunked): cut off once past the limit.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 128 * 1024])));
    let r = c
        .post(format!("http://{addr}/admin/v1/nodes"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");
    // At the limit is not too large: it is read and judged on its content.
    let mut at_limit = br#"{"model": "none", "messages": []}"#.to_vec();
    at_limit.resize(LIMITS.v1_body, b' ');
    let r = c
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(at_limit)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 413);
    assert!(r.status().is_client_error(), "{}", r.status());
    // Admin bodies are limited to 1 MiB (more than any backend description needs).
    let r = c
        .post(format!("http://{addr}/admin/v1/nodes"))
        .body(vec![b' '; LIMITS.other_body + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

/// Opens a request that declares an 8 MiB body and sends only its first bytes.
async fn stalled_upload(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let len = 8 * 1024 * 1024;
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{\"model\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn bodies_beyond_the_memory_budget_get_503_until_memory_is_free() {
    let addr = server().await;
    // The 24 MiB budget holds three declared 8 MiB bodies; they stall, holding it.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled_upload(&addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let upload = || {
        http()
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(vec![b' '; 8 * 1024 * 1024])
            .send()
    };
    let t0 = Instant::now();
    let r = upload().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory budget"),
        "{v}"
    );
    assert!(
        t0.elapsed() < LIMITS.body_timeout,
        "refused before the stalled ones end"
    );
    // Small requests still pass, and once the stalled bodies time out (408) the budget is back.
    assert!(status_ok(&addr).await < Duration::from_millis(500));
    for mut s in held {
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let r = upload().await.unwrap();
    assert_ne!(r.status(), 503, "the budget was given back");
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_the_server_keeps_serving() {
    let addr = server().await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    // Others are answered meanwhile.
    assert!(status_ok(&addr).await < Duration::from_millis(500));
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("the server answers a stalled body within its timeout");
    let took = t0.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
    assert!(
        took >= LIMITS.body_timeout && took < LIMITS.body_timeout + Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn clients_that_never_finish_their_headers_are_cut_off() {
    let addr = server().await;
    // Many slow clients, each stuck halfway through its headers...
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // ...do not stop anyone else.
    assert!(status_ok(&addr).await < Duration::from_millis(500));
    let t0 = Instant::now();
    for s in &mut slow {
        // A byte now and then does not extend the deadline.
        let _ = s.write_all(b"a").await;
    }
    for mut s in slow {
        let left = (LIMITS.header_timeout + Duration::from_secs(2)).saturating_sub(t0.elapsed());
        assert!(
            read_to_close(&mut s, left).await.is_some(),
            "a slow client was still connected {:?} after the header timeout",
            t0.elapsed()
        );
    }
    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut idle, Duration::from_secs(3))
        .await
        .expect("idle connection closed");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(status_ok(&addr).await < Duration::from_millis(500));
}
