//! The master group on a real ZooKeeper (Debian's, started by the testkit).

use std::time::Duration;

use mezzo_proto::mesos::v1::{Address, MasterInfo};
use mezzo_testkit::zookeeper::ZooKeeper;
use mezzo_zk::{Contender, Detector, Leadership, ZkUrl};
use tokio::sync::watch;

fn info(n: u16) -> MasterInfo {
    MasterInfo {
        id: format!("master-{n}"),
        ip: 16_777_343,
        port: u32::from(5000 + n),
        pid: Some(format!("master@127.0.0.1:{}", 5000 + n)),
        hostname: Some("127.0.0.1".into()),
        version: Some("1.11.0".into()),
        address: Some(Address { hostname: Some("127.0.0.1".into()), ip: Some("127.0.0.1".into()), port: i32::from(5000 + n) }),
        ..Default::default()
    }
}

async fn wait_for(rx: &mut watch::Receiver<Leadership>, what: &str, f: impl Fn(&Leadership) -> bool) -> Leadership {
    let found = match tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|l| f(l))).await {
        Ok(Ok(l)) => Some(l.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("timed out waiting until {what}; last: {:?}", *rx.borrow()))
}

#[tokio::test]
async fn lowest_candidacy_leads_and_the_next_takes_over_when_its_session_ends() {
    mezzo_testkit::require_zookeeper!();
    let zk = ZooKeeper::start().unwrap();
    let url = ZkUrl::parse("zk", &zk.url("/mezzo/group")).unwrap();
    let timeout = Duration::from_secs(2);
    let detector = Detector::start(url.clone(), timeout);
    let first = Contender::contend(&url, timeout, &info(1)).await.unwrap();
    let second = Contender::contend(&url, timeout, &info(2)).await.unwrap();
    let mut l1 = first.watch();
    let mut l2 = second.watch();
    let led = wait_for(&mut l1, "the first contender leads", |l| l.elected && l.group.candidacies.len() == 2).await;
    assert_eq!(led.group.leader_info().map(|i| i.id.as_str()), Some("master-1"));
    let follower = wait_for(&mut l2, "the second sees two candidacies", |l| l.group.candidacies.len() == 2).await;
    assert!(!follower.elected);
    assert_eq!(follower.group.leader_info(), Some(&info(1)));
    assert_eq!(detector.wait_for_leader(Duration::from_secs(20)).await, Some(info(1)));

    // What a pymesos-style detector reads: the smallest child, skipping
    // log_replicas, holds the leader's MasterInfo as JSON with address.ip/port.
    let client = mezzo_zk::connect(&url, timeout).await.unwrap();
    let mut children = client.list_children(&url.path).await.unwrap();
    children.retain(|c| c != "log_replicas");
    children.sort();
    assert_eq!(children[0], first.node());
    let (data, _) = client.get_data(&url.child(&children[0])).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(json["address"]["ip"], "127.0.0.1");
    assert_eq!(json["address"]["port"], 5001);
    assert_eq!(json["id"], "master-1");
    assert_eq!(json["pid"], "master@127.0.0.1:5001");

    // The leader's session ends: the second is elected, the detector follows.
    let mut changes = detector.watch();
    drop(l1);
    drop(first);
    let led = wait_for(&mut l2, "the second contender leads", |l| l.elected).await;
    assert_eq!(led.group.candidacies, vec![second.node().to_string()]);
    tokio::time::timeout(Duration::from_secs(20), changes.wait_for(|l| l.as_ref() == Some(&info(2)))).await.expect("the detector follows").unwrap();
}

#[tokio::test]
async fn a_leader_whose_zookeeper_is_gone_is_disconnected_then_loses_its_candidacy() {
    mezzo_testkit::require_zookeeper!();
    let mut zk = ZooKeeper::start().unwrap();
    let url = ZkUrl::parse("zk", &zk.url("/lone")).unwrap();
    let contender = Contender::contend(&url, Duration::from_secs(1), &info(1)).await.unwrap();
    let mut l = contender.watch();
    wait_for(&mut l, "it leads", |l| l.elected && l.connected).await;
    zk.kill();
    wait_for(&mut l, "it is disconnected", |l| !l.connected).await;
    let lost = wait_for(&mut l, "its candidacy is lost", |l| l.lost.is_some()).await;
    assert!(!lost.elected, "{lost:?}");
}
