//! `mezzo-launcher`: the single-threaded helper that runs one rust-backend
//! container with libcontainer and stays as its supervisor.
//!
//! libcontainer clones without exec, so it must never run inside a
//! multi-threaded process; this binary has no async runtime and no threads.
//!
//! * `mezzo-launcher run --runtime-dir DIR`: mounts the rootfs in a private
//!   mount namespace, creates and starts the container, prints
//!   `started <pid>` (or `error <reason>`) on stdout, forwards SIGTERM,
//!   SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the
//!   container's init, reaps it, records the task's raw wait status in the
//!   runtime directory (and prints `exited <status>`), deletes the
//!   container and exits. Every file of `DIR` is read and written through
//!   `mezzo_containerizer::RuntimeDir`.
//! * `mezzo-launcher kill --runtime-dir DIR --signal N`: a forwarded signal
//!   goes to the supervisor (which passes it on); any other (SIGKILL) to
//!   every process of the container.
//! * `mezzo-launcher exec --runtime-dir DIR [--timeout-ms N] [--env K=V]...
//!   -- PROGRAM ARG...`: runs a command inside the running container (the
//!   executor's COMMAND checks): in its namespaces and cgroups, on its root
//!   filesystem, as its user, with its capabilities, `no_new_privs` and
//!   seccomp filter, and its environment plus `--env`; prints `exited
//!   <status>` (a raw wait status) or `timeout` (it was killed after N ms).
//!
//! The container's init is this program's own code (see `container_init`):
//! libcontainer's init process forks the task into a process group of its
//! own and stays as PID 1, forwarding signals to that group and reaping
//! orphans; when the task ends it hands the task's wait status to the
//! supervisor over a pipe and exits. The task is never PID 1, so the kernel
//! never drops its SIGTERM.
//!
//! On cgroup v1 the backend records a placement: the
//! supervisor then puts the container in its cgroups itself, cheaply, and
//! libcontainer sees no cgroup hierarchy at all (see
//! `mezzo_containerizer::rust::Placement`).

use anyhow::{anyhow, bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{default::get_executor, Executor, ExecutorError, ExecutorValidationError};
use mezzo_containerizer::rust::{view_dir, Placement};
use mezzo_containerizer::{ContainerSpec, ExitStatus, Rootfs, RuntimeDir};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Signals forwarded to the container's init (and by it to the task's
/// process group); SIGCHLD wakes the reaper.
fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    for s in mezzo_containerizer::rust::FORWARDED_SIGNALS {
        if let Ok(s) = Signal::try_from(s) {
            set.add(s);
        }
    }
    set
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: mezzo-launcher run --runtime-dir DIR | kill --runtime-dir DIR --signal N | \
         exec --runtime-dir DIR [--timeout-ms N] [--env K=V]... -- PROGRAM [ARG]..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // `MEZZO_LOG` takes `level` or `target=level,...` directives (a `Targets`
    // filter: no regex engine in a process that stays for the task's life).
    let filter = std::env::var("MEZZO_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false))
        .with(filter)
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runtime_dir = None;
    let mut signal = None;
    let mut timeout = None;
    let mut env = Vec::new();
    let mut argv = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        if flag == "--" {
            argv = rest.cloned().collect();
            break;
        }
        match (flag.as_str(), rest.next()) {
            ("--runtime-dir", Some(v)) => runtime_dir = Some(PathBuf::from(v)),
            ("--signal", Some(v)) => signal = v.parse::<i32>().ok(),
            ("--timeout-ms", Some(v)) => match v.parse::<u64>() {
                Ok(ms) => timeout = Some(std::time::Duration::from_millis(ms)),
                Err(_) => return usage(),
            },
            ("--env", Some(v)) => match v.split_once('=') {
                Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(dir) = runtime_dir.map(RuntimeDir::new) else { return usage() };
    if args.first().map(String::as_str) == Some("exec") {
        if argv.is_empty() || signal.is_some() {
            return usage();
        }
        return match exec_in_container(&dir, &argv, &env, timeout) {
            Ok(code) => code,
            Err(e) => {
                let msg = format!("{e:#}").replace('\n', " ");
                println!("error {msg}");
                eprintln!("mezzo-launcher exec: {msg}");
                ExitCode::FAILURE
            }
        };
    }
    match (args.first().map(String::as_str), signal) {
        (Some("run"), None) => run(&dir),
        (Some("kill"), Some(sig)) => match kill(&dir, sig) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        _ => usage(),
    }
}

/// Runs in libcontainer's init process, once the container is set up:
/// forks the task (the default executor, after undoing what the supervisor
/// changed in the process state it inherits: the blocked signals and Rust's
/// ignored SIGPIPE) and becomes the container's init.
#[derive(Clone)]
struct SupervisedExecutor {
    /// Write end of the pipe on which the init reports the task's status.
    status: RawFd,
}

impl Executor for SupervisedExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let mut set = forwarded();
        set.add(Signal::SIGCHLD);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
            .map_err(|e| ExecutorError::Other(format!("block signals: {e}")))?;
        // SAFETY: libcontainer's init process is single-threaded (a clone of
        // the single-threaded supervisor), so the child is a full copy and
        // may run any code before it execs.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(ExecutorError::Other(format!("fork the task: {e}"))),
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
                let _ = nix::unistd::close(self.status);
                let failed = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                    .map_err(|e| ExecutorError::Other(format!("unblock signals: {e}")))
                    .and_then(|_| {
                        // SAFETY: setting a signal to its default disposition
                        // installs no handler; this process is single-threaded
                        // and about to exec.
                        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }
                            .map_err(|e| ExecutorError::Other(format!("reset SIGPIPE: {e}")))
                    })
                    .and_then(|_| get_executor().exec(spec));
                if let Err(e) = failed {
                    eprintln!("mezzo-launcher: cannot run the task: {e}");
                }
                // SAFETY: _exit ends this process at once; it never returns.
                unsafe { libc::_exit(127) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => container_init(child, self.status, &set),
        }
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        get_executor().validate(spec)
    }
}

