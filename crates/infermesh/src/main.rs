//! `infermesh`: one binary for the node, its operator tools and the demo.

mod bench;
mod client_cmds;
mod cluster;
mod console;
mod deck_cmd;
mod demo;
mod group_cmds;
mod identity;
mod invite;
mod keygen;
mod logging;
mod membership;
mod models;
mod node_client;
mod selfcheck;
mod split_setup;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "infermesh",
    version,
    about = "Serve LLM inference from a group of machines as one mesh",
    long_about = "Serve LLM inference from a group of machines as one mesh.\n\n\
        Start a node with `infermesh up`: it serves an OpenAI-compatible API (/v1/...), its live \
        state (/api/status) and metrics on one port."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node: load a model (fetching the default one if needed) and serve the API.
    #[command(after_help = up::PORTS_HELP)]
    Up(Box<up::UpArgs>),
    /// Print a fresh invite token for this machine's node's mesh (`up --join <TOKEN>` joins).
    Invite(invite::InviteArgs),
    /// Create an operator key; nodes accept admin changes signed with it once its public key is
    /// in their config.toml [[operator]].
    Keygen(keygen::KeygenArgs),
    /// Show a node's state, peers and backends with what the operator should do.
    Status(client_cmds::StatusArgs),
    /// Test one backend now (load → health → inference → stop per model); exit 1 if it fails.
    Test(client_cmds::TestArgs),
    /// Open the operator deck: a live terminal view of the mesh through one node.
    Deck(deck_cmd::DeckArgs),
    /// Serve a node's dashboard on this machine's loopback, with its actions (test, wake,
    /// assign, unassign) signed here with the operator key, which never reaches the page.
    Console(console::ConsoleArgs),
    /// Run real nodes through a whole validation cycle on a fast schedule; PASS/FAIL per stage
    /// on stderr, exit 0 only if every stage passes.
    Selfcheck(selfcheck::SelfcheckArgs),
    /// Boot a whole mesh of real nodes on this machine (serving, loading, standby, clients) with
    /// a trickle of routed requests, and open the deck on it; Ctrl-C stops and removes it all.
    Demo(demo::DemoArgs),
    /// Measure the router's overhead, the embedded engine, gossip and a node with many peers;
    /// prints a table with goals (PASS/MISS). `infermesh bench router|engine|mesh|scale|all`.
    Bench(bench::BenchArgs),
    /// Workload groups: keep N replicas of a model served across the mesh (`set`, `rm`, `ls`).
    Group(group_cmds::GroupArgs),
    /// Move a model's replica from one node to a standby one with no failed request: the new
    /// replica loads and is admitted first, then the old one drains and stops.
    Migrate(group_cmds::MigrateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The deck owns the terminal: log lines on stderr would tear its screen.
    // The bench sets up its own quieter logging (its simulated peers would each say hello).
    if !matches!(cli.cmd, Cmd::Deck(_) | Cmd::Bench(_)) {
        logging::init(cli.log_format);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.cmd {
            Cmd::Up(args) => up::run(*args).await,
            Cmd::Keygen(args) => keygen::run(args),
            Cmd::Invite(args) => invite::run(args).await,
            Cmd::Status(args) => client_cmds::status(args).await,
            Cmd::Test(args) => client_cmds::test(args).await,
            Cmd::Deck(args) => deck_cmd::run(args).await,
            Cmd::Console(args) => console::run(args).await,
            Cmd::Selfcheck(args) => selfcheck::run(args).await,
            Cmd::Demo(args) => demo::run(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Group(args) => group_cmds::group(args).await,
            Cmd::Migrate(args) => group_cmds::migrate(args).await,
        }
    });
    // A model load blocked on slow storage must not hold the process open after shutdown.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Operator commands print their own message and choose the exit code.
        Err(e) if e.is::<client_cmds::Exit>() => {
            std::process::ExitCode::from(e.downcast_ref::<client_cmds::Exit>().map_or(1, |x| x.0))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
