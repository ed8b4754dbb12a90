//! Unit tests of [`super`] (kept apart to keep the module readable).

use super::*;

const NOW: i64 = 1_790_000_000_000;
/// The node the unit tests' signatures are for.
const NODE: &str = "00112233aabbccdd";

fn req<'a>(method: &'a str, path: &'a str, body: &'a [u8]) -> AdminRequest<'a> {
    AdminRequest { method, path, body }
}

fn binding() -> Binding {
    Binding {
        node_id: NODE.into(),
        started_ms: 0,
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn registry(keys: &[&SigningKey]) -> OperatorRegistry {
    let ops: Vec<OperatorConfig> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| OperatorConfig {
            name: format!("op{i}"),
            public_key: hex::encode(k.verifying_key().as_bytes()),
        })
        .collect();
    OperatorRegistry::from_config(&ops).unwrap()
}

fn check_at(
    h: Option<&str>,
    body: &[u8],
    now: i64,
    reg: &OperatorRegistry,
    cache: &ReplayCache,
) -> Result<OperatorId, AuthError> {
    verify(
        h,
        &binding(),
        req("POST", "/admin/v1/nodes", body),
        now,
        reg,
        cache,
    )
}

#[test]
fn a_valid_signature_is_accepted_once() {
    let k = key(1);
    let reg = registry(&[&k]);
    let cache = ReplayCache::default();
    let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"{}", NOW);
    let op = check_at(Some(&h), b"{}", NOW + 5, &reg, &cache).unwrap();
    assert_eq!(op.name, "op0");
    assert_eq!(op.key_id, key_id(&k.verifying_key()));
    assert_eq!(
        check_at(Some(&h), b"{}", NOW + 6, &reg, &cache),
        Err(AuthError::Replayed)
    );
    // Re-signed (new timestamp) is a new request.
    let h2 = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"{}", NOW + 1);
    assert!(check_at(Some(&h2), b"{}", NOW + 6, &reg, &cache).is_ok());
}

#[test]
fn header_shape_and_key_id() {
    let k = key(2);
    let h = sign_request(&k, NODE, "post", "/p", b"", 42);
    let rest = h.strip_prefix("Infermesh ").unwrap();
    let f: Vec<&str> = rest.split(':').collect();
    assert_eq!(f.len(), 3);
    assert_eq!(f[0].len(), 16);
    assert_eq!(
        f[0],
        &hex::encode(Sha256::digest(k.verifying_key().as_bytes()))[..16]
    );
    assert_eq!(f[1], "42");
    assert_eq!(f[2].len(), 128);
    assert_eq!(
        canonical(NODE, "post", "/p", b"", 42),
        "infermesh-admin-v2\n00112233aabbccdd\nPOST\n/p\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n42"
    );
}

