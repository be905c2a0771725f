//! `mezzo execute`: run one task through the master, like `mesos-execute`.

use crate::scheduler::{MasterSource, Scheduler};
use crate::task::{build_task, offer_fits, TaskSpec};
use anyhow::{Context, Result};
use mezzo_proto::mesos::v1::scheduler::{call, event, Event};
use mezzo_proto::mesos::v1::{
    framework_info, task_status, Filters, Offer, OfferId, TaskInfo, TaskState, TaskStatus,
};
use std::io::Write;
use std::time::Duration;
use tokio::time::Instant;

/// Framework name `mezzo execute` subscribes with.
pub const FRAMEWORK_NAME: &str = "mezzo-execute";
/// How long declined offers stay away (Mesos's default filter).
const DECLINE_REFUSE_SECONDS: f64 = 5.0;
/// Bound on fetching the task's stdout from the agent.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `mezzo execute` needs.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// `--master`, as `host:port` or a URL.
    pub master: String,
    pub task: TaskSpec,
    /// Kill the task this long after TASK_RUNNING.
    pub kill_after: Option<Duration>,
    /// Give up (and tear down) after this long.
    pub timeout: Duration,
    /// Ask the agent to checkpoint the task (`FrameworkInfo.checkpoint`).
    pub checkpoint: bool,
}

/// The framework `mezzo execute` registers.
pub fn framework_info(checkpoint: bool) -> mezzo_proto::mesos::v1::FrameworkInfo {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".to_string());
    mezzo_proto::mesos::v1::FrameworkInfo {
        user,
        name: FRAMEWORK_NAME.to_string(),
        checkpoint: Some(checkpoint),
        capabilities: vec![framework_info::Capability {
            r#type: Some(framework_info::capability::Type::TaskKillingState as i32),
        }],
        ..Default::default()
    }
}

/// One line per status update, plus `message`/`reason` lines when set.
pub fn format_update(status: &TaskStatus) -> String {
    let mut out = format!(
        "Received status update {} for task '{}' (source: {})",
        status.state().as_str_name(),
        status.task_id.value,
        status.source().as_str_name()
    );
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        out.push_str(&format!("\n  message: {message}"));
    }
    if status.reason.is_some() {
        out.push_str(&format!("\n  reason: {}", status.reason().as_str_name()));
    }
    out
}

/// `http://ip:port` of the agent that made `offer`; from `offer.url` as
/// Mesos fills it, else the hostname on the default agent port.
pub fn agent_base_url(offer: &Offer) -> String {
    match &offer.url {
        Some(url) => {
            let address = &url.address;
            let host = address.ip.clone().or_else(|| address.hostname.clone()).unwrap_or_else(|| offer.hostname.clone());
            format!("{}://{host}:{}", if url.scheme.is_empty() { "http" } else { &url.scheme }, address.port)
        }
        None => format!("http://{}:5051", offer.hostname),
    }
}

/// URL of the task's stdout in its sandbox, served by the agent's files
/// endpoint (for a command task the executor id is the task id).
pub fn stdout_url(agent_base: &str, framework_id: &str, task_id: &str) -> Result<reqwest::Url> {
    let path = format!("/frameworks/{framework_id}/executors/{task_id}/runs/latest/stdout");
    let mut url = reqwest::Url::parse(&format!("{agent_base}/files/download")).context("agent address")?;
    url.query_pairs_mut().append_pair("path", &path);
    Ok(url)
}

/// The launched task and where it went.
struct Launched {
    task: TaskInfo,
    agent_base: String,
    accepted_at: Instant,
}

