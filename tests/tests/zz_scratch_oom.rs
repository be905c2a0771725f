use anyhow::Result;
use mezzo_tests::{command_task, Cluster, Kind, Scheduler, container_id_of};
use std::time::Duration;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch() -> Result<()> {
    let mut cluster = Cluster::start("rust").await?;
    let mut sched = Scheduler::subscribe(&cluster.master, "oom").await?;
    let offer = sched.next_offer(Duration::from_secs(60)).await?;
    sched.launch(&offer, command_task(&offer, "hog", "sleep 2; x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}; sleep 30", Kind::Mesos, "busybox", 32.0)).await?;
    for _ in 0..60 {
        if let Ok(st) = sched.next_update(Duration::from_millis(100)).await {
            println!("UPDATE {:?} {:?} {:?}", st.state(), st.message, container_id_of(&st));
            if let Some(cid) = container_id_of(&st) {
                let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(&cluster.cgroups_root).join(&cid);
                println!("oom_control: {:?}", std::fs::read_to_string(dir.join("memory.oom_control")));
                println!("procs: {:?}", std::fs::read_to_string(dir.join("cgroup.procs")));
                println!("max: {:?}", std::fs::read_to_string(dir.join("memory.max_usage_in_bytes")));
                use std::os::unix::fs::MetadataExt;
                println!("ino: {:?}", std::fs::metadata(&dir).map(|m| m.ino()));
                println!("events: {:?}", std::fs::read_to_string(dir.join("cgroup.event_control")).err());
            }
            if st.state().is_terminal() { break; }
        }
    }
    println!("{}", cluster.agent_log());
    let sb = cluster.agent_work_dir();
    println!("{}", String::from_utf8_lossy(&std::process::Command::new("sh").arg("-c").arg(format!("cat {}/slaves/*/frameworks/*/executors/hog/runs/latest/std*; cat {}/slaves/*/frameworks/*/executors/hog/runs/latest/executor.log | tail -20", sb.display(), sb.display())).output()?.stdout));
    sched.teardown().await.ok();
    cluster.stop();
    Ok(())
}
