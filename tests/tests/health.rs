//! Health checks (`TaskInfo.health_check`) and checks (`TaskInfo.check`)
//! end to end through the master, in both containerizers: HTTP, TCP and
//! COMMAND health checks turning healthy (HTTP and TCP reach the task where
//! it listens: on the host's loopback, or inside a docker bridge container's
//! own network namespace; COMMAND runs inside the task's container), an app
//! that stops answering killed after `consecutive_failures` (TASK_KILLED with
//! `healthy=false`, as Mesos's command executor), a KILL of a health-checked
//! task that reports no unhealthy update while the task dies, a `CheckInfo`
//! reporting `check_status` on every change, and bad checks refused by the
//! master naming the field.

use anyhow::{bail, Context, Result};
use mezzo_proto::mesos::v1::health_check::{HttpCheckInfo, TcpCheckInfo};
use mezzo_proto::mesos::v1::task_status::Reason;
use mezzo_proto::mesos::v1::{
    check_info, container_info, environment, health_check, CheckInfo, CommandInfo, DurationInfo, Environment, HealthCheck, KillPolicy,
    Offer, TaskInfo, TaskState, TaskStatus,
};
use mezzo_tests::{assert_clean, command_task, containerizer_of, free_port, runnable, states, Cluster, Kind, Scheduler};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A shell command serving `ok` over HTTP on `listen` (`127.0.0.1:PORT`)
/// from the task's working directory, then `rest`.
fn httpd(listen: &str, rest: &str) -> String {
    format!("mkdir -p www && echo ok > www/index.html && busybox httpd -f -p {listen} -h \"$PWD/www\" {rest}")
}

fn health(kind: health_check::Type, interval: f64, failures: u32, grace: f64) -> HealthCheck {
    HealthCheck {
        r#type: Some(kind as i32),
        delay_seconds: Some(0.0),
        interval_seconds: Some(interval),
        timeout_seconds: Some(5.0),
        consecutive_failures: Some(failures),
        grace_period_seconds: Some(grace),
        ..Default::default()
    }
}

fn http_health(port: u16, interval: f64, failures: u32, grace: f64) -> HealthCheck {
    HealthCheck {
        http: Some(HttpCheckInfo { port: port.into(), path: Some("/index.html".into()), ..Default::default() }),
        ..health(health_check::Type::Http, interval, failures, grace)
    }
}

fn task_with(offer: &Offer, id: &str, command: &str, kind: Kind, fill: impl FnOnce(&mut TaskInfo)) -> TaskInfo {
    let mut task = command_task(offer, id, command, kind, "busybox", 64.0);
    task.kill_policy = Some(KillPolicy { grace_period: Some(DurationInfo { nanoseconds: 3_000_000_000 }) });
    fill(&mut task);
    task
}

/// Runs `test` against a fresh cluster for `kind` and cleans up.
async fn with_cluster<F, Fut>(kind: Kind, test: F) -> Result<()>
where
    F: FnOnce(Scheduler) -> Fut,
    Fut: std::future::Future<Output = Result<Scheduler>>,
{
    let mut cluster = Cluster::start(containerizer_of(kind)).await?;
    let sched = Scheduler::subscribe(&cluster.master, "health").await?;
    let result = test(sched).await;
    let log = cluster.agent_log();
    if let Ok(sched) = &result {
        sched.teardown().await.ok();
    }
    cluster.stop();
    assert_clean(&cluster);
    result.map(|_| ()).map_err(|e| e.context(format!("agent log:\n{log}")))
}

/// Updates of `id` until one says `healthy=true`; a terminal one first is an error.
async fn until_healthy(sched: &mut Scheduler, id: &str) -> Result<Vec<TaskStatus>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await.with_context(|| format!("{id}: {:?}", states(&seen)))?;
        if st.task_id.value != id {
            continue;
        }
        if st.state().is_terminal() {
            bail!("{id} ended before it was healthy: {st:?} after {:?}", states(&seen));
        }
        let healthy = st.healthy == Some(true);
        seen.push(st);
        if healthy {
            return Ok(seen);
        }
    }
}

fn assert_healthy_update(st: &TaskStatus) {
    assert_eq!(st.state(), TaskState::TaskRunning, "{st:?}");
    assert_eq!(st.reason(), Reason::TaskHealthCheckStatusUpdated, "{st:?}");
    assert!(st.container_status.is_some(), "a health update is a copy of TASK_RUNNING, with its container status: {st:?}");
}