/// Runs the task; returns the process exit code (0 only for TASK_FINISHED).
pub async fn execute(options: ExecuteOptions) -> Result<i32> {
    let deadline = Instant::now() + options.timeout;
    let source = MasterSource::new(&options.master)?;
    let mut base = source.base_url(options.timeout).await?;
    let mut framework = framework_info(options.checkpoint);
    if source.is_group() {
        // The framework outlives a failover of the leading master (it re-subscribes to the next one).
        framework.failover_timeout = Some(options.timeout.as_secs_f64());
    }
    let (mut scheduler, mut events) = Scheduler::subscribe(&base, framework.clone(), options.timeout)
        .await
        .with_context(|| format!("subscribing to the master at {base}"))?;
    println!("Subscribed with ID {}", scheduler.framework_id().value);

    let mut launched: Option<Launched> = None;
    let mut kill_at: Option<Instant> = None;
    let mut seen_running = false;
    let code = loop {
        let kill_deadline = kill_at;
        tokio::select! {
            event = events.recv() => {
                let event = match event {
                    Some(Ok(event)) => event,
                    lost => {
                        let reason = match lost {
                            Some(Err(reason)) => reason,
                            _ => "event stream ended".to_string(),
                        };
                        eprintln!("Lost the master: {reason}");
                        if !source.is_group() {
                            break 1;
                        }
                        // A group: follow whoever leads it now (the detector names the dead
                        // leader until its session ends; a newly elected master answers 503
                        // until it has recovered), as the same framework.
                        framework.id = Some(scheduler.framework_id().clone());
                        (scheduler, events) = loop {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let attempt = match source.base_url(left).await {
                                Ok(url) => {
                                    base = url;
                                    Scheduler::subscribe(&base, framework.clone(), left).await
                                }
                                Err(e) => Err(e),
                            };
                            match attempt {
                                Ok(subscribed) => break subscribed,
                                Err(e) if left > Duration::from_millis(100) => {
                                    eprintln!("Re-subscribing to the master at {base}: {e:#}; retrying");
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => return Err(e.context(format!("re-subscribing to the master at {base}"))),
                            }
                        };
                        eprintln!("Following the leading master at {base}");
                        if let Some(launched) = &launched {
                            let task = &launched.task;
                            scheduler
                                .send(call::Type::Reconcile, |c| {
                                    c.reconcile = Some(call::Reconcile {
                                        tasks: vec![call::reconcile::Task { task_id: task.task_id.clone(), agent_id: Some(task.agent_id.clone()) }],
                                    })
                                })
                                .await?;
                        }
                        continue;
                    }
                };
                let step = match handle_event(&scheduler, &options, event, &mut launched, &mut seen_running).await {
                    Ok(step) => step,
                    // The leader may be gone: its stream ends next, and the next leader gets
                    // the agent's unacknowledged updates again.
                    Err(e) if source.is_group() => {
                        eprintln!("{e:#}");
                        Step::Continue
                    }
                    Err(e) => return Err(e),
                };
                match step {
                    Step::Continue => {}
                    Step::Running => {
                        if let Some(after) = options.kill_after {
                            kill_at = Some(Instant::now() + after);
                        }
                    }
                    Step::Done(code) => break code,
                }
            }
            _ = sleep_until_some(kill_deadline) => {
                kill_at = None;
                if let Some(launched) = &launched {
                    println!("Killing task '{}'", launched.task.task_id.value);
                    let task = &launched.task;
                    scheduler
                        .send(call::Type::Kill, |c| {
                            c.kill = Some(call::Kill {
                                task_id: task.task_id.clone(),
                                agent_id: Some(task.agent_id.clone()),
                                kill_policy: None,
                            })
                        })
                        .await?;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                eprintln!(
                    "Timed out after {}s {}",
                    options.timeout.as_secs(),
                    if launched.is_some() { "waiting for the task to finish" } else { "waiting for a fitting offer" }
                );
                break 1;
            }
        }
    };
    if let Err(e) = scheduler.send(call::Type::Teardown, |_| {}).await {
        eprintln!("TEARDOWN failed: {e:#}");
    }
    Ok(code)
}

enum Step {
    Continue,
    Running,
    Done(i32),
}

async fn handle_event(
    scheduler: &Scheduler,
    options: &ExecuteOptions,
    event: Event,
    launched: &mut Option<Launched>,
    seen_running: &mut bool,
) -> Result<Step> {
    match event.r#type() {
        event::Type::Offers => {
            let offers = event.offers.map(|o| o.offers).unwrap_or_default();
            let mut decline: Vec<OfferId> = Vec::new();
            for offer in offers {
                if launched.is_none() && offer_fits(&offer, &options.task) {
                    let task = build_task(&options.task, &offer);
                    let accepted_at = Instant::now();
                    let operation = mezzo_proto::mesos::v1::offer::Operation {
                        r#type: Some(mezzo_proto::mesos::v1::offer::operation::Type::Launch as i32),
                        launch: Some(mezzo_proto::mesos::v1::offer::operation::Launch {
                            task_infos: vec![task.clone()],
                        }),
                        ..Default::default()
                    };
                    let offer_id = offer.id.clone();
                    scheduler
                        .send(call::Type::Accept, |c| {
                            c.accept = Some(call::Accept {
                                offer_ids: vec![offer_id],
                                operations: vec![operation],
                                filters: Some(Filters { refuse_seconds: Some(DECLINE_REFUSE_SECONDS) }),
                            })
                        })
                        .await?;
                    println!("Submitted task '{}' to agent '{}'", task.task_id.value, offer.agent_id.value);
                    *launched = Some(Launched { task, agent_base: agent_base_url(&offer), accepted_at });
                } else {
                    decline.push(offer.id);
                }
            }
            if !decline.is_empty() {
                scheduler
                    .send(call::Type::Decline, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: decline,
                            filters: Some(Filters { refuse_seconds: Some(DECLINE_REFUSE_SECONDS) }),
                        })
                    })
                    .await?;
            }
            Ok(Step::Continue)
        }
        event::Type::Update => {
            let Some(status) = event.update.map(|u| u.status) else {
                return Ok(Step::Continue);
            };
            on_update(scheduler, status, launched, seen_running).await
        }
        event::Type::Error => {
            let message = event.error.map(|e| e.message).unwrap_or_default();
            eprintln!("Received an ERROR event: {message}");
            Ok(Step::Done(1))
        }
        event::Type::Failure => {
            if let Some(failure) = event.failure {
                println!(
                    "Received a FAILURE event: agent {:?}, executor {:?}, status {:?}",
                    failure.agent_id.map(|a| a.value),
                    failure.executor_id.map(|e| e.value),
                    failure.status
                );
            }
            Ok(Step::Continue)
        }
        // HEARTBEAT, RESCIND (we only hold the offer we accepted) and the rest.
        _ => Ok(Step::Continue),
    }
}

