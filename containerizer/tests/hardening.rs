//! Hardening seen from inside real containers: capabilities, no_new_privs,
//! seccomp, masked and read-only /proc paths, rlimits, the task's user.

mod isolation_support;

use isolation_support::{shell, status_field, Harness, IMAGE};
use mezzo_containerizer::{ContainerConfig, LinuxOptions, RLimit};
use std::os::unix::fs::MetadataExt;

/// Docker's 14 default capabilities as a /proc status mask.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

fn caps(effective: Option<&[&str]>, bounding: Option<&[&str]>) -> LinuxOptions {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    LinuxOptions { effective_capabilities: effective.map(v), bounding_capabilities: bounding.map(v), ..Default::default() }
}

fn with_linux(mut c: ContainerConfig, linux: LinuxOptions) -> ContainerConfig {
    c.linux = linux;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn default_task_gets_docker_capabilities_nnp_and_seccomp() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-default");
    let c = h.config("defaults", Some(IMAGE), shell("cat /proc/self/status"));
    let out = h.run_ok(&c).await;
    assert_eq!(status_field(&out, "CapEff"), DOCKER_DEFAULT_CAPS);
    assert_eq!(status_field(&out, "CapBnd"), DOCKER_DEFAULT_CAPS);
    assert_eq!(status_field(&out, "CapPrm"), DOCKER_DEFAULT_CAPS);
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out, "Seccomp"), "2", "a seccomp filter is loaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_rootfs_task_is_hardened_too() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-host");
    let c = h.config("hosthard", None, shell("cat /proc/self/status"));
    let out = h.run_ok(&c).await;
    assert_eq!(status_field(&out, "CapEff"), DOCKER_DEFAULT_CAPS);
    assert_eq!(status_field(&out, "Seccomp"), "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn effective_capabilities_replace_the_default_set() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-eff");
    let c = h.config("effcaps", Some(IMAGE), shell("cat /proc/self/status"));
    let c = with_linux(c, caps(Some(&["CAP_NET_ADMIN", "CAP_CHOWN"]), None));
    let out = h.run_ok(&c).await;
    // CAP_CHOWN is bit 0, CAP_NET_ADMIN bit 12; everything else dropped.
    assert_eq!(status_field(&out, "CapEff"), "0000000000001001");
    assert_eq!(status_field(&out, "CapBnd"), "0000000000001001");
}

