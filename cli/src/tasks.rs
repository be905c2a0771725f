//! `mezzo task list` and `mezzo task log`: tasks as the master's `/state`
//! shows them, and a task's output read through its agent's files API.
//!
//! `task list` prints Mesos's CLI table (`ID  State  Framework ID  Executor ID`,
//! running tasks unless `--all`) with the agent and the sandbox added; the
//! sandbox comes from the agent's `/state` (the executor's `directory`).
//! `task log` finds the task's agent and sandbox the same way and reads
//! `stdout` or `stderr` (the task's own, `tasks/<task id>/`, when it has a
//! sandbox inside its executor's, as Mesos's default executor lays them
//! out) with the agent operator API's `READ_FILE` in
//! protobuf, which carries the file's bytes exactly (the JSON of
//! `/files/read` holds text, so bytes that are not UTF-8 could not be told
//! apart); with `--follow` it polls until the task is terminal and the file
//! is read to its end.

use crate::scheduler::MasterSource;
use anyhow::{bail, Context, Result};
use mezzo_proto::codec::{decode, encode, ContentType};
use mezzo_proto::mesos::v1::agent::{call, Call};
use mezzo_proto::mesos::v1::agent::Response as AgentResponse;
use futures::StreamExt;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often `--follow` looks for more output when there was none.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often `--follow` asks the agent whether the task ended, while it writes nothing.
const STATE_POLL: Duration = Duration::from_millis(500);

/// Agents whose `/state` `task list` asks for at the same time.
const AGENTS_AT_ONCE: usize = 16;

/// Task states after which a task writes nothing more.
const TERMINAL_STATES: [&str; 9] = [
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNKNOWN",
];

/// Whether `state` (a `TaskState` name) is terminal.
pub fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

/// HTTP basic credentials for the master's and the agents' read-only
/// endpoints (`--authenticate_http_readonly`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub principal: Option<String>,
    pub secret: Option<String>,
}

/// Reads the master's and agents' JSON endpoints with the same credentials and timeout.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    credentials: Credentials,
    timeout: Duration,
}

impl Client {
    pub fn new(credentials: Credentials, timeout: Duration) -> Result<Client> {
        if credentials.principal.is_none() && credentials.secret.is_some() {
            bail!("--secret needs --principal");
        }
        let http = reqwest::Client::builder().timeout(timeout).build().context("HTTP client")?;
        Ok(Client { http, credentials, timeout })
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials.principal {
            Some(p) => request.basic_auth(p, self.credentials.secret.as_deref()),
            None => request,
        }
    }

    /// GET `url` as JSON.
    pub async fn get_json(&self, url: &str) -> Result<Value> {
        let response = self.authorized(self.http.get(url)).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("GET {url}: {status}: {}", body.trim());
        }
        let body = response.bytes().await.with_context(|| format!("GET {url}: reading the body"))?;
        serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))
    }

    /// One call of an agent's operator API, in protobuf.
    pub async fn agent_call(&self, agent: &str, call: &Call) -> Result<AgentResponse> {
        let url = format!("http://{agent}/api/v1");
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, ContentType::Protobuf.mime())
            .header(reqwest::header::ACCEPT, ContentType::Protobuf.mime())
            .body(encode(call, ContentType::Protobuf));
        let response = self.authorized(request).send().await.with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let body = response.bytes().await.with_context(|| format!("POST {url}: reading the body"))?;
        if !status.is_success() {
            bail!("POST {url} ({}): {status}: {}", call.r#type().as_str_name(), String::from_utf8_lossy(&body).trim());
        }
        decode(&body, ContentType::Protobuf).with_context(|| format!("POST {url}: not an agent Response"))
    }
}

/// One task as the master's `/state` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct MasterTask {
    pub id: String,
    pub state: String,
    pub framework_id: String,
    /// Empty for a command task, as in Mesos.
    pub executor_id: String,
    pub agent_id: String,
    /// `ip:port` of its agent, when the master knows the agent.
    pub agent: Option<String>,
}