/// HTTP, TCP and COMMAND health checks each turn their task healthy.
async fn http_tcp_and_command_checks_turn_healthy(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    with_cluster(kind, |mut sched| async move {
        let (http_port, tcp_port) = (free_port(), free_port());
        let offer = sched.next_offer(TIMEOUT).await?;
        let web = task_with(&offer, "web", &httpd(&format!("127.0.0.1:{http_port}"), ""), kind, |t| {
            t.health_check = Some(http_health(http_port, 0.2, 3, 30.0));
        });
        let tcp = task_with(&offer, "tcp", &format!("exec busybox nc -ll -p {tcp_port} -e /bin/true"), kind, |t| {
            t.health_check = Some(HealthCheck {
                tcp: Some(TcpCheckInfo { port: tcp_port.into(), ..Default::default() }),
                ..health(health_check::Type::Tcp, 0.2, 3, 30.0)
            });
        });
        // The command runs where the task runs (its working directory, the
        // sandbox as the container sees it, and the container's `/tmp`: its
        // own with an image) with the check's own environment.
        let cmd = task_with(&offer, "cmd", "touch ready /tmp/ready-cmd-$$ && echo $$ > pid && exec sleep 1000", kind, |t| {
            t.health_check = Some(HealthCheck {
                command: Some(CommandInfo {
                    value: Some("test -f ready && test -f /tmp/ready-cmd-$(cat pid) && test \"$CHECK_VAR\" = yes".into()),
                    environment: Some(Environment {
                        variables: vec![environment::Variable { name: "CHECK_VAR".into(), value: Some("yes".into()), ..Default::default() }],
                    }),
                    ..Default::default()
                }),
                ..health(health_check::Type::Command, 0.3, 3, 30.0)
            });
        });
        let mut tasks = vec![web, tcp, cmd];
        for t in &mut tasks {
            t.resources = vec![mezzo_tests::scalar("cpus", 0.1), mezzo_tests::scalar("mem", 32.0)];
        }
        sched.launch_tasks(&offer, tasks).await?;
        let mut healthy = std::collections::BTreeMap::new();
        let deadline = Instant::now() + TIMEOUT;
        while healthy.len() < 3 {
            let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await.with_context(|| format!("healthy so far: {healthy:?}"))?;
            let id = st.task_id.value.clone();
            assert!(!st.state().is_terminal(), "{id} ended: {st:?}");
            assert_ne!(st.healthy, Some(false), "{id} reported unhealthy (failures within the grace period before a success are ignored): {st:?}");
            if st.healthy == Some(true) {
                assert_healthy_update(&st);
                assert!(healthy.insert(id.clone(), st).is_none(), "{id}: healthy=true is reported once, not on every success");
            }
        }
        // No news while they stay healthy.
        let quiet = sched.next_update(Duration::from_secs(2)).await;
        assert!(quiet.is_err(), "no update while every task stays healthy: {quiet:?}");
        Ok(sched)
    })
    .await
}

/// A task whose server stops answering after it was healthy is reported
/// unhealthy on each failure and killed after `consecutive_failures`:
/// TASK_KILLED with `healthy=false`.
async fn app_that_stops_answering_is_killed(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    with_cluster(kind, |mut sched| async move {
        let port = free_port();
        let offer = sched.next_offer(TIMEOUT).await?;
        // The server goes after 2 s; the task itself stays.
        let command = httpd(&format!("127.0.0.1:{port}"), "& pid=$!; sleep 2; kill $pid; exec sleep 1000");
        let task = task_with(&offer, "flaky", &command, kind, |t| t.health_check = Some(http_health(port, 0.2, 3, 60.0)));
        sched.launch(&offer, task).await?;
        let began = Instant::now();
        until_healthy(&mut sched, "flaky").await?;
        let updates = sched.updates_until_terminal("flaky", TIMEOUT).await?;
        let unhealthy: Vec<&TaskStatus> = updates.iter().filter(|s| s.healthy == Some(false) && s.state() == TaskState::TaskRunning).collect();
        assert_eq!(unhealthy.len(), 3, "one unhealthy update per counted failure, after a success even within the grace period: {updates:?}");
        for st in &unhealthy {
            assert_eq!(st.reason(), Reason::TaskHealthCheckStatusUpdated, "{st:?}");
        }
        let last = updates.last().context("no update")?;
        assert_eq!(last.state(), TaskState::TaskKilled, "{:?}", states(&updates));
        assert_eq!(last.healthy, Some(false), "killed for failing its health check: {last:?}");
        let message = last.message.clone().unwrap_or_default();
        assert!(message.contains("3 consecutive failed health checks"), "{message}");
        assert!(began.elapsed() < Duration::from_secs(60), "{:?}", began.elapsed());
        Ok(sched)
    })
    .await
}