#[tokio::test(flavor = "multi_thread")]
async fn bounding_capabilities_cap_what_root_can_ever_get() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-bnd");
    let c = h.config("bndcaps", Some(IMAGE), shell("cat /proc/self/status; chown nobody /tmp && echo chowned"));
    let c = with_linux(c, caps(None, Some(&["CAP_KILL", "CAP_SETUID"])));
    let (status, out, err) = h.run(&c).await;
    // CAP_KILL bit 5, CAP_SETUID bit 7.
    assert_eq!(status_field(&out, "CapBnd"), "00000000000000a0");
    assert_eq!(status_field(&out, "CapEff"), "00000000000000a0");
    // CAP_CHOWN is outside the bounding set: even root cannot chown.
    assert!(!out.contains("chowned"), "{out}");
    assert!(!status.success() && err.contains("Operation not permitted"), "{status}: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn effective_outside_bounding_is_refused_at_prepare() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-badcaps");
    let c = h.config("badcaps", Some(IMAGE), shell("true"));
    let c = with_linux(c, caps(Some(&["CAP_SYS_ADMIN"]), Some(&["CAP_KILL"])));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("CAP_SYS_ADMIN") && err.contains("bounding"), "{err}");
    let c = h.config("unknowncap", Some(IMAGE), shell("true"));
    let c = with_linux(c, caps(Some(&["CAP_MAKE_COFFEE"]), None));
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("unknown capability 'CAP_MAKE_COFFEE'"), "{err}");
    assert!(!h.runtime_root().join("unknowncap").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn task_user_runs_unprivileged_and_owns_its_sandbox() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-user");
    let mut c = h.config("user", Some(IMAGE), shell("id -u; id -g; cat /proc/self/status; echo mine > $MESOS_SANDBOX/f"));
    c.command.user = Some("nobody".into());
    std::fs::write(c.sandbox.join("fetched"), "x").unwrap();
    let out = h.run_ok(&c).await;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(lines.next(), Some("65534"));
    // A non-root user keeps no capabilities across exec (as with Docker).
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");
    for f in ["", "stdout", "stderr", "fetched", "f"] {
        let m = std::fs::metadata(c.sandbox.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "owner of sandbox/{f}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn task_user_on_host_rootfs_resolves_in_host_passwd() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-hostuser");
    let mut c = h.config("hostuser", None, shell("id -u; touch $MESOS_SANDBOX/mine"));
    c.command.user = Some("nobody".into());
    let out = h.run_ok(&c).await;
    let uid = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
    assert_eq!(out.trim(), uid.to_string());
    assert_eq!(std::fs::metadata(c.sandbox.join("stdout")).unwrap().uid(), uid);
    assert_eq!(std::fs::metadata(c.sandbox.join("mine")).unwrap().uid(), uid);
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_capabilities_survive_for_a_non_root_user() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-ambient");
    let mut c = h.config("ambient", Some(IMAGE), shell("id -u; cat /proc/self/status"));
    c.command.user = Some("nobody".into());
    let c = with_linux(c, caps(Some(&["CAP_NET_BIND_SERVICE"]), None));
    let out = h.run_ok(&c).await;
    assert!(out.starts_with("65534\n"), "{out}");
    // Granted as ambient, as Mesos grants an explicit effective set.
    assert_eq!(status_field(&out, "CapEff"), "0000000000000400");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000400");
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_blocks_unshare_and_unconfined_allows_it() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-seccomp");
    // A user namespace needs no capability; only the profile stops it.
    let c = h.config("confined", Some(IMAGE), shell("unshare -U true && echo unshared"));
    let (status, out, err) = h.run(&c).await;
    assert!(!status.success(), "unshare succeeded under seccomp: {out}");
    assert!(err.contains("Operation not permitted"), "{err}");

    let mut c = h.config("unconfined", Some(IMAGE), shell("grep Seccomp: /proc/self/status; unshare -U true && echo unshared"));
    c.linux.seccomp_unconfined = true;
    let out = h.run_ok(&c).await;
    assert_eq!(out, "Seccomp:\t0\nunshared\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_blocks_mount_even_with_cap_sys_admin() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-mount");
    let admin = || caps(Some(&["CAP_SYS_ADMIN"]), None);
    let script = "mkdir -p /m && mount -t tmpfs none /m && grep -c ' /m ' /proc/self/mountinfo";
    let c = with_linux(h.config("mountdenied", Some(IMAGE), shell(script)), admin());
    let (status, _, err) = h.run(&c).await;
    assert!(!status.success());
    assert!(err.contains("Operation not permitted") || err.contains("permission denied"), "{err}");

    let mut linux = admin();
    linux.seccomp_unconfined = true;
    let c = with_linux(h.config("mountallowed", Some(IMAGE), shell(script)), linux);
    assert_eq!(h.run_ok(&c).await, "1\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_forks_pass_the_clone_rules_of_the_profile() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-clone");
    // The profile refuses clone only with namespace flags and answers
    // clone3 with ENOSYS; ordinary forks (subshells, pipelines, background
    // jobs) must still work.
    let c = h.config("clone", Some(IMAGE), shell("(echo child); echo piped | cat; sleep 0 & wait; echo done"));
    assert_eq!(h.run_ok(&c).await, "child\npiped\ndone\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn masked_paths_are_hidden() {
    mezzo_testkit::require_root!();
    // What the task must not see is there on the host.
    assert!(!std::fs::read_to_string("/proc/timer_list").unwrap().is_empty());
    assert!(std::fs::read_dir("/sys/firmware").unwrap().next().is_some());
    let h = Harness::new("hard-masked");
    let mut script = String::from(
        "test -c /proc/keys && test ! -s /proc/keys && echo keys-masked; \
         test -z \"$(cat /proc/timer_list)\" && echo timer-list-empty; \
         test -z \"$(ls -A /sys/firmware)\" && echo firmware-empty; \
         mkdir /sys/firmware/x 2>/dev/null || echo firmware-readonly; ",
    );
    let mut expected = String::from("keys-masked\ntimer-list-empty\nfirmware-empty\nfirmware-readonly\n");
    // Not every kernel has these (this VM's lacks both).
    if std::path::Path::new("/proc/kcore").exists() {
        script.push_str("test -c /proc/kcore && test -z \"$(head -c 1 /proc/kcore)\" && echo kcore-masked; ");
        expected.push_str("kcore-masked\n");
    }
    if std::path::Path::new("/proc/scsi").exists() {
        script.push_str("test -z \"$(ls -A /proc/scsi)\" && echo scsi-empty; ");
        expected.push_str("scsi-empty\n");
    }
    let c = h.config("masked", Some(IMAGE), shell(&script));
    assert_eq!(h.run_ok(&c).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn proc_sys_and_friends_are_read_only() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-ro");
    // Harmless if it were writable: drop_caches.
    let script = "cat /proc/sys/kernel/ostype; \
                  (echo 1 > /proc/sys/vm/drop_caches) 2>&1 | grep -q 'Read-only' && echo sys-ro; \
                  for p in /proc/sys /proc/irq /proc/bus /proc/fs; do \
                    awk -v p=$p '$5 == p { split($6, o, \",\"); print p, o[1] }' /proc/self/mountinfo; \
                  done";
    let c = h.config("procro", Some(IMAGE), shell(script));
    assert_eq!(h.run_ok(&c).await, "Linux\nsys-ro\n/proc/sys ro\n/proc/irq ro\n/proc/bus ro\n/proc/fs ro\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn rlimits_apply_and_unset_means_unlimited() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-rlimits");
    let mut c = h.config("rlimits", Some(IMAGE), shell("ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc; ulimit -u"));
    c.linux.rlimits = vec![
        RLimit { kind: "RLMT_NOFILE".into(), soft: Some(123), hard: Some(456) },
        RLimit { kind: "CORE".into(), soft: None, hard: None },
        RLimit { kind: "NPROC".into(), soft: Some(77), hard: Some(77) },
    ];
    assert_eq!(h.run_ok(&c).await, "123\n456\nunlimited\nunlimited\n77\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn rlimit_cpu_ends_a_busy_task() {
    mezzo_testkit::require_root!();
    let h = Harness::new("hard-rlimitcpu");
    let mut c = h.config("rlimitcpu", Some(IMAGE), shell("while :; do :; done"));
    c.linux.rlimits = vec![RLimit { kind: "CPU".into(), soft: Some(1), hard: Some(1) }];
    let (status, _, _) = h.run(&c).await;
    // Past the soft limit the kernel sends SIGXCPU (the hard limit SIGKILL).
    assert!(matches!(status.signal(), Some(libc::SIGXCPU) | Some(libc::SIGKILL)), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_rlimits_are_refused_at_prepare() {
    let h = Harness::new("hard-badrlimit");
    let mut c = h.config("badrlimit", Some(IMAGE), shell("true"));
    c.linux.rlimits = vec![RLimit { kind: "NOFILE".into(), soft: Some(100), hard: Some(1) }];
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("NOFILE") && err.contains("above the hard limit"), "{err}");
    c.linux.rlimits = vec![RLimit { kind: "NOFILE".into(), soft: Some(100), hard: None }];
    let err = h.containerizer.prepare(&c).await.unwrap_err().to_string();
    assert!(err.contains("both be set"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_linux_isolators_no_hardening_is_added() {
    mezzo_testkit::require_root!();
    let h = Harness::with("hard-none", |c| {
        c.isolation = ["filesystem/linux", "cgroups/cpu", "cgroups/mem", "namespaces/pid"].map(String::from).to_vec();
    });
    let c = h.config("nohard", Some(IMAGE), shell("cat /proc/self/status"));
    let out = h.run_ok(&c).await;
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
    assert_eq!(status_field(&out, "Seccomp"), "0");
    // The backend's baseline capability set still applies.
    assert_eq!(status_field(&out, "CapEff"), DOCKER_DEFAULT_CAPS);
}