#[test]
fn every_signed_field_matters() {
    let k = key(3);
    let reg = registry(&[&k]);
    let cache = ReplayCache::default();
    let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"{\"a\":1}", NOW);
    // Other body.
    assert_eq!(
        check_at(Some(&h), b"{\"a\":2}", NOW, &reg, &cache),
        Err(AuthError::BadSignature)
    );
    // Other method / path.
    assert_eq!(
        verify(
            Some(&h),
            &binding(),
            req("PUT", "/admin/v1/nodes", b"{\"a\":1}"),
            NOW,
            &reg,
            &cache
        ),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        verify(
            Some(&h),
            &binding(),
            req("POST", "/admin/v1/nodes/x", b"{\"a\":1}"),
            NOW,
            &reg,
            &cache
        ),
        Err(AuthError::BadSignature)
    );
    // Other timestamp in the header than the one signed.
    let forged = h.replace(&format!(":{NOW}:"), &format!(":{}:", NOW + 1));
    assert_eq!(
        check_at(Some(&forged), b"{\"a\":1}", NOW, &reg, &cache),
        Err(AuthError::BadSignature)
    );
    // Signed for another node: accepted by that node only, never replayable here.
    let other = Binding {
        node_id: "ffeeddccbbaa9988".into(),
        started_ms: 0,
    };
    assert_eq!(
        verify(
            Some(&h),
            &other,
            req("POST", "/admin/v1/nodes", b"{\"a\":1}"),
            NOW,
            &reg,
            &cache
        ),
        Err(AuthError::BadSignature)
    );
    // Failures consumed nothing: the genuine request still passes.
    assert!(check_at(Some(&h), b"{\"a\":1}", NOW, &reg, &cache).is_ok());
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_request_signed_before_the_node_started_is_refused_after_a_restart() {
    let k = key(4);
    let reg = registry(&[&k]);
    let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW);
    let first_run = ReplayCache::default();
    let ok = verify(
        Some(&h),
        &binding(),
        req("POST", "/admin/v1/nodes", b""),
        NOW + 10,
        &reg,
        &first_run,
    );
    assert!(ok.is_ok());
    // The process restarts 20 s later: an empty replay cache, but a start time after the
    // signature, so the request it already accepted is not accepted again.
    let restarted = Binding {
        node_id: NODE.into(),
        started_ms: NOW + 20_000,
    };
    let second_run = ReplayCache::default();
    assert_eq!(
        verify(
            Some(&h),
            &restarted,
            req("POST", "/admin/v1/nodes", b""),
            NOW + 21_000,
            &reg,
            &second_run
        ),
        Err(AuthError::BeforeStart)
    );
    assert!(second_run.is_empty(), "a refused request occupies nothing");
    let fresh = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW + 21_000);
    let again = verify(
        Some(&fresh),
        &restarted,
        req("POST", "/admin/v1/nodes", b""),
        NOW + 21_001,
        &reg,
        &second_run,
    );
    assert!(again.is_ok());
}

#[test]
fn timestamps_outside_the_window_are_expired() {
    let k = key(4);
    let reg = registry(&[&k]);
    let cache = ReplayCache::default();
    let old = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW - 61_000);
    assert_eq!(
        check_at(Some(&old), b"", NOW, &reg, &cache),
        Err(AuthError::Expired { skew_ms: 61_000 })
    );
    let future = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW + 90_500);
    let err = check_at(Some(&future), b"", NOW, &reg, &cache).unwrap_err();
    assert_eq!(err, AuthError::Expired { skew_ms: -90_500 });
    assert!(err.to_string().contains("91s in the future"), "{err}");
    assert!(AuthError::Expired { skew_ms: 61_000 }
        .to_string()
        .contains("61s old"));
    // The edges are inside.
    for ts in [NOW - MAX_SKEW_MS, NOW + MAX_SKEW_MS] {
        let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", ts);
        assert!(check_at(Some(&h), b"", NOW, &reg, &cache).is_ok());
    }
    assert!(cache.len() == 2);
}

#[test]
fn unknown_key_missing_and_malformed() {
    let k = key(5);
    let stranger = key(6);
    let reg = registry(&[&k]);
    let cache = ReplayCache::default();
    let h = sign_request(&stranger, NODE, "POST", "/admin/v1/nodes", b"", NOW);
    let err = check_at(Some(&h), b"", NOW, &reg, &cache).unwrap_err();
    assert_eq!(
        err,
        AuthError::UnknownKey(key_id(&stranger.verifying_key()))
    );
    assert!(err.to_string().contains("[[operator]]"));
    assert_eq!(
        check_at(None, b"", NOW, &reg, &cache),
        Err(AuthError::Missing)
    );
    let sig = "ab".repeat(64);
    for bad in [
        "Bearer abc".to_string(),
        "Infermesh".to_string(),
        "Infermesh abc".to_string(),
        format!("Infermesh 0123456789abcdef:{NOW}"),
        format!("Infermesh 0123456789abcdef:{NOW}:{sig}:x"),
        format!("Infermesh 0123:{NOW}:{sig}"),
        format!("Infermesh 0123456789abcdeg:{NOW}:{sig}"),
        format!("Infermesh 0123456789abcdef:soon:{sig}"),
        format!("Infermesh 0123456789abcdef:{NOW}:abcd"),
        format!("Infermesh 0123456789abcdef:{NOW}:{}", "zz".repeat(64)),
    ] {
        let err = check_at(Some(&bad), b"", NOW, &reg, &cache).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{bad}: {err:?}");
        assert!(err.to_string().starts_with("malformed"), "{err}");
    }
}