/// A KILL of a health-checked task: its checks stop when the kill starts, so
/// no unhealthy update comes while it dies (it stops serving at once but
/// takes 2 s to end), and the end is a plain TASK_KILLED.
async fn killed_task_reports_no_unhealthy_update(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    with_cluster(kind, |mut sched| async move {
        let port = free_port();
        let offer = sched.next_offer(TIMEOUT).await?;
        let command = httpd(
            &format!("127.0.0.1:{port}"),
            "& pid=$!; trap 'kill $pid; sleep 2; exit 0' TERM; while true; do sleep 0.1; done",
        );
        let task = task_with(&offer, "dying", &command, kind, |t| t.health_check = Some(http_health(port, 0.1, 1, 30.0)));
        sched.launch(&offer, task).await?;
        until_healthy(&mut sched, "dying").await?;
        sched.kill("dying", Some(offer.agent_id.clone())).await?;
        let updates = sched.updates_until_terminal("dying", TIMEOUT).await?;
        assert!(updates.iter().all(|s| s.healthy != Some(false)), "no unhealthy update while being killed: {updates:?}");
        let last = updates.last().context("no update")?;
        assert_eq!(last.state(), TaskState::TaskKilled, "{:?}", states(&updates));
        assert_eq!(last.healthy, None, "{last:?}");
        Ok(sched)
    })
    .await
}

