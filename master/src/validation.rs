//! Validation of what schedulers send, at the edge, before anything is
//! offered, consumed or sent to an agent.
//!
//! IDs follow Mesos's `common::validation::validateID`: not empty, at most
//! `NAME_MAX` (255) bytes, not `.` or `..`, no `/`, no whitespace and no
//! control character (NUL included): they become path components on agents.
//! Strings that reach an `exec` (command, arguments, environment, user, ...)
//! must not contain NUL, which cannot cross `execve`. Every message names the
//! offending field.

use mezzo_proto::mesos::v1::{CommandInfo, ContainerInfo, ExecutorInfo, FrameworkInfo, TaskInfo};

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
    Ok(())
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
