//! The mezzo-master binary: parses flags and serves.


/// The master allocates and frees many small objects per allocation run (an
/// offer per agent) and per call; mimalloc does that markedly faster than
/// glibc's malloc, whose consolidation showed in profiles of 10,000 agents.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mezzo_master::acls::Acls;
use mezzo_master::credentials::Credentials;
use mezzo_master::file_store::FileStore;
use mezzo_master::registrar::FencedHook;
use mezzo_master::registry::{InMemoryStore, RegistryStore};
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
    /// The agents' ping period (`15secs`; a bare number is seconds): each period without a ping is a missed ping.
    #[arg(long = "agent_ping_timeout", default_value = "15secs", value_parser = parse_positive_duration, value_name = "DURATION")]
    agent_ping_timeout: Duration,
    /// Missed pings in a row after which an agent is marked unreachable.
    #[arg(long = "max_agent_ping_timeouts", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_agent_ping_timeouts: u32,
    /// After a failover, how long agents of the registry have to re-register before they are marked unreachable.
    #[arg(long = "agent_reregister_timeout", default_value = "10mins", value_parser = parse_positive_duration, value_name = "DURATION")]
    agent_reregister_timeout: Duration,
    /// Where the registry lives: `replicated_log` (durable: files under `--work_dir`, or ZooKeeper with `--zk`)
    /// or `in_memory` (nothing survives the master). Default: `replicated_log` when `--work_dir` is given, else `in_memory`.
    #[arg(long, env = "MESOS_REGISTRY", value_parser = ["replicated_log", "in_memory"])]
    registry: Option<String>,
    /// Directory of the master's persistent state (the registry, under `registry/`).
    #[arg(long = "work_dir", env = "MESOS_WORK_DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// Default seconds a declined offer's resources are refused to its framework.
    #[arg(long = "offer_refuse_seconds", default_value_t = 5.0)]
    offer_refuse_seconds: f64,
    /// Time between HEARTBEAT events (`15secs`; a bare number is seconds).
    #[arg(long = "heartbeat_interval", default_value = "15secs", value_parser = parse_positive_duration, value_name = "DURATION")]
    heartbeat_interval: Duration,
    /// Time between allocation cycles (`1secs`; a bare number is seconds).
    #[arg(long = "allocation_interval", default_value = "1secs", value_parser = parse_positive_duration, value_name = "DURATION")]
    allocation_interval: Duration,
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
    /// `zk://host:port[,host:port]/path` (or a `file://` path holding it): the
    /// masters sharing it form a group that ZooKeeper elects a leader in; the
    /// registry then lives in ZooKeeper under that path.
    #[arg(long, env = "MESOS_ZK", value_parser = parse_zk)]
    zk: Option<mezzo_zk::ZkUrl>,
    /// With `--zk`: masters that must be in the group for the registry to accept
    /// writes (more than half of the group's masters).
    #[arg(long, env = "MESOS_QUORUM", value_parser = clap::value_parser!(u64).range(1..))]
    quorum: Option<u64>,
    /// With `--zk`: the ZooKeeper session timeout (`10secs`); a leader whose session ends loses leadership.
    #[arg(long = "zk_session_timeout", env = "MESOS_ZK_SESSION_TIMEOUT", default_value = "10secs", value_parser = parse_positive_duration, value_name = "DURATION")]
    zk_session_timeout: Duration,
}

fn parse_zk(value: &str) -> Result<mezzo_zk::ZkUrl, String> {
    mezzo_zk::ZkUrl::parse("zk", value).map_err(|e| e.reason)
}