/// `host:port` of an agent in the master's `slaves`: from its `pid`
/// (`slave(1)@ip:port`), else its hostname and port.
fn agent_endpoint(agent: &Value) -> Option<String> {
    if let Some(at) = agent["pid"].as_str().and_then(|p| p.split_once('@')).map(|(_, a)| a) {
        if !at.is_empty() {
            return Some(at.to_string());
        }
    }
    let host = agent["hostname"].as_str()?;
    Some(format!("{host}:{}", agent["port"].as_u64().unwrap_or(5051)))
}

/// Every task in the master's `/state` (active, unreachable and completed,
/// of active and completed frameworks).
pub fn master_tasks(state: &Value) -> Vec<MasterTask> {
    let agents: std::collections::HashMap<&str, Option<String>> = state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_str()?, agent_endpoint(a))))
        .collect();
    let mut out = Vec::new();
    for list in ["frameworks", "completed_frameworks"] {
        for framework in state[list].as_array().into_iter().flatten() {
            for tasks in ["tasks", "unreachable_tasks", "completed_tasks"] {
                for t in framework[tasks].as_array().into_iter().flatten() {
                    let text = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    // Mesos's CLI takes the latest status; the `state` field says the same.
                    let state = t["state"]
                        .as_str()
                        .or_else(|| t["statuses"].as_array().and_then(|s| s.last()).and_then(|s| s["state"].as_str()))
                        .unwrap_or("UNKNOWN")
                        .to_string();
                    let agent_id = t["slave_id"].as_str().or(t["agent_id"].as_str()).unwrap_or_default().to_string();
                    let agent = agents.get(agent_id.as_str()).cloned().flatten();
                    out.push(MasterTask {
                        id: text("id"),
                        state,
                        framework_id: text("framework_id"),
                        executor_id: text("executor_id"),
                        agent_id,
                        agent,
                    });
                }
            }
        }
    }
    out
}

/// Where a task runs, as its agent's `/state` says.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTask {
    pub executor_id: String,
    /// The sandbox (host path) of the executor's run that holds the task.
    pub directory: String,
    pub state: String,
}

/// The task `task_id` of `framework_id` in an agent's `/state`; the newest
/// run first (running executors before completed ones).
pub fn agent_task(state: &Value, framework_id: &str, task_id: &str) -> Option<AgentTask> {
    let framework = state["frameworks"].as_array()?.iter().find(|f| f["id"].as_str() == Some(framework_id))?;
    let executors = ["executors", "completed_executors"].into_iter().flat_map(|k| framework[k].as_array().into_iter().flatten());
    // Completed executors are kept oldest first.
    let executors: Vec<&Value> = executors.collect();
    let running = framework["executors"].as_array().map(Vec::len).unwrap_or(0);
    let order = (0..running).chain((running..executors.len()).rev());
    for i in order {
        let e = executors[i];
        let task = ["tasks", "queued_tasks", "completed_tasks"]
            .into_iter()
            .flat_map(|k| e[k].as_array().into_iter().flatten())
            .find(|t| t["id"].as_str() == Some(task_id));
        if let Some(task) = task {
            return Some(AgentTask {
                executor_id: e["id"].as_str().unwrap_or_default().to_string(),
                directory: e["directory"].as_str().unwrap_or_default().to_string(),
                state: task["state"].as_str().unwrap_or("UNKNOWN").to_string(),
            });
        }
    }
    None
}

/// The master's `/state`, from the leader named by `--master`.
async fn master_state(client: &Client, master: &str) -> Result<Value> {
    let base = MasterSource::new(master)?.base_url(client.timeout).await?;
    client.get_json(&format!("{base}/state")).await
}

