//! `infermesh console`: a node's dashboard served from the operator's own machine, where its
//! actions can be signed. Every page, script and API read is the node's own, passed through;
//! the page's actions post to this process, which signs them with the operator key it holds
//! (the same signature as the deck's and the CLI's) and forwards them to the node.
//!
//! The private key never reaches the page. What the page gets is a random token for this run,
//! in a `<meta>` tag of the page this process served: a signing request must carry it, so
//! another site open in the same browser (which can post to 127.0.0.1 but cannot read the page)
//! cannot have anything signed. The console listens on loopback only.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::deck_cmd::OperatorSigner;

/// The request header a signing request must carry: the token of the page this run served.
const TOKEN_HEADER: &str = "x-infermesh-console";
/// Admin bodies are small; anything larger is not one.
const MAX_SIGN_BODY: usize = 256 * 1024;

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// The node whose dashboard to serve and whose admin API to sign for.
    #[arg(long, env = "INFERMESH_URL", default_value = "http://127.0.0.1:7337")]
    pub url: String,
    /// Loopback port to serve on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 7338)]
    pub port: u16,
}

struct Console {
    http: reqwest::Client,
    node: String,
    node_id: String,
    /// The operator key, as the deck and `infermesh migrate` sign with it.
    signer: OperatorSigner,
    token: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

pub async fn run(args: ConsoleArgs) -> Result<()> {
    let key = crate::keygen::load_operator_key(None)?.ok_or_else(|| {
        anyhow!(
            "no operator key: the console signs the dashboard's actions with it; create one with \
             `infermesh keygen` (or point INFERMESH_OPERATOR_KEY at one) and list its public key in \
             the node's config.toml [[operator]]"
        )
    })?;
    let node = infermesh_deck::api::base_url(&args.url);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let status: Value = http
        .get(format!("{node}/api/status"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot reach {node}/api/status: is the node running there?"))?
        .json()
        .await
        .with_context(|| format!("{node}/api/status is not a node's status"))?;
    let node_id = status["node_id"]
        .as_str()
        .ok_or_else(|| anyhow!("{node}/api/status names no node_id: is it an infermesh node?"))?
        .to_string();
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("no randomness for the page token: {e}"))?;
    let console = Arc::new(Console {
        http,
        node: node.clone(),
        node_id,
        signer: OperatorSigner(key),
        token: hex::encode(raw),
    });
    let app = Router::new()
        .route("/console/v1/sign", post(sign))
        .route("/console/v1/migrate", post(migrate))
        .fallback(pass_through)
        .with_state(console.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{}; pick another with --port",
                args.port
            )
        })?;
    let addr = listener.local_addr()?;
    let key_id = infermesh_api::auth::key_id(&console.signer.0.verifying_key());
    println!(
        "infermesh console on http://{addr}/ — {node}'s dashboard, its actions signed with operator key {key_id}"
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Reads, and the page's chat (`POST /v1/…`, the node's public API), go to the node as they
/// came; the page gets the token, and the node's address, in `<meta>` tags.
async fn pass_through(State(c): State<Arc<Console>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let chat = req.method() == Method::POST && path.starts_with("/v1/");
    if req.method() != Method::GET && !chat {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console passes reads and /v1 through; actions go through POST /console/v1/sign",
        );
    }
    let mut call = c
        .http
        .request(req.method().clone(), format!("{}{path}", c.node));
    if chat {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            call = call.header(header::CONTENT_TYPE, ct.clone());
        }
        let body = req.into_body().into_data_stream();
        call = call.body(reqwest::Body::wrap_stream(body));
    }
    let upstream = match call.send().await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the node at {} did not answer: {e}", c.node),
            )
        }
    };
    let status = upstream.status();
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let mut out = if path == "/" || path.starts_with("/?") {
        let page = upstream.text().await.unwrap_or_default();
        let meta = format!(
            r#"<meta name="infermesh-console" content="{}"><meta name="infermesh-node" content="{}">"#,
            c.token, c.node
        );
        Response::new(Body::from(page.replacen(
            "<head>",
            &format!("<head>{meta}"),
            1,
        )))
    } else {
        // Streamed through: `/api/events` is server-sent events.
        Response::new(Body::from_stream(upstream.bytes_stream()))
    };
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

