//! Authentication (HTTP basic, `--credentials`) and authorization (Mesos's
//! local ACLs) of frameworks and operators, on a secured master.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mezzo_master::acls::Acls;
use mezzo_master::credentials::{Credential, Credentials};
use mezzo_master::{MasterConfig, STREAM_ID_HEADER};
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::scheduler::{call, event, Call};
use mezzo_proto::mesos::v1::{task_status, Filters, FrameworkId, FrameworkInfo, TaskState};

const ACLS: &str = r#"{
  "permissive": false,
  "register_frameworks": [
    {"principals": {"values": ["web", "db"]}, "roles": {"type": "ANY"}}
  ],
  "run_tasks": [
    {"principals": {"values": ["web"]}, "users": {"values": ["nobody"]}},
    {"principals": {"values": ["db"]}, "users": {"type": "ANY"}}
  ],
  "teardown_frameworks": [
    {"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}},
    {"principals": {"values": ["web"]}, "framework_principals": {"values": ["web"]}}
  ]
}"#;

fn credentials() -> Arc<Credentials> {
    let c = |p: &str, s: &str| Credential { principal: p.into(), secret: s.into() };
    Arc::new(Credentials::from_list(vec![
        c("web", "web-secret"),
        c("db", "db-secret"),
        c("ops", "ops-secret"),
        c("eve", "eve-secret"),
    ]))
}

/// A master as the README's secured cluster: every realm authenticated, ACLs on.
async fn secured_master() -> TestMaster {
    TestMaster::start_with(MasterConfig {
        credentials: Some(credentials()),
        authenticate_frameworks: true,
        authenticate_http_readwrite: true,
        authenticate_http_readonly: true,
        acls: Some(Arc::new(Acls::parse(ACLS).unwrap())),
        ..MasterConfig::default()
    })
    .await
}

