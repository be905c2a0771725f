//! Unit tests of the agent core and its executor runners with a fake
//! containerizer (the `Containers` seam) on a paused clock. The executor
//! process is real (a script standing in for mezzo-executor that never
//! subscribes), so the runner's supervision is what runs in production.

use crate::containers::Containers;
use crate::executor::{ExecutorKind, ExecutorState};
use crate::status_update_manager::Forward;
use crate::{Agent, Flags};
use async_trait::async_trait;
use clap::Parser;
use mezzo_containerizer::{ContainerConfig, ContainerizerError, Limitation, ResourceLimits, Resources, RuntimeDir, Usage};
use mezzo_proto::mesos::v1::{
    task_status, value, AgentId, CommandInfo, ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, Resource, TaskId, TaskInfo, TaskState, TaskStatus,
};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the agent asked of the fake containerizer.
#[derive(Default)]
struct Calls {
    prepared: Vec<ContainerConfig>,
    destroyed: Vec<String>,
    updated: Vec<(String, Resources)>,
}

struct FakeContainers {
    root: PathBuf,
    fail_prepare: bool,
    calls: Mutex<Calls>,
}

#[async_trait]
impl Containers for FakeContainers {
    async fn prepare(&self, config: &ContainerConfig) -> Result<RuntimeDir, ContainerizerError> {
        self.calls.lock().unwrap().prepared.push(config.clone());
        if self.fail_prepare {
            return Err(ContainerizerError::InvalidSpec("no such image".into()));
        }
        let dir = RuntimeDir::of(&self.root, &config.container_id);
        dir.create()?;
        Ok(dir)
    }
    async fn destroy(&self, container_id: &str) -> Result<(), ContainerizerError> {
        self.calls.lock().unwrap().destroyed.push(container_id.to_string());
        Ok(())
    }
    async fn watch(&self, _container_id: &str) -> Result<Limitation, ContainerizerError> {
        std::future::pending().await
    }
    async fn update(&self, container_id: &str, resources: &Resources, _limits: &ResourceLimits) -> Result<(), ContainerizerError> {
        self.calls.lock().unwrap().updated.push((container_id.to_string(), resources.clone()));
        Ok(())
    }
    async fn usage(&self, container_id: &str) -> Result<Usage, ContainerizerError> {
        Err(ContainerizerError::UnknownContainer(container_id.to_string()))
    }
    async fn recover(&self, _checkpointed: &HashSet<String>) -> Result<Vec<String>, ContainerizerError> {
        Ok(Vec::new())
    }
    fn runtime_dir(&self, container_id: &str) -> RuntimeDir {
        RuntimeDir::of(&self.root, container_id)
    }
}

struct Harness {
    agent: Arc<Agent>,
    containers: Arc<FakeContainers>,
    updates: mpsc::UnboundedReceiver<TaskStatus>,
    _dir: tempfile::TempDir,
}

