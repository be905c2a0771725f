//! The files API and `mezzo task list` / `mezzo task log` end to end, for
//! each containerizer, on the sandbox of a task launched through the
//! master: `/files/browse` compared field by field with what coreutils'
//! `stat` says of each entry (Mesos's format: `ls -l` mode, user and group
//! names, nlink, mtime in seconds), a planted symlink to `/` listed and not
//! followed, `/files/debug`, `LIST_FILES` and `READ_FILE` in JSON and
//! protobuf, and the CLI listing the task and following its output.

use anyhow::{bail, Context, Result};
use base64::Engine;
use mezzo_proto::codec::ContentType;
use mezzo_proto::mesos::v1::agent::{call, response, Call, Response};
use mezzo_proto::mesos::v1::{TaskInfo, TaskState};
use mezzo_tests::{assert_clean, command_task, Cluster, Kind, Scheduler};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);
const PRINCIPAL: &str = "ops";
const SECRET: &str = "ops-secret";

/// A running cluster with one task and what the test learnt of it.
struct World {
    cluster: Cluster,
    scheduler: Scheduler,
    agent_id: String,
    /// Host path of the task's sandbox (the agent's `/state`).
    sandbox: PathBuf,
    /// `/frameworks/<f>/executors/<e>/runs/latest`.
    virt: String,
    /// Sends the operator's credentials (the agent authenticates read-only endpoints).
    auth: bool,
    client: reqwest::Client,
    _creds: Option<tempfile::TempDir>,
}

