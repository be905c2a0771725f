//! Command-line flags, named as Mesos's agent names them.

use clap::Parser;
use std::path::PathBuf;

/// Flags of `mezzo-agent`.
#[derive(Debug, Clone, Parser)]
#[command(name = "mezzo-agent", version, about = "mezzo agent: runs tasks in containers")]
pub struct Flags {
    /// Master address, `host:port`.
    #[arg(long)]
    pub master: String,
    /// Where sandboxes, the image store and container runtime state live.
    #[arg(long = "work_dir", default_value = "/var/lib/mezzo")]
    pub work_dir: PathBuf,
    /// Runtime state of containers (default: `<work_dir>/run`).
    #[arg(long = "runtime_dir")]
    pub runtime_dir: Option<PathBuf>,
    /// IP address to listen on and to advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    /// Port of the agent's HTTP API.
    #[arg(long, default_value_t = 5051)]
    pub port: u16,
    /// Hostname to report (default: the machine's hostname).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Total resources, `cpus:2;mem:1024;disk:4096;ports:[31000-32000]` or a
    /// JSON array of Resource; auto-detected when absent.
    #[arg(long)]
    pub resources: Option<String>,
    /// Containerizers in order of preference: `rust` (alias `mesos`), `docker`.
    #[arg(long, default_value = "rust")]
    pub containerizers: String,
    /// Local directory of image archives (`busybox.tar`, `busybox:latest.tar`, OCI layouts).
    #[arg(long = "docker_registry")]
    pub docker_registry: Option<PathBuf>,
    /// Image store (default: `<work_dir>/store/docker`).
    #[arg(long = "docker_store_dir")]
    pub docker_store_dir: Option<PathBuf>,
    /// Where `mezzo-executor` and `mezzo-launcher` are (default: this binary's directory).
    #[arg(long = "launcher_dir")]
    pub launcher_dir: Option<PathBuf>,
    /// cgroup under each hierarchy that holds the containers.
    #[arg(long = "cgroups_root", default_value = "mezzo")]
    pub cgroups_root: String,
    /// How long an executor gets to shut down before its container is destroyed.
    #[arg(long = "executor_shutdown_grace_period", default_value = "5secs")]
    pub executor_shutdown_grace_period: String,
    /// How long an executor has to subscribe before its container is destroyed.
    #[arg(long = "executor_registration_timeout", default_value = "1mins")]
    pub executor_registration_timeout: String,
}

/// Parses a duration flag: stout's form (`5secs`, `250ms`, `1mins`), or a
/// bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(std::time::Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("invalid duration '{s}'")),
        Err(_) => mezzo_proto::duration::parse(s),
    }
}

/// Formats a duration the way stout does, which executors parse.
pub use mezzo_proto::duration::format as format_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_like_stout() {
        assert_eq!(parse_duration("5secs").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1mins").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5parsecs").is_err());
        assert_eq!(format_duration(Duration::from_secs(5)), "5secs");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
