//! Command-line flags, named as Mesos's agent names them.

use clap::{ArgAction, Parser};
use std::path::PathBuf;

/// Flags of `mezzo-agent`.
#[derive(Debug, Clone, Parser)]
// A flag given twice takes its last value, so wrappers can append overrides.
#[command(name = "mezzo-agent", version, about = "mezzo agent: runs tasks in containers", args_override_self = true)]
pub struct Flags {
    /// Master address, `host:port`.
    #[arg(long)]
    pub master: String,
    /// Path (or `file://` path) of this agent's credential for the master's
    /// `--authenticate_agents`: `{"principal":..,"secret":..}` or `principal secret`.
    #[arg(long, value_parser = parse_credential)]
    pub credential: Option<mezzo_master::credentials::Credential>,
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
    /// Run tasks as their user (`CommandInfo.user`, else `FrameworkInfo.user`),
    /// as Mesos's `--switch_user`; with `false` they run as the agent's user.
    #[arg(long = "switch_user", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub switch_user: bool,
    /// Where images come from: a registry URL (`http://host:port`) or a
    /// local directory of image archives (`busybox.tar`, `busybox:latest.tar`, OCI layouts).
    #[arg(long = "docker_registry")]
    pub docker_registry: Option<String>,
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
    /// After an agent restart, how long recovered executors have to
    /// re-subscribe before they are destroyed.
    #[arg(long = "executor_reregistration_timeout", default_value = "2secs")]
    pub executor_reregistration_timeout: String,
    /// Isolators of the rust containerizer, comma separated, Mesos names
    /// (`cgroups/cpu,cgroups/mem,namespaces/pid,...`); default: the
    /// containerizer's own set.
    #[arg(long)]
    pub isolation: Option<String>,
    /// Also set a CFS quota (hard cpu limit) from `cpus`.
    #[arg(long = "cgroups_enable_cfs", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub cgroups_enable_cfs: bool,
    /// Kill a task whose sandbox exceeds its `disk` (`disk/du`).
    #[arg(long = "enforce_container_disk_quota", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub enforce_container_disk_quota: bool,
    /// How often `disk/du` measures sandboxes.
    #[arg(long = "container_disk_watch_interval", default_value = "15secs")]
    pub container_disk_watch_interval: String,
    /// Docker credentials: a path to a `config.json` or the JSON itself.
    #[arg(long = "docker_config")]
    pub docker_config: Option<String>,
    /// The Docker Engine's socket: a path, `unix:///path` or `tcp://host:port`
    /// (default: `DOCKER_HOST`, else `/var/run/docker.sock`).
    #[arg(long = "docker_socket")]
    pub docker_socket: Option<String>,
    /// Bound on each call to the Docker Engine (not a Mesos flag): a hung
    /// engine fails docker launches after this long.
    #[arg(long = "docker_engine_timeout", default_value = "30secs")]
    pub docker_engine_timeout: String,
    /// How long a finished docker container is kept before it is removed.
    #[arg(long = "docker_remove_delay", default_value = "6hrs")]
    pub docker_remove_delay: String,
    /// Grace between SIGTERM and SIGKILL when the engine stops a container.
    #[arg(long = "docker_stop_timeout", default_value = "0secs")]
    pub docker_stop_timeout: String,
    /// Stop and remove `mesos-*` docker containers no checkpoint names, on recovery.
    #[arg(long = "docker_kill_orphans", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub docker_kill_orphans: bool,
    /// Where the docker containerizer gets images: `engine` (pull through the
    /// engine) or `store` (mezzo's image store, loaded into the engine).
    #[arg(long = "docker_image_source", default_value = "engine", value_parser = ["engine", "store"])]
    pub docker_image_source: String,
    /// Image providers of the rust containerizer (`docker`; `appc` is not supported).
    #[arg(long = "image_providers")]
    pub image_providers: Option<String>,
    /// How image rootfses are made: `overlay` or `copy` (default: overlay
    /// where the kernel supports it).
    #[arg(long = "image_provisioner_backend", value_parser = ["overlay", "copy"])]
    pub image_provisioner_backend: Option<String>,
    /// Collect unused images, layers and blobs of the image store this often
    /// (no periodic collection when absent).
    #[arg(long = "image_gc_interval")]
    pub image_gc_interval: Option<String>,
    /// Image garbage collection keeps images used within this long.
    #[arg(long = "image_gc_keep_recent", default_value = "1hrs")]
    pub image_gc_keep_recent: String,
    /// Image garbage collection runs only when the store holds more than this many bytes.
    #[arg(long = "image_gc_max_store_bytes")]
    pub image_gc_max_store_bytes: Option<u64>,
    /// What to do with the executors of an earlier run: `reconnect` to them,
    /// or `cleanup` (kill them all and exit).
    #[arg(long, default_value = "reconnect", value_parser = ["reconnect", "cleanup"])]
    pub recover: String,
    /// Recovery errors are fatal; with `--strict=false` the agent recovers
    /// what it can and skips what is corrupt.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub strict: bool,
    /// Given to checkpointing executors: how long they wait for a restarted agent.
    #[arg(long = "recovery_timeout", default_value = "15mins")]
    pub recovery_timeout: String,
    /// Executors must send the token the agent gave them
    /// (`MESOS_EXECUTOR_AUTHENTICATION_TOKEN`) as `Authorization: Bearer`;
    /// with `false`, executors that send no token are accepted too (a token
    /// that is sent is still checked).
    #[arg(long = "authenticate_http_executors", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub authenticate_http_executors: bool,
    /// File whose contents sign the executors' tokens (HS256); default: a
    /// random key the agent keeps (mode 0600) in `<work_dir>/meta/jwt_secret_key`.
    #[arg(long = "jwt_secret_key")]
    pub jwt_secret_key: Option<PathBuf>,
    /// Read-only operator endpoints (`/state`, `/files/*`, `/containers`,
    /// `/monitor/statistics`, `GET_*` calls of `/api/v1`) need HTTP basic credentials.
    #[arg(long = "authenticate_http_readonly", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub authenticate_http_readonly: bool,
    /// Operator calls that change state need HTTP basic credentials.
    #[arg(long = "authenticate_http_readwrite", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub authenticate_http_readwrite: bool,
    /// Principals and secrets for HTTP basic authentication, Mesos's JSON
    /// format: `{"credentials":[{"principal":"..","secret":".."}]}`, a path
    /// (`file://` prefix accepted).
    #[arg(long = "http_credentials")]
    pub http_credentials: Option<String>,
}

