//! The executor's configuration, read from the environment the agent sets
//! (Mesos's `executorEnvironment`, plus mezzo's own `MEZZO_*` variables).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Used when `MESOS_RECOVERY_TIMEOUT` is absent: how long a checkpointing
/// executor keeps trying to re-subscribe after losing the agent.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Used when `MESOS_SUBSCRIPTION_BACKOFF_MAX` is absent (Mesos's
/// `--executor_reregistration_timeout` default).
pub const DEFAULT_SUBSCRIPTION_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Used when `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD` is absent (Mesos's default).
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// A variable the executor cannot run without is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// a required variable is not set
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// a variable has a value that does not parse
    #[error("environment variable {name} has an invalid value '{value}': {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// Everything the executor learns from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `ip:port` of the agent (`MESOS_AGENT_ENDPOINT`).
    pub agent_endpoint: String,
    pub framework_id: String,
    pub executor_id: String,
    /// The agent's id (`MESOS_SLAVE_ID`), when given; SUBSCRIBED tells it too.
    pub agent_id: Option<String>,
    /// Host path of the sandbox (`MESOS_DIRECTORY`).
    pub directory: Option<PathBuf>,
    /// Whether the framework checkpoints (`MESOS_CHECKPOINT=1`): then the
    /// executor survives an agent restart by re-subscribing.
    pub checkpoint: bool,
    pub recovery_timeout: Duration,
    pub subscription_backoff_max: Duration,
    pub shutdown_grace_period: Duration,
    /// The prepared container's runtime directory (`MEZZO_RUNTIME_DIR`).
    pub runtime_dir: PathBuf,
    /// Where mezzo's helper binaries live (`MEZZO_LAUNCHER_DIR`).
    pub launcher_dir: PathBuf,
    /// How often unacknowledged updates are sent again (`MEZZO_UPDATE_RESEND_INTERVAL`).
    pub resend_interval: Duration,
    /// The token the agent issued to this executor
    /// (`MESOS_EXECUTOR_AUTHENTICATION_TOKEN`), sent on every call.
    pub authentication_token: Option<AuthToken>,
}

/// The executor's secret token; never shown in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(pub String);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// The variable that carries the executor's token.
pub const AUTHENTICATION_TOKEN_VAR: &str = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN";

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_map(&std::env::vars().collect())
    }

    /// Reads the configuration from `vars` (the environment, as a map).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let required = |name: &'static str| {
            vars.get(name).filter(|v| !v.is_empty()).cloned().ok_or(ConfigError::Missing(name))
        };
        let duration = |name: &'static str, default: Duration| match vars.get(name) {
            None => Ok(default),
            Some(value) => parse_duration(value).map_err(|reason| ConfigError::Invalid {
                name,
                value: value.clone(),
                reason,
            }),
        };
        let launcher_dir = match vars.get("MEZZO_LAUNCHER_DIR") {
            Some(dir) => PathBuf::from(dir),
            // Next to our own binary is where the agent's launcher dir points anyway.
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .ok_or(ConfigError::Missing("MEZZO_LAUNCHER_DIR"))?,
        };
        Ok(Config {
            agent_endpoint: required("MESOS_AGENT_ENDPOINT")?,
            framework_id: required("MESOS_FRAMEWORK_ID")?,
            executor_id: required("MESOS_EXECUTOR_ID")?,
            agent_id: vars.get("MESOS_SLAVE_ID").cloned(),
            directory: vars.get("MESOS_DIRECTORY").map(PathBuf::from),
            checkpoint: vars.get("MESOS_CHECKPOINT").map(|v| v == "1").unwrap_or(false),
            recovery_timeout: duration("MESOS_RECOVERY_TIMEOUT", DEFAULT_RECOVERY_TIMEOUT)?,
            subscription_backoff_max: duration(
                "MESOS_SUBSCRIPTION_BACKOFF_MAX",
                DEFAULT_SUBSCRIPTION_BACKOFF_MAX,
            )?,
            shutdown_grace_period: duration(
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                DEFAULT_SHUTDOWN_GRACE_PERIOD,
            )?,
            runtime_dir: PathBuf::from(required("MEZZO_RUNTIME_DIR")?),
            launcher_dir,
            resend_interval: duration("MEZZO_UPDATE_RESEND_INTERVAL", Duration::from_secs(5))?,
            authentication_token: vars.get(AUTHENTICATION_TOKEN_VAR).filter(|t| !t.is_empty()).map(|t| AuthToken(t.clone())),
        })
    }

    /// URL of the agent's executor API.
    pub fn executor_api_url(&self) -> String {
        format!("http://{}/api/v1/executor", self.agent_endpoint)
    }
}