#[derive(Deserialize)]
struct SignRequest {
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
}

/// The page's request as `T`, or the answer refusing it: not from a page this console served,
/// too large, or not of the shape `shape` says.
fn accepted<T: serde::de::DeserializeOwned>(
    c: &Console,
    headers: &HeaderMap,
    body: &[u8],
    shape: &str,
) -> Result<T, Box<Response>> {
    if headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) != Some(c.token.as_str()) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "not from a page this console served: reload the dashboard from the console's address",
        )));
    }
    if body.len() > MAX_SIGN_BODY {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a signing request is at most {MAX_SIGN_BODY} bytes"),
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("{shape}: {e}"))))
}

#[derive(Deserialize)]
struct MigrateRequest {
    model: String,
    /// The standby peer (its node id, as the node's membership names it) to move the model to.
    to: String,
}

/// Moves a model this node serves to a standby peer: the deck's and `infermesh migrate`'s
/// procedure (`infermesh_deck::migrate`), each of its calls signed here.
async fn migrate(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: MigrateRequest =
        match accepted(&c, &headers, &body, "a migration is {\"model\", \"to\"}") {
            Ok(r) => r,
            Err(refused) => return *refused,
        };
    let status: Value = match c.http.get(format!("{}/api/status", c.node)).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the node at {} did not answer: {e}", c.node),
            )
        }
    };
    let Some(peer) = status["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["node_id"] == req.to.as_str()))
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("the node knows no peer {}", req.to),
        );
    };
    let endpoint = |node_id: &str, name: &Value, base: String| infermesh_deck::migrate::Endpoint {
        node_id: node_id.to_string(),
        name: name.as_str().unwrap_or(node_id).to_string(),
        base,
    };
    let from = endpoint(&c.node_id, &status["name"], c.node.clone());
    let to = endpoint(
        &req.to,
        &peer["name"],
        infermesh_deck::api::base_url(peer["addr"].as_str().unwrap_or_default()),
    );
    tracing::info!(model = %req.model, to = %to.name, "console: migrating");
    let run = infermesh_deck::migrate::run(
        &c.http,
        &c.signer,
        &req.model,
        &from,
        &to,
        std::time::Duration::from_secs(300),
        |_| {},
    );
    match run.await {
        Ok(o) => Json(json!({"model": req.model, "from": from.name, "to": to.name,
                             "finished": o.finished, "cut_off": o.cut_off, "secs": o.secs}))
        .into_response(),
        Err(why) => error(StatusCode::CONFLICT, why),
    }
}

/// Signs one admin call of the page's for the node and forwards it; the node's answer comes
/// back as it gave it.
async fn sign(State(c): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let shape = "a signing request is {\"method\", \"path\", \"body\"?}";
    let req: SignRequest = match accepted(&c, &headers, &body, shape) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
    let Ok(method) = req.method.parse::<Method>() else {
        return error(StatusCode::BAD_REQUEST, "`method` is not an HTTP method");
    };
    if !matches!(method, Method::POST | Method::PUT | Method::DELETE)
        || !req.path.starts_with("/admin/")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "the console signs POST, PUT and DELETE under /admin/ only",
        );
    }
    let payload = match &req.body {
        Some(v) => serde_json::to_vec(v).unwrap_or_default(),
        None => Vec::new(),
    };
    let call = infermesh_deck::admin_request(
        &c.http,
        &c.signer,
        method.clone(),
        (&c.node_id, &c.node),
        &req.path,
        payload,
    );
    tracing::info!(method = %method, path = %req.path, "console: signed and sent");
    match call.send().await {
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("the node at {} did not answer: {e}", c.node),
        ),
    }
}
