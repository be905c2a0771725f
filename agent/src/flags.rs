//! Command-line flags, named as Mesos's agent names them.

use clap::{ArgAction, Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `mezzo-agent`.
#[derive(Debug, Clone, Parser)]
// A flag given twice takes its last value, so wrappers can append overrides.
#[command(name = "mezzo-agent", version, about = "mezzo agent: runs tasks in containers", args_override_self = true)]
pub struct Flags {
    /// Master address: `host:port`, `zk://host:port[,host:port]/path` (the
    /// leader of a master group, followed as it changes), or a `file://` path holding one.
    #[arg(long, value_parser = parse_master)]
    pub master: String,
    /// With `--master=zk://...`: the ZooKeeper session timeout (`10secs`).
    #[arg(long = "zk_session_timeout", default_value = "10secs", value_parser = parse_zk_session_timeout, value_name = "DURATION")]
    pub zk_session_timeout: Duration,
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
    #[arg(long, default_value = "rust", value_parser = parse_containerizers, value_name = "LIST")]
    pub containerizers: Containerizers,
    /// Run tasks as their user (`CommandInfo.user`, else `FrameworkInfo.user`),
    /// as Mesos's `--switch_user`; with `false` they run as the agent's user.
    #[arg(long = "switch_user", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub switch_user: bool,
    /// Mesos's `--executor_environment_variables`: a JSON object of string
    /// values (or `file:///path` holding one). Executors, and the tasks of
    /// the command executor, start from this environment; the `MESOS_*`
    /// variables and the task's own environment go over it.
    #[arg(long = "executor_environment_variables", value_parser = parse_env_object, value_name = "JSON")]
    pub executor_environment_variables: Option<EnvVars>,
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
    #[arg(long = "executor_shutdown_grace_period", default_value = "5secs", value_parser = parse_duration, value_name = "DURATION")]
    pub executor_shutdown_grace_period: Duration,
    /// How long an executor has to subscribe before its container is destroyed.
    #[arg(long = "executor_registration_timeout", default_value = "1mins", value_parser = parse_duration, value_name = "DURATION")]
    pub executor_registration_timeout: Duration,
    /// After an agent restart, how long recovered executors have to
    /// re-subscribe before they are destroyed.
    #[arg(long = "executor_reregistration_timeout", default_value = "2secs", value_parser = parse_duration, value_name = "DURATION")]
    pub executor_reregistration_timeout: Duration,
    /// How often the agent sends HEARTBEAT events on an executor's
    /// subscription (Mesos: a fixed 30 minutes).
    #[arg(long = "executor_heartbeat_interval", default_value = "30mins", value_parser = parse_duration, value_name = "DURATION")]
    pub executor_heartbeat_interval: Duration,
    /// Isolators of the rust containerizer, comma separated, Mesos names
    /// (`cgroups/cpu,cgroups/mem,namespaces/pid,...`); default: the
    /// containerizer's own set.
    #[arg(long, value_parser = parse_isolation, value_name = "ISOLATORS")]
    pub isolation: Option<Isolation>,
    /// Also set a CFS quota (hard cpu limit) from `cpus`.
    #[arg(long = "cgroups_enable_cfs", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub cgroups_enable_cfs: bool,
    /// Kill a task whose sandbox exceeds its `disk` (`disk/du`).
    #[arg(long = "enforce_container_disk_quota", default_value_t = false, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub enforce_container_disk_quota: bool,
    /// How often `disk/du` measures sandboxes.
    #[arg(long = "container_disk_watch_interval", default_value = "15secs", value_parser = parse_duration, value_name = "DURATION")]
    pub container_disk_watch_interval: Duration,
    /// Docker credentials: a path to a `config.json` or the JSON itself.
    #[arg(long = "docker_config")]
    pub docker_config: Option<String>,
    /// The Docker Engine's socket: a path, `unix:///path` or `tcp://host:port`
    /// (default: `DOCKER_HOST`, else `/var/run/docker.sock`).
    #[arg(long = "docker_socket")]
    pub docker_socket: Option<String>,
    /// Bound on each call to the Docker Engine (not a Mesos flag): a hung
    /// engine fails docker launches after this long.
    #[arg(long = "docker_engine_timeout", default_value = "30secs", value_parser = parse_duration, value_name = "DURATION")]
    pub docker_engine_timeout: Duration,
    /// How long a finished docker container is kept before it is removed.
    #[arg(long = "docker_remove_delay", default_value = "6hrs", value_parser = parse_duration, value_name = "DURATION")]
    pub docker_remove_delay: Duration,
    /// Grace between SIGTERM and SIGKILL when the engine stops a container.
    #[arg(long = "docker_stop_timeout", default_value = "0secs", value_parser = parse_duration, value_name = "DURATION")]
    pub docker_stop_timeout: Duration,
    /// Stop and remove `mesos-*` docker containers no checkpoint names, on recovery.
    #[arg(long = "docker_kill_orphans", default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub docker_kill_orphans: bool,
    /// Where the docker containerizer gets images: `engine` (pull through the
    /// engine) or `store` (mezzo's image store, loaded into the engine).
    #[arg(long = "docker_image_source", value_enum, default_value_t = DockerImageSource::Engine)]
    pub docker_image_source: DockerImageSource,
    /// Image providers of the rust containerizer (`docker`; `appc` is not supported).
    #[arg(long = "image_providers", value_parser = parse_image_providers, value_name = "PROVIDERS")]
    pub image_providers: Option<String>,
    /// How image rootfses are made: `overlay` or `copy` (default: overlay
    /// where the kernel supports it).
    #[arg(long = "image_provisioner_backend", value_enum)]
    pub image_provisioner_backend: Option<ProvisionerBackend>,
    /// Collect unused images, layers and blobs of the image store this often
    /// (no periodic collection when absent).
    #[arg(long = "image_gc_interval", value_parser = parse_duration, value_name = "DURATION")]
    pub image_gc_interval: Option<Duration>,
    /// Image garbage collection keeps images used within this long.
    #[arg(long = "image_gc_keep_recent", default_value = "1hrs", value_parser = parse_duration, value_name = "DURATION")]
    pub image_gc_keep_recent: Duration,
    /// Image garbage collection runs only when the store holds more than this many bytes.
    #[arg(long = "image_gc_max_store_bytes")]
    pub image_gc_max_store_bytes: Option<u64>,
    /// What to do with the executors of an earlier run: `reconnect` to them,
    /// or `cleanup` (kill them all and exit).
    #[arg(long, value_enum, default_value_t = Recover::Reconnect)]
    pub recover: Recover,
    /// Recovery errors are fatal; with `--strict=false` the agent recovers
    /// what it can and skips what is corrupt.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool, action = ArgAction::Set)]
    pub strict: bool,
    /// Given to checkpointing executors: how long they wait for a restarted agent.
    #[arg(long = "recovery_timeout", default_value = "15mins", value_parser = parse_duration, value_name = "DURATION")]
    pub recovery_timeout: Duration,
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
    /// Directory of the fetcher's cache of `CommandInfo.URI`s with `cache`
    /// set (default: `<work_dir>/fetch`); emptied when the agent starts.
    #[arg(long = "fetcher_cache_dir")]
    pub fetcher_cache_dir: Option<PathBuf>,
    /// Size of the fetcher's cache, Mesos's byte syntax (`2GB`, `512MB`);
    /// least recently used entries are evicted beyond it.
    #[arg(long = "fetcher_cache_size", default_value = "2GB", value_parser = parse_bytes, value_name = "BYTES")]
    pub fetcher_cache_size: u64,
    /// A download that receives nothing for this long fails (and so does the launch).
    #[arg(long = "fetcher_stall_timeout", default_value = "1mins", value_parser = parse_duration, value_name = "DURATION")]
    pub fetcher_stall_timeout: Duration,
    /// PEM file of extra CA certificates trusted for the fetcher's `https` URIs.
    #[arg(long = "fetcher_ca_file")]
    pub fetcher_ca_file: Option<PathBuf>,
    /// How long after its executor ended a run's sandbox and meta directories are removed (Mesos's sandbox
    /// garbage collection); shortened as the work dir's disk fills (`--gc_disk_headroom`).
    #[arg(long = "gc_delay", default_value = "1weeks", value_parser = parse_duration, value_name = "DURATION")]
    pub gc_delay: Duration,
    /// Fraction of the disk to keep free: sandboxes older than `gc_delay * max(0, 1 - gc_disk_headroom - disk
    /// usage)` are removed at each disk check.
    #[arg(long = "gc_disk_headroom", default_value = "0.1", value_parser = parse_headroom, value_name = "FRACTION")]
    pub gc_disk_headroom: f64,
    /// How a container's output reaches its sandbox's `stdout` and `stderr`: `sandbox` (Mesos's default: the
    /// container writes the files) or `logrotate` (copied by the container's supervisor, or the docker log
    /// follower, and rotated by size; Mesos's module name `org_apache_mesos_LogrotateContainerLogger` is accepted).
    #[arg(long = "container_logger", default_value = "sandbox", value_parser = parse_container_logger, value_name = "LOGGER")]
    pub container_logger: ContainerLogger,
    /// With `--container_logger=logrotate`: `stdout` is rotated at this size (Mesos's byte syntax).
    #[arg(long = "logrotate_max_stdout_size", default_value = "10MB", value_parser = parse_log_size, value_name = "BYTES")]
    pub logrotate_max_stdout_size: u64,
    /// With `--container_logger=logrotate`: `stderr` is rotated at this size.
    #[arg(long = "logrotate_max_stderr_size", default_value = "10MB", value_parser = parse_log_size, value_name = "BYTES")]
    pub logrotate_max_stderr_size: u64,
    /// logrotate options for `stdout`, as Mesos passes them to logrotate; `rotate N` (the number of rotated
    /// files kept, `stdout.1` to `stdout.N`) is the one understood, anything else is refused.
    #[arg(long = "logrotate_stdout_options", default_value = "rotate 9", value_parser = mezzo_containerizer::log_rotate::parse_logrotate_options, value_name = "OPTIONS")]
    pub logrotate_stdout_options: u32,
    /// The same for `stderr`.
    #[arg(long = "logrotate_stderr_options", default_value = "rotate 9", value_parser = mezzo_containerizer::log_rotate::parse_logrotate_options, value_name = "OPTIONS")]
    pub logrotate_stderr_options: u32,
    /// How often the disk usage of the work dir is checked (for sandbox garbage collection).
    #[arg(long = "disk_watch_interval", default_value = "1mins", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub disk_watch_interval: Duration,
}

/// Parses a byte size as Mesos's `Bytes` flags: an integer and a unit
/// (`B`, `KB`, `MB`, `GB`, `TB`; binary multiples), e.g. `2GB` or `1.5GB`.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("'{value}' is not a size (e.g. 2GB, 512MB)"))?;
    let scale: u64 = match unit {
        "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        "" => return Err(format!("'{value}' has no unit (B, KB, MB, GB or TB)")),
        other => return Err(format!("unknown unit '{other}' in size '{value}' (B, KB, MB, GB or TB)")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size '{value}' is too large"));
    }
    Ok(bytes as u64)
}

/// `--container_logger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerLogger {
    /// The container writes its sandbox's `stdout` and `stderr` itself.
    Sandbox,
    /// The output is copied into the files and rotated by size.
    Logrotate,
}

