//! A private ZooKeeper for tests: Debian's `zookeeper` package's server,
//! standalone on loopback, on a free port, with its data in a temporary
//! directory; killed and removed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's jar; its manifest's class path names its dependencies.
pub const JAR: &str = "/usr/share/java/zookeeper.jar";
/// The Java runtime the package depends on.
pub const JAVA: &str = "/usr/bin/java";

/// Whether a ZooKeeper server can be started here; the reason when not.
pub fn available() -> Result<(), String> {
    for path in [JAR, JAVA] {
        if !Path::new(path).exists() {
            return Err(format!("needs Debian's zookeeper package ({path} is missing; scripts/setup-host.sh installs it)"));
        }
    }
    Ok(())
}

/// A running standalone ZooKeeper server.
pub struct ZooKeeper {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl ZooKeeper {
    /// Starts a server on a free loopback port and waits (at most 60 s) until it serves.
    pub fn start() -> Result<ZooKeeper, String> {
        available()?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("no free port: {e}"))?.port();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mezzo-zookeeper-{}-{seq}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // A short tick lets tests use session timeouts down to 500 ms;
        // the maximum allows Mesos's 10 s default and more.
        let config = format!(
            "tickTime=250\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             minSessionTimeout=500\nmaxSessionTimeout=60000\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,ruok\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("zoo.cfg"), config).map_err(|e| format!("write zoo.cfg: {e}"))?;
        let mut zk = ZooKeeper { child: None, dir, port };
        zk.spawn()?;
        Ok(zk)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("zookeeper.log"))
            .map_err(|e| format!("open the log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(JAVA)
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dzookeeper.admin.enableServer=false", "-cp", JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {JAVA}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.serving() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("ZooKeeper exited ({status}) before serving; log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        self.kill();
        Err(format!("ZooKeeper did not serve on port {} within 60 s; log:\n{log}", self.port))
    }

    /// Whether the server answers `srvr` as a standalone server.
    pub fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"srvr").is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.contains("Mode: standalone")
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.address())
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (ZooKeeper gone: no quorum); `restart` brings it back with its data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
