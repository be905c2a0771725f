//! A container's runtime directory, `<runtime_root>/<container id>`: the one
//! owner of its files, as youki's `State` is of a container's state. Nothing
//! else names a file in it: the containerizer, both backends, the
//! supervisor (`mezzo-launcher`), the executor and the agent's recovery all
//! read and write through [`RuntimeDir`].
//!
//! What it holds:
//! * `backend`: the kind of backend that prepared the container (written
//!   first, so a destroy at any later point knows whose leftovers to remove);
//! * `spec.json`: the prepared [`ContainerSpec`];
//! * the rust backend's `bundle/config.json`, `state/` (libcontainer's
//!   root), `rootfs/` (the host rootfs mount point), `overlay/` (an image
//!   rootfs), `cgroups.json` (the v1 placement) and `cgroups/` (its views);
//! * the supervisor's `launcher.pid`, `pid` (the container's init),
//!   `limitation` (JSON, before) and `exit_status` (the raw wait status),
//!   and its log `launcher.log`;
//! * the docker backend's `docker-create.json` and `docker-launch.json`.
//!
//! Writes are atomic (a temp file renamed over the target), so a reader
//! never sees a partly written file, also when the writer crashes. They
//! are not fsynced: the files only matter while the node stays up (a reboot
//! ends every container, and recovery destroys a runtime directory whose
//! files are missing or unreadable), and an fsync costs about 12 ms on this
//! project's ext4 disks, several times per launch. Reads are bounded: a
//! huge or garbage file is an error, never a panic or an unbounded allocation.