/// The container's init (PID 1 of its PID namespace): forwards the
/// forwarded signals to the task's process group, reaps every child
/// (orphans of the task included), and when the task ends writes its raw
/// wait status to `status_fd` and exits with the shell's code for it (N,
/// or 128 + signal). It never returns.
///
/// It is a fork of the supervisor that did not exec: it makes itself
/// non-dumpable (so that no task can read its memory, environment or file
/// descriptors through /proc or ptrace without CAP_SYS_PTRACE) and closes
/// every descriptor but the task's stdio and the status pipe.
fn container_init(task: nix::unistd::Pid, status_fd: RawFd, set: &SigSet) -> ! {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Also done by the child; whichever runs first makes the group exist
    // before any signal is forwarded to it.
    let _ = nix::unistd::setpgid(task, task);
    close_descriptors_except(status_fd);
    release_startup_memory();
    let set_ptr: *const libc::sigset_t = set.as_ref();
    loop {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes only into `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == task.as_raw() {
                let bytes = status.to_ne_bytes();
                // SAFETY: writes 4 bytes from a live buffer; a pipe write of
                // at most PIPE_BUF bytes is atomic.
                unsafe { libc::write(status_fd, bytes.as_ptr().cast(), bytes.len()) };
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    255
                };
                // SAFETY: _exit ends this process at once; the kernel then
                // kills what is left in the PID namespace.
                unsafe { libc::_exit(code) }
            }
            if pid <= 0 {
                break;
            }
        }
        // SAFETY: `set_ptr` points at a valid sigset for the call; a null
        // siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(set_ptr, std::ptr::null_mut()) };
        if sig <= 0 || sig == libc::SIGCHLD {
            continue;
        }
        // The task's group, or the task alone if it left its group.
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(-task.as_raw(), sig) } != 0 {
            // SAFETY: as above.
            unsafe { libc::kill(task.as_raw(), sig) };
        }
    }
}

/// Gives back what building the container used and waiting for it does not
/// need, once the container runs (the supervisor and the container's init
/// then only wait on signals for the task's life): malloc's free memory, and
/// this process's mappings of clean file pages (libcontainer's code and data
/// that setting the container up touched). Those pages stay in the page
/// cache, shared and reclaimable, and fault back in if ever used again; only
/// read-only private file mappings without a private (copied-on-write) page
/// are dropped, so nothing this process wrote can be lost. Best effort.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free memory of malloc's heaps to the
    // kernel; this process is single-threaded.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut clean = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(first), Some(second)) = (fields.next(), fields.next()) else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's header: range, perms, offset, device, inode, path.
            let inode = fields.nth(2).unwrap_or("0");
            let range = usize::from_str_radix(start, 16).ok().zip(usize::from_str_radix(end, 16).ok());
            let readonly_file = second.len() == 4 && second.as_bytes()[1] == b'-' && second.ends_with('p') && inode != "0";
            current = range.filter(|_| readonly_file);
        } else if first == "Anonymous:" {
            if let Some(range) = current.take().filter(|_| second == "0") {
                clean.push(range);
            }
        }
    }
    for (start, end) in clean {
        // SAFETY: the range is a whole private, read-only file mapping of this
        // process with no anonymous page (read just above; this
        // single-threaded process changed no mapping since): dropping its
        // pages only makes the next access read them from the file again.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Closes every file descriptor above 2 except `keep`.
fn close_descriptors_except(keep: RawFd) {
    let ranges = [(3, keep - 1), (keep + 1, i32::MAX)];
    // SAFETY: close_range only closes descriptors of this process, none of
    // which is used after this point except `keep` and stdio.
    let closed = ranges.iter().filter(|(lo, hi)| lo <= hi).all(|&(lo, hi)| unsafe {
        libc::syscall(libc::SYS_close_range, lo as libc::c_uint, hi as libc::c_uint, 0 as libc::c_uint) == 0
    });
    if closed {
        return;
    }
    // Older kernels or a filter refusing close_range: the open ones, by name.
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in open.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        let _ = nix::unistd::close(fd);
    }
}

/// `run`: reports start success or failure on stdout, as one line.
fn run(dir: &RuntimeDir) -> ExitCode {
    let mut ready = false;
    match supervise(dir, &mut ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            tracing::error!(error = %msg, "supervisor failed");
            if !ready {
                println!("error {msg}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Mounts the container's rootfs in this process's (private) mount namespace.
fn mount_rootfs(spec: &ContainerSpec, dir: &RuntimeDir) -> Result<()> {
    match &spec.rootfs {
        Rootfs::Host => {
            let target = mezzo_containerizer::rust::rootfs_path(spec, dir);
            std::fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
            mount(Some("/"), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .with_context(|| format!("bind the host's / onto {}", target.display()))?;
        }
        Rootfs::Overlay { lowers, upper, work, target } => {
            for d in [upper, work, target] {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
            }
            for l in lowers {
                if !l.is_dir() {
                    bail!("image layer {} is missing", l.display());
                }
            }
            mezzo_images::rootfs::mount_overlay(lowers, upper, work, target)
                .with_context(|| format!("mount the image rootfs at {}", target.display()))?;
        }
        Rootfs::Directory(d) => {
            if !d.is_dir() {
                bail!("rootfs {} is not a directory", d.display());
            }
        }
    }
    Ok(())
}

/// Opens a sandbox output file beneath the sandbox, never through a
/// symlink, a regular file only (`sandbox_fs`).
fn open_output(path: &Path) -> Result<File> {
    mezzo_containerizer::sandbox_fs::open_output(path, 0o644).with_context(|| format!("open {}", path.display()))
}

/// Builds the container's tree of cgroup views (its `/sys/fs/cgroup`): a
/// tmpfs with the container's cgroup of each placed hierarchy bound at
/// `.<name>` and the symlink `<name>` to it, then made read-only.
fn mount_views(placement: &Placement, dir: &RuntimeDir) -> Result<()> {
    let root = dir.views_dir();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), &root, Some("tmpfs"), flags, Some("mode=755,size=64k"))
        .with_context(|| format!("mount a tmpfs on {}", root.display()))?;
    for h in &placement.hierarchies {
        let view = view_dir(dir, &h.name);
        std::fs::create_dir(&view).with_context(|| format!("create {}", view.display()))?;
        mount(Some(&h.dir), &view, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind {} onto {}", h.dir.display(), view.display()))?;
        let link = root.join(&h.name);
        let target = view.file_name().map(PathBuf::from).unwrap_or_default();
        std::os::unix::fs::symlink(&target, &link).with_context(|| format!("symlink {}", link.display()))?;
    }
    mount(None::<&str>, &root, None::<&str>, flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, Some("mode=755,size=64k"))
        .with_context(|| format!("make {} read-only", root.display()))?;
    Ok(())
}

/// Removes every cgroup hierarchy from this (private, just unshared) mount
/// namespace, except the views under `dir`, and leaves an empty tmpfs at
/// the cgroupfs root: libcgroups then finds no hierarchy to manage.
fn hide_cgroups(dir: &RuntimeDir) -> Result<()> {
    let root = Path::new(mezzo_containerizer::isolators::DEFAULT_CGROUPFS_ROOT);
    // Usually one tmpfs holds every hierarchy: one detach takes them all,
    // for one RCU wait instead of one per hierarchy.
    match umount2(root, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(anyhow!(e).context(format!("unmount {}", root.display()))),
    }
    // Any hierarchy mounted elsewhere goes one by one.
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let mut hierarchies: Vec<PathBuf> = mezzo_containerizer::cgroupfs::parse_mountinfo(&text)
        .into_iter()
        .filter(|m| (m.fs_type == "cgroup" || m.fs_type == "cgroup2") && !m.mount_point.starts_with(dir.path()))
        .map(|m| m.mount_point)
        .collect();
    hierarchies.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    hierarchies.dedup();
    for m in &hierarchies {
        match umount2(m, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(anyhow!(e).context(format!("unmount {}", m.display()))),
        }
    }
    if root.is_dir() {
        mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some("mode=755"))
            .with_context(|| format!("mount a tmpfs on {}", root.display()))?;
    }
    Ok(())
}

/// Runs `build` (libcontainer's create, which clones the container's
/// processes) with this process in the container's cgroups and in a mount
/// namespace without cgroup hierarchies; then comes back to both. The
/// container's processes inherit the cgroups.
fn build_placed(
    placement: &Placement,
    dir: &RuntimeDir,
    build: impl FnOnce() -> Result<Container, libcontainer::error::LibcontainerError>,
) -> Result<Result<Container, libcontainer::error::LibcontainerError>> {
    let outer = File::open("/proc/self/ns/mnt").context("open this mount namespace")?;
    let cwd = std::env::current_dir().context("current directory")?;
    let mut back = placement.enter().context("move into the container's cgroups")?;
    let built = unshare(CloneFlags::CLONE_NEWNS)
        .context("unshare a mount namespace for libcontainer")
        .and_then(|_| hide_cgroups(dir))
        .map(|_| build());
    // Back in every case: a failure here leaves this process where it
    // must not stay, so the container goes too.
    let restored = setns(&outer, CloneFlags::CLONE_NEWNS)
        .context("return to the supervisor's mount namespace")
        .and_then(|_| std::env::set_current_dir(&cwd).context("restore the current directory"));
    let left = Placement::leave(&mut back);
    let failure = match (restored, left.into_iter().next()) {
        (Err(e), _) => Some(e),
        (Ok(()), Some(e)) => Some(anyhow!(e).context("leave the container's cgroups")),
        (Ok(()), None) => None,
    };
    match (built, failure) {
        (Ok(built), None) => Ok(built),
        (Ok(Ok(container)), Some(e)) => {
            if let Some(pid) = container.pid() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                reap(pid.as_raw());
            }
            Err(e)
        }
        (Ok(Err(_)), Some(e)) | (Err(e), _) => Err(e),
    }
}

fn supervise(dir: &RuntimeDir, ready: &mut bool) -> Result<()> {
    dir.write_launcher_pid(std::process::id() as i32)?;
    let spec = dir.read_spec()?;
    let placement = Placement::load(dir)?;

    // Blocked from now on, so a signal that arrives while the container is
    // being built waits (pending) and is forwarded once it runs.
    let mut set = forwarded();
    set.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("block signals")?;

    // Started before the slow steps below, to overlap the kernel's first
    // cgroup attach wait with them; reaped with the other children.
    // (With a placement nothing waits: the supervisor moves only itself.)
    if placement.is_none() && !spec.cgroup_path.is_empty() {
        let fs = mezzo_containerizer::isolators::CgroupFs::detect();
        start_attach_warmup(&fs.dir("pids", &spec.cgroup_path).join("cgroup.procs"));
    }

    // A private mount namespace: the rootfs mounts vanish with this process
    // and its container, and never show on the host.
    unshare(CloneFlags::CLONE_NEWNS).context("unshare the mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("make / private")?;
    mount_rootfs(&spec, dir)?;
    if let Some(p) = &placement {
        mount_views(p, dir)?;
    }

    let devnull = File::open("/dev/null").context("open /dev/null")?;
    // The `sandbox` logger: the container writes its output files itself. `logrotate`: it writes pipes, which
    // this supervisor copies into rotating files for the task's life.
    let (stdout, stderr, mut copier): (OwnedFd, OwnedFd, Option<Copier>) = match &spec.log_rotation {
        None => (open_output(&spec.stdout)?.into(), open_output(&spec.stderr)?.into(), None),
        Some(rotation) => {
            let (out, err) = rotation.writers(&spec.stdout, &spec.stderr).with_context(|| format!("open {}", spec.stdout.display()))?;
            let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("create the stdout pipe")?;
            let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("create the stderr pipe")?;
            (out_write, err_write, Some(Copier::new(vec![(out_read, out), (err_read, err)])?))
        }
    };
    let state_root = dir.state_dir();
    std::fs::create_dir_all(&state_root).with_context(|| format!("create {}", state_root.display()))?;
    // The container's init reports the task's wait status on this pipe.
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).context("create the status pipe")?;
    let executor = SupervisedExecutor { status: status_write.as_raw_fd() };
    let build = || {
        ContainerBuilder::new(spec.container_id.clone(), SyscallType::default())
            .validate_id()
            .and_then(|b| b.with_root_path(&state_root))
            .map(|b| {
                b.with_executor(executor)
                    .with_stdin(devnull)
                    .with_stdout(stdout)
                    .with_stderr(stderr)
                    .as_init(dir.bundle_dir())
                    .with_systemd(false)
                    .with_detach(true)
            })
            .and_then(|b| b.build())
    };
    let built = match &placement {
        Some(p) => match build_placed(p, dir, build) {
            Ok(built) => built,
            Err(e) => {
                remove_failed(&state_root.join(&spec.container_id));
                return Err(e);
            }
        },
        None => build(),
    };
    // Only the container's init keeps the write end.
    drop(status_write);
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            remove_failed(&state_root.join(&spec.container_id));
            return Err(anyhow!(e).context("create container"));
        }
    };
    let init = container.pid().ok_or_else(|| anyhow!("container has no init pid"))?;
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        reap(init.as_raw());
        return Err(anyhow!(e).context("start container"));
    }
    dir.write_pid(init.as_raw())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "started {init}").and_then(|_| out.flush()).context("report readiness")?;
    }
    *ready = true;
    release_startup_memory();

    let init_status = match copier.as_mut() {
        None => wait_forwarding(init.as_raw(), &set)?,
        Some(copier) => wait_copying(init.as_raw(), &set, copier)?,
    };
    // The task's own status, as its init reported it; the init's when it
    // died before it could (SIGKILL to the whole container).
    let status = read_task_status(&status_read).unwrap_or(init_status);
    // The kernel's OOM counter for the container's memory cgroup, read
    // before delete removes the cgroup: an OOM kill of the init is then a
    // recorded limitation, never a guess from the exit status.
    if !spec.cgroup_path.is_empty() {
        let fs = mezzo_containerizer::isolators::CgroupFs::detect();
        if let Some(limitation) = mezzo_containerizer::isolators::oom_killed(&fs, &spec.cgroup_path) {
            dir.write_limitation(&limitation)?;
        }
    }
    dir.write_exit_status(ExitStatus(status))?;
    // Also tell a launcher still listening, in case the runtime directory
    // goes (destroy) before it reads the file. A reader that has gone away
    // only gives EPIPE: Rust ignores SIGPIPE here.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "exited {status}").and_then(|_| out.flush());
    }
    tracing::info!(container = %spec.container_id, status, "container ended");
    if placement.is_some() {
        // The cgroups are the backend's: its destroy kills what is left in
        // them and removes them. Only libcontainer's state goes here.
        let state = state_root.join(&spec.container_id);
        std::fs::remove_dir_all(&state).with_context(|| format!("remove {}", state.display()))?;
        return Ok(());
    }
    // Kills whatever is left in the cgroup and removes it and the state.
    container.delete(true).context("delete container")?;
    Ok(())
}

/// Forks a child that moves itself into the container's cgroup (`procs`,
/// a `cgroup.procs` file) and exits.
///
/// The first move of a process between cgroups after a quiet spell waits for
/// an RCU grace period (cgroup_threadgroup_rwsem turning to its slow mode),
/// 10 to 20 ms on cgroup v1; the kernel then keeps that mode for another
/// grace period. libcontainer moves the container's init a few milliseconds
/// later, after the rootfs mount and its own setup: with the wait already
/// under way in this child, the init's move waits only for what is left of it.
/// Best effort: without the cgroup, or if fork fails, nothing changes.
fn start_attach_warmup(procs: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(procs.as_os_str().as_bytes()) else { return };
    // SAFETY: this process is single-threaded (no runtime, no threads), so the
    // child is a full copy; it only calls async-signal-safe functions
    // (open, write, _exit) on memory prepared before the fork.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: `path` is a valid NUL-terminated string; "0" (this
            // process) is one valid byte; _exit never returns.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                }
                libc::_exit(0)
            }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(e) => tracing::debug!(error = %e, "fork for the cgroup attach warm-up"),
    }
}

/// The task's raw wait status its init wrote on the status pipe, if any.
fn read_task_status(pipe: &OwnedFd) -> Option<i32> {
    let mut bytes = [0u8; 4];
    match nix::unistd::read(pipe.as_raw_fd(), &mut bytes) {
        Ok(4) => Some(i32::from_ne_bytes(bytes)),
        _ => None,
    }
}

/// Waits for the init to end while forwarding signals to it (it passes
/// them on to the task); returns its raw wait status.
///
/// No timeout: SIGCHLD is blocked from before the first child was made, so
/// a child that ends after `reap` leaves it pending and the wait returns at
/// once; the supervisor sleeps for the task's whole life.
fn wait_forwarding(init: i32, set: &SigSet) -> Result<i32> {
    loop {
        // Reap first: SIGCHLD may have been consumed before this loop ran.
        if let Some(status) = reap(init) {
            return Ok(status);
        }
        let set_ptr: *const libc::sigset_t = set.as_ref();
        // SAFETY: `set_ptr` points at a valid sigset for the duration of the
        // call; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigwaitinfo(set_ptr, std::ptr::null_mut()) };
        if sig > 0 && sig != libc::SIGCHLD {
            tracing::info!(signal = sig, "forwarding to the container's init");
            // The init is this process's child and not reaped yet: its pid
            // cannot have been reused.
            // SAFETY: kill takes plain integers.
            if unsafe { libc::kill(init, sig) } != 0 {
                tracing::warn!(signal = sig, error = %std::io::Error::last_os_error(), "forward signal");
            }
        }
    }
}

/// The container's output pipes and the rotating files they are copied into (`--container_logger=logrotate`).
struct Copier {
    streams: Vec<Stream>,
    buf: Vec<u8>,
}

struct Stream {
    pipe: OwnedFd,
    writer: mezzo_containerizer::log_rotate::RotatingWriter,
    open: bool,
}

/// How long the copy waits for more output once the container's init ended: only processes that outlive it
/// (without `namespaces/pid` nothing kills them with it) may still hold the pipes; they are killed when the
/// container is deleted, after the copy. A quiet spell of `DRAIN_QUIET` ends it, and so does `DRAIN_MAX`.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(500);
const DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Copier {
    fn new(pipes: Vec<(OwnedFd, mezzo_containerizer::log_rotate::RotatingWriter)>) -> Result<Copier> {
        let mut streams = Vec::new();
        for (pipe, writer) in pipes {
            nix::fcntl::fcntl(pipe.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).context("make a pipe non-blocking")?;
            streams.push(Stream { pipe, writer, open: true });
        }
        Ok(Copier { streams, buf: vec![0; 64 * 1024] })
    }

    fn open(&self) -> bool {
        self.streams.iter().any(|s| s.open)
    }

    /// Copies what the pipe `i` holds (a bounded amount, so that signals are not kept waiting).
    fn copy(&mut self, i: usize) {
        let stream = &mut self.streams[i];
        for _ in 0..16 {
            match nix::unistd::read(stream.pipe.as_raw_fd(), &mut self.buf) {
                Ok(0) => {
                    stream.open = false;
                    return;
                }
                Ok(n) => {
                    // A full disk loses output, never the task: the pipe is always read.
                    if let Err(e) = stream.writer.write(&self.buf[..n]) {
                        tracing::warn!(file = %stream.writer.path().display(), error = %e, "cannot write the container's output");
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "read the container's output");
                    stream.open = false;
                    return;
                }
            }
        }
    }
}

/// `wait_forwarding` while copying the container's output: one `poll` over a signalfd (the forwarded signals
/// and SIGCHLD, blocked since the start) and the output pipes. Once the init ended, the pipes are drained until
/// they close (or stay quiet for `DRAIN_QUIET` ms).
fn wait_copying(init: i32, set: &SigSet, copier: &mut Copier) -> Result<i32> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let signals = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).context("create a signalfd")?;
    let mut status = reap(init);
    let mut drain_until = status.map(|_| std::time::Instant::now() + DRAIN_MAX);
    loop {
        if let Some(status) = status {
            if !copier.open() || drain_until.is_some_and(|t| std::time::Instant::now() >= t) {
                return Ok(status);
            }
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        fds.push(libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let streams: Vec<usize> = (0..copier.streams.len()).filter(|i| copier.streams[*i].open).collect();
        for i in &streams {
            fds.push(libc::pollfd { fd: copier.streams[*i].pipe.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let timeout = match drain_until {
            Some(t) => DRAIN_QUIET.min(t.saturating_duration_since(std::time::Instant::now())).as_millis() as i32,
            None => -1,
        };
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(anyhow!(e).context("poll"));
        }
        if ready == 0 {
            // Drained: what still holds a pipe outlived the container's init.
            return Ok(status.expect("only the drain has a timeout"));
        }
        if fds[0].revents != 0 {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    continue;
                }
                tracing::info!(signal = sig, "forwarding to the container's init");
                if status.is_none() {
                    // SAFETY: kill takes plain integers; the init is this process's unreaped child.
                    if unsafe { libc::kill(init, sig) } != 0 {
                        tracing::warn!(signal = sig, error = %std::io::Error::last_os_error(), "forward signal");
                    }
                }
            }
            if status.is_none() {
                status = reap(init);
                drain_until = status.map(|_| std::time::Instant::now() + DRAIN_MAX);
            }
        }
        for (slot, i) in streams.iter().enumerate() {
            if fds[slot + 1].revents != 0 {
                copier.copy(*i);
            }
        }
    }
}

/// Reaps every exited child; returns the init's raw wait status if it was
/// among them.
fn reap(init: i32) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == init {
            found = Some(status);
        }
    }
}

/// Best effort after a failed create: kill what was made and drop the state.
fn remove_failed(root: &Path) {
    if root.exists() {
        match Container::load(root.to_path_buf()) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    tracing::warn!(error = %e, "delete failed container");
                }
            }
            Err(e) => tracing::warn!(error = %e, "load failed container"),
        }
    }
    let _ = reap(-1);
}

/// `kill`: a forwarded signal goes to the container's supervisor, which
/// passes it to the init and so to the task; any other signal to every
/// process of the container, if it still runs.
fn kill(dir: &RuntimeDir, sig: i32) -> Result<()> {
    if mezzo_containerizer::rust::FORWARDED_SIGNALS.contains(&sig) {
        return match mezzo_containerizer::rust::live_supervisor(dir) {
            // SAFETY: kill takes plain integers.
            Some(pid) if unsafe { libc::kill(pid, sig) } != 0 => {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ESRCH) {
                    Ok(())
                } else {
                    Err(anyhow!(e).context(format!("signal {sig} to the supervisor {pid}")))
                }
            }
            // No supervisor: the container ended (or never started).
            _ => Ok(()),
        };
    }
    let spec = dir.read_spec()?;
    let signal = libcontainer::signal::Signal::try_from(sig).map_err(|e| anyhow!("invalid signal {sig}: {e}"))?;
    let root = dir.state_dir().join(&spec.container_id);
    if !root.join("state.json").exists() {
        // Not created yet, or already ended and deleted by its supervisor.
        return Ok(());
    }
    let mut container = match Container::load(root.clone()) {
        Ok(c) => c,
        Err(_) if !root.exists() => return Ok(()),
        Err(e) => return Err(anyhow!(e).context("load container state")),
    };
    match container.kill(signal, true) {
        Ok(()) => Ok(()),
        Err(_) if !root.exists() || dir.has_exit_status() => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("signal {sig}"))),
    }
}

/// The namespaces a command joins, in the order it joins them: the mount
/// namespace last (the host's `/proc` and cgroupfs are gone after it).
const EXEC_NAMESPACES: [(&str, CloneFlags); 5] = [
    ("pid", CloneFlags::CLONE_NEWPID),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// `exec`: runs `argv` inside the running container of `dir` and reports
/// how it ended on stdout, bounded by `timeout`.
///
/// The container's OCI spec (`config.json` of its bundle) says what its
/// process is (user and groups, environment, working directory,
/// capabilities, no_new_privs, seccomp); its first process's `/proc/<pid>/ns/*`
/// are the namespaces to join; its cgroups are the placement's or the
/// spec's. This process joins the PID namespace (which only its children
/// enter), forks, and the child joins the cgroups and the other namespaces
/// (mount last: entering it makes the container's root the child's root and
/// working directory), drops to the container's user and privileges and
/// execs. This binary is single-threaded, as `setns(CLONE_NEWNS)` requires.
fn exec_in_container(dir: &RuntimeDir, argv: &[String], env: &[(String, String)], timeout: Option<std::time::Duration>) -> Result<ExitCode> {
    use std::ffi::CString;
    use std::os::unix::fs::MetadataExt;
    let spec = dir.read_spec()?;
    if mezzo_containerizer::rust::live_supervisor(dir).is_none() {
        bail!("container {} is not running", spec.container_id);
    }
    let pid = dir.pid()?.ok_or_else(|| anyhow!("container {} has no recorded pid", spec.container_id))?;
    let config_path = dir.bundle_dir().join("config.json");
    let oci = Spec::load(&config_path).with_context(|| format!("read {}", config_path.display()))?;
    let process = oci.process().clone().ok_or_else(|| anyhow!("{} has no process", config_path.display()))?;

    // Namespaces the container has of its own, opened before anything changes.
    let mut namespaces = Vec::new();
    for (name, flag) in EXEC_NAMESPACES {
        let theirs = File::open(format!("/proc/{pid}/ns/{name}")).with_context(|| format!("open the container's {name} namespace"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).with_context(|| format!("stat this process's {name} namespace"))?;
        let meta = theirs.metadata().with_context(|| format!("stat the container's {name} namespace"))?;
        if meta.ino() != ours.ino() || meta.dev() != ours.dev() {
            namespaces.push((name, flag, theirs));
        }
    }
    // The container's cgroups (cgroup.procs of each).
    let cgroup_dirs: Vec<PathBuf> = match Placement::load(dir)? {
        Some(p) => p.hierarchies.iter().map(|h| h.dir.clone()).collect(),
        None if !spec.cgroup_path.is_empty() => mezzo_containerizer::isolators::CgroupFs::detect().existing_dirs(&spec.cgroup_path),
        None => Vec::new(),
    };
    let procs: Vec<CString> = cgroup_dirs
        .iter()
        .map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .context("cgroup path with NUL")?;

    // The environment: the container's, then the command's own.
    let mut vars: Vec<(String, String)> = process
        .env()
        .iter()
        .flatten()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    for (k, v) in env {
        vars.retain(|(name, _)| name != k);
        vars.push((k.clone(), v.clone()));
    }
    let path_var = vars.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let envp: Vec<CString> = vars.iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<_, _>>().context("NUL in the environment")?;
    let c_argv: Vec<CString> = argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>().context("NUL in the command")?;
    // Where the program may be, looked up in the container after it is entered.
    let candidates: Vec<CString> = if argv[0].contains('/') {
        vec![c_argv[0].clone()]
    } else {
        path_var
            .as_deref()
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| CString::new(format!("{}/{}", d.trim_end_matches('/'), argv[0])).ok())
            .collect()
    };
    let cwd = CString::new(process.cwd().as_os_str().as_encoded_bytes()).context("NUL in the working directory")?;
    let user = process.user();
    let (uid, gid) = (nix::unistd::Uid::from_raw(user.uid()), nix::unistd::Gid::from_raw(user.gid()));
    let groups: Vec<nix::unistd::Gid> = user.additional_gids().iter().flatten().map(|g| nix::unistd::Gid::from_raw(*g)).collect();
    let capabilities = process.capabilities().clone();
    let no_new_privileges = process.no_new_privileges().unwrap_or(false);
    let seccomp = oci.linux().as_ref().and_then(|l| l.seccomp().clone());

    // SIGCHLD blocked, so that its arrival can be waited for with a timeout.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), None).context("block SIGCHLD")?;
    if let Some((_, _, fd)) = namespaces.iter().find(|(name, _, _)| *name == "pid") {
        setns(fd, CloneFlags::CLONE_NEWPID).context("join the container's PID namespace")?;
    }
    // SAFETY: this process is single-threaded (no runtime, no threads), so
    // the child is a complete copy and may run any code before it execs.
    let child = match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Child => {
            let failed = (|| -> Result<std::convert::Infallible> {
                let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
                nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).context("unblock signals")?;
                // SAFETY: the default disposition installs no handler; single-threaded, about to exec.
                unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }.context("reset SIGPIPE")?;
                // The command's output goes where this helper's errors go;
                // stdout carries only the result.
                nix::unistd::dup2(2, 1).context("stdout to stderr")?;
                for path in &procs {
                    // SAFETY: a valid NUL-terminated path; "0" is one valid byte.
                    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
                    if fd < 0 || unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
                        bail!("join cgroup {}: {}", path.to_string_lossy(), std::io::Error::last_os_error());
                    }
                    // SAFETY: fd was opened just above.
                    unsafe { libc::close(fd) };
                }
                for (name, flag, fd) in namespaces.iter().filter(|(name, _, _)| *name != "pid") {
                    setns(fd, *flag).with_context(|| format!("join the container's {name} namespace"))?;
                }
                if nix::unistd::chdir(cwd.as_c_str()).is_err() {
                    nix::unistd::chdir("/").context("chdir to /")?;
                }
                if no_new_privileges {
                    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
                    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                        bail!("set no_new_privs: {}", std::io::Error::last_os_error());
                    }
                }
                if let Some(seccomp) = &seccomp {
                    libcontainer::seccomp::initialize_seccomp(seccomp).context("load the seccomp filter")?;
                }
                let syscall = libcontainer::syscall::syscall::create_syscall();
                syscall.set_groups(&groups).map_err(|e| anyhow!("set groups: {e}"))?;
                syscall.set_id(uid, gid).map_err(|e| anyhow!("set user {uid}:{gid}: {e}"))?;
                if let Some(caps) = &capabilities {
                    libcontainer::capabilities::drop_privileges(caps, &*syscall).map_err(|e| anyhow!("drop capabilities: {e}"))?;
                }
                let mut last = nix::errno::Errno::ENOENT;
                for program in &candidates {
                    match nix::unistd::execve(program, &c_argv, &envp) {
                        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
                        Err(e) => last = e,
                        Ok(never) => match never {},
                    }
                }
                bail!("exec {}: {last}", argv[0])
            })();
            let Err(e) = failed;
            eprintln!("mezzo-launcher exec: {e:#}");
            // SAFETY: _exit ends this process at once; it never returns.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let status = loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let reaped = unsafe { libc::waitpid(child.as_raw(), &mut status, libc::WNOHANG) };
        if reaped == child.as_raw() {
            break Some(status);
        }
        if reaped < 0 {
            bail!("wait for the command: {}", std::io::Error::last_os_error());
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => break None,
            },
            None => None,
        };
        let ts = left.map(|l| libc::timespec { tv_sec: l.as_secs() as libc::time_t, tv_nsec: l.subsec_nanos() as libc::c_long });
        let set_ptr: *const libc::sigset_t = chld.as_ref();
        // SAFETY: valid sigset and timespec pointers (or null for no timeout) for the call.
        unsafe { libc::sigtimedwait(set_ptr, std::ptr::null_mut(), ts.as_ref().map_or(std::ptr::null(), |t| t as *const _)) };
    };
    let mut out = std::io::stdout().lock();
    match status {
        Some(status) => {
            writeln!(out, "exited {status}")?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            // Its whole process group, then the child itself if it left it.
            // SAFETY: kill takes plain integers; the child is not reaped, so its pid is its own.
            unsafe {
                libc::kill(-child.as_raw(), libc::SIGKILL);
                libc::kill(child.as_raw(), libc::SIGKILL);
            }
            let _ = nix::sys::wait::waitpid(child, None);
            writeln!(out, "timeout")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
