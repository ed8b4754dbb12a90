//! `infermesh invite`: a fresh invite token for the mesh of the node whose data dir this is,
//! with the node's mesh address (and a few live members') to join through.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use infermesh_mesh::Invite;

use crate::client_cmds::{Exit, DEFAULT_URL};
use crate::{identity, membership};

#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    /// The member's data dir (where `infermesh up` keeps `mesh.secret`).
    #[arg(long, value_name = "DIR", env = "INFERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The running member's API, asked for the mesh addresses to put in the token.
    #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Mesh addresses to put in the token instead of asking the node (repeatable).
    #[arg(long, value_name = "IP:PORT", value_parser = infermesh_state::parse_host_port)]
    pub addr: Vec<infermesh_state::HostPort>,
}

/// Live members' addresses a token carries besides the node's own: enough to get in if that
/// node is down, few enough to keep the token short.
const EXTRA_ADDRS: usize = 3;

pub async fn run(args: InviteArgs) -> Result<()> {
    let dir = args.data_dir.unwrap_or_else(identity::default_data_dir);
    let Some(secret) = membership::load_secret(&dir)? else {
        eprintln!(
            "no mesh in {}: start a node there first (`infermesh up`), or pass --data-dir of a \
             member",
            dir.display()
        );
        return Err(Exit(2).into());
    };
    let bootstrap = if args.addr.is_empty() {
        match addrs_from_node(&args.url).await {
            Ok((mesh_id, addrs)) if mesh_id == secret.mesh_id() => addrs,
            Ok((mesh_id, _)) => {
                eprintln!(
                    "the node at {} is in mesh {mesh_id}, but {} holds mesh {}: pass the \
                     --data-dir of that node, or --addr IP:PORT",
                    args.url,
                    dir.display(),
                    secret.mesh_id()
                );
                return Err(Exit(2).into());
            }
            Err(e) => {
                eprintln!(
                    "cannot ask the node at {} for its mesh address ({e}); is it running? \
                     Pass --url, or --addr IP:PORT of a live member",
                    args.url
                );
                return Err(Exit(2).into());
            }
        }
    } else {
        args.addr.iter().map(ToString::to_string).collect()
    };
    println!("infermesh invite {}", Invite { secret, bootstrap }.encode());
    eprintln!(
        "join with: infermesh up --join <TOKEN>. The token is the mesh's credential: anyone \
         holding it can join as a member (see docs/security.md to rotate it)."
    );
    Ok(())
}

async fn addrs_from_node(url: &str) -> Result<(String, Vec<String>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let s: serde_json::Value = http
        .get(format!("{}/api/status", url.trim_end_matches('/')))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mesh = &s["mesh"];
    let mesh_id = mesh["mesh_id"].as_str().unwrap_or_default().to_string();
    let mut addrs: Vec<String> = mesh["gossip_addr"]
        .as_str()
        .map(str::to_string)
        .into_iter()
        .collect();
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    addrs.extend(
        peers
            .iter()
            .filter_map(|p| p["gossip_addr"].as_str())
            .filter_map(|a| infermesh_state::parse_host_port(a).ok())
            .map(|a| a.to_string())
            .take(EXTRA_ADDRS),
    );
    if addrs.is_empty() {
        anyhow::bail!("its status names no mesh address");
    }
    Ok((mesh_id, addrs))
}
