//! `mezzo-bench-custom-executor --master=IP:PORT [--runs=N]`: the
//! `custom_executor_accept_to_running` figure of `make bench`. Each run is one
//! framework, as `mezzo execute` is for `accept_to_running_rust`: it takes an
//! offer, launches one task on a new custom executor (`mezzo-test-executor`
//! next to this binary, speaking protobuf; rust containerizer, no image, cpus 0.1 and mem 32
//! for the executor and for the task) and times its ACCEPT to the task's
//! TASK_RUNNING at the scheduler; then it tears the framework down. Prints
//! `custom <ms>` per run on stdout, what went wrong on stderr.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::TaskState;
use mezzo_tests::{executor_task, test_executor_info, ExecutorContainer, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn one_run(master: &str, run: usize) -> Result<f64> {
    let mut sched = Scheduler::subscribe(master, &format!("bench-custom-{run}")).await?;
    let result = async {
        let offer = sched.next_offer(TIMEOUT).await?;
        // Protobuf, as Mesos's own executors (and mezzo-executor) speak it: the
        // JSON mapping's first use builds a descriptor pool (milliseconds) in
        // the executor, which is the executor's cost, not the agent's.
        let exec = test_executor_info(&format!("bench-exec-{run}"), ExecutorContainer::Host, 32.0, &["--content-type=protobuf"]);
        let task = executor_task(&offer, &format!("bench-task-{run}"), &exec, "forever", 32.0);
        let accepted = sched.launch_tasks(&offer, vec![task]).await?;
        let deadline = Instant::now() + TIMEOUT;
        let ms = loop {
            let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await?;
            if st.state() == TaskState::TaskRunning {
                break accepted.elapsed().as_secs_f64() * 1000.0;
            }
            if st.state().is_terminal() {
                bail!("the task ended before it ran: {st:?}");
            }
        };
        // The executor ends and its container is destroyed (the agent reports
        // the exit, FAILURE, only after that) before the next run starts, so
        // runs do not overlap with the previous one's teardown.
        sched.shutdown_executor(&offer.agent_id, &exec.executor_id.value).await?;
        let (mut ended, mut exited) = (false, false);
        while !(ended && exited) {
            let ev = sched.next_event(deadline.saturating_duration_since(Instant::now())).await?;
            if let Some(update) = ev.update {
                sched.acknowledge(&update.status).await?;
                ended |= update.status.task_id.value == format!("bench-task-{run}") && update.status.state().is_terminal();
            }
            exited |= ev.failure.is_some_and(|f| f.executor_id.is_some_and(|e| e == exec.executor_id));
        }
        Ok(ms)
    }
    .await;
    sched.teardown().await.ok();
    result
}

fn main() -> Result<()> {
    let mut master = None;
    let mut runs = 20usize;
    for arg in std::env::args().skip(1) {
        if let Some(v) = arg.strip_prefix("--master=") {
            master = Some(v.to_string());
        } else if let Some(v) = arg.strip_prefix("--runs=") {
            runs = v.parse().context("--runs")?;
        } else {
            bail!("unknown argument {arg} (--master=IP:PORT [--runs=N])");
        }
    }
    let master = master.context("--master=IP:PORT is required")?;
    // The executor the runs launch is the one built next to this binary.
    if std::env::var_os("MEZZO_BIN_DIR").is_none() {
        let dir = std::env::current_exe()?.parent().context("the binary's directory")?.to_path_buf();
        std::env::set_var("MEZZO_BIN_DIR", dir);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        for run in 0..runs {
            match one_run(&master, run).await {
                Ok(ms) => println!("custom {ms:.2}"),
                Err(e) => eprintln!("custom_executor_accept_to_running run {run}: {e:#}"),
            }
        }
    });
    Ok(())
}