/// Parses a stout duration (`5secs`, `250ms`, `1.5mins`, `2hrs`...), as
/// Mesos writes them into the executor's environment.
pub use mezzo_proto::duration::parse as parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051"),
            ("MESOS_FRAMEWORK_ID", "fw-0000"),
            ("MESOS_EXECUTOR_ID", "task-1"),
            ("MEZZO_RUNTIME_DIR", "/run/mezzo/c1"),
            ("MEZZO_LAUNCHER_DIR", "/usr/libexec/mezzo"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn stout_durations_parse() {
        assert_eq!(parse_duration("5secs").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("15mins").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("1.5secs").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2hrs").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5parsecs").is_err());
        assert!(parse_duration("secs").is_err());
    }

    #[test]
    fn environment_is_read_with_defaults() {
        let mut vars = base();
        vars.insert("MESOS_CHECKPOINT".into(), "1".into());
        vars.insert("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(), "7secs".into());
        let config = Config::from_map(&vars).unwrap();
        assert_eq!(config.executor_api_url(), "http://127.0.0.1:5051/api/v1/executor");
        assert!(config.checkpoint);
        assert_eq!(config.shutdown_grace_period, Duration::from_secs(7));
        assert_eq!(config.recovery_timeout, DEFAULT_RECOVERY_TIMEOUT);
        assert_eq!(config.runtime_dir, PathBuf::from("/run/mezzo/c1"));
        assert_eq!(config.authentication_token, None);
        vars.insert(AUTHENTICATION_TOKEN_VAR.into(), "a.b.c".into());
        let config = Config::from_map(&vars).unwrap();
        assert_eq!(config.authentication_token, Some(AuthToken("a.b.c".into())));
        assert!(!format!("{config:?}").contains("a.b.c"), "the token never shows in logs");
    }

    #[test]
    fn checkpoint_zero_is_false() {
        // pymesos reads "0" as true; Mesos means false.
        let mut vars = base();
        vars.insert("MESOS_CHECKPOINT".into(), "0".into());
        assert!(!Config::from_map(&vars).unwrap().checkpoint);
    }

    #[test]
    fn missing_and_invalid_variables_are_errors() {
        let mut vars = base();
        vars.remove("MESOS_EXECUTOR_ID");
        let err = Config::from_map(&vars).unwrap_err();
        assert_eq!(err.to_string(), "environment variable MESOS_EXECUTOR_ID is not set");
        let mut vars = base();
        vars.insert("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".into(), "soon".into());
        assert!(matches!(Config::from_map(&vars), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn every_duration_variable_takes_stout_forms_and_a_bad_one_is_named() {
        let vars = ["MESOS_RECOVERY_TIMEOUT", "MESOS_SUBSCRIPTION_BACKOFF_MAX", "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "MEZZO_UPDATE_RESEND_INTERVAL"];
        let value = |c: &Config, name: &str| match name {
            "MESOS_RECOVERY_TIMEOUT" => c.recovery_timeout,
            "MESOS_SUBSCRIPTION_BACKOFF_MAX" => c.subscription_backoff_max,
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD" => c.shutdown_grace_period,
            _ => c.resend_interval,
        };
        for name in vars {
            for (text, want) in [("2secs", Duration::from_secs(2)), ("10mins", Duration::from_secs(600)), ("500ms", Duration::from_millis(500)), ("1hrs", Duration::from_secs(3600)), ("3days", Duration::from_secs(3 * 86400)), ("1weeks", Duration::from_secs(7 * 86400))] {
                let mut env = base();
                env.insert(name.into(), text.into());
                assert_eq!(value(&Config::from_map(&env).unwrap(), name), want, "{name}={text}");
            }
            for bad in ["abc", "5parsecs", "5"] {
                let mut env = base();
                env.insert(name.into(), bad.into());
                let err = Config::from_map(&env).unwrap_err().to_string();
                assert!(err.starts_with(&format!("environment variable {name} has an invalid value '{bad}': ")), "{err}");
            }
        }
    }
}
