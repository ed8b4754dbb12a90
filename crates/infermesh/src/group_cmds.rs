//! `infermesh group set|rm|ls` (workload groups, mesh-wide) and `infermesh migrate` (move a
//! replica between nodes without failing a request). Exit codes as the other operator
//! commands: 0 done, 2 usage, refusal or an unreachable node.

use std::time::Duration;

use infermesh_mesh::group::{GroupDecl, MAX_REPLICAS};
use reqwest::Method;
use serde_json::Value;

use infermesh_deck::migrate::{encode, Endpoint, Step};
use infermesh_deck::{NoopSigner, Signer};

use crate::client_cmds::DEFAULT_URL;
use crate::deck_cmd::OperatorSigner;
use crate::node_client::{fail, NodeClient};

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub cmd: GroupCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCmd {
    /// Keep N replicas of MODEL served across the mesh (signed with the operator key; every
    /// node learns it from gossip).
    Set {
        model: String,
        #[arg(long)]
        replicas: u32,
        /// Fewest replicas demand may fall back to [default: --replicas].
        #[arg(long)]
        min: Option<u32>,
        /// Most replicas demand may add up to [default: --replicas].
        #[arg(long)]
        max: Option<u32>,
        /// Where a node without the file downloads it (http:// or https://).
        #[arg(long)]
        url: Option<String>,
        /// Any node of the mesh.
        #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
        node: String,
    },
    /// Remove a group: its replicas placed by the mesh are released (drained, then stopped).
    Rm {
        model: String,
        #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
        node: String,
    },
    /// List the groups with wanted, serving and loading replicas.
    Ls {
        #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
        node: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    pub model: String,
    /// The node that serves MODEL now: its name, id or API URL.
    #[arg(long)]
    pub from: String,
    /// A standby node to serve it instead: its name, id or API URL.
    #[arg(long)]
    pub to: String,
    /// Any node of the mesh, used to find the two by name or id.
    #[arg(long, env = "INFERMESH_URL", default_value = DEFAULT_URL)]
    pub node: String,
    /// How long the new replica may take to load and be admitted.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

pub async fn group(args: GroupArgs) -> anyhow::Result<()> {
    match args.cmd {
        GroupCmd::Set {
            model,
            replicas,
            min,
            max,
            url,
            node,
        } => {
            let (min, max) = (min.unwrap_or(replicas), max.unwrap_or(replicas));
            if replicas == 0 || min > replicas || replicas > max || max > MAX_REPLICAS {
                return Err(fail(
                    2,
                    format!(
                        "error: need 1 ≤ replicas and min ≤ replicas ≤ max ≤ {MAX_REPLICAS} (got \
                         min {min}, replicas {replicas}, max {max}); to remove a group use \
                         `infermesh group rm {model}`"
                    ),
                ));
            }
            declare(&node, &model, replicas, min, max, url).await
        }
        GroupCmd::Rm { model, node } => declare(&node, &model, 0, 0, 0, None).await,
        GroupCmd::Ls { node } => {
            let client = NodeClient::new(&node)?;
            let status = client.get("/api/status").await?;
            let groups = status.body["groups"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if groups.is_empty() {
                println!(
                    "no workload groups (declare one: infermesh group set MODEL --replicas N)"
                );
            }
            for g in groups {
                println!(
                    "{}: {} wanted ({}–{}), {} serving, {} loading — {}",
                    g["model"].as_str().unwrap_or("?"),
                    g["wanted"],
                    g["min"],
                    g["max"],
                    g["serving"],
                    g["loading"],
                    g["sentence"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
    }
}

async fn declare(
    node: &str,
    model: &str,
    replicas: u32,
    min: u32,
    max: u32,
    url: Option<String>,
) -> anyhow::Result<()> {
    let client = NodeClient::new(node)?;
    let Some(key) = client.key.clone() else {
        return Err(fail(
            2,
            "error: no operator key on this machine (run `infermesh keygen`, then add its \
             public key to every node's config.toml [[operator]])",
        ));
    };
    let status = client.get("/api/status").await?;
    let Some(mesh_id) = status.body["mesh"]["mesh_id"].as_str() else {
        return Err(fail(2, format!("error: {} is in no mesh", client.base)));
    };
    let ts = infermesh_mesh::unix_now_ms();
    let decl = GroupDecl::sign(&key, mesh_id, model, replicas, min, max, url, ts);
    let path = format!("/admin/v1/groups/{}", encode(model));
    let body = serde_json::to_value(&decl)?;
    let reply = client
        .mutate(Method::PUT, &path, Some(&body), Duration::from_secs(15))
        .await?;
    if !reply.status.is_success() {
        return Err(fail(2, format!("error: {}", reply.error_message())));
    }
    if replicas == 0 {
        println!("group {model} removed; every node releases the replicas the mesh placed");
    } else {
        let sentence = reply.body["status"]["sentence"].as_str().unwrap_or("");
        println!("group {model}: {replicas} replicas (min {min}, max {max}); now: {sentence}");
    }
    Ok(())
}

/// A node of the mesh as the migration needs it.
struct Member {
    id: String,
    name: String,
    url: String,
}

impl Member {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            node_id: self.id.clone(),
            name: self.name.clone(),
            base: self.url.clone(),
        }
    }
}

/// Finds `who` (a URL, or a name or id among the members `status` lists).
fn resolve(who: &str, status: &Value) -> Result<Member, String> {
    let me = Member {
        id: status["node_id"].as_str().unwrap_or("").into(),
        name: status["name"].as_str().unwrap_or("").into(),
        url: String::new(),
    };
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let matches =
        |id: &str, name: &str| who == id || who == name || id.starts_with(who) && who.len() >= 4;
    if matches(&me.id, &me.name) {
        return Ok(me);
    }
    peers
        .iter()
        .find(|p| {
            matches(
                p["node_id"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .map(|p| Member {
            id: p["node_id"].as_str().unwrap_or("").into(),
            name: p["name"].as_str().unwrap_or("").into(),
            url: format!("http://{}", p["addr"].as_str().unwrap_or("")),
        })
        .ok_or_else(|| format!("no member named `{who}` (see `infermesh status`)"))
}

async fn member(
    who: &str,
    via: &NodeClient,
    via_status: &Value,
) -> anyhow::Result<(Member, NodeClient)> {
    if who.contains("://") || who.contains(':') {
        let client = NodeClient::new(who)?;
        let s = client.get("/api/status").await?;
        let m = Member {
            id: s.body["node_id"].as_str().unwrap_or("").into(),
            name: s.body["name"].as_str().unwrap_or("").into(),
            url: client.base.clone(),
        };
        return Ok((m, client));
    }
    let mut m = resolve(who, via_status).map_err(|e| fail(2, format!("error: {e}")))?;
    if m.url.is_empty() {
        m.url = via.base.clone();
    }
    let client = NodeClient::new(&m.url)?;
    Ok((m, client))
}

pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let via = NodeClient::new(&args.node)?;
    let via_status = via.get("/api/status").await?.body;
    let (from, from_client) = member(&args.from, &via, &via_status).await?;
    let (to, _) = member(&args.to, &via, &via_status).await?;
    if from.id == to.id {
        return Err(fail(2, "error: --from and --to are the same node"));
    }
    let from_status = from_client.get("/api/status").await?.body;
    let serves = from_status["models"]
        .as_array()
        .is_some_and(|m| m.iter().any(|x| x == args.model.as_str()));
    if !serves {
        return Err(fail(
            2,
            format!("error: {} does not serve {} now", from.name, args.model),
        ));
    }
    println!(
        "migrating {}: {} starts it, then {} drains ({} requests in flight there now; they finish, new ones go to other replicas) and stops serving it",
        args.model, to.name, from.name, from_status["in_flight"]
    );
    // The deck's procedure, so the CLI and the deck's migrate action cannot drift apart.
    let signer: Box<dyn Signer> = match via.key.clone() {
        Some(k) => Box::new(OperatorSigner(k)),
        None => Box::new(NoopSigner),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(2, format!("error: cannot build an HTTP client: {e}")))?;
    let (a, b) = (from.endpoint(), to.endpoint());
    let model = args.model.as_str();
    let outcome = infermesh_deck::migrate::run(
        &http,
        signer.as_ref(),
        model,
        &a,
        &b,
        Duration::from_secs(args.timeout_s),
        |step| match step {
            Step::Loading => println!("1/3 {} is loading {model}", b.name),
            Step::Waiting(now) => println!("    … {now}"),
            Step::Admitted(secs) => println!(
                "2/3 {} serves {model} and {} admitted it ({secs:.1} s)",
                b.name, a.name
            ),
        },
    )
    .await
    .map_err(|e| fail(2, format!("error: {e}")))?;
    println!(
        "3/3 {} drained ({} requests finished, {} cut off) and is standby; migration took {:.1} s",
        a.name, outcome.finished, outcome.cut_off, outcome.secs
    );
    Ok(())
}