/// Parses a Mesos boolean flag value.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got '{s}'")),
    }
}

/// Parses a duration flag: stout's form (`5secs`, `250ms`, `1mins`), or a
/// bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        // try_: a number of seconds too large for a Duration is an error, not a panic.
        Ok(secs) => std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration '{s}': {e}")),
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

    /// Found writing the fuzz target `flags` (its no-panic check on `1e20`): a bare number of seconds too large
    /// for a Duration panicked the agent while it parsed its flags.
    #[test]
    fn out_of_range_durations_are_errors_not_panics() {
        for bad in ["1e20", "18446744073709551616", "-1", "NaN", "inf", "-0.5"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(bad), "the error names the value: {err}");
        }
        assert_eq!(parse_duration("1e3").unwrap(), Duration::from_secs(1000));
    }

    #[test]
    fn boolean_flags_parse_like_mesos() {
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1"]).unwrap();
        assert!(!f.cgroups_enable_cfs && f.strict && f.docker_kill_orphans);
        assert!(f.authenticate_http_executors && !f.authenticate_http_readonly && !f.authenticate_http_readwrite);
        assert_eq!(f.recover, "reconnect");
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--cgroups_enable_cfs", "--strict=false", "--docker_kill_orphans=false"]).unwrap();
        assert!(f.cgroups_enable_cfs && !f.strict && !f.docker_kill_orphans);
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--authenticate_http_executors=false", "--authenticate_http_readonly"]).unwrap();
        assert!(!f.authenticate_http_executors && f.authenticate_http_readonly && !f.authenticate_http_readwrite);
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--recover=maybe"]).is_err());
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--recover=cleanup", "--recover=reconnect"]).unwrap();
        assert_eq!(f.recover, "reconnect", "the last occurrence wins");
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--image_provisioner_backend=aufs"]).is_err());
    }
}

fn parse_credential(value: &str) -> Result<mezzo_master::credentials::Credential, String> {
    mezzo_master::credentials::load_credential(value).map_err(|e| e.to_string())
}