/// An agent on a fake containerizer whose "mezzo-executor" runs and never subscribes.
fn harness(fail_prepare: bool, extra: &[&str]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let launcher_dir = dir.path().join("bin");
    std::fs::create_dir_all(&launcher_dir).unwrap();
    let script = launcher_dir.join("mezzo-executor");
    // Like mezzo-executor, it leads its own session (setsid(1) does not fork when the caller leads no group).
    std::fs::write(&script, "#!/bin/sh\nexec setsid sleep 1000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let work_dir = dir.path().join("work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let runtime_root = dir.path().join("run");
    std::fs::create_dir_all(&runtime_root).unwrap();
    let mut args = vec!["mezzo-agent".to_string(), "--master=127.0.0.1:9".to_string(), format!("--work_dir={}", work_dir.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let flags = Flags::try_parse_from(args).unwrap();
    let containers = Arc::new(FakeContainers { root: runtime_root.clone(), fail_prepare, calls: Mutex::default() });
    let (tx, updates) = mpsc::unbounded_channel();
    // Each update is taken once (its uuid is new); retries are not.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let forward: Forward = Arc::new(move |_fid, status: TaskStatus| {
        let (tx, seen) = (tx.clone(), seen.clone());
        Box::pin(async move {
            if seen.lock().unwrap().insert(status.uuid.clone()) {
                let _ = tx.send(status);
            }
            Ok(())
        })
    });
    let agent = Agent::assemble(flags, work_dir, launcher_dir, runtime_root, containers.clone(), Some(forward)).unwrap();
    Harness { agent, containers, updates, _dir: dir }
}

fn scalar(name: &str, v: f64) -> Resource {
    Resource { name: name.into(), r#type: value::Type::Scalar as i32, scalar: Some(value::Scalar { value: v }), ..Default::default() }
}

fn framework() -> FrameworkInfo {
    FrameworkInfo { user: "root".into(), name: "f".into(), id: Some(FrameworkId { value: "F1".into() }), ..Default::default() }
}

fn custom_task(id: &str, mem: f64) -> TaskInfo {
    TaskInfo {
        name: id.into(),
        task_id: TaskId { value: id.into() },
        agent_id: AgentId { value: "A1".into() },
        resources: vec![scalar("cpus", 0.5), scalar("mem", mem)],
        executor: Some(ExecutorInfo {
            executor_id: ExecutorId { value: "E1".into() },
            command: Some(CommandInfo { value: Some("/usr/bin/my-executor".into()), shell: Some(false), ..Default::default() }),
            resources: vec![scalar("cpus", 0.1), scalar("mem", 32.0)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One step of the test's clock: a little real time, for a killed process to
/// exit, and 100 ms of the paused clock, for the agent's timers.
async fn tick() {
    std::thread::sleep(Duration::from_micros(200));
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The next update the agent sends (within 10,000 s of the paused clock).
async fn next_update(h: &mut Harness) -> TaskStatus {
    for _ in 0..100_000 {
        match h.updates.try_recv() {
            Ok(update) => return update,
            Err(mpsc::error::TryRecvError::Empty) => tick().await,
            Err(e) => panic!("no more updates: {e}"),
        }
    }
    panic!("no update in time");
}

fn executor_state(agent: &Agent) -> Option<ExecutorState> {
    agent.state.lock().unwrap().executors.get(&("F1".to_string(), "E1".to_string())).map(|e| e.state)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if f() {
            return;
        }
        tick().await;
    }
    panic!("{what} did not happen");
}

fn env_of(config: &ContainerConfig, name: &str) -> Option<String> {
    config.command.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[tokio::test(start_paused = true)]
async fn a_custom_executor_that_never_subscribes_is_destroyed_and_its_task_fails_with_registration_timeout() {
    let mut h = harness(false, &["--executor_registration_timeout=30secs"]);
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    until("the executor runs", || h.agent.state.lock().unwrap().executors.values().any(|e| e.pid.is_some())).await;
    assert_eq!(executor_state(&h.agent), Some(ExecutorState::Registering));
    let started = tokio::time::Instant::now();
    let update = next_update(&mut h).await;
    assert_eq!(update.state(), TaskState::TaskFailed);
    assert_eq!(update.reason(), task_status::Reason::ExecutorRegistrationTimeout);
    assert_eq!(update.source(), task_status::Source::Agent);
    assert_eq!(update.executor_id.as_ref().unwrap().value, "E1");
    assert!(started.elapsed() >= Duration::from_secs(29), "killed at the timeout, not before: {:?}", started.elapsed());
    // Its container: sized to executor plus task, with Mesos's environment, then destroyed.
    let calls = h.containers.calls.lock().unwrap();
    let config = &calls.prepared[0];
    assert_eq!(config.resources.mem_mb, Some(96.0));
    assert_eq!(config.resources.cpus, Some(0.6));
    assert_eq!(config.command.value.as_deref(), Some("/usr/bin/my-executor"));
    assert!(!config.command.shell);
    assert_eq!(env_of(config, "MESOS_EXECUTOR_ID").as_deref(), Some("E1"));
    assert_eq!(env_of(config, "MESOS_FRAMEWORK_ID").as_deref(), Some("F1"));
    assert_eq!(env_of(config, "MESOS_AGENT_ENDPOINT").as_deref(), Some(h.agent.endpoint().as_str()));
    assert!(env_of(config, "MESOS_EXECUTOR_AUTHENTICATION_TOKEN").is_some_and(|t| !t.is_empty()));
    assert_eq!(calls.destroyed, vec![config.container_id.clone()]);
    drop(calls);
    until("the executor is completed", || executor_state(&h.agent).is_none()).await;
    let state = h.agent.state.lock().unwrap();
    let done = state.completed.last().unwrap();
    assert_eq!((done.kind, done.state), (ExecutorKind::Custom, ExecutorState::Terminated));
}

#[tokio::test(start_paused = true)]
async fn tasks_for_a_registering_executor_queue_grow_its_container_and_end_killed_on_shutdown() {
    let mut h = harness(false, &["--executor_shutdown_grace_period=3secs"]);
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    until("the executor runs", || h.agent.state.lock().unwrap().executors.values().any(|e| e.pid.is_some())).await;
    h.agent.run_task(framework(), custom_task("t2", 128.0));
    {
        let state = h.agent.state.lock().unwrap();
        let ex = state.executors.get(&("F1".to_string(), "E1".to_string())).unwrap();
        let queued: Vec<(&str, bool)> = ex.tasks.iter().map(|t| (t.id(), t.launched)).collect();
        assert_eq!(queued, [("t1", false), ("t2", false)], "queued in order until the executor subscribes");
    }
    // Its container may not exist before the executor runs in it: no update yet.
    for _ in 0..20 {
        tick().await;
    }
    assert!(h.containers.calls.lock().unwrap().updated.is_empty());
    // SUBSCRIBE: SUBSCRIBED, the container grows to the executor plus both tasks, then both go, in order.
    let mut events = h.agent.subscribe_executor(("F1".to_string(), "E1".to_string()), Default::default()).unwrap();
    assert_eq!(executor_state(&h.agent), Some(ExecutorState::Running));
    let subscribed = events.recv().await.unwrap();
    assert_eq!(subscribed.subscribed.unwrap().executor_info.executor_id.value, "E1");
    let first = events.recv().await.unwrap();
    let second = events.recv().await.unwrap();
    let (_, resources) = h.containers.calls.lock().unwrap().updated[0].clone();
    assert_eq!(resources.mem_mb, Some(32.0 + 64.0 + 128.0));
    assert_eq!((first.launch.unwrap().task.task_id.value, second.launch.unwrap().task.task_id.value), ("t1".into(), "t2".into()));
    // A third task for the running executor: the container grows again before it is sent.
    h.agent.run_task(framework(), custom_task("t3", 256.0));
    let third = events.recv().await.unwrap();
    assert_eq!(third.launch.unwrap().task.task_id.value, "t3");
    let (_, resources) = h.containers.calls.lock().unwrap().updated[1].clone();
    assert_eq!(resources.mem_mb, Some(32.0 + 64.0 + 128.0 + 256.0));

    let asked = tokio::time::Instant::now();
    h.agent.shutdown_executor("F1", "E1");
    assert_eq!(executor_state(&h.agent), Some(ExecutorState::Terminating));
    let mut ended = vec![next_update(&mut h).await, next_update(&mut h).await, next_update(&mut h).await];
    assert!(asked.elapsed() >= Duration::from_secs(3), "the grace period passed first: {:?}", asked.elapsed());
    ended.sort_by(|a, b| a.task_id.value.cmp(&b.task_id.value));
    for (update, id) in ended.iter().zip(["t1", "t2", "t3"]) {
        assert_eq!((update.task_id.value.as_str(), update.state(), update.reason()), (id, TaskState::TaskKilled, task_status::Reason::ExecutorTerminated));
    }
    until("the executor is completed", || executor_state(&h.agent).is_none()).await;
    assert_eq!(h.containers.calls.lock().unwrap().destroyed.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn calls_before_subscribe_are_refused_and_updates_only_for_the_executors_own_tasks() {
    use crate::executor_calls::CallRefusal;
    use mezzo_proto::mesos::v1::executor::call::Type;
    let mut h = harness(false, &[]);
    let key = ("F1".to_string(), "E1".to_string());
    assert_eq!(h.agent.check_executor_call(&key, Type::Subscribe), Err(CallRefusal::BadRequest("Framework cannot be found".into())));
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    until("the executor runs", || h.agent.state.lock().unwrap().executors.values().any(|e| e.pid.is_some())).await;
    let other = ("F1".to_string(), "E2".to_string());
    assert_eq!(h.agent.check_executor_call(&other, Type::Subscribe), Err(CallRefusal::BadRequest("Executor cannot be found".into())));
    assert_eq!(h.agent.check_executor_call(&key, Type::Update), Err(CallRefusal::Forbidden("Executor is not subscribed".into())));
    assert_eq!(h.agent.check_executor_call(&key, Type::Subscribe), Ok(()));
    let mut events = h.agent.subscribe_executor(key.clone(), Default::default()).unwrap();
    assert_eq!(h.agent.check_executor_call(&key, Type::Message), Ok(()));
    use mezzo_proto::mesos::v1::executor::event::Type as Event;
    assert_eq!(events.recv().await.unwrap().r#type(), Event::Subscribed);
    assert_eq!(events.recv().await.unwrap().r#type(), Event::Launch);
    let mut status = TaskStatus { task_id: TaskId { value: "t1".into() }, uuid: Some(mezzo_proto::new_uuid()), ..Default::default() };
    status.set_state(TaskState::TaskRunning);
    status.set_source(task_status::Source::Executor);
    let mut foreign = status.clone();
    foreign.task_id.value = "not-mine".into();
    assert!(matches!(h.agent.executor_update(&key, foreign), Err(CallRefusal::Forbidden(_))));
    let mut staging = status.clone();
    staging.set_state(TaskState::TaskStaging);
    assert!(matches!(h.agent.executor_update(&key, staging), Err(CallRefusal::BadRequest(_))));
    h.agent.executor_update(&key, status.clone()).unwrap();
    let forwarded = next_update(&mut h).await;
    assert_eq!((forwarded.state(), forwarded.agent_id.as_ref().map(|a| a.value.as_str())), (TaskState::TaskRunning, Some("A1")));
    // The agent has it: acknowledged to the executor.
    let ack = events.recv().await.unwrap();
    assert_eq!((ack.r#type(), ack.acknowledged.unwrap().uuid), (Event::Acknowledged, status.uuid.clone().unwrap()));
    h.agent.shutdown_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_kill_of_a_task_the_executor_does_not_have_yet_ends_it_killed_and_the_other_stays() {
    let mut h = harness(false, &[]);
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    until("the executor runs", || h.agent.state.lock().unwrap().executors.values().any(|e| e.pid.is_some())).await;
    h.agent.run_task(framework(), custom_task("t2", 64.0));
    h.agent.kill_task("F1", "t2", None).await;
    let killed = next_update(&mut h).await;
    assert_eq!((killed.task_id.value.as_str(), killed.state(), killed.reason()), ("t2", TaskState::TaskKilled, task_status::Reason::TaskKilledDuringLaunch));
    let state = h.agent.state.lock().unwrap();
    let ex = state.executors.get(&("F1".to_string(), "E1".to_string())).unwrap();
    assert_eq!(ex.state, ExecutorState::Registering, "the executor stays for its other task");
    assert_eq!(ex.task("t1").unwrap().state, TaskState::TaskStaging);
    assert_eq!(ex.live_tasks().count(), 1);
    let kill_pid = ex.pid;
    drop(state);
    h.agent.shutdown_all().await;
    assert!(kill_pid.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_container_that_cannot_be_prepared_fails_the_task_with_launch_failed() {
    let mut h = harness(true, &[]);
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    let update = next_update(&mut h).await;
    assert_eq!(update.state(), TaskState::TaskFailed);
    assert_eq!(update.reason(), task_status::Reason::ContainerLaunchFailed);
    assert!(update.message().contains("no such image"), "{}", update.message());
    until("the executor is completed", || executor_state(&h.agent).is_none()).await;
    assert_eq!(h.containers.calls.lock().unwrap().destroyed.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_with_both_command_and_executor_is_refused() {
    let mut h = harness(false, &[]);
    let mut task = custom_task("t1", 64.0);
    task.command = Some(CommandInfo { value: Some("true".into()), ..Default::default() });
    h.agent.run_task(framework(), task);
    let update = next_update(&mut h).await;
    assert_eq!((update.state(), update.reason()), (TaskState::TaskFailed, task_status::Reason::TaskInvalid));
    assert!(h.containers.calls.lock().unwrap().prepared.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_subscribed_executor_gets_heartbeats_at_the_interval_and_a_framework_message() {
    use mezzo_proto::mesos::v1::executor::event::Type;
    let h = harness(false, &["--executor_heartbeat_interval=10secs", "--executor_registration_timeout=1hrs"]);
    h.agent.run_task(framework(), custom_task("t1", 64.0));
    until("the executor runs", || h.agent.state.lock().unwrap().executors.values().any(|e| e.pid.is_some())).await;
    let mut events = h.agent.subscribe_executor(("F1".to_string(), "E1".to_string()), Default::default()).unwrap();
    assert_eq!(events.recv().await.unwrap().r#type(), Type::Subscribed);
    let launch = events.recv().await.unwrap();
    assert_eq!(launch.r#type(), Type::Launch);
    assert_eq!(launch.launch.unwrap().task.task_id.value, "t1");
    let start = tokio::time::Instant::now();
    let mut beats = Vec::new();
    while beats.len() < 3 {
        tick().await;
        while let Ok(event) = events.try_recv() {
            assert_eq!(event.r#type(), Type::Heartbeat);
            beats.push(start.elapsed());
        }
    }
    // Every 10 s from the runner's start (which was a moment before `start`).
    for (i, at) in beats.iter().enumerate() {
        let expected = Duration::from_secs(10 * (i as u64 + 1));
        assert!(*at <= expected && *at + Duration::from_secs(1) >= expected, "heartbeat {i} at {at:?}");
    }
    h.agent.framework_message("F1", "E1", b"hello".to_vec());
    let message = events.recv().await.unwrap();
    assert_eq!((message.r#type(), message.message.unwrap().data), (Type::Message, b"hello".to_vec()));
    h.agent.shutdown_all().await;
}