/// Mesos's CLI table: each column as wide as its widest cell plus two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s: String = cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count() + 2))).collect();
        s.truncate(s.trim_end().len());
        s
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// `mezzo task list`: the cluster's running tasks (all with `all`), one
/// line each with its state, framework, executor, agent and sandbox.
pub async fn list(master: &str, client: &Client, all: bool) -> Result<String> {
    let state = master_state(client, master).await?;
    let tasks: Vec<MasterTask> = master_tasks(&state).into_iter().filter(|t| all || t.state == "TASK_RUNNING").collect();
    if tasks.is_empty() {
        return Ok(if all { "There are no tasks in the cluster.".into() } else { "There are no tasks running in the cluster.".into() });
    }
    // Each agent's `/state` once, a few at a time; an agent that does not answer leaves its sandboxes unknown.
    let mut agents: Vec<String> = tasks.iter().filter_map(|t| t.agent.clone()).collect();
    agents.sort();
    agents.dedup();
    let states: Vec<Result<Value>> = futures::stream::iter(agents.iter())
        .map(|a| async move { client.get_json(&format!("http://{a}/state")).await })
        .buffered(AGENTS_AT_ONCE)
        .collect()
        .await;
    let agent_states: std::collections::HashMap<&str, Value> = agents
        .iter()
        .zip(states)
        .filter_map(|(a, s)| match s {
            Ok(s) => Some((a.as_str(), s)),
            Err(e) => {
                tracing::warn!(agent = %a, error = %e, "no sandboxes from this agent");
                None
            }
        })
        .collect();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let on_agent = t.agent.as_deref().and_then(|a| agent_states.get(a)).and_then(|s| agent_task(s, &t.framework_id, &t.id));
            let executor = match (&t.executor_id, &on_agent) {
                (e, Some(a)) if e.is_empty() => a.executor_id.clone(),
                (e, _) => e.clone(),
            };
            let sandbox = on_agent.map(|a| a.directory).filter(|d| !d.is_empty()).unwrap_or_else(|| "-".into());
            vec![t.id.clone(), t.state.clone(), t.framework_id.clone(), executor, t.agent_id.clone(), sandbox]
        })
        .collect();
    Ok(table(&["ID", "State", "Framework ID", "Executor ID", "Agent ID", "Sandbox"], &rows))
}

/// What `mezzo task log` reads.
pub struct LogOptions {
    pub master: String,
    pub task_id: String,
    /// Picks among tasks of several frameworks with the same id.
    pub framework_id: Option<String>,
    /// `stdout` or `stderr`.
    pub file: String,
    pub follow: bool,
}

/// The one task `options` names, from the master's state.
fn pick_task(tasks: Vec<MasterTask>, options: &LogOptions) -> Result<MasterTask> {
    let mut matching: Vec<MasterTask> = tasks
        .into_iter()
        .filter(|t| t.id == options.task_id && options.framework_id.as_ref().is_none_or(|f| f == &t.framework_id))
        .collect();
    match matching.len() {
        0 => bail!("the master knows no task '{}'", options.task_id),
        1 => Ok(matching.remove(0)),
        _ => {
            let frameworks: Vec<&str> = matching.iter().map(|t| t.framework_id.as_str()).collect();
            bail!("task id '{}' names tasks of several frameworks ({}); say which with --framework", options.task_id, frameworks.join(", "))
        }
    }
}

/// Where the file is and how to ask whether the task ended.
#[derive(Clone)]
struct Located {
    agent: String,
    path: String,
    framework_id: String,
    task_id: String,
}

async fn locate(client: &Client, options: &LogOptions) -> Result<(Located, String)> {
    let state = master_state(client, &options.master).await?;
    let task = pick_task(master_tasks(&state), options)?;
    let Some(agent) = task.agent.clone() else {
        bail!("task '{}' is on agent '{}', which the master does not list (it may be unreachable)", task.id, task.agent_id);
    };
    let agent_state = client.get_json(&format!("http://{agent}/state")).await?;
    let (sandbox, state) = match agent_task(&agent_state, &task.framework_id, &task.id) {
        Some(a) if !a.directory.is_empty() => (a.directory, a.state),
        // Not (or no longer) known to the agent: its executor's latest run, Mesos's virtual path.
        _ => {
            let executor = if task.executor_id.is_empty() { &task.id } else { &task.executor_id };
            (format!("/frameworks/{}/executors/{executor}/runs/latest", task.framework_id), task.state.clone())
        }
    };
    let sandbox = sandbox.trim_end_matches('/');
    let mut at = Located { agent, path: format!("{sandbox}/{}", options.file), framework_id: task.framework_id, task_id: task.id };
    // A task of Mesos's default executor has its own sandbox in the executor's, `tasks/<task id>`: its output is there.
    let own = Located { path: format!("{sandbox}/tasks/{}/{}", at.task_id, options.file), ..at.clone() };
    if read_file_size(client, &own).await.is_ok() {
        at = own;
    }
    Ok((at, state))
}

