//! `mezzo-executor`: the command executor the agent starts for each command task.

use anyhow::Context;
use mezzo_executor::{CommandExecutor, Config, Outcome};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    // The agent finds and signals an executor as the leader of its own
    // session. Made here, so the agent need not run code between fork and
    // exec (which forces a fork of the whole agent instead of a vfork-like
    // posix_spawn); EPERM when the agent already made us one.
    let _ = nix::unistd::setsid();
    // Logs go to our stderr, which the agent sends to a file in the sandbox;
    // the task's own stdout/stderr files stay the task's. `MEZZO_LOG` takes
    // `level` or `target=level,...` directives (a `Targets` filter: no regex
    // engine in every executor for a filter that is almost always `info`).
    let filter = std::env::var("MEZZO_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .with(filter)
        .init();
    if std::env::var(mezzo_executor::container_mode::MODE_VAR).as_deref() == Ok("container") {
        return container_mode();
    }
    let config = Config::from_env().context("reading the executor's environment")?;
    // The token is for this process only: nothing it starts inherits it.
    std::env::remove_var(mezzo_executor::config::AUTHENTICATION_TOKEN_VAR);
    tracing::info!(
        executor = %config.executor_id,
        framework = %config.framework_id,
        agent = %config.agent_endpoint,
        runtime_dir = %config.runtime_dir.display(),
        "mezzo-executor starting"
    );
    // One thread does it all: the executor waits on one subscription, one
    // container and a few timers, and every extra worker thread would cost
    // each running task its stack and a malloc arena.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime.block_on(async { CommandExecutor::new(config).run().await });
    // Don't let a stuck request hold the process open after the decision.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Outcome::Done => {
            tracing::info!("executor done");
            Ok(())
        }
        Outcome::Unacknowledged => anyhow::bail!("terminal update was not acknowledged"),
        Outcome::Failed(reason) => anyhow::bail!("{reason}"),
    }
}

/// Supervises a custom executor's container (see `container_mode`); exits
/// with the container's exit code.
fn container_mode() -> anyhow::Result<()> {
    use mezzo_executor::container_mode;
    let runtime_dir = std::env::var_os("MEZZO_RUNTIME_DIR").context("MEZZO_RUNTIME_DIR is not set")?;
    let launcher_dir = std::env::var_os("MEZZO_LAUNCHER_DIR").context("MEZZO_LAUNCHER_DIR is not set")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let status = runtime
        .block_on(container_mode::supervise(runtime_dir.as_ref(), launcher_dir.as_ref()))
        .context("supervising the executor's container")?;
    std::process::exit(container_mode::exit_code(status));
}

/// One malloc arena for the whole process (glibc makes one per thread that
/// allocates, up to 8 per core, each keeping its own free memory): the
/// executor runs on one thread, and what tokio's blocking pool allocates
/// (docker tasks' log files) is small.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning; it is called before any
    // other thread exists, and M_ARENA_MAX with a positive value is valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
