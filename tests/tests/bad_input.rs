//! Malformed requests to either HTTP API get a 4xx with a message and change nothing.

use anyhow::Result;
use mezzo_proto::mesos::v1::executor;
use mezzo_proto::mesos::v1::{task_status, ExecutorId, TaskId, TaskState, TaskStatus};
use mezzo_tests::{command_task, Cluster, Kind, Scheduler};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn post(url: &str, content_type: &str, body: Vec<u8>, stream_id: Option<&str>) -> Result<(u16, String)> {
    post_as(url, content_type, body, stream_id, None).await
}

async fn post_as(url: &str, content_type: &str, body: Vec<u8>, stream_id: Option<&str>, token: Option<&str>) -> Result<(u16, String)> {
    let mut req = reqwest::Client::new().post(url).header("Content-Type", content_type).body(body);
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(id) = stream_id {
        req = req.header("Mesos-Stream-Id", id);
    }
    let resp = req.send().await?;
    let code = resp.status().as_u16();
    Ok((code, resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_change_nothing() -> Result<()> {
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "bad-input").await?;
    let scheduler_url = format!("http://{}/api/v1/scheduler", cluster.master);
    let executor_url = format!("http://{}/api/v1/executor", cluster.agent);

    for url in [&scheduler_url, &executor_url] {
        let (code, msg) = post(url, "application/json", b"{\"type\": \"SUBSCRIBE\", ".to_vec(), Some(&sched.stream_id)).await?;
        assert_eq!(code, 400, "malformed JSON to {url}");
        assert!(!msg.is_empty(), "400 without a message from {url}");
        let (code, msg) = post(url, "application/x-protobuf", vec![0xff, 0xff, 0xff, 0x01, 0x02], Some(&sched.stream_id)).await?;
        assert_eq!(code, 400, "malformed protobuf to {url}");
        assert!(!msg.is_empty());
        let (code, _) = post(url, "text/plain", b"hello".to_vec(), Some(&sched.stream_id)).await?;
        assert_eq!(code, 415, "unsupported content type to {url}");
    }

    // The cluster still works: a task runs, and bad executor updates for it are refused.
    let offer = sched.next_offer(TIMEOUT).await?;
    sched.launch(&offer, command_task(&offer, "victim", "sleep 1000", Kind::MesosNoImage, "", 32.0)).await?;
    let running = loop {
        let st = sched.next_update(TIMEOUT).await?;
        if st.state() == TaskState::TaskRunning {
            break st;
        }
        assert!(!st.state().is_terminal(), "{st:?}\n{}", cluster.agent_log());
    };
    // The victim's own executor token: validation comes after authentication.
    let token = mezzo_tests::executor_token(&mezzo_tests::container_id_of(&running).expect("container id"))?;
    let update = |state: TaskState, source: task_status::Source| {
        let mut status = TaskStatus {
            task_id: TaskId { value: "victim".into() },
            uuid: Some(mezzo_proto::new_uuid()),
            ..Default::default()
        };
        status.set_state(state);
        status.set_source(source);
        executor::Call {
            framework_id: sched.framework_id.clone(),
            executor_id: ExecutorId { value: "victim".into() },
            r#type: Some(executor::call::Type::Update as i32),
            update: Some(executor::call::Update { status }),
            ..Default::default()
        }
    };
    let staging = mezzo_proto::json::to_json(&update(TaskState::TaskStaging, task_status::Source::Executor));
    let (code, msg) = post_as(&executor_url, "application/json", staging.into_bytes(), None, Some(&token)).await?;
    assert_eq!(code, 400, "TASK_STAGING from an executor: {msg}");
    let not_executor = mezzo_proto::json::to_json(&update(TaskState::TaskFinished, task_status::Source::Agent));
    let (code, msg) = post_as(&executor_url, "application/json", not_executor.into_bytes(), None, Some(&token)).await?;
    assert_eq!(code, 400, "update whose source is not the executor: {msg}");

    // Nothing changed: the task is still running and ends only when killed.
    sched.kill("victim", None).await?;
    let updates = sched.updates_until_terminal("victim", TIMEOUT).await?;
    assert_eq!(updates.last().unwrap().state(), TaskState::TaskKilled, "{:?}", mezzo_tests::states(&updates));
    sched.teardown().await.ok();
    cluster.stop();
    Ok(())
}