/// `--http_credentials` for `--authenticate_http_readonly`.
fn credentials_flag(dir: &Path) -> String {
    let path = dir.join("http_credentials.json");
    std::fs::write(&path, format!(r#"{{"credentials":[{{"principal":"{PRINCIPAL}","secret":"{SECRET}"}}]}}"#)).unwrap();
    format!("--http_credentials=file://{}", path.display())
}

fn kind_image(containerizer: &str) -> (Kind, &'static str) {
    match containerizer {
        "docker" => (Kind::Docker, "busybox"),
        _ => (Kind::MesosNoImage, ""),
    }
}

impl World {
    /// Starts a cluster with `containerizer` and runs `command` as task `task_id` until TASK_RUNNING.
    async fn start(containerizer: &str, task_id: &str, command: &str, auth: bool) -> Result<World> {
        let creds = if auth { Some(tempfile::tempdir()?) } else { None };
        let mut agent_flags = Vec::new();
        if let Some(dir) = &creds {
            agent_flags.push("--authenticate_http_readonly".to_string());
            agent_flags.push(credentials_flag(dir.path()));
        }
        let flags: Vec<&str> = agent_flags.iter().map(String::as_str).collect();
        let cluster = Cluster::start_with(&format!("rust,{containerizer}").replace("rust,rust", "rust"), &flags).await?;
        let mut scheduler = Scheduler::subscribe(&cluster.master, "files-api").await?;
        let offer = scheduler.next_offer(TIMEOUT).await?;
        let (kind, image) = kind_image(containerizer);
        let task: TaskInfo = command_task(&offer, task_id, command, kind, image, 64.0);
        scheduler.launch_and_wait_running(&offer, task, TIMEOUT).await?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
        let mut w = World {
            cluster,
            agent_id: offer.agent_id.value.clone(),
            sandbox: PathBuf::new(),
            virt: format!("/frameworks/{}/executors/{task_id}/runs/latest", scheduler.framework_id.value),
            scheduler,
            auth,
            client,
            _creds: creds,
        };
        let state = w.agent_get_json("/state", &[]).await?;
        // The task may have ended already (a short one, on a loaded machine).
        let executor = ["executors", "completed_executors"]
            .iter()
            .flat_map(|k| state["frameworks"][0][k].as_array().into_iter().flatten())
            .find(|e| e["id"] == task_id)
            .with_context(|| format!("no executor {task_id} in the agent's state: {state}"))?;
        w.sandbox = PathBuf::from(executor["directory"].as_str().context("no directory")?);
        Ok(w)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.get(format!("http://{}{path}", self.cluster.agent));
        if self.auth {
            r.basic_auth(PRINCIPAL, Some(SECRET))
        } else {
            r
        }
    }

    async fn agent_get(&self, path: &str, query: &[(&str, &str)]) -> Result<(u16, reqwest::header::HeaderMap, String)> {
        let resp = self.get(path).query(query).send().await?;
        let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
        Ok((code, headers, resp.text().await?))
    }

    async fn agent_get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let (code, _, body) = self.agent_get(path, query).await?;
        if code != 200 {
            bail!("GET {path} {query:?}: {code} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    async fn browse(&self, path: &str) -> Result<(u16, String)> {
        let (code, _, body) = self.agent_get("/files/browse", &[("path", path)]).await?;
        Ok((code, body))
    }

    /// An agent operator API call in `ct`; the status and the body.
    async fn operator(&self, call: &Call, ct: ContentType) -> Result<(u16, Vec<u8>)> {
        let mut r = self
            .client
            .post(format!("http://{}/api/v1", self.cluster.agent))
            .header("Content-Type", ct.mime())
            .header("Accept", ct.mime())
            .body(mezzo_proto::codec::encode(call, ct));
        if self.auth {
            r = r.basic_auth(PRINCIPAL, Some(SECRET));
        }
        let resp = r.send().await?;
        Ok((resp.status().as_u16(), resp.bytes().await?.to_vec()))
    }

    /// Runs the `mezzo` CLI against this cluster's master.
    fn cli(&self, args: &[&str], with_credentials: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(mezzo_tests::bin_dir().join("mezzo"));
        cmd.arg("task").args(args).arg(format!("--master={}", self.cluster.master)).arg("--timeout=20");
        if with_credentials {
            cmd.args([format!("--principal={PRINCIPAL}"), format!("--secret={SECRET}")]);
        }
        cmd.env_remove("MEZZO_PRINCIPAL").env_remove("MEZZO_SECRET").kill_on_drop(true);
        cmd
    }

    async fn finish(mut self) {
        let _ = self.scheduler.teardown().await;
        // The executor is gone before the cluster stops (nothing left to clean up).
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let running = self.agent_get_json("/state", &[]).await.ok().is_some_and(|s| {
                s["frameworks"].as_array().into_iter().flatten().any(|f| f["executors"].as_array().is_some_and(|e| !e.is_empty()))
            });
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.cluster.stop();
        assert_clean(&self.cluster);
    }
}

/// What coreutils' `stat` (lstat: symlinks are not followed) says of
/// `path`, in Mesos's fields: mode string, nlink, size, mtime, user, group
/// (the numbers when the ids have no names).
fn stat_oracle(path: &Path) -> Value {
    let out = std::process::Command::new("stat").args(["-c", "%A|%h|%s|%Y|%U|%u|%G|%g"]).arg(path).output().unwrap();
    assert!(out.status.success(), "stat {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<&str> = text.trim().split('|').collect();
    let name = |name: &str, id: &str| if name == "UNKNOWN" { id.to_string() } else { name.to_string() };
    // Mesos's mode string has no set-id or sticky bits: the execute bit alone.
    let mode: String = f[0]
        .chars()
        .enumerate()
        .map(|(i, c)| match (i % 3, c) {
            (0, 's' | 't') if i > 0 => 'x',
            (0, 'S' | 'T') if i > 0 => '-',
            _ => c,
        })
        .collect();
    serde_json::json!({
        "mode": mode,
        "nlink": f[1].parse::<i64>().unwrap(),
        "size": f[2].parse::<u64>().unwrap(),
        "mtime": f[3].parse::<f64>().unwrap(),
        "uid": name(f[4], f[5]),
        "gid": name(f[6], f[7]),
    })
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Files of every kind and owner in the sandbox, as a task could leave them.
fn plant(sandbox: &Path) {
    std::fs::create_dir_all(sandbox.join("sub/deeper")).unwrap();
    std::fs::write(sandbox.join("sub/inner.txt"), "inner").unwrap();
    std::fs::write(sandbox.join("data"), "0123456789").unwrap();
    run("chmod", &["0640", &sandbox.join("data").display().to_string()]);
    run("chown", &["nobody:nogroup", &sandbox.join("data").display().to_string()]);
    run("touch", &["-d", "@1700000000", &sandbox.join("data").display().to_string()]);
    std::fs::hard_link(sandbox.join("data"), sandbox.join("hardlink")).unwrap();
    std::fs::write(sandbox.join("unnamed"), "x").unwrap();
    // Ids no user or group has: Mesos shows the numbers.
    run("chown", &["54321:54329", &sandbox.join("unnamed").display().to_string()]);
    run("chmod", &["4755", &sandbox.join("unnamed").display().to_string()]);
    std::os::unix::fs::symlink("/", sandbox.join("rootlink")).unwrap();
    nix::unistd::mkfifo(&sandbox.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// `/files/browse` (virtual and host paths), `/files/debug`, `LIST_FILES`,
/// `READ_FILE` and `mezzo task list` on a running task's sandbox.
async fn browse_and_list(containerizer: &str) {
    let w = World::start(containerizer, "browsed", "echo hello-files; sleep 300", true).await.unwrap();
    plant(&w.sandbox);
    // The docker containerizer copies the engine's log into the sandbox as it comes: wait for the task's line.
    let stdout = w.sandbox.join("stdout");
    mezzo_tests::wait_until("the task's line in its stdout", TIMEOUT, || std::fs::read_to_string(&stdout).is_ok_and(|s| s.contains("hello-files")))
        .await
        .unwrap();
    let names = ["data", "fifo", "hardlink", "rootlink", "stderr", "stdout", "sub", "unnamed"];

    // The listing: sorted by path, every field as Mesos formats it.
    let (code, body) = w.browse(&w.virt).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let listing: Vec<Value> = serde_json::from_str(&body).unwrap();
    let paths: Vec<&str> = listing.iter().map(|e| e["path"].as_str().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");
    for name in names {
        let path = format!("{}/{name}", w.virt);
        let entry = listing.iter().find(|e| e["path"] == path).unwrap_or_else(|| panic!("{name} not listed: {body}"));
        let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["gid", "mode", "mtime", "nlink", "path", "size", "uid"], "{name}: Mesos's fields");
        let expected = stat_oracle(&w.sandbox.join(name));
        if name == "stdout" || name == "stderr" {
            // The task's output may still grow: its kind, owner and links only.
            for field in ["mode", "nlink", "uid", "gid"] {
                assert_eq!(entry[field], expected[field], "{name}.{field}");
            }
            continue;
        }
        for field in ["mode", "nlink", "size", "mtime", "uid", "gid"] {
            assert_eq!(entry[field], expected[field], "{name}.{field}: {entry}");
        }
    }
    let by_name = |n: &str| listing.iter().find(|e| e["path"] == format!("{}/{n}", w.virt)).unwrap().clone();
    assert_eq!(by_name("data")["mode"], "-rw-r-----");
    assert_eq!((by_name("data")["uid"].as_str(), by_name("data")["gid"].as_str()), (Some("nobody"), Some("nogroup")));
    assert_eq!(by_name("data")["mtime"].as_f64(), Some(1_700_000_000.0));
    assert_eq!(by_name("data")["nlink"], 2);
    assert_eq!((by_name("unnamed")["uid"].as_str(), by_name("unnamed")["gid"].as_str()), (Some("54321"), Some("54329")));
    assert_eq!(by_name("sub")["mode"].as_str().map(|m| &m[..1]), Some("d"));
    assert_eq!(by_name("unnamed")["mode"], "-rwxr-xr-x", "set-user-id is not shown, as in Mesos");
    assert_eq!(by_name("fifo")["mode"], "prw-------");
    assert!(body.contains(r#""mtime":1700000000.0"#), "mtime is a float, as Mesos writes it: {body}");
    // The symlink to / is an entry of its own (lstat: 'l', the target's length) and is never followed.
    assert_eq!((by_name("rootlink")["mode"].as_str(), by_name("rootlink")["size"].as_u64()), (Some("lrwxrwxrwx"), Some(1)));
    let (code, body) = w.browse(&format!("{}/rootlink", w.virt)).await.unwrap();
    assert_eq!(code, 403, "browsing through a symlink out of the sandbox: {body}");
    assert!(!body.contains("\"etc\"") && !body.contains("/etc"), "{body}");
    let (code, body) = w.browse(&format!("{}/rootlink/etc", w.virt)).await.unwrap();
    assert!(code == 403 || code == 404, "{code} {body}");

    // A directory inside, a file (Mesos lists nothing), the host path, what is not there.
    let (code, body) = w.browse(&format!("{}/sub/", w.virt)).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let sub: Vec<Value> = serde_json::from_str(&body).unwrap();
    let sub_paths: Vec<&str> = sub.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(sub_paths, [format!("{}/sub/deeper", w.virt), format!("{}/sub/inner.txt", w.virt)]);
    assert_eq!(w.browse(&format!("{}/data", w.virt)).await.unwrap(), (200, "[]".to_string()));
    let host = w.sandbox.display().to_string();
    let (code, body) = w.browse(&host).await.unwrap();
    assert_eq!(code, 200, "{body}");
    let host_listing: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(host_listing.len(), listing.len());
    assert!(host_listing.iter().any(|e| e["path"] == format!("{host}/data")), "{body}");
    assert_eq!(w.browse(&format!("{}/missing", w.virt)).await.unwrap().0, 404);
    assert_eq!(w.browse("/frameworks").await.unwrap().0, 404, "only sandboxes are attached");
    assert_eq!(w.browse("/etc").await.unwrap().0, 403);
    assert_eq!(w.browse(&format!("{}/../../..", w.virt)).await.unwrap().0, 400);
    // Read-only authentication applies.
    let unauthenticated = w.client.get(format!("http://{}/files/browse", w.cluster.agent)).query(&[("path", &w.virt)]).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // /files/debug: the sandbox's host path, its `latest` host path and the virtual path.
    let debug = w.agent_get_json("/files/debug", &[]).await.unwrap();
    let latest_host = w.sandbox.parent().unwrap().join("latest").display().to_string();
    for key in [host.as_str(), latest_host.as_str(), w.virt.as_str()] {
        assert_eq!(debug[key].as_str(), Some(host.as_str()), "{key} in {debug}");
    }

    // LIST_FILES in protobuf and JSON: the same entries, FileInfo's fields.
    let list = Call { r#type: Some(call::Type::ListFiles as i32), list_files: Some(call::ListFiles { path: w.virt.clone() }), ..Default::default() };
    let (code, body) = w.operator(&list, ContentType::Protobuf).await.unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let reply: Response = mezzo_proto::codec::decode(&body, ContentType::Protobuf).unwrap();
    assert_eq!(reply.r#type(), response::Type::ListFiles);
    let infos = reply.list_files.unwrap().file_infos;
    let info_paths: Vec<&str> = infos.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(info_paths, paths);
    let data = infos.iter().find(|f| f.path.ends_with("/data")).unwrap();
    assert_eq!((data.mode, data.size, data.nlink), (Some(0o100640), Some(10), Some(2)));
    assert_eq!(data.mtime.as_ref().map(|t| t.nanoseconds), Some(1_700_000_000_000_000_000));
    assert_eq!((data.uid.as_deref(), data.gid.as_deref()), (Some("nobody"), Some("nogroup")));
    let link = infos.iter().find(|f| f.path.ends_with("/rootlink")).unwrap();
    assert_eq!(link.mode.map(|m| m & 0o170000), Some(0o120000));
    let (code, body) = w.operator(&list, ContentType::Json).await.unwrap();
    assert_eq!(code, 200);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], "LIST_FILES");
    let data = json["list_files"]["file_infos"].as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with("/data")).unwrap();
    assert_eq!(data["mode"], 0o100640);
    assert_eq!(data["mtime"]["nanoseconds"], 1_700_000_000_000_000_000i64);
    let escape = Call {
        r#type: Some(call::Type::ListFiles as i32),
        list_files: Some(call::ListFiles { path: format!("{}/rootlink", w.virt) }),
        ..Default::default()
    };
    assert_eq!(w.operator(&escape, ContentType::Json).await.unwrap().0, 403);

    // READ_FILE: bytes and size; length 0 gives the size alone; an offset past the end no data.
    let read = |offset: u64, length: Option<u64>, file: &str| Call {
        r#type: Some(call::Type::ReadFile as i32),
        read_file: Some(call::ReadFile { path: format!("{}/{file}", w.virt), offset, length }),
        ..Default::default()
    };
    let (code, body) = w.operator(&read(2, Some(5), "data"), ContentType::Protobuf).await.unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let reply: Response = mezzo_proto::codec::decode(&body, ContentType::Protobuf).unwrap();
    let file = reply.read_file.unwrap();
    assert_eq!((file.size, file.data.as_slice()), (10, &b"23456"[..]));
    let (_, body) = w.operator(&read(0, Some(0), "data"), ContentType::Protobuf).await.unwrap();
    let file = mezzo_proto::codec::decode::<Response>(&body, ContentType::Protobuf).unwrap().read_file.unwrap();
    assert_eq!((file.size, file.data.len()), (10, 0));
    let (_, body) = w.operator(&read(50, None, "data"), ContentType::Protobuf).await.unwrap();
    let file = mezzo_proto::codec::decode::<Response>(&body, ContentType::Protobuf).unwrap().read_file.unwrap();
    assert_eq!((file.size, file.data.len()), (10, 0));
    let (code, body) = w.operator(&read(0, None, "stdout"), ContentType::Json).await.unwrap();
    assert_eq!(code, 200);
    let json: Value = serde_json::from_slice(&body).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(json["read_file"]["data"].as_str().unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("hello-files"), "{json}");
    assert_eq!(w.operator(&read(0, None, "fifo"), ContentType::Json).await.unwrap().0, 400);
    assert_eq!(w.operator(&read(0, None, "sub"), ContentType::Json).await.unwrap().0, 400);
    assert_eq!(w.operator(&read(0, None, "missing"), ContentType::Json).await.unwrap().0, 404);
    // /files/read's offset=-1 still gives the size.
    let size = w.agent_get_json("/files/read", &[("path", &format!("{}/data", w.virt)), ("offset", "-1")]).await.unwrap();
    assert_eq!(size, serde_json::json!({"data": "", "offset": 10}));
    // Mesos's web UI asks with jsonp.
    let (code, headers, body) = w.agent_get("/files/read", &[("path", &format!("{}/data", w.virt)), ("offset", "-1"), ("jsonp", "cb_1")]).await.unwrap();
    assert_eq!((code, body.as_str()), (200, r#"cb_1({"data":"","offset":10});"#));
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/javascript"));

    // `mezzo task list`: the running task with its state, framework, executor, agent and sandbox.
    let out = w.cli(&["list"], true).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mezzo task list: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["ID", "State", "Framework ID", "Executor ID", "Agent ID", "Sandbox"], "{text}");
    let row: Vec<&str> = lines.find(|l| l.starts_with("browsed ")).unwrap_or_else(|| panic!("{text}")).split_whitespace().collect();
    assert_eq!(row, ["browsed", "TASK_RUNNING", &w.scheduler.framework_id.value, "browsed", &w.agent_id, &host], "{text}");
    // Without credentials the agent refuses the sandbox (read-only authentication): the row says so.
    let out = w.cli(&["list"], false).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("browsed ") && l.trim_end().ends_with(" -")), "{text}");

    // `mezzo task log -f` of a task that runs on: its output so far, then Ctrl-C ends it.
    let mut follow = w.cli(&["log", "-f", "browsed"], true).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(TIMEOUT, lines.next_line()).await.expect("the task's output").unwrap();
    assert_eq!(first.as_deref(), Some("hello-files"));
    let pid = nix::unistd::Pid::from_raw(follow.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), follow.wait()).await.expect("Ctrl-C ends it").unwrap();
    assert!(status.success(), "{status}");
    w.finish().await;
}

#[tokio::test]
async fn files_api_browses_a_task_sandbox_as_mesos_rust() {
    mezzo_testkit::require_root!();
    browse_and_list("rust").await;
}

#[tokio::test]
async fn files_api_browses_a_task_sandbox_as_mesos_docker() {
    mezzo_testkit::require_docker!();
    browse_and_list("docker").await;
}

/// A directory of more entries than a listing returns: the first 10,000, and a header saying so.
#[tokio::test]
async fn files_browse_bounds_the_entries_it_returns() {
    mezzo_testkit::require_root!();
    let w = World::start("rust", "crowded", "sleep 300", false).await.unwrap();
    let dir = w.sandbox.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10_050 {
        std::fs::File::create(dir.join(format!("f{i:05}"))).unwrap();
    }
    let t = Instant::now();
    let (code, headers, body) = w.agent_get("/files/browse", &[("path", &format!("{}/many", w.virt))]).await.unwrap();
    let took = t.elapsed();
    assert_eq!(code, 200);
    let listing: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(listing.len(), 10_000);
    assert_eq!(headers.get("x-mezzo-listing-truncated").and_then(|v| v.to_str().ok()), Some("10000"));
    std::fs::remove_file(dir.join("f00000")).unwrap();
    for i in 1..51 {
        std::fs::remove_file(dir.join(format!("f{i:05}"))).unwrap();
    }
    let (code, headers, body) = w.agent_get("/files/browse", &[("path", &format!("{}/many", w.virt))]).await.unwrap();
    assert_eq!((code, serde_json::from_str::<Vec<Value>>(&body).unwrap().len()), (200, 9_999));
    assert!(headers.get("x-mezzo-listing-truncated").is_none());
    eprintln!("a listing of 10,000 of 10,050 entries took {took:?}");
    w.finish().await;
}

/// `mezzo task log -f` prints a task's lines as it writes them (one every
/// 100 ms) and ends by itself when the task has ended and all is read.
async fn log_follows(containerizer: &str) {
    // The task waits for the test's go (a file in its sandbox) once `mezzo task log -f` shows its first line.
    let command = "cd \"$MESOS_SANDBOX\"; echo to-stderr >&2; echo ready; while [ ! -e go ]; do sleep 0.05; done; \
                   i=0; while [ $i -lt 30 ]; do echo line-$i; i=$((i+1)); sleep 0.1; done";
    let mut w = World::start(containerizer, "chatty", command, containerizer == "rust").await.unwrap();
    let auth = w.auth;
    let started = Instant::now();
    let mut follow = w.cli(&["log", "-f", "chatty"], auth).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen: Vec<(String, Duration)> = Vec::new();
    let ready = tokio::time::timeout(TIMEOUT, lines.next_line()).await.expect("the task's first line").unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));
    std::fs::write(w.sandbox.join("go"), "").unwrap();
    let read_all = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push((line, started.elapsed()));
        }
        follow.wait().await.unwrap()
    })
    .await;
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut follow.stderr.take().unwrap(), &mut err).await.unwrap();
    let status = read_all.unwrap_or_else(|_| panic!("mezzo task log -f did not end: {seen:?} {err}"));
    assert!(status.success(), "mezzo task log -f: {status} {err}");
    let got: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).filter(|l| l.starts_with("line-")).collect();
    let want: Vec<String> = (0..30).map(|i| format!("line-{i}")).collect();
    assert_eq!(got, want, "every line, once, in order; stderr: {err}");
    // Followed as written: the lines came over the task's ~3 s, not all at its end.
    let at = |l: &str| seen.iter().find(|(s, _)| s == l).unwrap().1;
    assert!(at("line-29") - at("line-5") >= Duration::from_millis(1500), "lines arrived at {seen:?}");
    // It ended because the task did: the task is terminal now.
    let updates = w.scheduler.updates_until_terminal("chatty", TIMEOUT).await.unwrap();
    assert_eq!(updates.last().map(|u| u.state()), Some(TaskState::TaskFinished));

    // A completed executor's sandbox stays attached while it is there.
    let debug = w.agent_get_json("/files/debug", &[]).await.unwrap();
    assert_eq!(debug[w.virt.as_str()].as_str(), Some(w.sandbox.display().to_string().as_str()), "{debug}");

    // Without -f: the whole file, and stderr too.
    let out = w.cli(&["log", "chatty"], auth).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("line-")).count(), 30);
    let out = w.cli(&["log", "chatty", "stderr"], auth).output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("to-stderr"), "{}", String::from_utf8_lossy(&out.stdout));
    if auth {
        let out = w.cli(&["log", "chatty"], false).output().await.unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A task with a sandbox of its own in its executor's (`tasks/<task id>`, Mesos's default executor): that one is read.
    std::fs::create_dir_all(w.sandbox.join("tasks/chatty")).unwrap();
    std::fs::write(w.sandbox.join("tasks/chatty/stdout"), "from-the-task-sandbox\n").unwrap();
    let out = w.cli(&["log", "chatty"], auth).output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-the-task-sandbox\n", "{}", String::from_utf8_lossy(&out.stderr));
    let out = w.cli(&["log", "no-such-task"], auth).output().await.unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no task 'no-such-task'"));
    w.finish().await;
}

