//! pid, ipc, uts and mount namespaces seen from inside real containers.

mod isolation_support;

use isolation_support::{host_mounts_under, shell, Harness, IMAGE, WAIT};
use std::time::Duration;

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap().display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespace_hides_host_processes() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-pid");
    let c = h.config("pidns", Some(IMAGE), shell("echo $$; readlink /proc/self/ns/pid; ps -o pid= | wc -l; ls /proc | grep -c '^[0-9]*$'"));
    let out = h.run_ok(&c).await;
    let lines: Vec<&str> = out.lines().collect();
    // PID 1 is the container's init (mezzo's), the task its only child.
    assert_eq!(lines[0], "2", "the task runs under the container's init: {out}");
    assert_ne!(lines[1], host_ns("pid"));
    // init, sh, ps/wc or ls/grep: a handful, not the host's hundreds.
    assert!(lines[2].trim().parse::<u32>().unwrap() <= 5, "{out}");
    assert!(lines[3].trim().parse::<u32>().unwrap() <= 5, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn share_pid_namespace_keeps_the_hosts() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-sharepid");
    let mut c = h.config("sharepid", Some(IMAGE), shell("readlink /proc/self/ns/pid; test -d /proc/$PPID && echo parent-visible"));
    c.linux.share_pid_namespace = true;
    let out = h.run_ok(&c).await;
    assert_eq!(out, format!("{}\nparent-visible\n", host_ns("pid")));
    // The host's own processes show, e.g. this test.
    let mut c = h.config("sharepid2", Some(IMAGE), shell(&format!("test -d /proc/{} && echo sees-test", std::process::id())));
    c.linux.share_pid_namespace = true;
    assert_eq!(h.run_ok(&c).await, "sees-test\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn uts_namespace_sets_the_hostname() {
    mezzo_testkit::require_root!();
    let before = nix::unistd::gethostname().unwrap();
    let h = Harness::new("ns-uts");
    let mut c = h.config("uts", Some(IMAGE), shell("hostname; readlink /proc/self/ns/uts"));
    c.hostname = Some("task-host".into());
    let out = h.run_ok(&c).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "task-host");
    assert_ne!(lines[1], host_ns("uts"));
    assert_eq!(nix::unistd::gethostname().unwrap(), before, "the host's name changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_hostname_the_task_keeps_the_hosts_name() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-utsdefault");
    let c = h.config("utsdefault", None, shell("hostname"));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(h.run_ok(&c).await.trim(), host);
}

#[tokio::test(flavor = "multi_thread")]
async fn ipc_namespace_is_private() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-ipc");
    let c = h.config("ipc", Some(IMAGE), shell("readlink /proc/self/ns/ipc; ipcs -m | grep -c '^0x' || true"));
    let out = h.run_ok(&c).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], host_ns("ipc"));
    assert_eq!(lines[1], "0", "host shared memory segments are visible: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_stay_in_the_container() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-mnt");
    let c = h.config("mnt", Some(IMAGE), shell("readlink /proc/self/ns/mnt; echo up > $MESOS_SANDBOX/ready; sleep 1000"));
    let mut launcher = h.start(&c).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !c.sandbox.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "task never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The rootfs overlay, the sandbox bind, /proc and friends exist only
    // in the container's namespace.
    assert!(host_mounts_under(h.tmp.path()).is_empty(), "{:?}", host_mounts_under(h.tmp.path()));
    let out = std::fs::read_to_string(c.sandbox.join("stdout")).unwrap();
    assert_ne!(out.trim(), host_ns("mnt"));
    h.containerizer.destroy("mnt").await.unwrap();
    let status = tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(host_mounts_under(h.tmp.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_is_at_mnt_mesos_sandbox_in_an_image() {
    mezzo_testkit::require_root!();
    let h = Harness::new("ns-sandbox");
    let c = h.config("sandbox", Some(IMAGE), shell("echo $MESOS_SANDBOX; pwd; echo inside > /mnt/mesos/sandbox/from-task; test -d /proc/1"));
    let host_sandbox = c.sandbox.display().to_string();
    let out = h.run_ok(&c).await;
    assert_eq!(out, "/mnt/mesos/sandbox\n/mnt/mesos/sandbox\n");
    assert_eq!(std::fs::read_to_string(c.sandbox.join("from-task")).unwrap(), "inside\n");
    // The host's path of the sandbox means nothing inside.
    let c = h.config("sandbox2", Some(IMAGE), shell(&format!("test -e {host_sandbox} || echo host-path-invisible")));
    assert_eq!(h.run_ok(&c).await, "host-path-invisible\n");
}

/// `Launcher::run_in_container` (the executor's COMMAND checks): the
/// command runs in the container's PID, mount, IPC and UTS namespaces, on
/// its rootfs, in its working directory and cgroups, with the container's
/// environment plus its own; its exit code comes back; one past its
/// timeout is killed.
#[tokio::test(flavor = "multi_thread")]
async fn commands_run_inside_a_running_container() {
    mezzo_testkit::require_root!();
    use mezzo_containerizer::{CommandOutcome, ContainerCommand, ExitStatus};
    let h = Harness::new("ns-exec");
    let mut c = h.config("exec", Some(IMAGE), shell("touch /tmp/only-inside; echo up > $MESOS_SANDBOX/ready; sleep 1000"));
    c.hostname = Some("exec-host".into());
    let mut launcher = h.start(&c).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !c.sandbox.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "task never got ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", std::process::id())).unwrap();
    let script = format!(
        "test -f /tmp/only-inside || exit 10; test \"$(hostname)\" = exec-host || exit 11; \
         test \"$(readlink /proc/self/ns/pid)\" != '{}' || exit 12; test \"$(readlink /proc/self/ns/ipc)\" != '{}' || exit 13; \
         test \"$(pwd)\" = /mnt/mesos/sandbox || exit 14; test \"$CHECK_VAR\" = yes || exit 15; test -n \"$MESOS_SANDBOX\" || exit 16; \
         test \"$(cat /proc/self/cgroup)\" != '{}' || exit 17; exit 7",
        host_ns("pid"),
        host_ns("ipc"),
        cgroup.trim_end()
    );
    let command = ContainerCommand { argv: vec!["/bin/sh".into(), "-c".into(), script], env: vec![("CHECK_VAR".into(), "yes".into())] };
    let outcome = launcher.run_in_container(&command, Duration::from_secs(20)).await.expect("run in the container");
    assert_eq!(outcome, CommandOutcome::Exited(ExitStatus::from_code(7)), "exit code 7 means every test passed; 10+ names the one that failed");
    let missing = ContainerCommand { argv: vec!["no-such-program".into()], env: vec![] };
    assert_eq!(launcher.run_in_container(&missing, Duration::from_secs(20)).await.unwrap(), CommandOutcome::Exited(ExitStatus::from_code(127)));
    let started = std::time::Instant::now();
    let slow = ContainerCommand { argv: vec!["sleep".into(), "30".into()], env: vec![] };
    assert_eq!(launcher.run_in_container(&slow, Duration::from_millis(300)).await.unwrap(), CommandOutcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    h.containerizer.destroy("exec").await.unwrap();
    tokio::time::timeout(WAIT, launcher.wait()).await.expect("end in time").expect("wait");
    assert!(host_mounts_under(h.tmp.path()).is_empty());
}
