//! The real `mezzo-executor` binary driving docker containers (prepared by
//! the docker backend against the real engine) for a fake agent: the
//! container's IP in TASK_RUNNING, an OOM kill as a memory limitation, and a
//! kill through `docker stop`. Uses mezzo's busybox test image
//! (`target/test-images/busybox.tar`); every container is removed by a guard.

mod support;

use mezzo_containerizer::docker::{DockerBackend, DockerBackendConfig};
use mezzo_containerizer::{Command, ContainerConfig, ContainerType, Containerizer, DockerNetwork, DockerOptions, Resources};
use mezzo_proto::mesos::v1::{task_status, value, Resource, TaskState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use support::*;

const IMAGE: &str = "mezzo-test-docker:busybox";
const EXIT: Duration = Duration::from_secs(60);

fn sh(cmd: &str) -> Result<String, String> {
    let out = std::process::Command::new("timeout").args(["120", "sh", "-c", cmd]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("`{cmd}`: {} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// mezzo's busybox test image, in the engine as `IMAGE`.
fn test_image() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if sh(&format!("docker image inspect {IMAGE} >/dev/null")).is_ok() {
            return;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace.join("target"));
        let archive = target.join("test-images/busybox.tar");
        if !archive.is_file() {
            sh(&format!("bash {}/scripts/build-test-images.sh", workspace.display())).unwrap();
        }
        sh(&format!("docker load -q -i {}", archive.display())).unwrap();
        sh(&format!("docker tag busybox:latest {IMAGE}")).unwrap();
    });
}

/// One docker container prepared by the docker backend; removed on drop.
struct DockerContainer {
    containerizer: Containerizer,
    id: String,
    runtime_dir: PathBuf,
    sandbox: PathBuf,
    _root: tempfile::TempDir,
}

impl DockerContainer {
    async fn prepare(command: &str, mem_mb: f64, network: DockerNetwork) -> DockerContainer {
        test_image();
        let root = tempfile::tempdir().unwrap();
        let sandbox = root.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let backend = DockerBackend::new(DockerBackendConfig { remove_delay: Duration::ZERO, ..Default::default() })
            .await
            .unwrap();
        let containerizer = Containerizer::new(vec![Arc::new(backend)], root.path().join("runtime"));
        let id = format!("exec-docker-{}", uuid::Uuid::new_v4().simple());
        let config = ContainerConfig {
            container_id: id.clone(),
            container_type: ContainerType::Docker,
            image: Some(IMAGE.into()),
            command: Command { shell: true, value: Some(command.into()), ..Default::default() },
            resources: Resources { cpus: Some(0.5), mem_mb: Some(mem_mb), ..Default::default() },
            sandbox: sandbox.clone(),
            docker: Some(DockerOptions { network, ..Default::default() }),
            ..Default::default()
        };
        let runtime_dir = containerizer.prepare(&config).await.expect("docker container prepares").into_path();
        DockerContainer { containerizer, id, runtime_dir, sandbox, _root: root }
    }

    fn start_executor(&self, agent: &FakeAgent, executor_id: &str) -> ExecutorProcess {
        ExecutorProcess::start_for(agent, &self.runtime_dir, &self.sandbox, &launcher_dir(), executor_id, &[])
    }

    fn name(&self) -> String {
        format!("mesos-{}", self.id)
    }

    fn inspect(&self) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&sh(&format!("docker inspect {}", self.name())).unwrap())
            .unwrap()[0]
            .clone()
    }

    async fn destroy(&self) {
        self.containerizer.destroy(&self.id).await.expect("container destroys");
    }
}

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f -v {} >/dev/null 2>&1", self.name()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_running_reports_the_container_ip_then_finished() {
    let container = DockerContainer::prepare("sleep 2; echo done", 64.0, DockerNetwork::Bridge).await;
    let agent = FakeAgent::start(task("t-ip", "sleep 2; echo done")).await;
    let mut executor = container.start_executor(&agent, "t-ip");
    agent
        .wait_for("TASK_RUNNING", EXIT, |s| s.updates.iter().any(|u| u.state() == TaskState::TaskRunning))
        .await;
    let engine_ip = container.inspect()["NetworkSettings"]["Networks"]["bridge"]["IPAddress"].as_str().unwrap().to_string();
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    let updates = agent.state.lock().unwrap().updates.clone();
    let running = updates.iter().find(|u| u.state() == TaskState::TaskRunning).unwrap();
    let status = running.container_status.as_ref().expect("container_status");
    assert_eq!(status.container_id.as_ref().map(|c| c.value.as_str()), Some(container.id.as_str()));
    assert_eq!(status.network_infos.len(), 1);
    let ips: Vec<&str> =
        status.network_infos[0].ip_addresses.iter().filter_map(|a| a.ip_address.as_deref()).collect();
    assert_eq!(ips, vec![engine_ip.as_str()]);
    assert_eq!(agent.distinct_states(), vec![TaskState::TaskStarting, TaskState::TaskRunning, TaskState::TaskFinished]);
    assert_eq!(std::fs::read_to_string(container.sandbox.join("stdout")).unwrap(), "done\n");
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_oom_is_task_failed_with_memory_limitation() {
    let command = "dd if=/dev/zero of=/dev/null bs=256M count=1";
    let container = DockerContainer::prepare(command, 32.0, DockerNetwork::Host).await;
    let mut t = task("t-oom", command);
    let mem = Resource {
        name: "mem".into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(mezzo_proto::mesos::v1::value::Scalar { value: 32.0 }),
        ..Default::default()
    };
    t.resources.push(mem.clone());
    let agent = FakeAgent::start(t).await;
    let mut executor = container.start_executor(&agent, "t-oom");
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    assert_eq!(container.inspect()["State"]["OOMKilled"], true);
    let last = agent.last_update();
    assert_eq!(last.state(), TaskState::TaskFailed);
    assert_eq!(last.reason(), task_status::Reason::ContainerLimitationMemory);
    assert_eq!(last.source(), task_status::Source::Executor);
    assert_eq!(last.limitation.as_ref().map(|l| l.resources.clone()), Some(vec![mem]));
    let message = last.message.unwrap_or_default();
    assert!(message.contains("Memory limit exceeded") && message.contains("Command "), "{message}");
    container.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_stops_the_container_within_the_grace() {
    let command = "trap 'echo stopping; exit 0' TERM; echo up; while true; do sleep 0.1; done";
    let container = DockerContainer::prepare(command, 64.0, DockerNetwork::Host).await;
    let agent = FakeAgent::start(task("t-kill", command)).await;
    let mut executor = container.start_executor(&agent, "t-kill");
    agent
        .wait_for("TASK_RUNNING", EXIT, |s| s.updates.iter().any(|u| u.state() == TaskState::TaskRunning))
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(container.sandbox.join("stdout")).unwrap_or_default() != "up\n" {
        assert!(Instant::now() < deadline, "task never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.send(kill_event("t-kill", Some(Duration::from_secs(10))));
    assert_eq!(executor.wait(EXIT).await, 0, "log:\n{}", executor.log_text());
    let last = agent.last_update();
    assert_eq!(last.state(), TaskState::TaskKilled);
    // The TERM handler ran: a stop, not a SIGKILL.
    assert_eq!(std::fs::read_to_string(container.sandbox.join("stdout")).unwrap(), "up\nstopping\n");
    assert_eq!(container.inspect()["State"]["ExitCode"], 0);
    container.destroy().await;
}