impl std::fmt::Display for ContainerLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerLogger::Sandbox => "sandbox",
            ContainerLogger::Logrotate => "logrotate",
        })
    }
}

fn parse_container_logger(value: &str) -> Result<ContainerLogger, String> {
    match value.trim() {
        "" | "sandbox" => Ok(ContainerLogger::Sandbox),
        "logrotate" | "org_apache_mesos_LogrotateContainerLogger" => Ok(ContainerLogger::Logrotate),
        other => Err(format!("unknown container logger '{other}' (sandbox, logrotate or org_apache_mesos_LogrotateContainerLogger)")),
    }
}

fn parse_log_size(value: &str) -> Result<u64, String> {
    match parse_bytes(value)? {
        0 => Err("must be larger than 0B".to_string()),
        n => Ok(n),
    }
}

impl Flags {
    /// The rotation `--container_logger=logrotate` asks for.
    pub fn log_rotation(&self) -> Option<mezzo_containerizer::log_rotate::LogRotation> {
        (self.container_logger == ContainerLogger::Logrotate).then_some(mezzo_containerizer::log_rotate::LogRotation {
            max_stdout_size: self.logrotate_max_stdout_size,
            max_stderr_size: self.logrotate_max_stderr_size,
            stdout_keep: self.logrotate_stdout_options,
            stderr_keep: self.logrotate_stderr_options,
        })
    }
}

