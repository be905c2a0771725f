//! The master's loss as a framework and an operator see it: kill -9 of the
//! master with tasks running, restarted on the same `--work_dir`; the
//! in-memory registry; agents silent past their ping timeouts (frozen with
//! SIGSTOP) and agents that do not come back after a failover.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::framework_info::{capability::Type as Cap, Capability};
use mezzo_proto::mesos::v1::scheduler::{call, Call};
use mezzo_proto::mesos::v1::task_status::{Reason, Source};
use mezzo_proto::mesos::v1::{AgentId, FrameworkId, FrameworkInfo, Offer, TaskId, TaskState, TaskStatus};
use mezzo_tests::{assert_clean, command_task, states, Cluster, Kind, Scheduler};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Whether the test can run here (root, and a Docker engine when `docker`); records the skip otherwise.
fn runnable(docker: bool) -> bool {
    if !mezzo_testkit::is_root() {
        mezzo_testkit::skip("needs root (real agent, containers and cgroups)");
        return false;
    }
    if docker && !mezzo_testkit::docker_available() {
        mezzo_testkit::skip("needs a running Docker engine");
        return false;
    }
    true
}

/// GET `/state` of the master.
async fn state(master: &str) -> Result<serde_json::Value> {
    let body = reqwest::get(format!("http://{master}/state")).await?.bytes().await?;
    Ok(serde_json::from_slice(&body)?)
}