#[test]
fn an_empty_registry_refuses_with_the_keygen_hint() {
    let k = key(7);
    let cache = ReplayCache::default();
    let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW);
    let err = check_at(Some(&h), b"", NOW, &OperatorRegistry::default(), &cache).unwrap_err();
    assert_eq!(err, AuthError::NoOperators);
    assert!(err.to_string().contains("infermesh keygen"));
    assert!(err.to_string().contains("--admin-open"));
}

#[test]
fn any_registered_key_may_sign() {
    let (a, b) = (key(8), key(9));
    let reg = registry(&[&a, &b]);
    assert_eq!(reg.len(), 2);
    let cache = ReplayCache::default();
    let h = sign_request(&b, NODE, "DELETE", "/admin/v1/nodes/x", b"", NOW);
    let op = verify(
        Some(&h),
        &binding(),
        req("DELETE", "/admin/v1/nodes/x", b""),
        NOW,
        &reg,
        &cache,
    )
    .unwrap();
    assert_eq!(op.name, "op1");
}

#[test]
fn registry_rejects_bad_keys_by_name() {
    let bad = OperatorConfig {
        name: "alice".into(),
        public_key: "nothex".into(),
    };
    let err = OperatorRegistry::from_config(&[bad]).unwrap_err();
    assert!(err.contains("alice") && err.contains("hex"), "{err}");
}

#[test]
fn malleated_signatures_do_not_pass_or_dodge_the_replay_check() {
    let k = key(10);
    let reg = registry(&[&k]);
    let cache = ReplayCache::default();
    let h = sign_request(&k, NODE, "POST", "/admin/v1/nodes", b"", NOW);
    assert!(check_at(Some(&h), b"", NOW, &reg, &cache).is_ok());
    // s + L: the classic malleation; strict verification refuses it.
    let (prefix, sig_hex) = h.rsplit_once(':').unwrap();
    let mut sig = [0u8; 64];
    hex::decode_to_slice(sig_hex, &mut sig).unwrap();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = v as u8;
        carry = v >> 8;
    }
    let malleated = format!("{prefix}:{}", hex::encode(sig));
    let err = check_at(Some(&malleated), b"", NOW, &reg, &cache).unwrap_err();
    assert!(
        matches!(err, AuthError::BadSignature | AuthError::Replayed),
        "{err:?}"
    );
}