/// Parses a Mesos boolean flag value.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got '{s}'")),
    }
}

/// Parses a duration flag: stout's form (`5secs`, `250ms`, `1mins`, `1hrs`,
/// `3days`, `1weeks`), or a bare number of seconds.
pub use mezzo_proto::duration::parse_flag as parse_duration;

/// Formats a duration the way stout does, which executors parse.
pub use mezzo_proto::duration::format as format_duration;

/// `--recover`: what to do with the executors of an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Recover {
    /// Reconnect to them (Mesos's default).
    Reconnect,
    /// Kill them all and exit.
    Cleanup,
}

/// `--docker_image_source`: where the docker containerizer gets images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DockerImageSource {
    /// Pulled through the engine.
    Engine,
    /// mezzo's image store, loaded into the engine.
    Store,
}

/// `--image_provisioner_backend`: how image rootfses are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProvisionerBackend {
    /// An overlay mount over the image's layers.
    Overlay,
    /// A copy of the image's layers.
    Copy,
}

/// The name an enum flag's value is written with (`reconnect`, `store`...).
pub fn enum_name<E: ValueEnum>(value: &E) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

/// `--isolation`: isolator names as given, comma separated (the rust
/// containerizer knows which names exist: `mezzo-agent` checks them with
/// `isolators::check_isolation` right after parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation(pub Vec<String>);

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `--containerizers`: backends in order of preference, checked at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerizers(pub Vec<mezzo_containerizer::BackendKind>);