/// `READ_FILE` with length 0: the file's size, or the agent's refusal (404 when it is not there).
async fn read_file_size(client: &Client, at: &Located) -> Result<u64> {
    let call = Call {
        r#type: Some(call::Type::ReadFile as i32),
        read_file: Some(call::ReadFile { path: at.path.clone(), offset: 0, length: Some(0) }),
        ..Default::default()
    };
    let response = client.agent_call(&at.agent, &call).await?;
    Ok(response.read_file.context("the agent's READ_FILE response has no 'read_file'")?.size)
}

/// Whether the task ended, as its agent says (the master when the agent no longer knows it).
async fn ended(client: &Client, master: &str, at: &Located) -> Result<bool> {
    let agent_state = client.get_json(&format!("http://{}/state", at.agent)).await?;
    if let Some(task) = agent_task(&agent_state, &at.framework_id, &at.task_id) {
        return Ok(is_terminal(&task.state));
    }
    let state = master_state(client, master).await?;
    let task = master_tasks(&state).into_iter().find(|t| t.id == at.task_id && t.framework_id == at.framework_id);
    Ok(task.is_none_or(|t| is_terminal(&t.state)))
}

/// `READ_FILE` of up to 16 pages at `offset`: the file's size and the bytes.
async fn read_file(client: &Client, at: &Located, offset: u64) -> Result<(u64, Vec<u8>)> {
    let call = Call {
        r#type: Some(call::Type::ReadFile as i32),
        read_file: Some(call::ReadFile { path: at.path.clone(), offset, length: None }),
        ..Default::default()
    };
    let response = client.agent_call(&at.agent, &call).await?;
    let read = response.read_file.context("the agent's READ_FILE response has no 'read_file'")?;
    Ok((read.size, read.data))
}

