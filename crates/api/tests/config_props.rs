//! Property tests of the admin body decoder (`config::parse_backend`) and of the node's HTTP
//! surface under malformed input: arbitrary bytes never panic and come back as a sentence or a
//! 4xx JSON error, never a 5xx; every valid backend description round-trips. Bounded case
//! counts (`PROPTEST_CASES` overrides).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use infermesh_api::config::{parse_backend, BackendConfig, DriverConfig};
use infermesh_api::{App, AppOptions, Node, NodeInfo};
use infermesh_backend::ModelSpec;
use proptest::prelude::*;
use serde_json::{json, Value};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id", "driver", "models", "serve", "url", "api_key", "ca_cert", "binary", "ctx",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ]
}

/// Objects shaped like admin bodies: known fields with values of any type, a real driver name
/// most of the time.
fn body_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::btree_map(field(), any_json(), 0..8),
        prop::option::of(prop::sample::select(vec![
            "embedded",
            "llama_server",
            "openai",
        ])),
    )
        .prop_map(|(m, driver)| {
            let mut o: serde_json::Map<String, Value> = m.into_iter().collect();
            if let Some(d) = driver {
                o.insert("driver".into(), json!(d));
            }
            Value::Object(o)
        })
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

/// Valid backend descriptions.
fn backend() -> impl Strategy<Value = BackendConfig> {
    let driver = prop_oneof![
        Just(DriverConfig::Embedded),
        ("[a-z/]{1,20}", prop::option::of(1u32..100_000)).prop_map(|(b, ctx)| {
            DriverConfig::LlamaServer {
                binary: format!("/{b}").into(),
                ctx,
            }
        }),
        ("[a-z0-9.:]{1,20}", prop::option::of("[ -~]{0,20}")).prop_map(|(host, api_key)| {
            DriverConfig::Openai {
                url: format!("http://{host}/v1"),
                api_key,
                ca_cert: None,
            }
        }),
    ];
    (
        id(),
        driver,
        prop::collection::btree_set("[a-z0-9-]{1,12}", 1..4),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(id, driver, names, pick, serve)| {
            let names: Vec<String> = names.into_iter().collect();
            let needs_path = matches!(driver, DriverConfig::LlamaServer { .. });
            let models = names
                .iter()
                .map(|n| ModelSpec {
                    name: n.clone(),
                    args: if needs_path {
                        BTreeMap::from([("path".to_string(), json!(format!("/m/{n}.gguf")))])
                    } else {
                        BTreeMap::new()
                    },
                })
                .collect();
            BackendConfig {
                id,
                driver,
                models,
                serve: serve.then(|| names[pick.index(names.len())].clone()),
            }
        })
}

/// 256 cases per property unless `PROPTEST_CASES` says otherwise (a longer local run).
fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_are_sentences(
        b in prop::collection::vec(any::<u8>(), 0..300),
        path_id in prop::option::of(".{0,10}"),
    ) {
        if let Err(e) = parse_backend(&b, path_id.as_deref()) {
            prop_assert!(!e.trim().is_empty());
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in any_json()) {
        if let Err(e) = parse_backend(v.to_string().as_bytes(), None) {
            prop_assert!(!e.trim().is_empty());
        }
    }

    /// Body-shaped objects: accepted ones are valid configs that re-encode to themselves;
    /// refused ones say why.
    #[test]
    fn body_shaped_objects_are_valid_or_refused_with_a_reason(v in body_like()) {
        match parse_backend(v.to_string().as_bytes(), None) {
            Ok(cfg) => {
                let again = parse_backend(&serde_json::to_vec(&cfg).unwrap(), Some(&cfg.id));
                prop_assert_eq!(again, Ok(cfg));
            }
            Err(e) => prop_assert!(!e.trim().is_empty()),
        }
    }

    #[test]
    fn valid_backends_round_trip(cfg in backend()) {
        let body = serde_json::to_vec(&cfg).unwrap();
        prop_assert_eq!(parse_backend(&body, None), Ok(cfg.clone()));
        // PUT: the id may come from the path alone.
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v.as_object_mut().unwrap().remove("id");
        prop_assert_eq!(parse_backend(v.to_string().as_bytes(), Some(&cfg.id)), Ok(cfg));
    }
}

/// A node's HTTP surface on loopback (no gossip, admin open, config kept in memory).
fn serve(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(async {
        let node = Node::new(NodeInfo {
            node_id: "props".into(),
            public_key: String::new(),
            name: "props".into(),
            version: "test".into(),
            client_mode: false,
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
        tokio::spawn(infermesh_api::serve(
            listener,
            infermesh_api::router(app),
            std::future::pending(),
        ));
        addr
    })
}

/// Malformed bodies on every POST route: a 4xx with a JSON error, never a 5xx or a hang.
#[test]
fn malformed_bodies_get_4xx_json_errors_over_http() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = serve(&rt);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let routes = [
        "/v1/chat/completions",
        "/v1/completions",
        "/admin/v1/nodes",
        "/admin/v1/nodes/x/test",
    ];
    let strategy = (
        prop::sample::select(routes.to_vec()),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            any_json().prop_map(|v| v.to_string().into_bytes()),
            body_like().prop_map(|v| v.to_string().into_bytes()),
        ],
    );
    runner
        .run(&strategy, |(route, body)| {
            let (status, text) = rt.block_on(async {
                let r = http
                    .post(format!("http://{addr}{route}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the node answers");
                (r.status(), r.text().await.unwrap_or_default())
            });
            // A body that happens to be a valid registration may be accepted (201).
            prop_assert!(
                status.is_client_error() || status.as_u16() == 201,
                "{route} {status}: {text} (body {:?})",
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    TestCaseError::fail(format!("{route} {status}: not JSON ({e}): {text}"))
                })?;
                prop_assert!(!v["error"].is_null(), "{route} {status}: {text}");
            }
            Ok(())
        })
        .unwrap();
}
