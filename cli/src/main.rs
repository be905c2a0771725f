//! `mezzo`: run a task on a mezzo (or Mesos) cluster and inspect it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use mezzo_cli::execute::{execute, ExecuteOptions};
use mezzo_cli::task::{ContainerizerKind, TaskSpec};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mezzo", version, about = "Run tasks on a mezzo cluster and inspect it")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Launch one command task through the master and wait for it (like `mesos-execute`).
    Execute(ExecuteArgs),
    /// Print the master's `/state` document.
    State(StateArgs),
}

#[derive(clap::Args)]
struct ExecuteArgs {
    /// Master address, `host:port`.
    #[arg(long, default_value = "127.0.0.1:5050")]
    master: String,
    /// Task name, also its id.
    #[arg(long)]
    name: String,
    /// Shell command to run.
    #[arg(long)]
    command: String,
    /// Container image (a Docker image reference).
    #[arg(long)]
    image: Option<String>,
    /// Containerizer to ask for: `mesos` (mezzo's rust backend) or `docker`.
    #[arg(long, value_enum)]
    containerizer: Option<ContainerizerKind>,
    /// CPUs for the task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory for the task, in MB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Kill the task this many seconds after it is running.
    #[arg(long = "kill_after", alias = "kill-after")]
    kill_after: Option<f64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Ask the agent to checkpoint the task, so it survives an agent restart.
    #[arg(long)]
    checkpoint: bool,
}

#[derive(clap::Args)]
struct StateArgs {
    /// Master address, `host:port`.
    #[arg(long, default_value = "127.0.0.1:5050")]
    master: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEZZO_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Cli::parse()).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mezzo: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Commands::Execute(args) => {
            if let Some(after) = args.kill_after {
                anyhow::ensure!(after >= 0.0 && after.is_finite(), "--kill_after must be a number of seconds");
            }
            let options = ExecuteOptions {
                master: args.master,
                task: TaskSpec {
                    name: args.name,
                    command: args.command,
                    image: args.image,
                    containerizer: args.containerizer,
                    cpus: args.cpus,
                    mem_mb: args.mem,
                },
                kill_after: args.kill_after.map(Duration::from_secs_f64),
                timeout: Duration::from_secs(args.timeout),
                checkpoint: args.checkpoint,
            };
            Ok(u8::try_from(execute(options).await?).unwrap_or(1))
        }
        Commands::State(args) => {
            println!("{}", mezzo_cli::state::fetch_state(&args.master, Duration::from_secs(args.timeout)).await?);
            Ok(0)
        }
    }
}