async fn on_update(
    scheduler: &Scheduler,
    status: TaskStatus,
    launched: &mut Option<Launched>,
    seen_running: &mut bool,
) -> Result<Step> {
    println!("{}", format_update(&status));
    let ours = launched.as_ref().filter(|l| l.task.task_id == status.task_id);
    if let Some(uuid) = status.uuid.clone().filter(|u| !u.is_empty()) {
        // Updates without a uuid (master-generated) are never acknowledged.
        let agent_id = status
            .agent_id
            .clone()
            .or_else(|| ours.map(|l| l.task.agent_id.clone()))
            .context("status update with a uuid but no agent id")?;
        let task_id = status.task_id.clone();
        scheduler
            .send(call::Type::Acknowledge, |c| {
                c.acknowledge = Some(call::Acknowledge { agent_id, task_id, uuid })
            })
            .await?;
    }
    let Some(ours) = ours else {
        return Ok(Step::Continue);
    };
    let state = status.state();
    if state == TaskState::TaskRunning && !*seen_running {
        *seen_running = true;
        println!("ACCEPT to TASK_RUNNING: {} ms", ours.accepted_at.elapsed().as_millis());
        return Ok(Step::Running);
    }
    if !state.is_terminal() {
        return Ok(Step::Continue);
    }
    // A task that never reached an executor has no sandbox to read.
    if status.source() != task_status::Source::Master {
        print_stdout(&ours.agent_base, &scheduler.framework_id().value, &ours.task.task_id.value).await;
    }
    Ok(Step::Done(if state == TaskState::TaskFinished { 0 } else { 1 }))
}

/// Prints the task's stdout from its sandbox; a failure is only reported.
async fn print_stdout(agent_base: &str, framework_id: &str, task_id: &str) {
    let fetched = async {
        let url = stdout_url(agent_base, framework_id, task_id)?;
        let response = reqwest::Client::new()
            .get(url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("GET {url}: agent answered {status}");
        }
        response.bytes().await.context("reading the task's stdout")
    }
    .await;
    match fetched {
        Ok(bytes) => {
            println!("--- stdout of task '{task_id}' ---");
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
            let _ = writeln!(out, "--- end of stdout ---");
            let _ = out.flush();
        }
        Err(e) => eprintln!("Could not fetch the task's stdout: {e:#}"),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mezzo_proto::mesos::v1::{Address, AgentId, FrameworkId, TaskId, Url};

    #[test]
    fn update_line_shows_state_task_source_message_and_reason() {
        let mut status = TaskStatus {
            task_id: TaskId { value: "hi".into() },
            state: TaskState::TaskRunning as i32,
            source: Some(task_status::Source::Executor as i32),
            ..Default::default()
        };
        assert_eq!(format_update(&status), "Received status update TASK_RUNNING for task 'hi' (source: SOURCE_EXECUTOR)");
        status.state = TaskState::TaskFailed as i32;
        status.message = Some("Command exited with status 3".into());
        status.reason = Some(task_status::Reason::ContainerLaunchFailed as i32);
        assert_eq!(
            format_update(&status),
            "Received status update TASK_FAILED for task 'hi' (source: SOURCE_EXECUTOR)\n  message: Command exited with status 3\n  reason: REASON_CONTAINER_LAUNCH_FAILED"
        );
    }

    #[test]
    fn agent_address_comes_from_the_offer_url() {
        let mut offer = Offer {
            id: OfferId { value: "O".into() },
            framework_id: FrameworkId { value: "F".into() },
            agent_id: AgentId { value: "S".into() },
            hostname: "node1".into(),
            ..Default::default()
        };
        assert_eq!(agent_base_url(&offer), "http://node1:5051");
        offer.url = Some(Url {
            scheme: "http".into(),
            address: Address { hostname: Some("node1".into()), ip: Some("10.0.0.7".into()), port: 5052 },
            ..Default::default()
        });
        assert_eq!(agent_base_url(&offer), "http://10.0.0.7:5052");
    }

    #[test]
    fn stdout_url_points_at_the_latest_run_of_the_task_executor() {
        let url = stdout_url("http://10.0.0.7:5051", "fw-0001", "hi").unwrap();
        assert_eq!(
            url.as_str(),
            "http://10.0.0.7:5051/files/download?path=%2Fframeworks%2Ffw-0001%2Fexecutors%2Fhi%2Fruns%2Flatest%2Fstdout"
        );
    }

    #[test]
    fn framework_declares_task_killing_state() {
        let info = framework_info(false);
        assert_eq!(info.name, FRAMEWORK_NAME);
        assert!(!info.user.is_empty());
        assert!(info
            .capabilities
            .iter()
            .any(|c| c.r#type() == framework_info::capability::Type::TaskKillingState));
    }
}