/// A COMMAND `CheckInfo`: its exit code in `check_status`, reported with
/// REASON_TASK_CHECK_STATUS_UPDATED each time it changes (3, then 0 once
/// the task made its flag file), and an empty check status of the check's
/// type on the task's other updates; an HTTP `CheckInfo`: the server's
/// status code (404 for a missing page).
async fn check_reports_check_status(kind: Kind) -> Result<()> {
    if !runnable(kind) {
        return Ok(());
    }
    with_cluster(kind, |mut sched| async move {
        let check = |kind: check_info::Type, fill: &dyn Fn(&mut CheckInfo)| {
            let mut check = CheckInfo {
                r#type: Some(kind as i32),
                delay_seconds: Some(0.0),
                interval_seconds: Some(0.3),
                timeout_seconds: Some(5.0),
                ..Default::default()
            };
            fill(&mut check);
            check
        };
        let (port, http_port) = (free_port(), free_port());
        let offer = sched.next_offer(TIMEOUT).await?;
        let command = httpd(&format!("127.0.0.1:{port}"), "& sleep 2; touch flag; exec sleep 1000");
        let mut tasks = vec![
            task_with(&offer, "checked", &command, kind, |t| {
                t.check = Some(check(check_info::Type::Command, &|c| {
                    c.command = Some(check_info::Command { command: CommandInfo { value: Some("test -f flag || exit 3".into()), ..Default::default() } });
                }));
            }),
            task_with(&offer, "http-checked", &httpd(&format!("127.0.0.1:{http_port}"), ""), kind, |t| {
                t.check = Some(check(check_info::Type::Http, &|c| {
                    c.http = Some(check_info::Http { port: http_port.into(), path: Some("/missing".into()) });
                }));
            }),
        ];
        for t in &mut tasks {
            t.resources = vec![mezzo_tests::scalar("cpus", 0.1), mezzo_tests::scalar("mem", 32.0)];
        }
        sched.launch_tasks(&offer, tasks).await?;
        let deadline = Instant::now() + TIMEOUT;
        let (mut codes, mut http_code, mut seen) = (Vec::new(), None, Vec::new());
        while codes.last() != Some(&0) || http_code.is_none() {
            let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await.with_context(|| format!("{seen:?}"))?;
            assert!(!st.state().is_terminal(), "{st:?}");
            let cs = st.check_status.clone().with_context(|| format!("every update of a task with a check has a check status: {st:?}"))?;
            seen.push(format!("{} {}", st.task_id.value, st.state().as_str_name()));
            if st.task_id.value == "http-checked" {
                assert_eq!(cs.r#type, Some(check_info::Type::Http as i32), "{st:?}");
                if st.reason() == Reason::TaskCheckStatusUpdated {
                    assert!(http_code.is_none(), "reported on change only: {st:?}");
                    http_code = cs.http.and_then(|h| h.status_code);
                    assert_eq!(http_code, Some(404), "{st:?}");
                }
                continue;
            }
            assert_eq!(cs.r#type, Some(check_info::Type::Command as i32), "{st:?}");
            if st.reason() == Reason::TaskCheckStatusUpdated {
                assert_eq!(st.state(), TaskState::TaskRunning);
                codes.push(cs.command.and_then(|c| c.exit_code).context("a command check's result has its exit code")?);
            } else {
                assert_eq!(cs.command.and_then(|c| c.exit_code), None, "no result yet: {st:?}");
            }
        }
        assert_eq!(codes, [3, 0], "reported on change only");
        Ok(sched)
    })
    .await
}

/// HTTP and TCP health checks of a docker task on a BRIDGE network whose
/// servers listen on the container's own loopback: reachable only from
/// inside its network namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_bridge_checks_reach_the_container_loopback() -> Result<()> {
    if !runnable(Kind::Docker) {
        return Ok(());
    }
    with_cluster(Kind::Docker, |mut sched| async move {
        let offer = sched.next_offer(TIMEOUT).await?;
        let bridge = |t: &mut TaskInfo| {
            if let Some(docker) = t.container.as_mut().and_then(|c| c.docker.as_mut()) {
                docker.network = Some(container_info::docker_info::Network::Bridge as i32);
            }
        };
        let web = task_with(&offer, "bridge-web", &httpd("127.0.0.1:80", ""), Kind::Docker, |t| {
            bridge(t);
            t.health_check = Some(http_health(80, 0.2, 3, 30.0));
            t.resources = vec![mezzo_tests::scalar("cpus", 0.1), mezzo_tests::scalar("mem", 32.0)];
        });
        let tcp = task_with(&offer, "bridge-tcp", "exec nc -ll -p 7000 -e /bin/true", Kind::Docker, |t| {
            bridge(t);
            t.health_check = Some(HealthCheck {
                tcp: Some(TcpCheckInfo { port: 7000, ..Default::default() }),
                ..health(health_check::Type::Tcp, 0.2, 3, 30.0)
            });
            t.resources = vec![mezzo_tests::scalar("cpus", 0.1), mezzo_tests::scalar("mem", 32.0)];
        });
        sched.launch_tasks(&offer, vec![web, tcp]).await?;
        let mut healthy = std::collections::BTreeSet::new();
        let deadline = Instant::now() + TIMEOUT;
        while healthy.len() < 2 {
            let st = sched.next_update(deadline.saturating_duration_since(Instant::now())).await.with_context(|| format!("{healthy:?}"))?;
            assert!(!st.state().is_terminal(), "{st:?}");
            if st.healthy == Some(true) {
                assert_healthy_update(&st);
                healthy.insert(st.task_id.value.clone());
            }
        }
        Ok(sched)
    })
    .await
}

/// Bad checks never reach an agent: TASK_ERROR naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checks_are_refused_by_the_master() -> Result<()> {
    if !runnable(Kind::MesosNoImage) {
        return Ok(());
    }
    with_cluster(Kind::MesosNoImage, |mut sched| async move {
        let cases: Vec<(&str, Box<dyn Fn(&mut TaskInfo)>, &str)> = vec![
            ("negative-interval", Box::new(|t| t.health_check = Some(http_health(80, -1.0, 3, 0.0))), "'health_check.interval_seconds'"),
            (
                "no-port",
                Box::new(|t| t.health_check = Some(HealthCheck { http: Some(HttpCheckInfo::default()), ..health(health_check::Type::Http, 1.0, 3, 0.0) })),
                "'health_check.http.port'",
            ),
            ("unknown-type", Box::new(|t| t.health_check = Some(health(health_check::Type::Unknown, 1.0, 3, 0.0))), "'health_check.type'"),
            ("check-no-tcp", Box::new(|t| t.check = Some(CheckInfo { r#type: Some(check_info::Type::Tcp as i32), ..Default::default() })), "'check.tcp'"),
        ];
        for (id, fill, field) in cases {
            let offer = sched.next_offer(TIMEOUT).await?;
            sched.launch(&offer, task_with(&offer, id, "true", Kind::MesosNoImage, |t| fill(t))).await?;
            let updates = sched.updates_until_terminal(id, TIMEOUT).await?;
            let last = updates.last().context("no update")?;
            assert_eq!(last.state(), TaskState::TaskError, "{id}: {:?}", states(&updates));
            let message = last.message.clone().unwrap_or_default();
            assert!(message.contains(field), "{id}: {message}");
        }
        Ok(sched)
    })
    .await
}

mezzo_tests::per_containerizer!(
    http_tcp_and_command_checks_turn_healthy,
    app_that_stops_answering_is_killed,
    killed_task_reports_no_unhealthy_update,
    check_reports_check_status,
);
