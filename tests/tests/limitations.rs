//! Container limitations as a framework sees them: a task that exceeds its
//! memory ends with TASK_FAILED from the agent, with the limitation's reason
//! and resources, never as a plain exit of its command.

use anyhow::Result;
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::TaskState;
use mezzo_tests::{assert_clean, command_task, states, Cluster, Kind, Scheduler};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The shell holds 100 MiB in a variable; the task has 32 MB.
const ALLOCATE_100_MIB: &str = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}; sleep 30";

async fn oom_task_fails_with_memory_limitation(kind: Kind) -> Result<()> {
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "oom").await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "hog", ALLOCATE_100_MIB, kind, "busybox", 32.0)).await?;
    let updates = sched.updates_until_terminal("hog", TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
    let last = updates.last().unwrap();
    assert_eq!(last.state(), TaskState::TaskFailed, "updates: {:?}\n{}", states(&updates), cluster.agent_log());
    assert_eq!(last.reason(), Reason::ContainerLimitationMemory, "{last:?}\n{}", cluster.agent_log());
    assert_eq!(last.source(), Source::Agent, "the agent reports a limitation, not the executor");
    let limited: Vec<&str> = last.limitation.iter().flat_map(|l| l.resources.iter().map(|r| r.name.as_str())).collect();
    assert_eq!(limited, ["mem"], "{last:?}");
    let message = last.message.clone().unwrap_or_default().to_lowercase();
    assert!(message.contains("memory"), "the message says what happened: {message}");
    // Exactly one terminal update reaches the framework.
    assert_eq!(updates.iter().filter(|u| u.state().is_terminal()).count(), 1);
    assert!(tokio::time::timeout(Duration::from_secs(2), sched.next_update(Duration::from_secs(2))).await.map(|r| r.is_err()).unwrap_or(true));
    sched.teardown().await.ok();
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_task_fails_with_memory_limitation_host_rootfs() -> Result<()> {
    oom_task_fails_with_memory_limitation(Kind::MesosNoImage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_task_fails_with_memory_limitation_busybox() -> Result<()> {
    oom_task_fails_with_memory_limitation(Kind::Mesos).await
}