#[tokio::test]
async fn mezzo_task_log_follows_a_task_rust() {
    mezzo_testkit::require_root!();
    log_follows("rust").await;
}

#[tokio::test]
async fn mezzo_task_log_follows_a_task_docker() {
    mezzo_testkit::require_docker!();
    log_follows("docker").await;
}

/// `mezzo task list` and `mezzo task log` find the leading master of a group through ZooKeeper.
#[tokio::test]
async fn mezzo_task_list_and_log_follow_a_master_group() {
    mezzo_testkit::require_root!();
    mezzo_testkit::require_zookeeper!();
    let mut group = mezzo_tests::group::Group::start(1, &["--quorum=1", "--zk_session_timeout=2secs"]).await.unwrap();
    group.start_agent("rust", &[]).await.unwrap();
    let leader = group.leader(TIMEOUT).await.unwrap();
    let mut scheduler = Scheduler::subscribe(&group.masters[leader], "files-zk").await.unwrap();
    let offer = scheduler.next_offer(TIMEOUT).await.unwrap();
    let task = command_task(&offer, "zk-task", "echo via-zk; sleep 300", Kind::MesosNoImage, "", 32.0);
    scheduler.launch_and_wait_running(&offer, task, TIMEOUT).await.unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(mezzo_tests::bin_dir().join("mezzo"));
        cmd.arg("task").args(args).arg(format!("--master={}", group.url)).arg("--timeout=20");
        cmd.output().unwrap()
    };
    let out = cli(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.lines().any(|l| l.starts_with("zk-task ") && l.contains("TASK_RUNNING")), "{text} {}", String::from_utf8_lossy(&out.stderr));
    // The output may take a moment to reach the file.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let out = cli(&["log", "zk-task"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        if String::from_utf8_lossy(&out.stdout).contains("via-zk") {
            break;
        }
        assert!(Instant::now() < deadline, "no output: {}", String::from_utf8_lossy(&out.stdout));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scheduler.teardown().await.unwrap();
    let _ = scheduler.updates_until_terminal("zk-task", TIMEOUT).await;
    group.stop();
}