use crate::{BackendKind, ContainerSpec, ContainerizerError, ExitStatus, Launcher, Limitation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The kind of backend that prepared the container.
const BACKEND_FILE: &str = "backend";
/// The container's `ContainerSpec`, as JSON.
const SPEC_FILE: &str = "spec.json";
/// Pid of the supervising `mezzo-launcher run`.
const LAUNCHER_PID_FILE: &str = "launcher.pid";
/// Host pid of the container's init.
const PID_FILE: &str = "pid";
/// Raw wait status of the container's task, written once it ended.
const EXIT_STATUS_FILE: &str = "exit_status";
/// The limitation (JSON) that ended the container, written by the
/// supervisor before `exit_status` when the kernel OOM-killed in its cgroup.
const LIMITATION_FILE: &str = "limitation";
/// The supervisor's own log (its stderr).
const LAUNCHER_LOG: &str = "launcher.log";
/// The rust backend's cgroup v1 placement (JSON), present only when the
/// supervisor places the container itself.
const PLACEMENT_FILE: &str = "cgroups.json";
/// The docker backend's rendered create request (JSON).
const DOCKER_CREATE_FILE: &str = "docker-create.json";
/// What the docker launcher needs besides the request (JSON).
const DOCKER_LAUNCH_FILE: &str = "docker-launch.json";
/// OCI bundle directory (holds `config.json`).
const BUNDLE_DIR: &str = "bundle";
/// libcontainer's state root; the container's state is `state/<id>`.
const STATE_DIR: &str = "state";
/// Mount point of the host's `/` for containers without an image.
const HOST_ROOTFS_DIR: &str = "rootfs";
/// Mount point of the container's tree of cgroup views (its `/sys/fs/cgroup`).
const VIEWS_DIR: &str = "cgroups";
/// An image rootfs: the overlay's `upper`, `work` and `merged` (or a copy).
const OVERLAY_DIR: &str = "overlay";

/// Largest pid, exit status or backend file.
const MAX_SMALL_FILE: u64 = 64;
/// Largest JSON document (a spec with a large environment fits easily).
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
/// How much of the end of the supervisor's log error messages look at.
const LOG_TAIL_BYTES: u64 = 16 << 10;

/// One container's runtime directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl AsRef<Path> for RuntimeDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl RuntimeDir {
    /// The runtime directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RuntimeDir { path: path.into() }
    }

    /// The runtime directory of `container_id` under `runtime_root`.
    pub fn of(runtime_root: &Path, container_id: &str) -> Self {
        RuntimeDir { path: runtime_root.join(container_id) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn into_path(self) -> PathBuf {
        self.path
    }

    /// The directory's last component, the container id by construction.
    pub fn container_id(&self) -> Option<String> {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Creates the directory (and its parents).
    pub fn create(&self) -> Result<(), ContainerizerError> {
        std::fs::create_dir_all(&self.path).map_err(ContainerizerError::io("create runtime directory", &self.path))
    }

    /// Removes the directory and everything in it; a missing one is fine.
    pub fn remove(&self) -> Result<(), ContainerizerError> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerizerError::io("remove runtime directory", &self.path)(e)),
        }
    }

    /// Records the kind of backend that prepares the container.
    pub fn write_backend(&self, kind: BackendKind) -> Result<(), ContainerizerError> {
        self.write(BACKEND_FILE, kind.name().as_bytes())
    }

    /// The kind of backend that prepared the container; `None` when none
    /// was recorded (nothing of a backend's was made yet).
    pub fn backend(&self) -> Result<Option<BackendKind>, ContainerizerError> {
        let Some(bytes) = self.read(BACKEND_FILE, MAX_SMALL_FILE)? else { return Ok(None) };
        let name = std::str::from_utf8(&bytes).map_err(|e| self.corrupt(BACKEND_FILE, e))?;
        BackendKind::from_name(name.trim())
            .map(Some)
            .ok_or_else(|| self.corrupt(BACKEND_FILE, format!("unknown backend '{}'", name.trim().escape_debug())))
    }

    pub fn write_spec(&self, spec: &ContainerSpec) -> Result<(), ContainerizerError> {
        self.write_json(SPEC_FILE, "container spec", spec)
    }

    /// The prepared container's spec; a missing spec is an error.
    pub fn read_spec(&self) -> Result<ContainerSpec, ContainerizerError> {
        self.read_json(SPEC_FILE)?.ok_or_else(|| {
            ContainerizerError::io("read container spec", self.path.join(SPEC_FILE))(std::io::ErrorKind::NotFound.into())
        })
    }

    /// Records the pid of the container's supervisor.
    pub fn write_launcher_pid(&self, pid: i32) -> Result<(), ContainerizerError> {
        self.write(LAUNCHER_PID_FILE, pid.to_string().as_bytes())
    }

    /// The recorded pid of the container's supervisor (which may have ended).
    pub fn launcher_pid(&self) -> Result<Option<i32>, ContainerizerError> {
        self.read_number(LAUNCHER_PID_FILE)
    }

    /// Records the host pid of the container's init.
    pub fn write_pid(&self, pid: i32) -> Result<(), ContainerizerError> {
        self.write(PID_FILE, pid.to_string().as_bytes())
    }

    /// The recorded host pid of the container's init (which may have ended).
    pub fn pid(&self) -> Result<Option<i32>, ContainerizerError> {
        self.read_number(PID_FILE)
    }

    /// Records the task's raw wait status, once it ended.
    pub fn write_exit_status(&self, status: ExitStatus) -> Result<(), ContainerizerError> {
        self.write(EXIT_STATUS_FILE, status.0.to_string().as_bytes())
    }

    /// The task's recorded raw wait status; `None` while it has not ended.
    pub fn exit_status(&self) -> Result<Option<ExitStatus>, ContainerizerError> {
        Ok(self.read_number(EXIT_STATUS_FILE)?.map(ExitStatus))
    }

    /// Whether an exit status was recorded (readable or not).
    pub fn has_exit_status(&self) -> bool {
        self.path.join(EXIT_STATUS_FILE).exists()
    }

    /// Records the limitation that ended the container (before the exit status).
    pub fn write_limitation(&self, limitation: &Limitation) -> Result<(), ContainerizerError> {
        self.write_json(LIMITATION_FILE, "limitation", limitation)
    }

    /// The recorded limitation that ended the container, if any.
    pub fn limitation(&self) -> Result<Option<Limitation>, ContainerizerError> {
        self.read_json(LIMITATION_FILE)
    }

    /// Where the supervisor's stderr goes.
    pub fn launcher_log(&self) -> PathBuf {
        self.path.join(LAUNCHER_LOG)
    }

    /// The last `lines` non-empty lines of the supervisor's log, joined with
    /// `; ` (for error messages); empty when there is no log.
    pub fn launcher_log_tail(&self, lines: usize) -> String {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut file = std::fs::File::open(self.launcher_log())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let text = String::from_utf8_lossy(&read().unwrap_or_default()).into_owned();
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].join("; ")
    }

    /// The OCI bundle (rust backend).
    pub fn bundle_dir(&self) -> PathBuf {
        self.path.join(BUNDLE_DIR)
    }

    /// libcontainer's state root (rust backend).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join(STATE_DIR)
    }

    /// The mount point of the host's `/` for a container without an image.
    pub fn host_rootfs_dir(&self) -> PathBuf {
        self.path.join(HOST_ROOTFS_DIR)
    }

    /// The mount point of the container's tree of cgroup views.
    pub fn views_dir(&self) -> PathBuf {
        self.path.join(VIEWS_DIR)
    }

    /// Where an image rootfs of the container is made.
    pub fn overlay_dir(&self) -> PathBuf {
        self.path.join(OVERLAY_DIR)
    }

    /// Records the rust backend's cgroup placement.
    pub fn write_placement<T: Serialize>(&self, placement: &T) -> Result<(), ContainerizerError> {
        self.write_json(PLACEMENT_FILE, "placement", placement)
    }

    /// The rust backend's cgroup placement, when one was recorded.
    pub fn placement<T: DeserializeOwned>(&self) -> Result<Option<T>, ContainerizerError> {
        self.read_json(PLACEMENT_FILE)
    }

    /// Records the docker backend's create request.
    pub fn write_docker_request<T: Serialize>(&self, request: &T) -> Result<(), ContainerizerError> {
        self.write_json(DOCKER_CREATE_FILE, "docker create request", request)
    }

    /// The docker backend's create request, when `prepare` got that far.
    pub fn docker_request<T: DeserializeOwned>(&self) -> Result<Option<T>, ContainerizerError> {
        self.read_json(DOCKER_CREATE_FILE)
    }

    /// Whether the docker backend's create request was written.
    pub fn has_docker_request(&self) -> bool {
        self.path.join(DOCKER_CREATE_FILE).exists()
    }

    /// Records the docker launcher's engine settings.
    pub fn write_docker_settings<T: Serialize>(&self, settings: &T) -> Result<(), ContainerizerError> {
        self.write_json(DOCKER_LAUNCH_FILE, "docker launch settings", settings)
    }

    /// The docker launcher's engine settings, if written.
    pub fn docker_settings<T: DeserializeOwned>(&self) -> Result<Option<T>, ContainerizerError> {
        self.read_json(DOCKER_LAUNCH_FILE)
    }

    /// The launcher of the prepared container, from the backend kind it
    /// records; `launcher_dir` is where mezzo's helper binaries are.
    pub fn launcher(&self, launcher_dir: &Path) -> Result<Box<dyn Launcher>, ContainerizerError> {
        let kind = self.backend()?.ok_or_else(|| {
            ContainerizerError::io("read backend file", self.path.join(BACKEND_FILE))(std::io::ErrorKind::NotFound.into())
        })?;
        kind.launcher(self, launcher_dir)
    }

    fn corrupt(&self, name: &str, reason: impl std::fmt::Display) -> ContainerizerError {
        ContainerizerError::RuntimeFile { path: self.path.join(name), reason: reason.to_string() }
    }

    /// `data` as the file `name`, atomically: written to a temp file of its
    /// own beside it, then renamed over it.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), ContainerizerError> {
        let (tmp, path) = (self.path.join(format!(".{name}.tmp")), self.path.join(name));
        std::fs::write(&tmp, data).map_err(ContainerizerError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ContainerizerError::io("rename", &path)(e)
        })
    }

    fn write_json<T: Serialize + ?Sized>(&self, name: &str, what: &str, value: &T) -> Result<(), ContainerizerError> {
        let json = serde_json::to_vec_pretty(value).map_err(|e| ContainerizerError::Other(format!("serialize {what}: {e}")))?;
        self.write(name, &json)
    }

    /// The file `name`, at most `limit` bytes; `None` when it does not exist.
    fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, ContainerizerError> {
        let path = self.path.join(name);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ContainerizerError::io("open", &path)(e)),
        };
        let mut bytes = Vec::new();
        // One byte more than allowed tells a file over the limit apart.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(ContainerizerError::io("read", &path))?;
        if bytes.len() as u64 > limit {
            return Err(self.corrupt(name, format!("larger than {limit} bytes")));
        }
        Ok(Some(bytes))
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ContainerizerError> {
        let Some(bytes) = self.read(name, MAX_DOCUMENT_BYTES)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| self.corrupt(name, e))
    }

    fn read_number(&self, name: &str) -> Result<Option<i32>, ContainerizerError> {
        let Some(bytes) = self.read(name, MAX_SMALL_FILE)? else { return Ok(None) };
        let text = std::str::from_utf8(&bytes).map_err(|e| self.corrupt(name, e))?;
        text.trim().parse().map(Some).map_err(|e| self.corrupt(name, format!("'{}' is not a number: {e}", text.trim().escape_debug())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LimitationReason;

    fn dir() -> (tempfile::TempDir, RuntimeDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RuntimeDir::of(tmp.path(), "c1");
        dir.create().unwrap();
        (tmp, dir)
    }

    /// The names of the files in the directory, sorted.
    fn names(dir: &RuntimeDir) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn missing_files_read_as_none() {
        let (_tmp, dir) = dir();
        assert_eq!(dir.container_id().as_deref(), Some("c1"));
        assert_eq!(dir.backend().unwrap(), None);
        assert_eq!(dir.pid().unwrap(), None);
        assert_eq!(dir.launcher_pid().unwrap(), None);
        assert_eq!(dir.exit_status().unwrap(), None);
        assert!(!dir.has_exit_status());
        assert_eq!(dir.limitation().unwrap(), None);
        assert_eq!(dir.placement::<serde_json::Value>().unwrap(), None);
        assert_eq!(dir.docker_request::<serde_json::Value>().unwrap(), None);
        assert_eq!(dir.launcher_log_tail(5), "");
        let e = dir.read_spec().unwrap_err();
        assert!(matches!(&e, ContainerizerError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{e}");
        assert!(e.to_string().contains("spec.json"), "{e}");
        assert!(dir.launcher(Path::new("/nonexistent")).is_err(), "no backend recorded");
    }

    #[test]
    fn round_trips() {
        let (_tmp, dir) = dir();
        for kind in BackendKind::ALL {
            dir.write_backend(kind).unwrap();
            assert_eq!(dir.backend().unwrap(), Some(kind));
        }
        let spec = ContainerSpec {
            container_id: "c1".into(),
            args: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
            env: vec![("K".into(), "v=1\n".into())],
            cgroup_path: "/mezzo/c1".into(),
            ..Default::default()
        };
        dir.write_spec(&spec).unwrap();
        assert_eq!(dir.read_spec().unwrap(), spec);
        dir.write_launcher_pid(4242).unwrap();
        dir.write_pid(4343).unwrap();
        assert_eq!((dir.launcher_pid().unwrap(), dir.pid().unwrap()), (Some(4242), Some(4343)));
        for status in [ExitStatus::from_code(0), ExitStatus::from_code(3), ExitStatus::from_signal(9)] {
            dir.write_exit_status(status).unwrap();
            assert_eq!(dir.exit_status().unwrap(), Some(status));
        }
        assert!(dir.has_exit_status());
        let limitation = Limitation { reason: LimitationReason::Memory, resources: vec!["mem".into()], message: "OOM".into() };
        dir.write_limitation(&limitation).unwrap();
        assert_eq!(dir.limitation().unwrap(), Some(limitation));
        let doc = serde_json::json!({"hierarchies": [{"name": "memory"}]});
        dir.write_placement(&doc).unwrap();
        assert_eq!(dir.placement::<serde_json::Value>().unwrap(), Some(doc.clone()));
        dir.write_docker_request(&doc).unwrap();
        dir.write_docker_settings(&doc).unwrap();
        assert!(dir.has_docker_request());
        assert_eq!(dir.docker_request::<serde_json::Value>().unwrap(), Some(doc.clone()));
        assert_eq!(dir.docker_settings::<serde_json::Value>().unwrap(), Some(doc));
        // No temp file is left behind.
        assert!(names(&dir).iter().all(|n| !n.ends_with(".tmp")), "{:?}", names(&dir));
        std::fs::write(dir.launcher_log(), "one\n\ntwo\nthree\n").unwrap();
        assert_eq!(dir.launcher_log_tail(2), "two; three");
        dir.remove().unwrap();
        assert!(!dir.exists());
        dir.remove().unwrap();
    }

    /// A write replaces the file whole: a reader holding the old file still
    /// reads the old contents, and a stale temp file of a crashed writer is
    /// overwritten, never read.
    #[test]
    fn writes_replace_atomically() {
        let (_tmp, dir) = dir();
        dir.write_pid(1111).unwrap();
        let mut old = std::fs::File::open(dir.path().join("pid")).unwrap();
        std::fs::write(dir.path().join(".pid.tmp"), b"garbage of a crashed writer").unwrap();
        assert_eq!(dir.pid().unwrap(), Some(1111), "a stale temp file is not read");
        dir.write_pid(2222).unwrap();
        let mut text = String::new();
        old.read_to_string(&mut text).unwrap();
        assert_eq!(text, "1111", "the old file was replaced, not rewritten in place");
        assert_eq!(dir.pid().unwrap(), Some(2222));
        assert_eq!(names(&dir), vec!["pid".to_string()]);
        // A write that cannot rename leaves the old file and no temp file.
        std::fs::remove_file(dir.path().join("pid")).unwrap();
        std::fs::create_dir(dir.path().join("pid")).unwrap();
        std::fs::write(dir.path().join("pid/x"), b"").unwrap();
        assert!(dir.write_pid(3333).is_err());
        assert!(!dir.path().join(".pid.tmp").exists());
    }

    #[test]
    fn huge_or_garbage_files_are_errors_not_panics() {
        let (_tmp, dir) = dir();
        let huge = vec![b'7'; (MAX_DOCUMENT_BYTES + 1) as usize];
        for name in ["pid", "launcher.pid", "exit_status", "backend", "spec.json", "limitation", "cgroups.json", "docker-create.json"] {
            std::fs::write(dir.path().join(name), &huge).unwrap();
        }
        let too_large = |e: ContainerizerError| {
            let text = e.to_string();
            assert!(matches!(e, ContainerizerError::RuntimeFile { .. }) && text.contains("larger than"), "{text}");
        };
        too_large(dir.pid().unwrap_err());
        too_large(dir.launcher_pid().unwrap_err());
        too_large(dir.exit_status().unwrap_err());
        too_large(dir.backend().unwrap_err());
        too_large(dir.read_spec().unwrap_err());
        too_large(dir.limitation().unwrap_err());
        too_large(dir.placement::<serde_json::Value>().unwrap_err());
        too_large(dir.docker_request::<serde_json::Value>().unwrap_err());
        // A log of any size: only its end is read.
        std::fs::write(dir.launcher_log(), [&huge[..], b"\nlast words\n"].concat()).unwrap();
        assert_eq!(dir.launcher_log_tail(1), "last words");

        let garbage: &[u8] = b"\xff\xfe{not json\0";
        for name in ["pid", "exit_status", "backend", "spec.json", "limitation"] {
            std::fs::write(dir.path().join(name), garbage).unwrap();
        }
        let unreadable = |e: ContainerizerError, name: &str| {
            assert!(matches!(&e, ContainerizerError::RuntimeFile { path, .. } if path.ends_with(name)), "{e}");
        };
        unreadable(dir.pid().unwrap_err(), "pid");
        unreadable(dir.exit_status().unwrap_err(), "exit_status");
        unreadable(dir.backend().unwrap_err(), "backend");
        unreadable(dir.read_spec().unwrap_err(), "spec.json");
        unreadable(dir.limitation().unwrap_err(), "limitation");
        std::fs::write(dir.path().join("pid"), "12 34").unwrap();
        unreadable(dir.pid().unwrap_err(), "pid");
        std::fs::write(dir.path().join("pid"), "99999999999999").unwrap();
        unreadable(dir.pid().unwrap_err(), "pid");
        std::fs::write(dir.path().join("backend"), "lxc").unwrap();
        let e = dir.backend().unwrap_err().to_string();
        assert!(e.contains("unknown backend 'lxc'"), "{e}");
        // A directory where a file should be is an error too.
        std::fs::remove_file(dir.path().join("exit_status")).unwrap();
        std::fs::create_dir(dir.path().join("exit_status")).unwrap();
        assert!(dir.exit_status().is_err());
    }
}