/// A client that sends `principal:secret` with every request.
fn client_as(principal: &str, secret: &str) -> reqwest::Client {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Basic {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

fn info_as(name: &str, principal: &str) -> FrameworkInfo {
    let mut info = framework_info(name);
    info.principal = Some(principal.into());
    info
}

async fn subscribe_status(master: &TestMaster, client: &reqwest::Client, info: FrameworkInfo) -> reqwest::Response {
    client
        .post(master.url("/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .body(codec::encode(&subscribe_call(info), ContentType::Json))
        .send()
        .await
        .unwrap()
}

fn assert_challenge(resp: &reqwest::Response) {
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"mezzo\"");
}

#[tokio::test]
async fn framework_without_or_with_wrong_credentials_gets_401() {
    let master = secured_master().await;
    let resp = subscribe_status(&master, &reqwest::Client::new(), info_as("f", "web")).await;
    assert_challenge(&resp);
    let resp = subscribe_status(&master, &client_as("web", "wrong"), info_as("f", "web")).await;
    assert_challenge(&resp);
    let resp = subscribe_status(&master, &client_as("nobody-knows", "web-secret"), info_as("f", "web")).await;
    assert_challenge(&resp);
    // Right credentials, but FrameworkInfo claims another principal: 400.
    let resp = subscribe_status(&master, &client_as("eve", "eve-secret"), info_as("f", "web")).await;
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("'eve'") && text.contains("'web'"), "{text}");
    assert_eq!(state_as(&master, "ops").await["frameworks"].as_array().unwrap().len(), 0);

    // The right principal subscribes.
    let s = Scheduler::subscribe_with(&master, info_as("f", "web"), ContentType::Json, client_as("web", "web-secret")).await;
    // Its stream id and framework id alone do not let another process act for it.
    let revive = Call {
        framework_id: Some(FrameworkId { value: s.framework_id.clone() }),
        r#type: Some(call::Type::Teardown as i32),
        ..Default::default()
    };
    for client in [reqwest::Client::new(), client_as("web", "nope")] {
        let resp = client
            .post(master.url("/api/v1/scheduler"))
            .header("Content-Type", "application/json")
            .header(STREAM_ID_HEADER, &s.stream_id)
            .body(codec::encode(&revive, ContentType::Json))
            .send()
            .await
            .unwrap();
        assert_challenge(&resp);
    }
    // Another authenticated principal is not the framework's: 400, as Mesos.
    let resp = client_as("db", "db-secret")
        .post(master.url("/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header(STREAM_ID_HEADER, &s.stream_id)
        .body(codec::encode(&revive, ContentType::Json))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(state_as(&master, "ops").await["frameworks"].as_array().unwrap().len(), 1, "still there");
}

/// `/state` read with `principal`'s credentials.
async fn state_as(master: &TestMaster, principal: &str) -> serde_json::Value {
    let resp = client_as(principal, &format!("{principal}-secret"))
        .get(master.url("/state"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn readonly_and_readwrite_endpoints_need_credentials() {
    let master = secured_master().await;
    for path in ["/state", "/master/state.json", "/frameworks", "/slaves", "/tasks", "/flags", "/metrics/snapshot"] {
        let resp = reqwest::get(master.url(path)).await.unwrap();
        assert_challenge(&resp);
        let resp = client_as("ops", "bad").get(master.url(path)).send().await.unwrap();
        assert_challenge(&resp);
        let resp = client_as("ops", "ops-secret").get(master.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // Mesos leaves these open.
    for path in ["/version", "/health"] {
        assert_eq!(reqwest::get(master.url(path)).await.unwrap().status(), 200, "{path}");
    }
    let resp = reqwest::Client::new()
        .post(master.url("/teardown"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("frameworkId=x")
        .send()
        .await
        .unwrap();
    assert_challenge(&resp);

    // Off by default, as in Mesos.
    let open = TestMaster::start().await;
    assert_eq!(reqwest::get(open.url("/state")).await.unwrap().status(), 200);
    let s = Scheduler::subscribe(&open, framework_info("anonymous"), ContentType::Json).await;
    assert!(!s.framework_id.is_empty());
}

#[tokio::test]
async fn framework_not_allowed_to_run_as_root_gets_task_error_unauthorized() {
    let master = secured_master().await;
    // FrameworkInfo.user is root: a task without its own user runs as root.
    let mut s = Scheduler::subscribe_with(&master, info_as("web", "web"), ContentType::Json, client_as("web", "web-secret")).await;
    let mut agent = FakeAgent::start(&master).await;
    let root_by_default = task("as-framework-user", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    let mut root_explicit = task("as-root", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    root_explicit.command.as_mut().unwrap().user = Some("root".into());
    for t in [root_by_default, root_explicit] {
        let offers = s.next_offers().await;
        let mut c = accept_call(&[&offers[0].id], vec![t.clone()]);
        c.accept.as_mut().unwrap().filters = Some(Filters { refuse_seconds: Some(0.0) });
        assert_eq!(s.call(c).await, 202);
        let (status, _) = s.next_update().await;
        assert_eq!(status.task_id, t.task_id);
        assert_eq!(status.state(), TaskState::TaskError);
        assert_eq!(status.reason(), task_status::Reason::TaskUnauthorized);
        let message = status.message.unwrap();
        assert!(message.contains("'root'") && message.contains("run_tasks"), "{message}");
        assert!(agent.silent_for(Duration::from_millis(200)).await, "nothing reaches the agent");
    }
    // The offer's resources came back whole; as nobody the task launches.
    let offers = s.next_offers().await;
    assert_eq!(scalar_of(&offers[0].resources, "cpus"), 2.0);
    let mut allowed = task("as-nobody", &agent.agent_id, vec![scalar("cpus", 0.5)]);
    allowed.command.as_mut().unwrap().user = Some("nobody".into());
    assert_eq!(s.call(accept_call(&[&offers[0].id], vec![allowed])).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, "as-nobody");

    // "db" may run as anyone, root included.
    let mut d = Scheduler::subscribe_with(&master, info_as("db", "db"), ContentType::Json, client_as("db", "db-secret")).await;
    let offers = d.next_offers().await;
    assert_eq!(d.call(accept_call(&[&offers[0].id], vec![task("db-root", &agent.agent_id, vec![scalar("cpus", 0.5)])])).await, 202);
    let msg = agent.next_message().await;
    assert_eq!(msg.run_task.unwrap().task.task_id.value, "db-root");
}

#[tokio::test]
async fn unauthorized_subscribe_gets_an_error_event() {
    let master = secured_master().await;
    // eve authenticates but no register_frameworks ACL lets her in.
    let client = client_as("eve", "eve-secret");
    let resp = subscribe_status(&master, &client, info_as("eve", "eve")).await;
    assert_eq!(resp.status(), 200, "Mesos answers with a stream holding one ERROR");
    let body = tokio::time::timeout(WAIT, resp.bytes()).await.unwrap().unwrap();
    let mut decoder = mezzo_proto::recordio::Decoder::new(1 << 20);
    decoder.feed(&body);
    let record = decoder.next_record().unwrap().expect("one event");
    let ev: mezzo_proto::mesos::v1::scheduler::Event = codec::decode(&record, ContentType::Json).unwrap();
    assert_eq!(ev.r#type(), event::Type::Error);
    let message = ev.error.unwrap().message;
    assert!(message.contains("register_frameworks") && message.contains("'eve'"), "{message}");
    assert_eq!(state_as(&master, "ops").await["frameworks"].as_array().unwrap().len(), 0);
}

async fn teardown_as(master: &TestMaster, principal: &str, framework_id: &str) -> (u16, String) {
    let resp = client_as(principal, &format!("{principal}-secret"))
        .post(master.url("/master/teardown"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("frameworkId={framework_id}"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn teardown_by_a_principal_not_allowed_gets_403() {
    let master = secured_master().await;
    let web = Scheduler::subscribe_with(&master, info_as("web", "web"), ContentType::Json, client_as("web", "web-secret")).await;
    let db = Scheduler::subscribe_with(&master, info_as("db", "db"), ContentType::Json, client_as("db", "db-secret")).await;
    // eve has no teardown ACL; web may only tear down web's frameworks.
    let (code, text) = teardown_as(&master, "eve", &web.framework_id).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("teardown_frameworks"), "{text}");
    let (code, _) = teardown_as(&master, "web", &db.framework_id).await;
    assert_eq!(code, 403);
    assert_eq!(state_as(&master, "ops").await["frameworks"].as_array().unwrap().len(), 2, "nothing was torn down");
    let (code, text) = teardown_as(&master, "ops", "no-such-framework").await;
    assert_eq!((code, text.as_str()), (400, "No framework found with specified ID"));
    // Allowed principals can.
    assert_eq!(teardown_as(&master, "web", &web.framework_id).await.0, 200);
    assert_eq!(teardown_as(&master, "ops", &db.framework_id).await.0, 200);
    let state = state_as(&master, "ops").await;
    assert_eq!(state["frameworks"].as_array().unwrap().len(), 0);
    assert_eq!(state["completed_frameworks"].as_array().unwrap().len(), 2);
}