async fn get_json(url: &str) -> Value {
    serde_json::from_slice(&reqwest::get(url).await.unwrap().bytes().await.unwrap()).unwrap()
}

/// A custom executor's task shares its executor's sandbox (as in Mesos):
/// `mezzo task list` shows the executor and that sandbox, `mezzo task log`
/// reads the executor's output there, and `/files/browse` lists it.
#[tokio::test]
async fn a_custom_executor_task_is_listed_and_logged_from_its_executor_s_sandbox() {
    mezzo_testkit::require_root!();
    use mezzo_tests::{executor_task, test_executor_info, ExecutorContainer};
    let mut cluster = Cluster::start("rust").await.unwrap();
    let mut scheduler = Scheduler::subscribe(&cluster.master, "files-custom").await.unwrap();
    let offer = scheduler.next_offer(TIMEOUT).await.unwrap();
    let executor = test_executor_info("exec-files", ExecutorContainer::Host, 64.0, &[]);
    scheduler.launch_tasks(&offer, vec![executor_task(&offer, "ct-1", &executor, "run 120", 32.0)]).await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let st = scheduler.next_update(deadline.saturating_duration_since(Instant::now())).await.unwrap();
        assert!(!st.state().is_terminal(), "{st:?}");
        if st.task_id.value == "ct-1" && st.state() == TaskState::TaskRunning {
            break;
        }
    }
    let state: Value = get_json(&format!("http://{}/state", cluster.agent)).await;
    let sandbox = state["frameworks"][0]["executors"][0]["directory"].as_str().unwrap().to_string();
    assert!(sandbox.contains("/executors/exec-files/runs/"), "{sandbox}");
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(mezzo_tests::bin_dir().join("mezzo"));
        cmd.arg("task").args(args).arg(format!("--master={}", cluster.master)).arg("--timeout=20");
        cmd.output().unwrap()
    };
    let out = cli(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text.lines().find(|l| l.starts_with("ct-1 ")).unwrap_or_else(|| panic!("{text}")).split_whitespace().collect();
    assert_eq!(row, ["ct-1", "TASK_RUNNING", &scheduler.framework_id.value, "exec-files", &offer.agent_id.value, &sandbox], "{text}");
    let out = cli(&["log", "ct-1", "stderr"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mezzo-test-executor"), "{}", String::from_utf8_lossy(&out.stderr));
    let virt = format!("/frameworks/{}/executors/exec-files/runs/latest", scheduler.framework_id.value);
    let listing: Vec<Value> = serde_json::from_value(get_json(&format!("http://{}/files/browse?path={virt}", cluster.agent)).await).unwrap();
    assert!(listing.iter().any(|e| e["path"] == format!("{virt}/stderr")), "{listing:?}");
    scheduler.teardown().await.unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let state: Value = get_json(&format!("http://{}/state", cluster.agent)).await;
        if state["frameworks"].as_array().into_iter().flatten().all(|f| f["executors"].as_array().is_none_or(|e| e.is_empty())) {
            break;
        }
        assert!(Instant::now() < deadline, "the executor did not end: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop();
    assert_clean(&cluster);
}

/// `LIST_FILES` and `READ_FILE` read: with only `--authenticate_http_readwrite`
/// they need no credentials (a call that writes does), as `/files/*`.
#[tokio::test]
async fn files_calls_need_only_read_only_access() {
    mezzo_testkit::require_root!();
    let creds = tempfile::tempdir().unwrap();
    let flag = credentials_flag(creds.path());
    let mut cluster = Cluster::start_with("rust", &["--authenticate_http_readwrite", &flag]).await.unwrap();
    let path = "/frameworks/none/executors/none/runs/latest";
    for call in [
        serde_json::json!({"type": "LIST_FILES", "list_files": {"path": path}}),
        serde_json::json!({"type": "READ_FILE", "read_file": {"path": format!("{path}/stdout"), "offset": 0}}),
    ] {
        let (code, body) = cluster.agent_call_json(&call).await.unwrap();
        assert_eq!(code, 404, "{call}: {body}");
    }
    let (code, body) = cluster.agent_call_json(&serde_json::json!({"type": "SET_LOGGING_LEVEL"})).await.unwrap();
    assert_eq!(code, 401, "a call that writes: {body}");
    let resp = reqwest::get(format!("http://{}/files/browse?path={path}", cluster.agent)).await.unwrap();
    assert_eq!(resp.status(), 404);
    cluster.stop();
}
