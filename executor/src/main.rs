//! `mezzo-executor`: the command executor the agent starts for each command task.

use anyhow::Context;
use mezzo_executor::{CommandExecutor, Config, Outcome};

fn main() -> anyhow::Result<()> {
    // Logs go to our stderr, which the agent sends to a file in the sandbox;
    // the task's own stdout/stderr files stay the task's.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEZZO_LOG").unwrap_or_else(|_| "info".into()),
        )
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