fn framework(name: &str, partition_aware: bool) -> FrameworkInfo {
    FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        hostname: Some(String::new()),
        checkpoint: Some(true),
        failover_timeout: Some(3600.0),
        capabilities: if partition_aware { vec![Capability { r#type: Some(Cap::PartitionAware as i32) }] } else { vec![] },
        ..Default::default()
    }
}

/// SUBSCRIBEs again with the framework's id (a scheduler failing over to the new master).
async fn resubscribe(master: &str, info: &FrameworkInfo, id: &FrameworkId) -> Result<Scheduler> {
    let mut info = info.clone();
    info.id = Some(id.clone());
    let sched = Scheduler::subscribe_with(master, info).await?;
    assert_eq!(&sched.framework_id, id, "the framework keeps its id");
    Ok(sched)
}

/// Sends RECONCILE for `tasks` (task id, agent id); empty: implicit.
async fn reconcile(sched: &Scheduler, tasks: &[(&str, &AgentId)]) -> Result<()> {
    let tasks = tasks.iter().map(|(t, a)| call::reconcile::Task { task_id: TaskId { value: t.to_string() }, agent_id: Some((*a).clone()) }).collect();
    let code = sched.call(Call { r#type: Some(call::Type::Reconcile as i32), reconcile: Some(call::Reconcile { tasks }), ..Default::default() }).await?;
    if code != 202 {
        bail!("RECONCILE answered {code}");
    }
    Ok(())
}

/// The next `n` updates (other events skipped), sorted by task id.
async fn updates(sched: &mut Scheduler, n: usize, timeout: Duration) -> Result<Vec<TaskStatus>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        out.push(sched.next_update(deadline.saturating_duration_since(Instant::now())).await.with_context(|| format!("updates so far: {out:?}"))?);
    }
    out.sort_by(|a, b| a.task_id.value.cmp(&b.task_id.value));
    Ok(out)
}

/// Asserts an update is the master's reconciliation answer `state`, as Mesos sends it.
fn assert_reconciled(status: &TaskStatus, task: &str, state: TaskState) {
    assert_eq!(status.task_id.value, task, "{status:?}");
    assert_eq!(status.state(), state, "{status:?}");
    assert_eq!((status.reason(), status.source()), (Reason::Reconciliation, Source::Master), "{status:?}");
    assert!(status.uuid.is_none(), "reconciliation answers carry no uuid: {status:?}");
}

/// Waits until no update arrives for `quiet`; fails on one.
async fn no_update(sched: &mut Scheduler, quiet: Duration) -> Result<()> {
    match sched.next_update(quiet).await {
        Ok(st) => bail!("unexpected update: {st:?}"),
        Err(_) => Ok(()),
    }
}

/// cpus and mem of an offer.
fn offered(offer: &Offer) -> (f64, f64) {
    let sum = |name: &str| offer.resources.iter().filter(|r| r.name == name).filter_map(|r| r.scalar.as_ref()).map(|s| s.value).sum::<f64>();
    (sum("cpus"), sum("mem"))
}

/// Launches `tasks` (id, kind) on one offer, each `sleep 1000`; waits until all run.
async fn launch_running(sched: &mut Scheduler, cluster: &Cluster, offer: &Offer, tasks: &[(&str, Kind)]) -> Result<()> {
    let infos = tasks.iter().map(|(id, kind)| command_task(offer, id, "sleep 1000", *kind, "busybox", 32.0)).collect();
    sched.launch_tasks(offer, infos).await?;
    let mut running = std::collections::BTreeSet::new();
    let deadline = Instant::now() + TIMEOUT;
    while running.len() < tasks.len() {
        let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await.map_err(|e| e.context(cluster.agent_log()))?;
        if st.state().is_terminal() {
            bail!("task ended before it ran: {st:?}\n{}", cluster.agent_log());
        }
        if st.state() == TaskState::TaskRunning {
            running.insert(st.task_id.value.clone());
        }
    }
    Ok(())
}

/// kill -9 of the master with tasks running, restarted on the same
/// `--work_dir`: the scheduler re-subscribes with its id, reconciliation
/// answers RUNNING for every task (explicit and implicit), the next offer
/// holds what the tasks do not use, and KILL works.
async fn failover_keeps_tasks(tasks: &[(&str, Kind)], containerizers: &str) -> Result<()> {
    let master_dir = tempfile::Builder::new().prefix("mezzo-master-").tempdir()?;
    let work_dir = format!("--work_dir={}", master_dir.path().display());
    let mut cluster = Cluster::start_full(containerizers, &[&work_dir], &[]).await?;
    let info = framework("failover", false);
    let mut sched = Scheduler::subscribe_with(&cluster.master, info.clone()).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let agent_id = offer.agent_id.clone();
    launch_running(&mut sched, &cluster, &offer, tasks).await?;
    // What the tasks leave free, as this master offers it.
    let before = offered(&sched.next_offer(TIMEOUT).await.context("the offer of what the tasks leave")?);

    let crashed = Instant::now();
    cluster.crash_and_restart_master(true).await?;
    let back = crashed.elapsed();
    eprintln!("master_failover: kill -9 to the agent re-registered with the restarted master: {back:?}");
    // The recovered master tells its agents it is up: they do not wait for their next ping (5 s here).
    assert!(back < Duration::from_secs(4), "the agent re-registered {back:?} after the crash");
    assert!(std::fs::read_dir(master_dir.path().join("registry/agents"))?.count() == 1, "the registry holds the agent");
    let mut sched = resubscribe(&cluster.master, &info, &sched.framework_id).await?;
    // The first offer of the new master holds only what the tasks leave free.
    let after = offered(&sched.next_offer(TIMEOUT).await.with_context(|| format!("the first offer after the failover; master log:\n{}", cluster.master_log()))?);
    assert!((before.0 - after.0).abs() < 1e-9 && (before.1 - after.1).abs() < 1e-9, "offered before the crash {before:?}, after {after:?}");
    let ids: Vec<&str> = tasks.iter().map(|(id, _)| *id).collect();
    let explicit: Vec<(&str, &AgentId)> = ids.iter().map(|id| (*id, &agent_id)).collect();
    reconcile(&sched, &explicit).await?;
    let answers = updates(&mut sched, ids.len(), Duration::from_secs(10)).await?;
    eprintln!("master_failover: kill -9 to the reconciliation answered by the restarted master: {:?}", crashed.elapsed());
    let mut sorted = ids.clone();
    sorted.sort();
    for (status, id) in answers.iter().zip(&sorted) {
        assert_reconciled(status, id, TaskState::TaskRunning);
    }
    reconcile(&sched, &[]).await?;
    let answers = updates(&mut sched, ids.len(), Duration::from_secs(10)).await?;
    for (status, id) in answers.iter().zip(&sorted) {
        assert_reconciled(status, id, TaskState::TaskRunning);
    }
    no_update(&mut sched, Duration::from_secs(1)).await?;

    for id in &ids {
        sched.kill(id, Some(agent_id.clone())).await?;
        let updates = sched.updates_until_terminal(id, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
        assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{id}: {:?}", states(&updates));
    }
    sched.teardown().await?;
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_master_restarted_on_its_work_dir_keeps_rust_tasks() -> Result<()> {
    if !runnable(false) {
        return Ok(());
    }
    failover_keeps_tasks(&[("rust-a", Kind::MesosNoImage), ("rust-b", Kind::MesosNoImage)], "rust").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_master_restarted_on_its_work_dir_keeps_rust_and_docker_tasks() -> Result<()> {
    if !runnable(true) {
        return Ok(());
    }
    failover_keeps_tasks(&[("docker-a", Kind::Docker), ("rust-a", Kind::MesosNoImage)], "rust,docker").await
}

/// The frameworks `/state` lists: (id, active).
async fn state_frameworks(master: &str) -> Result<Vec<(String, bool)>> {
    let state = state(master).await?;
    Ok(state["frameworks"]
        .as_array()
        .context("frameworks")?
        .iter()
        .map(|f| (f["id"].as_str().unwrap_or_default().to_string(), f["active"].as_bool().unwrap_or(false)))
        .collect())
}

/// Frameworks survive the master only in the durable registry: with
/// `--registry=in_memory` the new master does not know the framework (and,
/// as Mesos, takes its re-subscription as a new master would: by its id);
/// with the registry in `--work_dir` the framework is known (inactive) and
/// torn down when its scheduler does not come back within its failover
/// timeout, after which its re-subscription is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frameworks_survive_the_master_only_in_the_durable_registry() -> Result<()> {
    if !runnable(false) {
        return Ok(());
    }
    let mut cluster = Cluster::start_full("rust", &["--registry=in_memory"], &[]).await?;
    let info = framework("forgotten", true);
    let sched = Scheduler::subscribe_with(&cluster.master, info.clone()).await?;
    let id = sched.framework_id.clone();
    cluster.crash_and_restart_master(true).await?;
    assert_eq!(state_frameworks(&cluster.master).await?, vec![], "the in-memory registry forgot the framework");
    let sched = resubscribe(&cluster.master, &info, &id).await?;
    sched.teardown().await?;
    cluster.stop();
    drop(cluster);

    let master_dir = tempfile::Builder::new().prefix("mezzo-master-").tempdir()?;
    let work_dir = format!("--work_dir={}", master_dir.path().display());
    let mut cluster = Cluster::start_full("rust", &[&work_dir], &[]).await?;
    let mut short = framework("short-failover", true);
    short.failover_timeout = Some(6.0);
    let kept = Scheduler::subscribe_with(&cluster.master, framework("kept", true)).await?;
    let gone = Scheduler::subscribe_with(&cluster.master, short.clone()).await?;
    let (kept_id, gone_id) = (kept.framework_id.clone(), gone.framework_id.clone());
    cluster.crash_and_restart_master(false).await?;
    let restarted = Instant::now();
    let mut listed = state_frameworks(&cluster.master).await?;
    listed.sort();
    let mut want = vec![(kept_id.value.clone(), false), (gone_id.value.clone(), false)];
    want.sort();
    assert_eq!(listed, want, "the durable registry keeps both, disconnected");
    // Back within its failover timeout: accepted with its id.
    let kept = resubscribe(&cluster.master, &framework("kept", true), &kept_id).await?;
    // Not back within 6 s of the recovery: torn down, and a late re-subscription is refused as Mesos does.
    mezzo_tests::wait_until("the framework is torn down after its failover timeout", Duration::from_secs(15), || {
        std::fs::read_dir(master_dir.path().join("registry/frameworks")).map(|d| d.count() == 1).unwrap_or(false)
    })
    .await?;
    assert!(restarted.elapsed() >= Duration::from_millis(5500), "torn down after {:?}", restarted.elapsed());
    let mut info = short.clone();
    info.id = Some(gone_id.clone());
    match Scheduler::subscribe_with(&cluster.master, info).await {
        Ok(s) => bail!("a removed framework re-subscribed: {:?}", s.framework_id),
        Err(e) => assert!(e.to_string().contains("first event is not SUBSCRIBED"), "{e:#}"),
    }
    kept.teardown().await?;
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// A scheduler whose framework is or is not partition aware, with one task running.
async fn running_task(cluster: &Cluster, name: &str, partition_aware: bool, task: &str) -> Result<(Scheduler, AgentId)> {
    let mut sched = Scheduler::subscribe_with(&cluster.master, framework(name, partition_aware)).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    launch_running(&mut sched, cluster, &offer, &[(task, Kind::MesosNoImage)]).await?;
    // Leave the rest of the agent to the next framework for a while.
    let next = sched.next_offer(TIMEOUT).await?;
    let code = sched
        .call(Call {
            r#type: Some(call::Type::Decline as i32),
            decline: Some(call::Decline {
                offer_ids: vec![next.id.clone()],
                filters: Some(mezzo_proto::mesos::v1::Filters { refuse_seconds: Some(3600.0) }),
            }),
            ..Default::default()
        })
        .await?;
    assert_eq!(code, 202);
    Ok((sched, offer.agent_id))
}

/// The next update of `sched`, which must be `state` from the master for `task`.
async fn expect_update(sched: &mut Scheduler, task: &str, state: TaskState, reason: Reason, timeout: Duration) -> Result<()> {
    let st = sched.next_update(timeout).await?;
    assert_eq!((st.task_id.value.as_str(), st.state(), st.reason(), st.source()), (task, state, reason, Source::Master), "{st:?}");
    Ok(())
}

/// An agent frozen past `--max_agent_ping_timeouts` × `--agent_ping_timeout`
/// becomes unreachable: TASK_UNREACHABLE for a partition-aware framework,
/// TASK_LOST for the other, in updates and in reconciliation. Resumed, it
/// re-registers: both frameworks hear their task runs (Mesos 1.5+:
/// REASON_AGENT_REREGISTERED, nothing killed), and KILL works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_frozen_past_its_ping_timeouts_is_unreachable_and_comes_back() -> Result<()> {
    if !runnable(false) {
        return Ok(());
    }
    let mut cluster = Cluster::start_full("rust", &["--agent_ping_timeout=1secs", "--max_agent_ping_timeouts=2"], &[]).await?;
    let (mut aware, agent_id) = running_task(&cluster, "aware", true, "aware-task").await?;
    let (mut plain, _) = running_task(&cluster, "plain", false, "plain-task").await?;
    no_update(&mut aware, Duration::from_millis(1500)).await?;

    let frozen = Instant::now();
    cluster.signal_agent(Signal::SIGSTOP)?;
    expect_update(&mut aware, "aware-task", TaskState::TaskUnreachable, Reason::AgentRemoved, Duration::from_secs(10)).await?;
    expect_update(&mut plain, "plain-task", TaskState::TaskLost, Reason::AgentRemoved, Duration::from_secs(10)).await?;
    assert!(frozen.elapsed() >= Duration::from_millis(1500), "unreachable after {:?}: not before 2 missed pings", frozen.elapsed());
    let st = state(&cluster.master).await?;
    assert_eq!((st["unreachable_slaves"].as_u64(), st["slaves"].as_array().map(Vec::len)), (Some(1), Some(0)), "{st}");
    let listed = st["frameworks"].as_array().context("frameworks")?.iter().find(|f| f["id"] == aware.framework_id.value.as_str()).context("aware")?.clone();
    assert_eq!((listed["tasks"].as_array().map(Vec::len), listed["unreachable_tasks"][0]["id"].as_str()), (Some(0), Some("aware-task")), "{listed}");
    reconcile(&aware, &[("aware-task", &agent_id)]).await?;
    assert_reconciled(&aware.next_update(Duration::from_secs(10)).await?, "aware-task", TaskState::TaskUnreachable);
    reconcile(&plain, &[("plain-task", &agent_id)]).await?;
    assert_reconciled(&plain.next_update(Duration::from_secs(10)).await?, "plain-task", TaskState::TaskLost);
    reconcile(&aware, &[]).await?;
    assert_reconciled(&aware.next_update(Duration::from_secs(10)).await?, "aware-task", TaskState::TaskUnreachable);

    cluster.signal_agent(Signal::SIGCONT)?;
    expect_update(&mut aware, "aware-task", TaskState::TaskRunning, Reason::AgentReregistered, Duration::from_secs(20)).await?;
    expect_update(&mut plain, "plain-task", TaskState::TaskRunning, Reason::AgentReregistered, Duration::from_secs(20)).await?;
    reconcile(&plain, &[("plain-task", &agent_id)]).await?;
    assert_reconciled(&plain.next_update(Duration::from_secs(10)).await?, "plain-task", TaskState::TaskRunning);
    for (sched, task) in [(&mut aware, "aware-task"), (&mut plain, "plain-task")] {
        sched.kill(task, Some(agent_id.clone())).await?;
        let updates = sched.updates_until_terminal(task, TIMEOUT).await.map_err(|e| e.context(cluster.agent_log()))?;
        assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{task}: {:?}", states(&updates));
    }
    aware.teardown().await?;
    plain.teardown().await?;
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// After a failover the master waits `--agent_reregister_timeout` for the
/// agents of its registry: meanwhile reconciliation of a task on such an
/// agent gets no answer (it may still report it), afterwards the agent is
/// unreachable (TASK_UNREACHABLE). When it comes back its tasks are known
/// again: RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_not_back_within_the_reregister_timeout_is_unreachable() -> Result<()> {
    if !runnable(false) {
        return Ok(());
    }
    let master_dir = tempfile::Builder::new().prefix("mezzo-master-").tempdir()?;
    let work_dir = format!("--work_dir={}", master_dir.path().display());
    let mut cluster = Cluster::start_full("rust", &[&work_dir, "--agent_reregister_timeout=4secs"], &[]).await?;
    let info = framework("waiting", true);
    let mut sched = Scheduler::subscribe_with(&cluster.master, info.clone()).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let agent_id = offer.agent_id.clone();
    launch_running(&mut sched, &cluster, &offer, &[("patient", Kind::MesosNoImage)]).await?;

    cluster.signal_agent(Signal::SIGSTOP)?;
    cluster.crash_and_restart_master(false).await?;
    let restarted = Instant::now();
    let mut sched = resubscribe(&cluster.master, &info, &sched.framework_id).await?;
    reconcile(&sched, &[("patient", &agent_id)]).await?;
    no_update(&mut sched, Duration::from_secs(1)).await?;
    let deadline = restarted + Duration::from_secs(4);
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(500)).await;
    reconcile(&sched, &[("patient", &agent_id)]).await?;
    assert_reconciled(&sched.next_update(Duration::from_secs(10)).await?, "patient", TaskState::TaskUnreachable);

    cluster.signal_agent(Signal::SIGCONT)?;
    let registered = Instant::now() + Duration::from_secs(30);
    loop {
        let state = state(&cluster.master).await?;
        if state["slaves"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        if Instant::now() > registered {
            bail!("the agent did not come back; agent log:\n{}", cluster.agent_log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reconcile(&sched, &[("patient", &agent_id)]).await?;
    assert_reconciled(&sched.next_update(Duration::from_secs(10)).await?, "patient", TaskState::TaskRunning);
    sched.kill("patient", Some(agent_id)).await?;
    let updates = sched.updates_until_terminal("patient", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
    sched.teardown().await?;
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}

/// A network namespace joined to the host by a veth pair on a private /24:
/// "another host" for an agent. Removed on drop.
struct OtherHost {
    netns: String,
    host_veth: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl OtherHost {
    fn create() -> Result<OtherHost> {
        let tag = std::process::id() % 10_000;
        let used = String::from_utf8_lossy(&std::process::Command::new("ip").args(["-o", "addr"]).output()?.stdout).into_owned();
        let subnet = (0..250u32)
            .map(|i| (std::process::id() + i) % 250 + 1)
            .map(|x| format!("10.213.{x}"))
            .find(|s| !used.contains(&format!("{s}.")))
            .context("no free 10.213.x.0/24")?;
        let host = OtherHost {
            netns: format!("mzfo-{tag}"),
            host_veth: format!("mzfo{tag}h"),
            host_ip: format!("{subnet}.1"),
            ns_ip: format!("{subnet}.2"),
        };
        let ns_veth = format!("mzfo{tag}n");
        ip(&["netns", "add", &host.netns])?;
        // From here on, drop removes what exists.
        ip(&["link", "add", &host.host_veth, "type", "veth", "peer", "name", &ns_veth])?;
        ip(&["link", "set", &ns_veth, "netns", &host.netns])?;
        ip(&["addr", "add", &format!("{}/24", host.host_ip), "dev", &host.host_veth])?;
        ip(&["link", "set", &host.host_veth, "up"])?;
        ip(&["-n", &host.netns, "addr", "add", &format!("{}/24", host.ns_ip), "dev", &ns_veth])?;
        ip(&["-n", &host.netns, "link", "set", &ns_veth, "up"])?;
        ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        Ok(host)
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, which deletes ours.
        let _ = ip(&["link", "del", &self.host_veth]);
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("cannot remove network namespace {}: {e}", self.netns);
        }
    }
}

/// Nothing relies on loopback: the master listens on a veth address only,
/// its agent runs in another network namespace ("another host"). kill -9 of
/// the master on its work_dir: the agent re-registers across the veth pair
/// with its task, which reconciles RUNNING and is killed through the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_on_another_host_comes_back_to_a_restarted_master() -> Result<()> {
    if !runnable(false) {
        return Ok(());
    }
    let other = OtherHost::create()?;
    let dir = tempfile::Builder::new().prefix("mezzo-otherhost-").tempdir()?;
    let bins = mezzo_tests::bin_dir();
    let master_port = mezzo_tests::free_port();
    let master = format!("{}:{master_port}", other.host_ip);
    let master_args = vec![format!("--ip={}", other.host_ip), format!("--port={master_port}"), format!("--work_dir={}", dir.path().join("master").display())];
    let master_log = dir.path().join("master.log");
    let mut master_proc = mezzo_tests::Proc::spawn("mezzo-master", &bins.join("mezzo-master"), &master_args, &master_log)?;
    let cgroups_root = format!("mezzo-otherhost-{}", std::process::id());
    // nsenter enters only the network namespace (`ip netns exec` would also
    // remount /sys, hiding the cgroup hierarchy from the agent).
    let mut agent_args = vec![format!("--net=/run/netns/{}", other.netns), "--".into(), bins.join("mezzo-agent").display().to_string()];
    agent_args.extend([
        format!("--master={master}"),
        format!("--ip={}", other.ns_ip),
        "--port=5051".into(),
        format!("--work_dir={}", dir.path().join("agent").display()),
        "--containerizers=rust".into(),
        format!("--cgroups_root={cgroups_root}"),
        "--resources=cpus:2;mem:2048;disk:4096;ports:[31000-32000]".into(),
        "--executor_shutdown_grace_period=2secs".into(),
    ]);
    let agent_log = dir.path().join("agent.log");
    let mut agent = mezzo_tests::Proc::spawn("mezzo-agent", std::path::Path::new("nsenter"), &agent_args, &agent_log)?;
    let logs = || format!("master log:\n{}\nagent log:\n{}", std::fs::read_to_string(&master_log).unwrap_or_default(), std::fs::read_to_string(&agent_log).unwrap_or_default());

    let result = async {
        // Until the agent has registered with the master.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !state(&master).await.is_ok_and(|s| s["slaves"].as_array().is_some_and(|a| !a.is_empty())) {
            if Instant::now() > deadline {
                bail!("the agent did not register across the veth pair; {}", logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let info = framework("other-host", true);
        let mut sched = Scheduler::subscribe_with(&master, info.clone()).await?;
        let offer = sched.next_offer(TIMEOUT).await.with_context(logs)?;
        assert!(offer.url.as_ref().is_some_and(|u| u.address.ip.as_deref() == Some(other.ns_ip.as_str())), "the agent is reached at {}: {offer:?}", other.ns_ip);
        let agent_id = offer.agent_id.clone();
        let task = command_task(&offer, "far", "sleep 1000", Kind::MesosNoImage, "busybox", 32.0);
        sched.launch_and_wait_running(&offer, task, TIMEOUT).await.with_context(logs)?;

        master_proc.crash();
        master_proc = mezzo_tests::Proc::spawn("mezzo-master", &bins.join("mezzo-master"), &master_args, &master_log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(state) = state(&master).await {
                if state["slaves"].as_array().is_some_and(|a| !a.is_empty()) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the agent did not re-register across the veth pair; {}", logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut sched = resubscribe(&master, &info, &sched.framework_id).await?;
        reconcile(&sched, &[("far", &agent_id)]).await?;
        assert_reconciled(&sched.next_update(Duration::from_secs(10)).await?, "far", TaskState::TaskRunning);
        sched.kill("far", Some(agent_id)).await?;
        let updates = sched.updates_until_terminal("far", TIMEOUT).await.with_context(logs)?;
        assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", states(&updates));
        sched.teardown().await?;
        Ok(())
    }
    .await;
    // SIGUSR1: the agent destroys its containers and exits.
    agent.stop_with(Signal::SIGUSR1, Duration::from_secs(30));
    master_proc.stop(Duration::from_secs(10));
    for controller in ["cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd", "unified"] {
        let _ = std::fs::remove_dir(mezzo_tests::cgroup_dir(controller, &cgroups_root));
    }
    drop(other);
    result
}

/// An agent the registry holds as gone (MARK_AGENT_GONE before a failover)
/// never comes back: its re-registration is answered 410, on which it kills
/// its tasks, destroys its containers and exits; the tasks reconcile as
/// TASK_GONE_BY_OPERATOR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_recorded_gone_is_refused_after_a_failover_and_shuts_down() -> Result<()> {
    use mezzo_proto::mezzo::registry::{registry_agent, RegistryAgent};
    use prost::Message;
    if !runnable(false) {
        return Ok(());
    }
    let master_dir = tempfile::Builder::new().prefix("mezzo-master-").tempdir()?;
    let work_dir = format!("--work_dir={}", master_dir.path().display());
    let mut cluster = Cluster::start_full("rust", &[&work_dir], &[]).await?;
    let info = framework("gone", true);
    let mut sched = Scheduler::subscribe_with(&cluster.master, info.clone()).await?;
    let offer = sched.next_offer(TIMEOUT).await?;
    let agent_id = offer.agent_id.clone();
    launch_running(&mut sched, &cluster, &offer, &[("doomed", Kind::MesosNoImage)]).await?;
    let agent_pid = cluster.agent_pid().context("agent pid")? as i32;

    // The agent is frozen and the master dies; the registry then says the
    // agent was marked gone (as the operator API's MARK_AGENT_GONE records
    // it), and the next master recovers that.
    cluster.signal_agent(Signal::SIGSTOP)?;
    cluster.crash_and_restart_master(false).await?;
    let entry = master_dir.path().join("registry/agents").join(&agent_id.value);
    let mut record = RegistryAgent::decode(&std::fs::read(&entry)?[..])?;
    assert_eq!(record.state(), registry_agent::State::Admitted);
    record.state = Some(registry_agent::State::Gone as i32);
    std::fs::write(&entry, record.encode_to_vec())?;
    cluster.crash_and_restart_master(false).await?;
    cluster.signal_agent(Signal::SIGCONT)?;
    mezzo_tests::wait_until("the gone agent shuts down", Duration::from_secs(60), || !mezzo_tests::alive(agent_pid)).await.with_context(|| cluster.agent_log())?;
    assert!(cluster.agent_log().contains("the master marked this agent gone: shutting down"), "{}", cluster.agent_log());
    let state = state(&cluster.master).await?;
    assert_eq!(state["slaves"].as_array().map(Vec::len), Some(0), "{state}");

    let mut sched = resubscribe(&cluster.master, &info, &sched.framework_id).await?;
    reconcile(&sched, &[("doomed", &agent_id)]).await?;
    assert_reconciled(&sched.next_update(Duration::from_secs(10)).await?, "doomed", TaskState::TaskGoneByOperator);
    sched.teardown().await?;
    cluster.stop();
    assert_clean(&cluster);
    Ok(())
}
