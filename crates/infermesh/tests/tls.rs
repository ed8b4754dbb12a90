//! The `openai` driver over HTTPS. A real serving node sits behind a TLS endpoint on 127.0.0.1
//! whose certificate comes from a private CA made here; a second real node registers it as an
//! `openai` backend through the admin API: with `ca_cert` the tester passes over TLS, without it
//! the failure says the certificate is not trusted and how to fix that.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A private CA (its PEM written to `ca_pem`) and a server certificate for 127.0.0.1 signed by it.
fn private_ca(ca_pem: &Path) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "infermesh test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(ca_pem, ca.pem()).unwrap();

    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key)
}

/// Terminates TLS on a free 127.0.0.1 port and relays each connection to `upstream`
/// (`host:port`), on a runtime of its own for the life of the test. Returns the port.
fn tls_endpoint(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    upstream: String,
) -> u16 {
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    // A client that rejects the certificate ends the handshake: nothing to relay.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
    });
    port
}

fn register(node: &NodeProc, body: &Value) -> (u16, Value) {
    post_json(&format!("{}/admin/v1/nodes", node.url), body)
}

/// The result of the test the node runs by itself after a registration.
fn auto_test_result(node: &NodeProc, id: &str) -> Value {
    wait_for_auto_test(node, id, Duration::from_secs(120))["onboarding"]["last_test"].clone()
}

#[test]
fn openai_backend_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    let (cert, key) = private_ca(&ca_pem);

    let server = NodeProc::start(&[]);
    server.wait_state("serving", Duration::from_secs(180));
    let upstream = server.url.trim_start_matches("http://").to_string();
    let port = tls_endpoint(cert, key, upstream);
    let url = format!("https://127.0.0.1:{port}/v1");

    let [flag, spec] = far_round_schedule();
    let node = NodeProc::start(&["--standby", &flag, &spec]);
    let backend = |id: &str, ca: Option<&Path>| {
        let mut b = json!({"id": id, "driver": "openai", "url": url,
            "models": [{"name": MODEL, "args": {"seed": 1}}]});
        if let Some(ca) = ca {
            b["ca_cert"] = json!(ca);
        }
        b
    };

    // Trusted through `ca_cert`: the automatic test after registration (load, health, one real
    // inference, stop) runs over TLS.
    let (code, v) = register(&node, &backend("tls", Some(&ca_pem)));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["node"]["url"], url.as_str());
    let r = auto_test_result(&node, "tls");
    assert_eq!(r["ok"], true, "{r}");
    eprintln!("tester over https: {}", r["models"][0]);

    // Without it the private CA is not trusted, and the error says what to do.
    let (code, v) = register(&node, &backend("untrusted", None));
    assert_eq!(code, 201, "{v}");
    let r = auto_test_result(&node, "untrusted");
    assert_eq!(r["ok"], false, "{r}");
    let err = r["models"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("certificate") && err.contains("ca_cert"),
        "{err}"
    );

    // `ca_cert` is checked at registration: 400 naming the field.
    let missing = dir.path().join("nope.pem");
    let (code, v) = register(&node, &backend("missing-ca", Some(&missing)));
    assert_eq!(code, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("`ca_cert`") && e.contains("nope.pem"), "{e}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (code, v) = register(&node, &backend("bad-ca", Some(&not_pem)));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`ca_cert`"), "{v}");
    let mut plain = backend("plain-ca", Some(&ca_pem));
    plain["url"] = json!(server.url.clone() + "/v1");
    let (code, v) = register(&node, &plain);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("https://"), "{v}");
}
