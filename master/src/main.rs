//! The mezzo-master binary: parses flags and serves.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mezzo_master::acls::Acls;
use mezzo_master::credentials::Credentials;
use mezzo_master::MasterConfig;

/// A slim master speaking the Mesos v1 scheduler HTTP API.
#[derive(Debug, Parser)]
#[command(name = "mezzo-master", version)]
struct Flags {
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "MESOS_IP")]
    ip: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 5050, env = "MESOS_PORT")]
    port: u16,
    /// Hostname to advertise (default: the IP).
    #[arg(long, env = "MESOS_HOSTNAME")]
    hostname: Option<String>,
    /// IP to advertise when listening on 0.0.0.0.
    #[arg(long = "advertise_ip", env = "MESOS_ADVERTISE_IP")]
    advertise_ip: Option<IpAddr>,
    /// Seconds without a ping after which an agent is removed.
    #[arg(long = "agent_ping_timeout", default_value_t = 15.0)]
    agent_ping_timeout: f64,
    /// Default seconds a declined offer's resources are refused to its framework.
    #[arg(long = "offer_refuse_seconds", default_value_t = 5.0)]
    offer_refuse_seconds: f64,
    /// Seconds between HEARTBEAT events.
    #[arg(long = "heartbeat_interval", default_value_t = 15.0)]
    heartbeat_interval: f64,
    /// Seconds between allocation cycles.
    #[arg(long = "allocation_interval", default_value_t = 1.0)]
    allocation_interval: f64,
    /// Path (or `file://` path) of a credentials file in Mesos's JSON
    /// (`{"credentials":[{"principal":..,"secret":..}]}`) or text form.
    #[arg(long, env = "MESOS_CREDENTIALS", value_parser = parse_credentials)]
    credentials: Option<Credentials>,
    /// Only agents that authenticate with `--credentials` may register.
    #[arg(long = "authenticate_agents", env = "MESOS_AUTHENTICATE_AGENTS",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_bool)]
    authenticate_agents: bool,
    /// Only frameworks that authenticate with `--credentials` (HTTP basic)
    /// may use the scheduler API; their FrameworkInfo.principal must be the
    /// authenticated principal. mezzo's frameworks are all HTTP frameworks,
    /// so this is the same as `--authenticate_http_frameworks`.
    #[arg(long = "authenticate_frameworks", env = "MESOS_AUTHENTICATE_FRAMEWORKS",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_bool)]
    authenticate_frameworks: bool,
    /// Mesos's flag for HTTP frameworks; either flag turns authentication on.
    #[arg(long = "authenticate_http_frameworks", env = "MESOS_AUTHENTICATE_HTTP_FRAMEWORKS",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_bool)]
    authenticate_http_frameworks: bool,
    /// Endpoints that change state (`/teardown`) need HTTP basic credentials.
    #[arg(long = "authenticate_http_readwrite", env = "MESOS_AUTHENTICATE_HTTP_READWRITE",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_bool)]
    authenticate_http_readwrite: bool,
    /// Read-only endpoints (`/state`, `/tasks`, ...) need HTTP basic
    /// credentials; `/version` and `/health` stay open.
    #[arg(long = "authenticate_http_readonly", env = "MESOS_AUTHENTICATE_HTTP_READONLY",
          num_args = 0..=1, default_missing_value = "true", default_value = "false",
          value_parser = parse_bool)]
    authenticate_http_readonly: bool,
    /// Mesos's local ACLs (`register_frameworks`, `run_tasks`,
    /// `teardown_frameworks`, `permissive`) as JSON, or a path / `file://`
    /// path of a JSON file.
    #[arg(long, env = "MESOS_ACLS", value_parser = parse_acls)]
    acls: Option<Acls>,
}

fn parse_acls(value: &str) -> Result<Acls, String> {
    Acls::load(value).map_err(|e| e.to_string())
}

fn parse_credentials(value: &str) -> Result<Credentials, String> {
    Credentials::load(value).map_err(|e| e.to_string())
}

/// Mesos's booleans: true/false, also 1/0 and yes/no.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got '{value}'")),
    }
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} must be a positive number of seconds, got {value}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let flags = Flags::parse();
    if flags.authenticate_agents && flags.credentials.is_none() {
        anyhow::bail!("--authenticate_agents requires --credentials (no agent could register)");
    }
    let authenticate_frameworks = flags.authenticate_frameworks || flags.authenticate_http_frameworks;
    for (on, flag) in [
        (authenticate_frameworks, "--authenticate_frameworks"),
        (flags.authenticate_http_readwrite, "--authenticate_http_readwrite"),
        (flags.authenticate_http_readonly, "--authenticate_http_readonly"),
    ] {
        if on && flags.credentials.is_none() {
            anyhow::bail!("{flag} requires --credentials (every request would be refused)");
        }
    }
    let config = MasterConfig {
        hostname: flags.hostname,
        advertise_ip: flags.advertise_ip,
        heartbeat_interval: seconds("heartbeat_interval", flags.heartbeat_interval)?,
        agent_ping_timeout: seconds("agent_ping_timeout", flags.agent_ping_timeout)?,
        allocation_interval: seconds("allocation_interval", flags.allocation_interval)?,
        default_refuse_seconds: flags.offer_refuse_seconds,
        credentials: flags.credentials.map(std::sync::Arc::new),
        authenticate_agents: flags.authenticate_agents,
        authenticate_frameworks,
        authenticate_http_readwrite: flags.authenticate_http_readwrite,
        authenticate_http_readonly: flags.authenticate_http_readonly,
        acls: flags.acls.map(std::sync::Arc::new),
        ..MasterConfig::default()
    };
    let addr = SocketAddr::new(flags.ip, flags.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    mezzo_master::serve(config, listener).await?;
    Ok(())
}
