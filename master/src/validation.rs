//! Validation of what schedulers send, at the edge, before anything is
//! offered, consumed or sent to an agent.
//!
//! IDs follow Mesos's `common::validation::validateID`: not empty, at most
//! `NAME_MAX` (255) bytes, not `.` or `..`, no `/`, no whitespace and no
//! control character (NUL included): they become path components on agents.
//! Strings that reach an `exec` (command, arguments, environment, user, ...)
//! must not contain NUL, which cannot cross `execve`. Every message names the
//! offending field.

use mezzo_proto::mesos::v1::{check_info, health_check, CheckInfo, CommandInfo, ContainerInfo, ExecutorInfo, FrameworkInfo, HealthCheck, TaskInfo};

/// Longest ID accepted, in bytes (`NAME_MAX`, as Mesos).
pub(crate) const MAX_ID_BYTES: usize = 255;

/// How much of an offending value an error message quotes.
const QUOTE_CHARS: usize = 64;

/// `value` for an error message: control characters escaped, long values cut.
fn quote(value: &str) -> String {
    let mut out: String = value.chars().take(QUOTE_CHARS).flat_map(char::escape_debug).collect();
    if value.chars().count() > QUOTE_CHARS {
        out.push_str("...");
    }
    out
}

/// Checks an ID the way Mesos's `common::validation::validateID` does.
pub(crate) fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("ID must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("ID must not be longer than {MAX_ID_BYTES} bytes, got {}", id.len()));
    }
    if id == "." || id == ".." {
        return Err(format!("'{id}' is disallowed"));
    }
    if id.contains('/') || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("ID must not contain '/', whitespace or control characters (NUL included)".into());
    }
    Ok(())
}

/// Checks the ID in `field`; the message names the field and quotes the ID.
pub(crate) fn id_field(field: &str, id: &str) -> Result<(), String> {
    validate_id(id).map_err(|e| format!("'{field}' ('{}') is invalid: {e}", quote(id)))
}

/// Refuses a NUL byte in `field`.
pub(crate) fn no_nul(field: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!("'{field}' ('{}') must not contain NUL", quote(value)));
    }
    Ok(())
}

/// The strings of a CommandInfo that reach an exec.
fn command(field: &str, cmd: &CommandInfo) -> Result<(), String> {
    if let Some(value) = &cmd.value {
        no_nul(&format!("{field}.value"), value)?;
    }
    for (i, arg) in cmd.arguments.iter().enumerate() {
        no_nul(&format!("{field}.arguments[{i}]"), arg)?;
    }
    if let Some(user) = &cmd.user {
        no_nul(&format!("{field}.user"), user)?;
        if user.is_empty() {
            return Err(format!("'{field}.user' must not be empty when present"));
        }
    }
    if let Some(env) = &cmd.environment {
        for (i, var) in env.variables.iter().enumerate() {
            let name = format!("{field}.environment.variables[{i}].name");
            no_nul(&name, &var.name)?;
            if var.name.is_empty() || var.name.contains('=') {
                return Err(format!("'{name}' ('{}') must be non-empty and without '='", quote(&var.name)));
            }
            if let Some(value) = &var.value {
                no_nul(&format!("{field}.environment.variables[{i}].value"), value)?;
            }
        }
    }
    for (i, uri) in cmd.uris.iter().enumerate() {
        no_nul(&format!("{field}.uris[{i}].value"), &uri.value)?;
        if let Some(name) = &uri.output_file {
            no_nul(&format!("{field}.uris[{i}].output_file"), name)?;
        }
    }
    Ok(())
}

/// The strings of a ContainerInfo that reach a runtime.
fn container(field: &str, info: &ContainerInfo) -> Result<(), String> {
    if let Some(hostname) = &info.hostname {
        no_nul(&format!("{field}.hostname"), hostname)?;
    }
    if let Some(docker) = &info.docker {
        no_nul(&format!("{field}.docker.image"), &docker.image)?;
        for (i, p) in docker.parameters.iter().enumerate() {
            no_nul(&format!("{field}.docker.parameters[{i}].key"), &p.key)?;
            no_nul(&format!("{field}.docker.parameters[{i}].value"), &p.value)?;
        }
    }
    for (i, v) in info.volumes.iter().enumerate() {
        no_nul(&format!("{field}.volumes[{i}].container_path"), &v.container_path)?;
        if let Some(host) = &v.host_path {
            no_nul(&format!("{field}.volumes[{i}].host_path"), host)?;
        }
    }
    Ok(())
}

fn executor(field: &str, info: &ExecutorInfo) -> Result<(), String> {
    id_field(&format!("{field}.executor_id"), &info.executor_id.value)?;
    if let Some(cmd) = &info.command {
        command(&format!("{field}.command"), cmd)?;
    }
    if let Some(c) = &info.container {
        container(&format!("{field}.container"), c)?;
    }
    Ok(())
}

