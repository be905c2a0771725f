//! The registry in ZooKeeper: fencing of a deposed leader, no writes without quorum.

use std::time::{Duration, Instant};

use mezzo_master::registry::{Entry, Kind, RegistryError, RegistryStore};
use mezzo_master::zk_store::ZkStore;
use mezzo_proto::mesos::v1::MasterInfo;
use mezzo_testkit::zookeeper::ZooKeeper;
use mezzo_zk::{Contender, ZkUrl};

fn info(id: &str) -> MasterInfo {
    MasterInfo { id: id.into(), ip: 16_777_343, port: 5050, ..Default::default() }
}

#[tokio::test]
async fn a_stale_writer_is_fenced_and_no_quorum_means_no_write() {
    mezzo_testkit::require_zookeeper!();
    let mut zk = ZooKeeper::start().unwrap();
    let url = ZkUrl::parse("zk", &zk.url("/mezzo")).unwrap();
    let timeout = Duration::from_secs(2);
    let a = Contender::contend(&url, timeout, &info("a")).await.unwrap();
    let store_a = ZkStore::claim(a.client().clone(), &url, a.node(), "a", timeout).await.unwrap();
    store_a.put(Kind::Agent, "agent/1", b"one".to_vec()).await.unwrap();
    store_a.put(Kind::Agent, "agent/1", b"two".to_vec()).await.unwrap();
    store_a.put(Kind::Agent, "agent-2", b"x".to_vec()).await.unwrap();
    store_a.delete(Kind::Agent, "agent-2").await.unwrap();
    store_a.delete(Kind::Agent, "never-stored").await.unwrap();
    store_a.put(Kind::Framework, "fw-1", b"fw".to_vec()).await.unwrap();
    assert_eq!(store_a.load(Kind::Agent).await.unwrap(), vec![Entry { id: "agent/1".into(), bytes: b"two".to_vec() }]);

    // A second master claims the registry (it was elected): it reads what
    // the first wrote, and the first, deposed, can no longer write.
    let b = Contender::contend(&url, timeout, &info("b")).await.unwrap();
    let store_b = ZkStore::claim(b.client().clone(), &url, b.node(), "b", timeout).await.unwrap();
    assert!(store_b.epoch() > store_a.epoch());
    assert_eq!(store_b.load(Kind::Agent).await.unwrap(), vec![Entry { id: "agent/1".into(), bytes: b"two".to_vec() }]);
    assert_eq!(store_b.load(Kind::Framework).await.unwrap(), vec![Entry { id: "fw-1".into(), bytes: b"fw".to_vec() }]);
    let fenced = store_a.fenced();
    assert!(fenced.borrow().is_none());
    for write in [store_a.put(Kind::Agent, "agent/1", b"stale".to_vec()), store_a.put(Kind::Agent, "new", b"stale".to_vec()), store_a.delete(Kind::Framework, "fw-1")] {
        match write.await {
            Err(RegistryError::Fenced(_)) => {}
            other => panic!("a deposed leader's write: {other:?}"),
        }
    }
    assert!(fenced.borrow().is_some());
    store_b.put(Kind::Agent, "agent/1", b"three".to_vec()).await.unwrap();
    assert_eq!(store_b.load(Kind::Agent).await.unwrap(), vec![Entry { id: "agent/1".into(), bytes: b"three".to_vec() }]);

    // A claim needs the claimant's candidacy: a master whose candidacy is gone cannot claim.
    let c = Contender::contend(&url, timeout, &info("c")).await.unwrap();
    let c_client = c.client().clone();
    c_client.delete(&url.child(c.node()), None).await.unwrap();
    match ZkStore::claim(c_client, &url, c.node(), "c", timeout).await {
        Err(RegistryError::Fenced(_)) => {}
        other => panic!("a claim without a candidacy: {other:?}"),
    }

    // ZooKeeper gone: no quorum, no write (refused, not queued).
    zk.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store_b.put(Kind::Agent, "agent/1", b"four".to_vec()).await {
            Err(RegistryError::Unavailable(_)) => break,
            Err(RegistryError::Fenced(_)) => break,
            other => assert!(Instant::now() < deadline, "a write without ZooKeeper: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    assert!(matches!(store_b.put(Kind::Agent, "agent/1", b"four".to_vec()).await, Err(RegistryError::Unavailable(_) | RegistryError::Fenced(_))));
    assert!(t.elapsed() < Duration::from_secs(3), "a refused write took {:?}", t.elapsed());
}