impl std::fmt::Display for Containerizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

fn parse_containerizers(value: &str) -> Result<Containerizers, String> {
    mezzo_containerizer::BackendKind::parse_list(value).map(Containerizers).map_err(|e| e.to_string())
}

fn parse_isolation(value: &str) -> Result<Isolation, String> {
    Ok(Isolation(value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()))
}

/// `--image_providers`: only `docker` is supported (Mesos also has `appc`).
fn parse_image_providers(value: &str) -> Result<String, String> {
    let mut providers = Vec::new();
    for p in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !p.eq_ignore_ascii_case("docker") {
            return Err(format!("unsupported image provider '{p}' (supported: docker)"));
        }
        providers.push(p.to_ascii_lowercase());
    }
    Ok(providers.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bytes_parse_like_stout() {
        assert_eq!(parse_bytes("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("10B").unwrap(), 10);
        assert_eq!(parse_bytes("1.5KB").unwrap(), 1536);
        assert!(parse_bytes("10").unwrap_err().contains("no unit"));
        assert!(parse_bytes("10XB").unwrap_err().contains("unknown unit"));
        let flags = Flags::try_parse_from(["mezzo-agent", "--master=m:1"]).unwrap();
        assert_eq!((flags.fetcher_cache_size, flags.fetcher_stall_timeout), (2 << 30, Duration::from_secs(60)));
    }

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
    fn master_takes_mesos_forms() {
        let f = Flags::try_parse_from(["mezzo-agent", "--master=zk://10.0.0.1:2181,10.0.0.2:2181/mesos", "--zk_session_timeout=3secs"]).unwrap();
        assert_eq!((f.master.as_str(), f.zk_session_timeout), ("zk://10.0.0.1:2181,10.0.0.2:2181/mesos", Duration::from_secs(3)));
        assert_eq!(Flags::try_parse_from(["mezzo-agent", "--master=m:1"]).unwrap().zk_session_timeout, Duration::from_secs(10));
        let err = Flags::try_parse_from(["mezzo-agent", "--master=zk://h:port/mesos"]).unwrap_err().to_string();
        assert!(err.contains("invalid value 'zk://h:port/mesos' for '--master <MASTER>'") && err.contains("bad port"), "{err}");
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=file:///nonexistent/master"]).is_err());
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--zk_session_timeout=0secs"]).is_err());
    }

    #[test]
    fn executor_environment_variables_take_a_json_object_of_strings() {
        let f = parse(&[r#"--executor_environment_variables={"PATH":"/opt/bin:/bin","JAVA_HOME":"/opt/java"}"#]).unwrap();
        let mut vars = f.executor_environment_variables.unwrap().0;
        vars.sort();
        assert_eq!(vars, vec![("JAVA_HOME".to_string(), "/opt/java".to_string()), ("PATH".to_string(), "/opt/bin:/bin".to_string())]);
        for (bad, says) in [(r#"["A"]"#, "JSON object"), (r#"{"A":1}"#, "'A' must be a string"), (r#"{"A=B":"x"}"#, "valid variable name"), ("{", "not JSON")] {
            let err = parse(&[&format!("--executor_environment_variables={bad}")]).unwrap_err().to_string();
            assert!(err.contains("--executor_environment_variables") && err.contains(says), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env.json"), r#"{"X":"1"}"#).unwrap();
        let f = parse(&[&format!("--executor_environment_variables=file://{}", dir.path().join("env.json").display())]).unwrap();
        assert_eq!(f.executor_environment_variables.unwrap().0, vec![("X".to_string(), "1".to_string())]);
    }

    #[test]
    fn boolean_flags_parse_like_mesos() {
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1"]).unwrap();
        assert!(!f.cgroups_enable_cfs && f.strict && f.docker_kill_orphans);
        assert!(f.authenticate_http_executors && !f.authenticate_http_readonly && !f.authenticate_http_readwrite);
        assert_eq!(f.recover, Recover::Reconnect);
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--cgroups_enable_cfs", "--strict=false", "--docker_kill_orphans=false"]).unwrap();
        assert!(f.cgroups_enable_cfs && !f.strict && !f.docker_kill_orphans);
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--authenticate_http_executors=false", "--authenticate_http_readonly"]).unwrap();
        assert!(!f.authenticate_http_executors && f.authenticate_http_readonly && !f.authenticate_http_readwrite);
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--recover=maybe"]).is_err());
        let f = Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--recover=cleanup", "--recover=reconnect"]).unwrap();
        assert_eq!(f.recover, Recover::Reconnect, "the last occurrence wins");
        assert!(Flags::try_parse_from(["mezzo-agent", "--master=m:1", "--image_provisioner_backend=aufs"]).is_err());
    }

    const DURATION_FLAGS: &[&str] = &[
        "executor_shutdown_grace_period",
        "executor_registration_timeout",
        "executor_reregistration_timeout",
        "executor_heartbeat_interval",
        "container_disk_watch_interval",
        "docker_engine_timeout",
        "docker_remove_delay",
        "docker_stop_timeout",
        "image_gc_interval",
        "image_gc_keep_recent",
        "recovery_timeout",
        "gc_delay",
        "disk_watch_interval",
    ];

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(["mezzo-agent", "--master=m:1"].iter().chain(args))
    }

    /// The value of the duration flag `name` in `f`.
    fn duration_of(f: &Flags, name: &str) -> Option<Duration> {
        match name {
            "executor_shutdown_grace_period" => Some(f.executor_shutdown_grace_period),
            "executor_registration_timeout" => Some(f.executor_registration_timeout),
            "executor_reregistration_timeout" => Some(f.executor_reregistration_timeout),
            "executor_heartbeat_interval" => Some(f.executor_heartbeat_interval),
            "container_disk_watch_interval" => Some(f.container_disk_watch_interval),
            "docker_engine_timeout" => Some(f.docker_engine_timeout),
            "docker_remove_delay" => Some(f.docker_remove_delay),
            "docker_stop_timeout" => Some(f.docker_stop_timeout),
            "image_gc_interval" => f.image_gc_interval,
            "image_gc_keep_recent" => Some(f.image_gc_keep_recent),
            "recovery_timeout" => Some(f.recovery_timeout),
            "gc_delay" => Some(f.gc_delay),
            "disk_watch_interval" => Some(f.disk_watch_interval),
            other => panic!("no duration flag {other}"),
        }
    }

    #[test]
    fn containerizers_parse_with_the_flags_and_an_unknown_one_names_the_flag() {
        use mezzo_containerizer::BackendKind;
        assert_eq!(parse(&[]).unwrap().containerizers.0, [BackendKind::Rust]);
        let f = parse(&["--containerizers=docker,mesos,docker"]).unwrap();
        assert_eq!(f.containerizers.0, [BackendKind::Docker, BackendKind::Rust]);
        assert_eq!(f.containerizers.to_string(), "docker,rust");
        let err = parse(&["--containerizers=rust,lxc"]).unwrap_err().to_string();
        assert!(err.contains("--containerizers") && err.contains("lxc"), "{err}");
        let err = parse(&["--containerizers="]).unwrap_err().to_string();
        assert!(err.contains("--containerizers"), "{err}");
    }

    #[test]
    fn duration_flags_keep_mesos_defaults() {
        let f = parse(&[]).unwrap();
        assert_eq!(f.executor_shutdown_grace_period, Duration::from_secs(5));
        assert_eq!(f.executor_registration_timeout, Duration::from_secs(60));
        assert_eq!(f.executor_reregistration_timeout, Duration::from_secs(2));
        assert_eq!(f.container_disk_watch_interval, Duration::from_secs(15));
        assert_eq!(f.docker_engine_timeout, Duration::from_secs(30));
        assert_eq!(f.docker_remove_delay, Duration::from_secs(6 * 3600));
        assert_eq!(f.docker_stop_timeout, Duration::ZERO);
        assert_eq!(f.image_gc_interval, None);
        assert_eq!(f.image_gc_keep_recent, Duration::from_secs(3600));
        assert_eq!(f.recovery_timeout, Duration::from_secs(15 * 60));
        assert_eq!((f.gc_delay, f.disk_watch_interval, f.gc_disk_headroom), (Duration::from_secs(7 * 86400), Duration::from_secs(60), 0.1));
    }

    #[test]
    fn container_logger_flags() {
        use mezzo_containerizer::log_rotate::LogRotation;
        let f = parse(&[]).unwrap();
        assert_eq!((f.container_logger, f.log_rotation()), (ContainerLogger::Sandbox, None));
        let f = parse(&["--container_logger=org_apache_mesos_LogrotateContainerLogger"]).unwrap();
        assert_eq!(f.log_rotation(), Some(LogRotation::DEFAULT));
        let f = parse(&["--container_logger=logrotate", "--logrotate_max_stdout_size=4KB", "--logrotate_stderr_options=rotate 2"]).unwrap();
        let want = LogRotation { max_stdout_size: 4096, stderr_keep: 2, ..LogRotation::DEFAULT };
        assert_eq!(f.log_rotation(), Some(want));
        for bad in ["--container_logger=journald", "--logrotate_max_stdout_size=0B", "--logrotate_stdout_options=compress"] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn gc_flags_are_checked() {
        let f = parse(&["--gc_delay=2secs", "--gc_disk_headroom=0.5", "--disk_watch_interval=100ms"]).unwrap();
        assert_eq!((f.gc_delay, f.gc_disk_headroom, f.disk_watch_interval), (Duration::from_secs(2), 0.5, Duration::from_millis(100)));
        for bad in ["--gc_disk_headroom=1.5", "--gc_disk_headroom=-0.1", "--gc_disk_headroom=x", "--disk_watch_interval=0secs"] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_duration_flag_takes_mesos_forms() {
        for name in DURATION_FLAGS {
            for (text, want) in mezzo_proto::duration::FLAG_EXAMPLES {
                let f = parse(&[&format!("--{name}={text}")]).unwrap_or_else(|e| panic!("--{name}={text}: {e}"));
                assert_eq!(duration_of(&f, name), Some(want), "--{name}={text}");
                // The separate-argument form parses too.
                let f = parse(&[&format!("--{name}"), text]).unwrap_or_else(|e| panic!("--{name} {text}: {e}"));
                assert_eq!(duration_of(&f, name), Some(want), "--{name} {text}");
            }
        }
    }

    #[test]
    fn a_bad_duration_is_an_error_naming_the_flag() {
        for name in DURATION_FLAGS {
            for bad in ["abc", "5parsecs", "secs", "-1secs", "1e20", "", "10 minutes"] {
                let err = parse(&[&format!("--{name}={bad}")]).err().unwrap_or_else(|| panic!("--{name}={bad} parsed"));
                assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "--{name}={bad}: {err}");
                let text = err.to_string();
                assert!(text.contains(&format!("invalid value '{bad}' for '--{name} <DURATION>'")), "{text}");
            }
        }
    }

    #[test]
    fn enum_flags_are_typed_and_reject_unknown_values() {
        let f = parse(&[]).unwrap();
        assert_eq!((f.recover, f.docker_image_source, f.image_provisioner_backend), (Recover::Reconnect, DockerImageSource::Engine, None));
        let f = parse(&["--recover=cleanup", "--docker_image_source=store", "--image_provisioner_backend=copy"]).unwrap();
        assert_eq!(f.recover, Recover::Cleanup);
        assert_eq!(f.docker_image_source, DockerImageSource::Store);
        assert_eq!(f.image_provisioner_backend, Some(ProvisionerBackend::Copy));
        assert_eq!(parse(&["--image_provisioner_backend=overlay"]).unwrap().image_provisioner_backend, Some(ProvisionerBackend::Overlay));
        assert_eq!((enum_name(&f.recover), enum_name(&f.docker_image_source)), ("cleanup".to_string(), "store".to_string()));
        for (flag, bad) in [("recover", "maybe"), ("docker_image_source", "registry"), ("image_provisioner_backend", "aufs")] {
            let err = parse(&[&format!("--{flag}={bad}")]).err().unwrap_or_else(|| panic!("--{flag}={bad} parsed"));
            assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue, "{err}");
            assert!(err.to_string().contains(&format!("invalid value '{bad}' for '--{flag} ")), "{err}");
        }
        assert_eq!(parse(&["--image_providers=docker"]).unwrap().image_providers.as_deref(), Some("docker"));
        assert_eq!(parse(&["--image_providers=DOCKER"]).unwrap().image_providers.as_deref(), Some("docker"));
        let err = parse(&["--image_providers=docker,appc"]).err().expect("appc is not supported");
        assert!(err.to_string().contains("for '--image_providers <PROVIDERS>': unsupported image provider 'appc'"), "{err}");
        let f = parse(&["--isolation=cgroups/cpu, namespaces/pid,"]).unwrap();
        assert_eq!(f.isolation, Some(Isolation(vec!["cgroups/cpu".into(), "namespaces/pid".into()])));
        assert_eq!(f.isolation.unwrap().to_string(), "cgroups/cpu,namespaces/pid");
    }
}

/// Checks `--master` (a `zk://` URL's form, a `file://` path's content); the value is kept as given.
/// The variables of `--executor_environment_variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVars(pub Vec<(String, String)>);

fn parse_env_object(value: &str) -> Result<EnvVars, String> {
    let text = match value.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read '{path}': {e}"))?,
        None => value.to_string(),
    };
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let serde_json::Value::Object(map) = parsed else {
        return Err("must be a JSON object of environment variables".into());
    };
    let mut vars = Vec::with_capacity(map.len());
    for (name, value) in map {
        let serde_json::Value::String(value) = value else {
            return Err(format!("the value of '{name}' must be a string"));
        };
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("'{}' is not a valid variable name (empty, '=' or NUL)", name.escape_debug()));
        }
        if value.contains('\0') {
            return Err(format!("the value of '{name}' contains a NUL byte"));
        }
        vars.push((name, value));
    }
    Ok(EnvVars(vars))
}

fn parse_master(value: &str) -> Result<String, String> {
    mezzo_zk::MasterAddress::parse("master", value).map(|_| value.to_string()).map_err(|e| e.reason)
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match mezzo_proto::duration::parse_flag(value)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

/// `--gc_disk_headroom`: a fraction in [0, 1], as Mesos checks it.
fn parse_headroom(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{value}' is not a fraction between 0.0 and 1.0")),
    }
}

fn parse_zk_session_timeout(value: &str) -> Result<Duration, String> {
    match mezzo_proto::duration::parse_flag(value)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

fn parse_credential(value: &str) -> Result<mezzo_master::credentials::Credential, String> {
    mezzo_master::credentials::load_credential(value).map_err(|e| e.to_string())
}
