//! HTTP error codes of the scheduler API, following `src/master/http.cpp`,
//! and the read-only endpoints.

mod common;

use common::*;
use mezzo_proto::codec::{self, ContentType};
use mezzo_proto::mesos::v1::scheduler::{call, Call};
use mezzo_proto::mesos::v1::{AgentId, TaskId};

async fn post(master: &TestMaster, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(master.url("/api/v1/scheduler")).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn subscribe_json() -> Vec<u8> {
    codec::encode(&subscribe_call(framework_info("e")), ContentType::Json)
}

#[tokio::test]
async fn malformed_requests_are_rejected() {
    let master = TestMaster::start().await;
    let json = [("Content-Type", "application/json")];

    let (code, text) = post(&master, &json, b"{not json".to_vec()).await;
    assert_eq!(code, 400);
    assert!(!text.is_empty());
    let (code, _) = post(&master, &[("Content-Type", "application/x-protobuf")], vec![0xff, 0xff, 0xff]).await;
    assert_eq!(code, 400, "malformed protobuf");
    // Valid JSON, but the required framework_info.user is missing.
    let (code, _) = post(&master, &json, br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"x"}}}"#.to_vec()).await;
    assert_eq!(code, 400);
    let (code, _) = post(&master, &json, br#"{"type":"SUBSCRIBE"}"#.to_vec()).await;
    assert_eq!(code, 400, "subscribe without payload");
    let (code, _) = post(&master, &[], subscribe_json()).await;
    assert_eq!(code, 400, "missing Content-Type");
    let (code, _) = post(&master, &[("Content-Type", "text/plain")], subscribe_json()).await;
    assert_eq!(code, 415);
    let (code, _) = post(&master, &[("Content-Type", "application/json"), ("Accept", "text/html")], subscribe_json()).await;
    assert_eq!(code, 406);
    let (code, _) = post(&master, &[("Content-Type", "application/json"), ("Mesos-Stream-Id", "x")], subscribe_json()).await;
    assert_eq!(code, 400, "SUBSCRIBE carrying a stream id");

    let resp = reqwest::get(master.url("/api/v1/scheduler")).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(!resp.text().await.unwrap().is_empty());

    // None of this created a framework.
    assert_eq!(master.state().await["frameworks"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn stream_id_and_framework_are_checked() {
    let master = TestMaster::start().await;
    let s = Scheduler::subscribe(&master, framework_info("ids"), ContentType::Json).await;
    let revive = Call {
        framework_id: Some(mezzo_proto::mesos::v1::FrameworkId { value: s.framework_id.clone() }),
        r#type: Some(call::Type::Revive as i32),
        ..Default::default()
    };
    let body = codec::encode(&revive, ContentType::Json);
    let (code, _) = post(&master, &[("Content-Type", "application/json")], body.clone()).await;
    assert_eq!(code, 400, "missing stream id");
    let (code, _) = post(&master, &[("Content-Type", "application/json"), ("Mesos-Stream-Id", "wrong")], body.clone()).await;
    assert_eq!(code, 400, "wrong stream id");
    let (code, text) = post(&master, &[("Content-Type", "application/json"), ("Mesos-Stream-Id", &s.stream_id)], body).await;
    assert_eq!(code, 202, "{text}");
    assert!(text.is_empty());

    let mut unknown = revive.clone();
    unknown.framework_id = Some(mezzo_proto::mesos::v1::FrameworkId { value: "nope".into() });
    let body = codec::encode(&unknown, ContentType::Json);
    let (code, _) = post(&master, &[("Content-Type", "application/json"), ("Mesos-Stream-Id", &s.stream_id)], body).await;
    assert_eq!(code, 400, "unknown framework");

    let mut no_fid = revive.clone();
    no_fid.framework_id = None;
    let body = codec::encode(&no_fid, ContentType::Json);
    let (code, _) = post(&master, &[("Content-Type", "application/json"), ("Mesos-Stream-Id", &s.stream_id)], body).await;
    assert_eq!(code, 400, "missing framework_id");

    // ACKNOWLEDGE with a uuid that is not 16 bytes.
    let ack = Call {
        r#type: Some(call::Type::Acknowledge as i32),
        acknowledge: Some(call::Acknowledge {
            agent_id: AgentId { value: "a".into() },
            task_id: TaskId { value: "t".into() },
            uuid: vec![1, 2, 3],
        }),
        ..Default::default()
    };
    assert_eq!(s.call(ack).await, 400);
}

#[tokio::test]
async fn invalid_role_gets_an_error_stream() {
    let master = TestMaster::start().await;
    let mut info = framework_info("badrole");
    info.roles = vec!["-bad".into()];
    let resp = reqwest::Client::new()
        .post(master.url("/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .body(codec::encode(&subscribe_call(info), ContentType::Json))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(WAIT, resp.bytes()).await.unwrap().unwrap();
    let mut decoder = mezzo_proto::recordio::Decoder::new(1 << 20);
    decoder.feed(&body);
    let record = decoder.next_record().unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(json["type"], "ERROR");
    assert!(json["error"]["message"].as_str().unwrap().contains("-bad"));
    assert!(decoder.next_record().unwrap().is_none(), "the stream ends after the error");
    assert_eq!(master.state().await["frameworks"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn protobuf_subscription_is_protobuf() {
    let master = TestMaster::start().await;
    let mut s = Scheduler::subscribe(&master, framework_info("pb"), ContentType::Protobuf).await;
    let e = s.next().await.unwrap();
    assert_eq!(e.kind(), mezzo_proto::mesos::v1::scheduler::event::Type::Heartbeat);
    assert!(e.json.is_none());
}

#[tokio::test]
async fn read_only_endpoints() {
    let master = TestMaster::start().await;
    let _agent = FakeAgent::start(&master).await;
    let v: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/version")).await.unwrap().text().await.unwrap()).unwrap();
    let version = v["version"].as_str().unwrap();
    assert!(version.split('.').all(|p| p.parse::<u32>().is_ok()), "{version}");
    assert!(v["build_date"].is_string() && v["git_sha"].is_string());
    assert_eq!(reqwest::get(master.url("/health")).await.unwrap().status(), 200);
    for path in ["/state", "/master/state", "/master/state/", "/state.json"] {
        let resp = reqwest::get(master.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let state: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        assert_eq!(state["slaves"][0]["hostname"], "localhost");
        assert_eq!(state["slaves"][0]["resources"]["ports"], "[31000-32000]");
    }
    let slaves: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/master/slaves/")).await.unwrap().text().await.unwrap()).unwrap();
    assert!(slaves["slaves"][0]["pid"].as_str().unwrap().starts_with("slave(1)@127.0.0.1:"));
    let metrics: serde_json::Value =
        serde_json::from_str(&reqwest::get(master.url("/metrics/snapshot")).await.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(metrics["master/slaves_active"], 1.0);
    assert_eq!(metrics["master/cpus_total"], 2.0);
}

#[tokio::test]
async fn agent_protocol_errors() {
    let master = TestMaster::start().await;
    let client = reqwest::Client::new();
    let resp = client
        .post(master.url("/mezzo/v1/agent/register"))
        .header("Content-Type", "application/x-protobuf")
        .body(vec![0xff, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let ping = mezzo_proto::mezzo::agent::Ping { agent_id: AgentId { value: "unknown".into() } };
    let resp = client
        .post(master.url("/mezzo/v1/agent/ping"))
        .header("Content-Type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&ping))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a ping without the session's token is refused");
    // A status update for a framework the master does not know is refused
    // with 410 Gone, so that the agent stops resending it.
    let agent = FakeAgent::start(&master).await;
    let status = mezzo_proto::mesos::v1::TaskStatus {
        task_id: TaskId { value: "t".into() },
        state: mezzo_proto::mesos::v1::TaskState::TaskRunning as i32,
        ..Default::default()
    };
    assert_eq!(agent.send_status("nobody", status).await, 410);
}
