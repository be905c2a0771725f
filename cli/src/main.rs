//! `mezzo`: run a task on a mezzo (or Mesos) cluster and inspect it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use mezzo_cli::execute::{execute, ExecuteOptions};
use mezzo_cli::task::{ContainerizerKind, TaskSpec};
use mezzo_cli::image::{self, PullOptions};
use mezzo_images::GcPolicy;
use std::path::PathBuf;
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
    /// Manage the images of an agent's image store (works on the store directory).
    Image(ImageArgs),
    /// List tasks, or print (and follow) a task's output.
    Task(TaskArgs),
}

#[derive(clap::Args)]
struct TaskArgs {
    /// Master address: `host:port`, `zk://host:port[,host:port]/path` (a master group's leader) or a `file://` path holding one.
    #[arg(long, default_value = "127.0.0.1:5050", global = true)]
    master: String,
    /// Principal for HTTP basic authentication at the master and the agents (`--authenticate_http_readonly`).
    #[arg(long, env = "MEZZO_PRINCIPAL", global = true)]
    principal: Option<String>,
    /// Its secret.
    #[arg(long, env = "MEZZO_SECRET", hide_env_values = true, global = true)]
    secret: Option<String>,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// List the running tasks (all with --all): state, framework, executor, agent and sandbox.
    #[command(alias = "ls")]
    List {
        /// List every task, not only the running ones.
        #[arg(short, long)]
        all: bool,
    },
    /// Print a task's stdout or stderr through its agent's files API.
    Log {
        /// Keep printing what the task writes until it ends (Ctrl-C stops).
        #[arg(short, long)]
        follow: bool,
        /// The framework of the task, when tasks of several frameworks have its id.
        #[arg(long)]
        framework: Option<String>,
        /// The task's id.
        task: String,
        /// Which file of the sandbox.
        #[arg(default_value = "stdout", value_parser = ["stdout", "stderr"])]
        file: String,
    },
}

#[derive(clap::Args)]
struct ImageArgs {
    /// The image store directory (the agent's `--docker_store_dir`).
    #[arg(long, alias = "docker_store_dir", global = true)]
    store: Option<PathBuf>,
    /// The agent's work directory; the store is `<work_dir>/store/docker` unless --store says otherwise.
    #[arg(long = "work_dir", alias = "work-dir", default_value = image::DEFAULT_WORK_DIR, global = true)]
    work_dir: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Fetch an image into the store.
    Pull {
        /// Image reference, e.g. `busybox:latest` or `host:5000/ns/app@sha256:...`.
        reference: String,
        /// Registry URL (`https://host:5000`) or directory of image archives (`--docker_registry`).
        #[arg(long, alias = "docker_registry")]
        registry: Option<String>,
        /// Registry credentials in the `~/.docker/config.json` format.
        #[arg(long = "docker_config", alias = "docker-config")]
        docker_config: Option<PathBuf>,
        /// Extra PEM root certificates for https registries.
        #[arg(long = "ca_cert", alias = "ca-cert")]
        ca_cert: Option<PathBuf>,
        /// Reach registries named in references over plain http.
        #[arg(long = "insecure_http", alias = "insecure-http")]
        insecure_http: bool,
    },
    /// List the images in the store.
    #[command(alias = "list")]
    Ls,
    /// Remove images (refused while a container uses one).
    #[command(alias = "remove")]
    Rm {
        /// Image references.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove images no container uses, and the layers and blobs nothing needs.
    Gc {
        /// Keep images used within this long (`10mins`, `2hrs`).
        #[arg(long = "keep-recent", alias = "keep_recent", default_value = "0secs", value_parser = mezzo_proto::duration::parse)]
        keep_recent: Duration,
        /// Collect only when the store holds more than this (`10GB`).
        #[arg(long = "max-store-size", alias = "max_store_size", value_parser = image::parse_bytes)]
        max_store_size: Option<u64>,
        /// Or only when the store's disk is fuller than this (`0.9`, `90%`).
        #[arg(long = "disk-usage-threshold", alias = "disk_usage_threshold", value_parser = image::parse_fraction)]
        disk_usage_threshold: Option<f64>,
    },
    /// Make a one-layer image from a root filesystem tarball (plain or gzip).
    Import {
        /// The tarball, e.g. from `docker export`.
        tarball: PathBuf,
        /// The image's name and tag.
        name_tag: String,
    },
}

#[derive(clap::Args)]
struct ExecuteArgs {
    /// Master address: `host:port`, `zk://host:port[,host:port]/path` (a master group's leader) or a `file://` path holding one.
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
    /// Master address: `host:port`, `zk://host:port[,host:port]/path` (a master group's leader) or a `file://` path holding one.
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
        Commands::Image(args) => {
            let store = args.store.unwrap_or_else(|| image::store_dir_of(&args.work_dir));
            let out = match args.command {
                ImageCommand::Pull { reference, registry, docker_config, ca_cert, insecure_http } => {
                    let options = PullOptions { registry, docker_config, ca_cert, insecure_http };
                    image::pull(&store, &reference, options).await?
                }
                ImageCommand::Ls => image::ls(&store).await?,
                ImageCommand::Rm { references } => image::rm(&store, &references).await?,
                ImageCommand::Gc { keep_recent, max_store_size, disk_usage_threshold } => {
                    // On demand: collect now, unless thresholds were given to decide.
                    let force = max_store_size.is_none() && disk_usage_threshold.is_none();
                    let policy = GcPolicy { keep_recent, max_store_bytes: max_store_size, disk_usage_threshold, force };
                    image::gc(&store, policy).await?
                }
                ImageCommand::Import { tarball, name_tag } => image::import(&store, &tarball, &name_tag).await?,
            };
            print!("{out}");
            Ok(0)
        }
        Commands::Task(args) => {
            let credentials = mezzo_cli::tasks::Credentials { principal: args.principal, secret: args.secret };
            let client = mezzo_cli::tasks::Client::new(credentials, Duration::from_secs(args.timeout))?;
            match args.command {
                TaskCommand::List { all } => println!("{}", mezzo_cli::tasks::list(&args.master, &client, all).await?),
                TaskCommand::Log { follow, framework, task, file } => {
                    let options = mezzo_cli::tasks::LogOptions { master: args.master, task_id: task, framework_id: framework, file, follow };
                    // Ctrl-C ends it: listened for from the start, before any output.
                    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
                    let ctrl_c = async move {
                        interrupt.recv().await;
                    };
                    mezzo_cli::tasks::log(options, &client, &mut std::io::stdout(), ctrl_c).await?;
                }
            }
            Ok(0)
        }
        Commands::State(args) => {
            println!("{}", mezzo_cli::state::fetch_state(&args.master, Duration::from_secs(args.timeout)).await?);
            Ok(0)
        }
    }
}
