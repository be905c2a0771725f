//! Task users and the executor's environment, end to end through the master
//! for each containerizer: `FrameworkInfo.user` runs the task (rust) or owns
//! its sandbox (docker, which runs the image's user as Mesos's docker
//! containerizer does); `--switch_user=false` keeps the agent's user; a user
//! that does not exist fails the launch before anything runs; the task sees
//! `MESOS_ALLOCATION_ROLE` and `--executor_environment_variables` under its
//! own environment.

use anyhow::Result;
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{environment, Environment, FrameworkInfo, TaskStatus};
use mezzo_tests::{assert_clean, command_task, containerizer_of, runnable, states, Cluster, Kind, Scheduler};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

const AGENT_ENV: &str = r#"--executor_environment_variables={"MEZZO_FROM_AGENT":"agent","MEZZO_OVERRIDDEN":"agent","PATH":"/usr/sbin:/usr/bin:/sbin:/bin"}"#;

fn framework(user: &str) -> FrameworkInfo {
    #[allow(deprecated)] // FrameworkInfo.role: a framework without MULTI_ROLE
    FrameworkInfo { user: user.into(), name: "users".into(), role: Some("web".into()), ..Default::default() }
}

/// Runs one task of `kind` for a framework of `user` on an agent started
/// with `agent_args`; its updates and its stdout.
async fn run(kind: Kind, user: &str, agent_args: &[&str], command: &str) -> Result<(Vec<TaskStatus>, String)> {
    let mut cluster = Cluster::start_with(containerizer_of(kind), agent_args).await?;
    let mut sched = Scheduler::subscribe_with(&cluster.master, framework(user)).await?;
    let result = async {
        let offer = sched.next_offer(TIMEOUT).await?;
        let mut task = command_task(&offer, "who", command, kind, "busybox", 32.0);
        task.command.as_mut().expect("command").environment = Some(Environment {
            variables: vec![environment::Variable { name: "MEZZO_OVERRIDDEN".into(), value: Some("task".into()), ..Default::default() }],
        });
        sched.launch(&offer, task).await?;
        sched.updates_until_terminal("who", TIMEOUT).await
    }
    .await;
    let stdout = mezzo_tests::sandbox_file(&cluster, &sched.framework_id.value, "who", "stdout").await;
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    let updates = result?;
    Ok((updates, stdout.unwrap_or_default()))
}

/// What the task prints: who it runs as, who owns its sandbox, and the
/// variables under test.
const REPORT: &str = "echo \"user=$(id -un) owner=$(stat -c %u \"$MESOS_SANDBOX\") role=$MESOS_ALLOCATION_ROLE \
                      agent=$MEZZO_FROM_AGENT overridden=$MEZZO_OVERRIDDEN fw=${MESOS_FRAMEWORK_ID:+set}\"";

async fn framework_user_runs_the_task(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let (updates, stdout) = run(kind, "nobody", &[AGENT_ENV], REPORT).await?;
    assert_eq!(states(&updates), ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"], "stdout: {stdout}; {updates:?}");
    // busybox's and Debian's `nobody` are both uid 65534.
    let user = if kind == Kind::Docker { "root" } else { "nobody" };
    assert_eq!(stdout, format!("user={user} owner=65534 role=web agent=agent overridden=task fw=set\n"), "{updates:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_user_runs_the_task_rust() -> Result<()> {
    framework_user_runs_the_task(Kind::Mesos).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_user_runs_the_task_rust_no_image() -> Result<()> {
    framework_user_runs_the_task(Kind::MesosNoImage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_user_owns_the_sandbox_docker() -> Result<()> {
    framework_user_runs_the_task(Kind::Docker).await
}

/// `--switch_user=false`: the agent's own user, whatever the framework says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_user_off_keeps_the_agents_user() -> Result<()> {
    if !runnable(Kind::MesosNoImage) {
        return Ok(());
    }
    let (updates, stdout) = run(Kind::MesosNoImage, "nobody", &["--switch_user=false"], REPORT).await?;
    assert_eq!(states(&updates).last(), Some(&"TASK_FINISHED"), "{updates:?}");
    assert!(stdout.starts_with("user=root owner=0 role=web agent= overridden=task fw=set"), "{stdout}");
    Ok(())
}

/// A user that does not exist fails the launch with a message naming it;
/// the command never runs.
async fn unknown_user_fails_the_launch(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    let (updates, stdout) = run(kind, "mezzo-no-such-user", &[], "echo ran").await?;
    assert_eq!(states(&updates), ["TASK_FAILED"], "{updates:?}");
    let last = updates.last().expect("one update");
    assert_eq!(last.reason(), Reason::ContainerLaunchFailed);
    assert!(last.message().contains("'mezzo-no-such-user'"), "{:?}", last.message);
    assert!(!stdout.contains("ran"), "{stdout}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_fails_the_launch_rust() -> Result<()> {
    unknown_user_fails_the_launch(Kind::Mesos).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_fails_the_launch_rust_no_image() -> Result<()> {
    unknown_user_fails_the_launch(Kind::MesosNoImage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_fails_the_launch_docker() -> Result<()> {
    unknown_user_fails_the_launch(Kind::Docker).await
}