/// `mezzo task log`: writes the task's file to `out`; with `follow`, keeps
/// writing what the task adds until it is terminal and the file is read to
/// its end (or `stop` resolves, e.g. on Ctrl-C).
pub async fn log(options: LogOptions, client: &Client, out: &mut (dyn Write + Send), stop: impl std::future::Future<Output = ()>) -> Result<()> {
    if options.file != "stdout" && options.file != "stderr" {
        bail!("the file to read is 'stdout' or 'stderr', not '{}'", options.file);
    }
    let (at, state) = locate(client, &options).await?;
    tokio::pin!(stop);
    let mut offset = 0u64;
    // The task had ended when the file was last found read to its end.
    let mut terminal = is_terminal(&state);
    let mut last_state_check = Instant::now();
    loop {
        let (size, data) = tokio::select! {
            r = read_file(client, &at, offset) => r?,
            () = &mut stop => return Ok(()),
        };
        if !data.is_empty() {
            // A reader that went away (`| head`) ends the log, as it ends `tail`.
            match out.write_all(&data).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                r => r?,
            }
            offset += data.len() as u64;
            continue;
        }
        if size < offset {
            // Truncated (or rotated) under us: start again from its start.
            offset = 0;
            continue;
        }
        if !options.follow || terminal {
            return Ok(());
        }
        if last_state_check.elapsed() >= STATE_POLL {
            last_state_check = Instant::now();
            // Read once more after the task is seen ended: it may have written just before.
            terminal = ended(client, &options.master, &at).await?;
            if terminal {
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn master_state() -> Value {
        json!({
            "slaves": [{"id": "A1", "pid": "slave(1)@10.0.0.5:5051", "hostname": "h", "port": 5051}],
            "frameworks": [{
                "id": "F1",
                "tasks": [
                    {"id": "web", "state": "TASK_RUNNING", "framework_id": "F1", "executor_id": "", "slave_id": "A1"},
                    {"id": "stage", "state": "TASK_STAGING", "framework_id": "F1", "executor_id": "E", "slave_id": "A2"}
                ],
                "completed_tasks": [{"id": "job", "framework_id": "F1", "executor_id": "", "slave_id": "A1", "statuses": [{"state": "TASK_RUNNING"}, {"state": "TASK_FINISHED"}]}]
            }],
            "completed_frameworks": [{"id": "F0", "tasks": [], "completed_tasks": [{"id": "web", "state": "TASK_KILLED", "framework_id": "F0", "slave_id": "A1"}]}]
        })
    }

    #[test]
    fn tasks_of_the_masters_state_with_their_agents() {
        let tasks = master_tasks(&master_state());
        let ids: Vec<(&str, &str, &str)> = tasks.iter().map(|t| (t.id.as_str(), t.framework_id.as_str(), t.state.as_str())).collect();
        assert_eq!(
            ids,
            [("web", "F1", "TASK_RUNNING"), ("stage", "F1", "TASK_STAGING"), ("job", "F1", "TASK_FINISHED"), ("web", "F0", "TASK_KILLED")]
        );
        assert_eq!(tasks[0].agent.as_deref(), Some("10.0.0.5:5051"));
        assert_eq!(tasks[1].agent, None, "an agent the master does not list");
    }

    #[test]
    fn a_task_id_of_several_frameworks_needs_framework() {
        let options = |framework: Option<&str>| LogOptions {
            master: String::new(),
            task_id: "web".into(),
            framework_id: framework.map(String::from),
            file: "stdout".into(),
            follow: false,
        };
        let err = pick_task(master_tasks(&master_state()), &options(None)).unwrap_err().to_string();
        assert!(err.contains("F1, F0") && err.contains("--framework"), "{err}");
        assert_eq!(pick_task(master_tasks(&master_state()), &options(Some("F0"))).unwrap().state, "TASK_KILLED");
        assert!(pick_task(master_tasks(&master_state()), &LogOptions { task_id: "nope".into(), ..options(None) }).is_err());
    }

    #[test]
    fn the_newest_run_holding_the_task_gives_its_sandbox() {
        let state = json!({"frameworks": [{
            "id": "F1",
            "executors": [{"id": "E", "directory": "/w/runs/c3", "tasks": [{"id": "t2", "state": "TASK_RUNNING"}], "queued_tasks": [], "completed_tasks": []}],
            "completed_executors": [
                {"id": "E", "directory": "/w/runs/c1", "tasks": [], "completed_tasks": [{"id": "t1", "state": "TASK_FINISHED"}]},
                {"id": "E", "directory": "/w/runs/c2", "tasks": [], "completed_tasks": [{"id": "t1", "state": "TASK_FAILED"}]}
            ]
        }]});
        let t = agent_task(&state, "F1", "t2").unwrap();
        assert_eq!((t.directory.as_str(), t.state.as_str()), ("/w/runs/c3", "TASK_RUNNING"));
        let t = agent_task(&state, "F1", "t1").unwrap();
        assert_eq!((t.directory.as_str(), t.state.as_str()), ("/w/runs/c2", "TASK_FAILED"));
        assert!(agent_task(&state, "F2", "t1").is_none());
    }

    #[test]
    fn tables_pad_as_mesos_cli_does() {
        let rows = vec![vec!["a-long-id".to_string(), "TASK_RUNNING".to_string()]];
        assert_eq!(table(&["ID", "State"], &rows), "ID         State\na-long-id  TASK_RUNNING");
    }

    #[test]
    fn terminal_states() {
        assert!(is_terminal("TASK_FINISHED") && is_terminal("TASK_GONE_BY_OPERATOR"));
        assert!(!is_terminal("TASK_RUNNING") && !is_terminal("TASK_KILLING") && !is_terminal("TASK_UNREACHABLE"));
    }
}