#[test]
fn the_replay_cache_forgets_only_what_can_no_longer_pass() {
    let cache = ReplayCache::default();
    cache.accept_once([1; 32], NOW, NOW).unwrap();
    assert_eq!(
        cache.accept_once([1; 32], NOW, NOW + MAX_SKEW_MS),
        Err(AuthError::Replayed)
    );
    // Past the window the entry is pruned (and the timestamp check refuses the request).
    cache
        .accept_once([2; 32], NOW + 1, NOW + MAX_SKEW_MS + 1)
        .unwrap();
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_replay_cache_is_bounded() {
    let cache = ReplayCache::default();
    for i in 0..REPLAY_CAPACITY {
        let mut e = [0u8; 32];
        e[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cache.accept_once(e, NOW, NOW).unwrap();
    }
    assert_eq!(
        cache.accept_once([0xff; 32], NOW, NOW),
        Err(AuthError::Busy)
    );
    // Once the window passes, the space is reclaimed.
    cache
        .accept_once([0xff; 32], NOW + MAX_SKEW_MS + 1, NOW + MAX_SKEW_MS + 1)
        .unwrap();
    assert_eq!(cache.len(), 1);
}

#[test]
fn only_admin_mutations_are_gated() {
    assert!(is_admin_mutation(&Method::POST, "/admin/v1/nodes"));
    assert!(is_admin_mutation(&Method::PUT, "/admin/v1/nodes/x"));
    assert!(is_admin_mutation(&Method::DELETE, "/admin/v1/nodes/x"));
    assert!(is_admin_mutation(
        &Method::POST,
        "/admin/v1/wakeable/w/wake"
    ));
    assert!(is_admin_mutation(&Method::PATCH, "/admin/anything"));
    assert!(!is_admin_mutation(&Method::GET, "/admin/v1/nodes"));
    assert!(!is_admin_mutation(&Method::HEAD, "/admin/v1/nodes"));
    assert!(!is_admin_mutation(&Method::POST, "/v1/chat/completions"));
    assert!(!is_admin_mutation(&Method::POST, "/administrator"));
}

#[test]
fn admin_reads_are_open_to_this_machine_only() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let loopback4 = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let loopback6 = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let mapped = Some(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()));
    let remote = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    let remote_mapped = Some(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()));
    let all = [loopback4, loopback6, mapped, remote, remote_mapped, None];
    for client in all {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::POST,
            Method::PUT,
            Method::DELETE,
        ] {
            // Outside /admin/ nothing is gated; --admin-open passes everything.
            for path in ["/api/status", "/v1/chat/completions", "/administrator", "/"] {
                assert_eq!(
                    gate(&method, path, client, false),
                    Gate::Pass,
                    "{method} {path} {client:?}"
                );
            }
            assert_eq!(gate(&method, "/admin/v1/nodes", client, true), Gate::Pass);
            let local = matches!(client, Some(ip) if ip.to_canonical().is_loopback());
            let want = if is_read(&method) && local {
                Gate::Pass
            } else {
                Gate::Sign
            };
            for path in ["/admin/v1/nodes", "/admin/v1/nodes/x/test", "/admin"] {
                assert_eq!(
                    gate(&method, path, client, false),
                    want,
                    "{method} {path} {client:?}"
                );
            }
        }
    }
    // Spelled out: the cases the rule exists for.
    for (method, client, want) in [
        (Method::GET, loopback4, Gate::Pass),
        (Method::GET, mapped, Gate::Pass),
        (Method::GET, remote, Gate::Sign),
        (Method::GET, remote_mapped, Gate::Sign),
        (Method::GET, None, Gate::Sign),
        (Method::POST, loopback4, Gate::Sign),
    ] {
        assert_eq!(
            gate(&method, "/admin/v1/nodes", client, false),
            want,
            "{method} {client:?}"
        );
    }
}

mod middleware {
    use super::*;
    use axum::routing::{get, post};
    use axum::Router;
    use tokio::net::TcpListener;

    fn router(auth: AdminAuth) -> Router {
        let auth = Arc::new(auth);
        let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h2 = hits.clone();
        Router::new()
            .route(
                "/admin/v1/nodes",
                get(|| async { "list" }).post(move |body: Bytes| {
                    let hits = h2.clone();
                    async move {
                        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        format!("got {}", String::from_utf8_lossy(&body))
                    }
                }),
            )
            .route("/v1/x", post(|| async { "open" }))
            .layer(axum::middleware::from_fn_with_state(
                auth,
                |State(a): State<Arc<AdminAuth>>, req: Request, next: Next| async move {
                    check(&a, req, next).await
                },
            ))
    }

    /// On loopback through the node's own `serve`, which tells the gate the client's address.
    async fn serve(auth: AdminAuth) -> String {
        let router = router(auth);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(crate::serve(l, router, std::future::pending()));
        url
    }