/// Checks the IDs and exec-bound strings of a task (Mesos's
/// `master::validation::task` checks of IDs, plus NUL bytes).
pub(crate) fn task(task: &TaskInfo) -> Result<(), String> {
    id_field("task_id", &task.task_id.value)?;
    id_field("agent_id", &task.agent_id.value)?;
    if let Some(cmd) = &task.command {
        command("command", cmd)?;
    }
    if let Some(e) = &task.executor {
        executor("executor", e)?;
    }
    if let Some(c) = &task.container {
        container("container", c)?;
    }
    if let Some(h) = &task.health_check {
        health(h).map_err(|e| format!("Task uses invalid health check: {e}"))?;
    }
    if let Some(c) = &task.check {
        check(c).map_err(|e| format!("Task uses invalid check: {e}"))?;
    }
    Ok(())
}

/// A check's durations (seconds as doubles): finite and non-negative.
fn check_seconds(field: &str, pairs: &[(&str, Option<f64>)]) -> Result<(), String> {
    for (name, value) in pairs {
        if let Some(v) = value {
            if !v.is_finite() || *v < 0.0 || *v > 1e9 {
                return Err(format!("Expecting '{field}.{name}' to be a non-negative number of seconds, got {v}"));
            }
        }
    }
    Ok(())
}

fn check_port(field: &str, port: u32) -> Result<(), String> {
    if port == 0 || port > u32::from(u16::MAX) {
        return Err(format!("'{field}' must be a port in 1..65535, got {port}"));
    }
    Ok(())
}

fn check_path(field: &str, path: Option<&str>) -> Result<(), String> {
    match path {
        Some(p) if !p.starts_with('/') => Err(format!("The path '{}' of '{field}' must start with '/'", quote(p))),
        Some(p) => no_nul(field, p),
        None => Ok(()),
    }
}

fn check_command(field: &str, cmd: Option<&CommandInfo>) -> Result<(), String> {
    let cmd = cmd.ok_or_else(|| format!("Expecting '{field}' to be set for a COMMAND check"))?;
    if cmd.value.as_deref().is_none_or(str::is_empty) {
        return Err(format!("'{field}.value' must be set"));
    }
    command(field, cmd)
}

