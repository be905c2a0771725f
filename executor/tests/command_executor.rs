//! The real `mezzo-executor` binary against a fake agent, running real
//! containers prepared by the rust backend. Needs root (cgroups, namespaces).

mod support;

use mezzo_containerizer::ExitStatus;
use mezzo_proto::mesos::v1::{framework_info, task_status, TaskState};
use std::time::{Duration, Instant};
use support::*;

const EXIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_zero_is_finished_after_starting_and_running() {
    let container = TestContainer::prepare("echo hello from the task; exit 0").await;
    let agent = FakeAgent::start(task("t-ok", "exit 0")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-ok", &[]);

    let code = executor.wait(EXIT).await;
    let log = executor.log_text();
    assert_eq!(code, 0, "executor log:\n{log}");
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskFinished],
        "executor log:\n{log}"
    );
    let last = agent.last_update();
    assert_eq!(last.message.as_deref(), Some("Command exited with status 0"));
    assert_eq!(last.source(), task_status::Source::Executor);
    assert_eq!(last.task_id.value, "t-ok");
    assert_eq!(last.executor_id.as_ref().map(|e| e.value.as_str()), Some("t-ok"));
    assert_eq!(last.agent_id.as_ref().map(|a| a.value.as_str()), Some(AGENT_ID));
    assert_eq!(last.uuid.as_ref().map(Vec::len), Some(16));
    assert!(last.timestamp.is_some());
    // Protobuf on every call, as Mesos's command executor speaks.
    let types = agent.state.lock().unwrap().content_types.clone();
    assert!(!types.is_empty() && types.iter().all(|t| *t == mezzo_proto::codec::ContentType::Protobuf), "{types:?}");
    // The task's output lands in the sandbox, the executor's logs do not.
    let stdout = std::fs::read_to_string(container.sandbox.join("stdout")).unwrap();
    assert_eq!(stdout, "hello from the task\n");
    assert!(!stdout.contains("subscrib"));
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_is_failed_with_mesos_message_and_no_reason() {
    let container = TestContainer::prepare("exit 3").await;
    let agent = FakeAgent::start(task("t-fail", "exit 3")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-fail", &[]);

    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskFailed]
    );
    let last = agent.last_update();
    assert_eq!(last.message.as_deref(), Some("Command exited with status 3"));
    assert_eq!(last.reason, None);
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_terminates_with_sigterm_and_reports_killed() {
    let container = TestContainer::prepare("sleep 1000").await;
    let agent = FakeAgent::start(task("t-kill", "sleep 1000")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-kill", &[]);
    agent
        .wait_for("TASK_RUNNING", EXIT, |s| s.updates.iter().any(|u| u.state() == TaskState::TaskRunning))
        .await;

    let grace = Duration::from_secs(2);
    let killed_at = Instant::now();
    agent.send(kill_event("t-kill", Some(grace)));
    agent
        .wait_for("TASK_KILLED", grace + Duration::from_secs(1), |s| {
            s.updates.iter().any(|u| u.state() == TaskState::TaskKilled)
        })
        .await;
    assert!(killed_at.elapsed() < grace + Duration::from_secs(1));
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    // Without TASK_KILLING_STATE the framework gets no TASK_KILLING.
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskKilled]
    );
    // `sh` is the container's pid 1 and outlives its SIGTERMed `sleep`,
    // or dies of SIGTERM itself: either way the task was killed by SIGTERM.
    let message = agent.last_update().message.unwrap_or_default();
    let by_signal = format!("Command {}", ExitStatus::from_signal(libc::SIGTERM));
    assert!(message == by_signal || message == "Command exited with status 143", "{message}");
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_escalates_to_sigkill_after_grace_and_sends_killing_with_capability() {
    // The shell and its sleep ignore SIGTERM: only SIGKILL ends them.
    let container = TestContainer::prepare("trap '' TERM; sleep 1000").await;
    let agent = FakeAgent::start(task("t-stubborn", "sleep 1000")).await;
    agent.with_capability(framework_info::capability::Type::TaskKillingState);
    let mut executor = ExecutorProcess::start(&agent, &container, "t-stubborn", &[]);
    agent
        .wait_for("TASK_RUNNING", EXIT, |s| s.updates.iter().any(|u| u.state() == TaskState::TaskRunning))
        .await;

    let grace = Duration::from_secs(1);
    let killed_at = Instant::now();
    agent.send(kill_event("t-stubborn", Some(grace)));
    agent
        .wait_for("TASK_KILLED", grace + Duration::from_secs(1), |s| {
            s.updates.iter().any(|u| u.state() == TaskState::TaskKilled)
        })
        .await;
    // SIGKILL came only after the grace period.
    assert!(killed_at.elapsed() >= grace);
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskKilling, TaskState::TaskKilled]
    );
    let by_sigkill = format!("Command {}", ExitStatus::from_signal(libc::SIGKILL));
    assert_eq!(agent.last_update().message, Some(by_sigkill));
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_update_is_resent_until_acknowledged() {
    let container = TestContainer::prepare("exit 0").await;
    let agent = FakeAgent::start(task("t-resend", "exit 0")).await;
    // The first UPDATE (TASK_STARTING) gets no ACKNOWLEDGED.
    agent.state.lock().unwrap().withhold_ack_for = vec![TaskState::TaskStarting];
    let mut executor =
        ExecutorProcess::start(&agent, &container, "t-resend", &[("MEZZO_UPDATE_RESEND_INTERVAL", "300ms")]);

    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    let starting: Vec<_> = {
        let state = agent.state.lock().unwrap();
        state.updates.iter().filter(|u| u.state() == TaskState::TaskStarting).cloned().collect()
    };
    assert!(starting.len() >= 2, "TASK_STARTING was not resent: {:?}", starting.len());
    // A resend is the same update: same uuid.
    assert!(starting.iter().all(|u| u.uuid == starting[0].uuid));
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskFinished]
    );
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribes_with_unacknowledged_updates_when_checkpointing() {
    let container = TestContainer::prepare("sleep 1000").await;
    let agent = FakeAgent::start(task("t-resub", "sleep 1000")).await;
    {
        // TASK_RUNNING stays unacknowledged and the stream breaks right after it.
        let mut state = agent.state.lock().unwrap();
        state.withhold_ack_for = vec![TaskState::TaskRunning];
        state.disconnect_after = Some(TaskState::TaskRunning);
    }
    let mut executor = ExecutorProcess::start(
        &agent,
        &container,
        "t-resub",
        &[("MESOS_CHECKPOINT", "1"), ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "200ms")],
    );
    agent.wait_for("second SUBSCRIBE", EXIT, |s| s.subscribes.len() >= 2).await;
    {
        let state = agent.state.lock().unwrap();
        let resubscribe = state.subscribes[1].subscribe.clone().expect("subscribe payload");
        // STARTING was acknowledged on the old stream, RUNNING was not.
        let listed: Vec<TaskState> =
            resubscribe.unacknowledged_updates.iter().map(|u| u.status.state()).collect();
        assert_eq!(listed, vec![TaskState::TaskRunning]);
        let tasks: Vec<&str> = resubscribe.unacknowledged_tasks.iter().map(|t| t.task_id.value.as_str()).collect();
        assert_eq!(tasks, vec!["t-resub"]);
    }
    agent.send(kill_event("t-resub", Some(Duration::from_millis(500))));
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(*agent.distinct_states().last().unwrap(), TaskState::TaskKilled);
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_without_checkpoint_kills_the_task_and_exits_nonzero() {
    let container = TestContainer::prepare("sleep 1000").await;
    let agent = FakeAgent::start(task("t-lost", "sleep 1000")).await;
    agent.state.lock().unwrap().disconnect_after = Some(TaskState::TaskRunning);
    let mut executor = ExecutorProcess::start(&agent, &container, "t-lost", &[]);
    let code = executor.wait(EXIT).await;
    let log = executor.log_text();
    assert_ne!(code, 0, "log:\n{log}");
    assert!(log.contains("does not checkpoint"), "log:\n{log}");
    // The executor killed its container before exiting: the supervisor
    // recorded a SIGKILL.
    let status = std::fs::read_to_string(container.runtime_dir.join("exit_status")).unwrap();
    let status = ExitStatus(status.trim().parse().unwrap());
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_launch_fails_and_first_task_keeps_running() {
    let container = TestContainer::prepare("sleep 1000").await;
    let agent = FakeAgent::start(task("t-first", "sleep 1000")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-first", &[]);
    agent
        .wait_for("TASK_RUNNING", EXIT, |s| s.updates.iter().any(|u| u.state() == TaskState::TaskRunning))
        .await;
    agent.send(launch_event(task("t-second", "true")));
    agent
        .wait_for("TASK_FAILED for the second task", EXIT, |s| {
            s.updates.iter().any(|u| u.task_id.value == "t-second")
        })
        .await;
    let second = agent.state.lock().unwrap().updates.iter().find(|u| u.task_id.value == "t-second").cloned().unwrap();
    assert_eq!(second.state(), TaskState::TaskFailed);
    assert_eq!(
        second.message.as_deref(),
        Some("Attempted to run multiple tasks using a \"command\" executor")
    );
    agent.send(kill_event("t-first", Some(Duration::from_millis(500))));
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(*agent.distinct_states().last().unwrap(), TaskState::TaskKilled);
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprepared_container_is_failed_launch() {
    // A runtime directory with nothing prepared in it: the launcher cannot be made.
    let container = TestContainer::prepare("exit 0").await;
    std::fs::remove_file(container.runtime_dir.join("spec.json")).unwrap();
    let agent = FakeAgent::start(task("t-broken", "exit 0")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-broken", &[]);
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(agent.distinct_states(), vec![TaskState::TaskStarting, TaskState::TaskFailed]);
    let last = agent.last_update();
    let message = last.message.clone().unwrap_or_default();
    assert!(message.starts_with("Failed to launch container: "), "{message}");
    assert_eq!(last.source(), task_status::Source::Executor);
    assert_eq!(last.reason(), task_status::Reason::ContainerLaunchFailed);
    // Without the spec, destroy still finds the backend and cleans up by id.
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_its_token_as_bearer_on_every_call_and_resubscription() {
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJlaWQiOiJ0LXRva2VuIn0.c2lnbmF0dXJl";
    let container = TestContainer::prepare("sleep 1000").await;
    let agent = FakeAgent::start(task("t-token", "sleep 1000")).await;
    // The fake agent refuses any call without the token, as the agent does.
    agent.require_token(TOKEN);
    agent.state.lock().unwrap().disconnect_after = Some(TaskState::TaskRunning);
    let mut executor = ExecutorProcess::start(
        &agent,
        &container,
        "t-token",
        &[
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "200ms"),
            ("MESOS_EXECUTOR_AUTHENTICATION_TOKEN", TOKEN),
        ],
    );
    agent.wait_for("a second SUBSCRIBE after the stream broke", EXIT, |s| s.subscribes.len() >= 2).await;
    agent.send(kill_event("t-token", Some(Duration::from_millis(500))));
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(
        agent.distinct_states(),
        vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskKilled],
        "log:\n{}",
        executor.log_text()
    );
    let calls = agent.state.lock().unwrap().authorizations.clone();
    let kinds: Vec<_> = calls.iter().map(|(kind, _)| *kind).collect();
    assert!(kinds.contains(&mezzo_proto::mesos::v1::executor::call::Type::Subscribe));
    assert!(kinds.contains(&mezzo_proto::mesos::v1::executor::call::Type::Update));
    for (kind, authorization) in &calls {
        assert_eq!(authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()), "{kind:?} call without the token");
    }
    // The token stays the executor's: neither its log nor the task sees it.
    assert!(!executor.log_text().contains(TOKEN), "the executor's log (in the sandbox) shows the token");
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_no_authorization_header_is_sent() {
    let container = TestContainer::prepare("exit 0").await;
    let agent = FakeAgent::start(task("t-notoken", "exit 0")).await;
    let mut executor = ExecutorProcess::start(&agent, &container, "t-notoken", &[]);
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    let calls = agent.state.lock().unwrap().authorizations.clone();
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|(_, a)| a.is_none()), "{calls:?}");
    container.destroy().await;
}
