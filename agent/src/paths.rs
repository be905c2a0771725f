//! The agent's directory layout under `--work_dir`, as in Mesos.

use std::path::{Path, PathBuf};

/// `<work_dir>/slaves/<agent>/frameworks/<fw>/executors/<ex>`.
pub fn executor_dir(work_dir: &Path, agent_id: &str, framework_id: &str, executor_id: &str) -> PathBuf {
    work_dir
        .join("slaves")
        .join(agent_id)
        .join("frameworks")
        .join(framework_id)
        .join("executors")
        .join(executor_id)
}

/// The sandbox of one run of an executor: `<executor dir>/runs/<container id>`.
pub fn sandbox_dir(work_dir: &Path, agent_id: &str, framework_id: &str, executor_id: &str, container_id: &str) -> PathBuf {
    executor_dir(work_dir, agent_id, framework_id, executor_id).join("runs").join(container_id)
}

/// Ids become path components: refuse anything that could leave its directory.
pub fn safe_component(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/') && !id.contains('\0') && id.len() <= 255
}