/// With `--zk`, how this master joins its group: `--quorum` is needed unless the registry is in memory (as Mesos).
fn group_config(flags: &Flags) -> anyhow::Result<Option<mezzo_master::ha::GroupConfig>> {
    let Some(zk) = flags.zk.clone() else {
        return Ok(None);
    };
    let registry_in_zk = flags.registry.as_deref() != Some("in_memory");
    let quorum = match flags.quorum {
        Some(q) => q as usize,
        None if registry_in_zk => anyhow::bail!("Need to specify --quorum for replicated log based registry when using ZooKeeper"),
        None => 1,
    };
    Ok(Some(mezzo_master::ha::GroupConfig { zk, quorum, session_timeout: flags.zk_session_timeout, registry_in_zk }))
}

/// The registry's store from `--registry` and `--work_dir`. Without `--work_dir`, `replicated_log` is refused as
/// Mesos refuses it; without `--registry`, a `--work_dir` makes it durable.
fn registry_store(registry: Option<&str>, work_dir: Option<&std::path::Path>) -> anyhow::Result<std::sync::Arc<dyn RegistryStore>> {
    match (registry, work_dir) {
        (Some("in_memory"), _) | (None, None) => Ok(std::sync::Arc::new(InMemoryStore::default())),
        (_, Some(dir)) => {
            let store = FileStore::open(dir).with_context(|| format!("cannot open the registry under --work_dir={}", dir.display()))?;
            Ok(std::sync::Arc::new(store))
        }
        (Some(_), None) => anyhow::bail!("--work_dir needed for replicated log based registry"),
    }
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

/// A duration flag in Mesos's form (`15secs`, `500ms`, `1mins`) or a bare number of seconds; zero is refused.
fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match mezzo_proto::duration::parse_flag(value)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
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
    let group = group_config(&flags)?;
    // In a group the registry is claimed in ZooKeeper once this master is elected.
    let registry = match &group {
        Some(g) if g.registry_in_zk => std::sync::Arc::new(InMemoryStore::default()),
        _ => registry_store(flags.registry.as_deref(), flags.work_dir.as_deref())?,
    };
    tracing::info!(registry = %registry.describe(), "registry");
    // Another master leads now: stop, as Mesos's master does.
    let on_fenced = FencedHook(std::sync::Arc::new(|message| {
        tracing::error!(%message, "the registry fenced this master: another master leads; exiting");
        std::process::exit(1);
    }));
    let config = MasterConfig {
        hostname: flags.hostname,
        advertise_ip: flags.advertise_ip,
        heartbeat_interval: flags.heartbeat_interval,
        agent_ping_timeout: flags.agent_ping_timeout,
        max_agent_ping_timeouts: flags.max_agent_ping_timeouts,
        agent_reregister_timeout: flags.agent_reregister_timeout,
        registry,
        on_fenced,
        allocation_interval: flags.allocation_interval,
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
    if let Some(group) = group {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("failed to bind {addr}"))?;
        // Losing leadership ends the process with a failure, for a supervisor to restart it as a contender.
        mezzo_master::ha::serve_group(config, listener, group).await?;
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to bind {addr}"))?;
    mezzo_master::serve(config, listener).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(["mezzo-master"].iter().chain(args))
    }

    #[test]
    fn duration_flags_keep_their_defaults_and_take_mesos_forms_and_seconds() {
        let f = parse(&[]).unwrap();
        assert_eq!((f.agent_ping_timeout, f.heartbeat_interval, f.allocation_interval), (Duration::from_secs(15), Duration::from_secs(15), Duration::from_secs(1)));
        let defaults = MasterConfig::default();
        assert_eq!((f.agent_ping_timeout, f.heartbeat_interval, f.allocation_interval), (defaults.agent_ping_timeout, defaults.heartbeat_interval, defaults.allocation_interval));
        assert_eq!((f.agent_reregister_timeout, f.max_agent_ping_timeouts), (Duration::from_secs(600), 5));
        assert_eq!((f.agent_reregister_timeout, f.max_agent_ping_timeouts), (defaults.agent_reregister_timeout, defaults.max_agent_ping_timeouts));
        assert_eq!(parse(&["--agent_reregister_timeout=2secs"]).unwrap().agent_reregister_timeout, Duration::from_secs(2));
        assert!(parse(&["--max_agent_ping_timeouts=0"]).is_err());
        for name in ["agent_ping_timeout", "heartbeat_interval", "allocation_interval"] {
            for (text, want) in mezzo_proto::duration::FLAG_EXAMPLES {
                let f = parse(&[&format!("--{name}={text}")]).unwrap_or_else(|e| panic!("--{name}={text}: {e}"));
                let got = match name {
                    "agent_ping_timeout" => f.agent_ping_timeout,
                    "heartbeat_interval" => f.heartbeat_interval,
                    _ => f.allocation_interval,
                };
                assert_eq!(got, want, "--{name}={text}");
            }
            for bad in ["abc", "5parsecs", "-1", "0", "0secs", "1e20", "NaN"] {
                let err = parse(&[&format!("--{name}={bad}")]).err().unwrap_or_else(|| panic!("--{name}={bad} parsed"));
                assert!(err.to_string().contains(&format!("invalid value '{bad}' for '--{name} <DURATION>'")), "{err}");
            }
        }
    }

    #[test]
    fn registry_flags_choose_the_store_as_mesos() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(registry_store(None, None).unwrap().describe(), "in_memory");
        assert_eq!(registry_store(Some("in_memory"), Some(dir.path())).unwrap().describe(), "in_memory");
        let err = registry_store(Some("replicated_log"), None).err().unwrap();
        assert_eq!(err.to_string(), "--work_dir needed for replicated log based registry");
        let store = registry_store(None, Some(dir.path())).unwrap();
        assert_eq!(store.describe(), dir.path().join("registry").display().to_string());
        // The work_dir is locked while a master holds it.
        assert!(registry_store(Some("replicated_log"), Some(dir.path())).is_err());
        assert!(parse(&["--registry=log"]).is_err());
    }

    #[test]
    fn zk_flags_parse_as_mesos() {
        let f = parse(&[]).unwrap();
        assert!(group_config(&f).unwrap().is_none());
        assert_eq!(f.zk_session_timeout, Duration::from_secs(10));
        let f = parse(&["--zk=zk://10.0.0.1:2181,10.0.0.2:2181/mesos"]).unwrap();
        let err = group_config(&f).err().unwrap();
        assert_eq!(err.to_string(), "Need to specify --quorum for replicated log based registry when using ZooKeeper");
        let f = parse(&["--zk=zk://10.0.0.1:2181/mesos", "--quorum=2", "--zk_session_timeout=2secs"]).unwrap();
        let g = group_config(&f).unwrap().unwrap();
        assert_eq!((g.zk.path.as_str(), g.quorum, g.session_timeout, g.registry_in_zk), ("/mesos", 2, Duration::from_secs(2), true));
        let f = parse(&["--zk=zk://10.0.0.1:2181/mesos", "--registry=in_memory"]).unwrap();
        assert_eq!(group_config(&f).unwrap().map(|g| (g.quorum, g.registry_in_zk)), Some((1, false)));
        let err = parse(&["--zk=http://h:1/mesos"]).err().unwrap();
        assert!(err.to_string().contains("invalid value 'http://h:1/mesos' for '--zk <ZK>'"), "{err}");
        assert!(parse(&["--zk=zk://h:1/m", "--quorum=0"]).is_err());
    }

    #[test]
    fn boolean_flags_parse_like_mesos() {
        let f = parse(&[]).unwrap();
        assert!(!f.authenticate_agents && !f.authenticate_frameworks);
        let f = parse(&["--authenticate_agents", "--authenticate_frameworks=true", "--authenticate_http_readonly=false"]).unwrap();
        assert!(f.authenticate_agents && f.authenticate_frameworks && !f.authenticate_http_readonly);
        assert!(parse(&["--authenticate_agents=maybe"]).is_err());
    }
}