    /// One request through the router as if it came from `client` (`None`: address unknown).
    async fn from(
        router: &Router,
        client: Option<&str>,
        method: &str,
        path: &str,
        auth: Option<String>,
    ) -> (u16, String) {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut req = req.body(Body::empty()).unwrap();
        if let Some(c) = client {
            let addr: SocketAddr = c.parse().unwrap();
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn remote_admin_reads_need_a_signature() {
        let k = key(12);
        let router = router(AdminAuth::new(registry(&[&k]), false, binding()));
        let read = |client| from(&router, client, "GET", "/admin/v1/nodes", None);
        assert_eq!(read(Some("127.0.0.1:4000")).await, (200, "list".into()));
        assert_eq!(read(Some("[::1]:4000")).await, (200, "list".into()));
        assert_eq!(
            read(Some("[::ffff:127.0.0.1]:4000")).await,
            (200, "list".into())
        );
        for client in [Some("192.0.2.7:4000"), Some("[2001:db8::1]:4000"), None] {
            let (status, body) = read(client).await;
            assert_eq!(status, 401, "{client:?}");
            assert!(body.contains("reads from another machine"), "{body}");
        }
        let signed = authorization_header(&k, NODE, "GET", "/admin/v1/nodes", b"");
        let remote = Some("192.0.2.7:4000");
        assert_eq!(
            from(
                &router,
                remote,
                "GET",
                "/admin/v1/nodes",
                Some(signed.clone())
            )
            .await,
            (200, "list".into())
        );
        // Reads are signed like changes: the same signature is not accepted twice.
        assert_eq!(
            from(&router, remote, "GET", "/admin/v1/nodes", Some(signed))
                .await
                .0,
            401
        );
        // Public routes stay public from anywhere.
        assert_eq!(
            from(&router, remote, "POST", "/v1/x", None).await,
            (200, "open".into())
        );
        // --admin-open passes remote reads too.
        let open = router_open();
        assert_eq!(
            from(&open, remote, "GET", "/admin/v1/nodes", None).await.0,
            200
        );
    }

    fn router_open() -> Router {
        router(AdminAuth::new(OperatorRegistry::default(), true, binding()))
    }

    #[tokio::test]
    async fn gate_over_http() {
        let k = key(11);
        let url = serve(AdminAuth::new(registry(&[&k]), false, binding())).await;
        let c = reqwest::Client::new();
        let u = format!("{url}/admin/v1/nodes");
        // Reads from this machine and non-admin routes pass unsigned.
        assert_eq!(
            c.get(&u).send().await.unwrap().text().await.unwrap(),
            "list"
        );
        let r = c.post(format!("{url}/v1/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // Unsigned mutation: 401 with a reason and the scheme.
        let r = c.post(&u).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Infermesh");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("missing"),
            "{body}"
        );
        // Signed: the handler sees the same body.
        let h = authorization_header(&k, NODE, "POST", "/admin/v1/nodes", b"{\"x\":1}");
        let r = c
            .post(&u)
            .header("authorization", &h)
            .body("{\"x\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "got {\"x\":1}");
        // Replayed.
        let r = c
            .post(&u)
            .header("authorization", &h)
            .body("{\"x\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("already accepted"));
        // The signed target includes the query string.
        let h = authorization_header(&k, NODE, "POST", "/admin/v1/nodes", b"");
        let r = c
            .post(format!("{u}?force=1"))
            .header("authorization", &h)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    #[tokio::test]
    async fn open_mode_and_empty_registry() {
        let url = serve(AdminAuth::new(OperatorRegistry::default(), true, binding())).await;
        let r = reqwest::Client::new()
            .post(format!("{url}/admin/v1/nodes"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let url = serve(AdminAuth::new(
            OperatorRegistry::default(),
            false,
            binding(),
        ))
        .await;
        let r = reqwest::Client::new()
            .post(format!("{url}/admin/v1/nodes"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], NO_OPERATORS);
    }
}