/// Mesos's `checks::validation::healthCheck`, naming the field.
fn health(h: &HealthCheck) -> Result<(), String> {
    match health_check::Type::try_from(h.r#type.unwrap_or(0)) {
        Ok(health_check::Type::Http) => {
            let http = h.http.as_ref().ok_or("Expecting 'health_check.http' to be set for an HTTP health check")?;
            if let Some(scheme) = http.scheme.as_deref().filter(|s| *s != "http" && *s != "https") {
                return Err(format!("Unsupported 'health_check.http.scheme': '{}'", quote(scheme)));
            }
            check_port("health_check.http.port", http.port)?;
            check_path("health_check.http.path", http.path.as_deref())?;
        }
        Ok(health_check::Type::Tcp) => {
            check_port("health_check.tcp.port", h.tcp.as_ref().ok_or("Expecting 'health_check.tcp' to be set for a TCP health check")?.port)?;
        }
        Ok(health_check::Type::Command) => check_command("health_check.command", h.command.as_ref())?,
        Ok(health_check::Type::Unknown) | Err(_) => {
            return Err(format!("'health_check.type' must be COMMAND, HTTP or TCP, got {}", h.r#type.map_or("none".to_string(), |t| t.to_string())))
        }
    }
    check_seconds(
        "health_check",
        &[
            ("delay_seconds", h.delay_seconds),
            ("interval_seconds", h.interval_seconds),
            ("timeout_seconds", h.timeout_seconds),
            ("grace_period_seconds", h.grace_period_seconds),
        ],
    )
}

/// Mesos's `checks::validation::checkInfo`, naming the field.
fn check(c: &CheckInfo) -> Result<(), String> {
    match check_info::Type::try_from(c.r#type.unwrap_or(0)) {
        Ok(check_info::Type::Http) => {
            let http = c.http.as_ref().ok_or("Expecting 'check.http' to be set for an HTTP check")?;
            check_port("check.http.port", http.port)?;
            check_path("check.http.path", http.path.as_deref())?;
        }
        Ok(check_info::Type::Tcp) => check_port("check.tcp.port", c.tcp.as_ref().ok_or("Expecting 'check.tcp' to be set for a TCP check")?.port)?,
        Ok(check_info::Type::Command) => check_command("check.command.command", c.command.as_ref().map(|c| &c.command))?,
        Ok(check_info::Type::Unknown) | Err(_) => {
            return Err(format!("'check.type' must be COMMAND, HTTP or TCP, got {}", c.r#type.map_or("none".to_string(), |t| t.to_string())))
        }
    }
    check_seconds("check", &[("delay_seconds", c.delay_seconds), ("interval_seconds", c.interval_seconds), ("timeout_seconds", c.timeout_seconds)])
}

/// Checks the strings of a FrameworkInfo that reach agents (ID, user);
/// `field` is where the FrameworkInfo sits in the call.
pub(crate) fn framework_info(field: &str, info: &FrameworkInfo) -> Result<(), String> {
    if let Some(id) = info.id.as_ref().filter(|id| !id.value.is_empty()) {
        id_field(&format!("{field}.id"), &id.value)?;
    }
    no_nul(&format!("{field}.user"), &info.user)?;
    no_nul(&format!("{field}.name"), &info.name)?;
    if let Some(p) = &info.principal {
        no_nul(&format!("{field}.principal"), p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::{environment, Environment, TaskId};

    #[test]
    fn bad_checks_are_refused_naming_the_field() {
        use mezzo_proto::mesos::v1::health_check::{HttpCheckInfo, TcpCheckInfo};
        let task = |h: Option<HealthCheck>, c: Option<CheckInfo>| TaskInfo {
            task_id: TaskId { value: "t".into() },
            agent_id: mezzo_proto::mesos::v1::AgentId { value: "a".into() },
            health_check: h,
            check: c,
            ..Default::default()
        };
        let http = |port, path: Option<&str>, interval| HealthCheck {
            r#type: Some(health_check::Type::Http as i32),
            http: Some(HttpCheckInfo { port, path: path.map(Into::into), ..Default::default() }),
            interval_seconds: interval,
            ..Default::default()
        };
        assert!(super::task(&task(Some(http(80, Some("/h"), Some(0.01))), None)).is_ok());
        for (h, field) in [
            (http(80, None, Some(-1.0)), "health_check.interval_seconds"),
            (http(80, None, Some(f64::NAN)), "health_check.interval_seconds"),
            (http(0, None, None), "health_check.http.port"),
            (http(80, Some("h"), None), "health_check.http.path"),
            (HealthCheck { r#type: Some(health_check::Type::Http as i32), ..Default::default() }, "health_check.http"),
            (HealthCheck { r#type: Some(health_check::Type::Tcp as i32), tcp: Some(TcpCheckInfo { port: 70000, ..Default::default() }), ..Default::default() }, "health_check.tcp.port"),
            (HealthCheck { r#type: Some(health_check::Type::Command as i32), ..Default::default() }, "health_check.command"),
            (HealthCheck { r#type: Some(42), ..Default::default() }, "health_check.type"),
            (HealthCheck { ..Default::default() }, "health_check.type"),
        ] {
            let e = super::task(&task(Some(h), None)).unwrap_err();
            assert!(e.starts_with("Task uses invalid health check: ") && e.contains(&format!("'{field}")), "{field}: {e}");
        }
        let c = CheckInfo { r#type: Some(check_info::Type::Tcp as i32), tcp: Some(check_info::Tcp { port: 0 }), ..Default::default() };
        let e = super::task(&task(None, Some(c))).unwrap_err();
        assert!(e.starts_with("Task uses invalid check: ") && e.contains("'check.tcp.port'"), "{e}");
        let c = CheckInfo { r#type: Some(check_info::Type::Tcp as i32), tcp: Some(check_info::Tcp { port: 1 }), timeout_seconds: Some(-2.0), ..Default::default() };
        assert!(super::task(&task(None, Some(c))).unwrap_err().contains("'check.timeout_seconds'"));
    }

    #[test]
    fn ids_follow_mesos_rules() {
        assert!(validate_id("task-1").is_ok());
        assert!(validate_id(&"a".repeat(255)).is_ok());
        assert!(validate_id(&"a".repeat(256)).is_err());
        assert!(validate_id("").is_err());
        assert!(validate_id(".").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("../..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("a b").is_err());
        assert!(validate_id("a\0b").is_err());
        assert!(validate_id("a\u{7}b").is_err());
        assert!(validate_id("..x").is_ok());
    }

    #[test]
    fn messages_name_the_field_and_cut_the_value() {
        let e = id_field("framework_id", &"x".repeat(10_000)).unwrap_err();
        assert!(e.starts_with("'framework_id'"), "{e}");
        assert!(e.len() < 300, "{e}");
        let e = id_field("task_id", "a\0b").unwrap_err();
        assert!(e.contains("a\\0b"), "{e}");
    }

    #[test]
    fn nul_in_environment_is_refused() {
        let mut t = TaskInfo {
            task_id: TaskId { value: "t".into() },
            agent_id: mezzo_proto::mesos::v1::AgentId { value: "a".into() },
            command: Some(CommandInfo {
                value: Some("true".into()),
                environment: Some(Environment {
                    variables: vec![environment::Variable {
                        name: "X".into(),
                        value: Some("a\0b".into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = task(&t).unwrap_err();
        assert!(e.contains("'command.environment.variables[0].value'"), "{e}");
        t.command.as_mut().unwrap().environment = None;
        assert!(task(&t).is_ok());
        t.command.as_mut().unwrap().arguments = vec!["ok".into(), "b\0".into()];
        assert!(task(&t).unwrap_err().contains("'command.arguments[1]'"));
    }
}
