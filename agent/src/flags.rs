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

/// Parses a stout-style duration (`5secs`, `250ms`, `1mins`, `2hrs`, `3`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    let secs = match unit {
        "" | "s" | "secs" | "sec" => value,
        "ns" | "nsecs" => value / 1e9,
        "us" | "usecs" => value / 1e6,
        "ms" | "msecs" => value / 1e3,
        "m" | "mins" | "min" => value * 60.0,
        "h" | "hrs" | "hr" => value * 3600.0,
        "d" | "days" => value * 86400.0,
        "w" | "weeks" => value * 604800.0,
        _ => return Err(format!("invalid duration unit in '{s}'")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration '{s}'"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Formats a duration the way stout does (`5secs`, `250ms`), which executors parse.
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}secs", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

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
