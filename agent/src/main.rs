//! `mezzo-agent`: runs the tasks a master sends it in containers and reports
//! their status.

use clap::{CommandFactory, Parser};

fn main() -> anyhow::Result<()> {
    let flags = mezzo_agent::Flags::parse();
    // Isolator names are the containerizer's: checked here, as clap checks the other values, so that a bad
    // --isolation fails at start whichever containerizers are asked for.
    if let Some(isolation) = &flags.isolation {
        if let Err(e) = mezzo_containerizer::isolators::check_isolation(&isolation.0) {
            let message = format!("invalid value '{isolation}' for '--isolation <ISOLATORS>': {e}");
            mezzo_agent::Flags::command().error(clap::error::ErrorKind::InvalidValue, message).exit();
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(mezzo_agent::run(flags));
    // Exit now: a blocking task still in flight (a slow disk, an engine
    // call) must not hold the process up once the agent decided to stop.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}
