//! `zk://` URLs and `--master` values, in Mesos's forms.
//!
//! Mesos takes `zk://host:port[,host:port]/path`, `zk://user:pass@host:port/path`
//! (ZooKeeper's `digest` authentication), and `file:///path` of a file that
//! holds one of those (so a URL with a password need not be on a command line).

use std::path::Path;

/// Why a `--zk` or `--master` value was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag} '{value}': {reason}")]
pub struct UrlError {
    pub flag: String,
    pub value: String,
    pub reason: String,
}

/// A ZooKeeper ensemble and the path a master group lives under.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// The servers, `host:port` each.
    pub servers: Vec<String>,
    /// The absolute path of the group's znode (`/mesos`); `/` for the root.
    pub path: String,
    /// `user:password` for ZooKeeper's digest scheme.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for ZkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for ZkUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.credentials.as_deref().map(|c| format!("{}:***@", c.split(':').next().unwrap_or(""))).unwrap_or_default();
        write!(f, "zk://{user}{}{}", self.servers.join(","), self.path)
    }
}

impl ZkUrl {
    /// Parses `value` given to `--<flag>`: a `zk://` URL or a `file://` path of a file holding one.
    pub fn parse(flag: &str, value: &str) -> Result<ZkUrl, UrlError> {
        let error = |reason: String| UrlError { flag: flag.to_string(), value: value.to_string(), reason };
        let value = value.trim();
        if let Some(path) = value.strip_prefix("file://") {
            let text = read_url_file(path).map_err(error)?;
            return ZkUrl::parse(flag, &text).map_err(|e| UrlError { value: value.to_string(), reason: format!("in {path}: {}", e.reason), ..e });
        }
        let rest = value.strip_prefix("zk://").ok_or_else(|| error("expected zk://host:port[,host:port]/path or file:///path".into()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((creds, hosts)) => {
                let Some((user, _)) = creds.split_once(':') else {
                    return Err(error("credentials must be user:password".into()));
                };
                if user.is_empty() {
                    return Err(error("credentials must be user:password".into()));
                }
                (Some(creds.to_string()), hosts)
            }
            None => (None, authority),
        };
        let mut servers = Vec::new();
        for server in hosts.split(',') {
            let server = server.trim();
            if server.is_empty() {
                return Err(error("empty server in the host list".into()));
            }
            let (host, port) = match server.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, port),
                _ => (server, "2181"),
            };
            if host.is_empty() || host.contains(['/', '@', ' ']) {
                return Err(error(format!("bad host '{host}'")));
            }
            let port: u16 = port.parse().map_err(|_| error(format!("bad port '{port}' of '{server}'")))?;
            if port == 0 {
                return Err(error(format!("bad port '0' of '{server}'")));
            }
            servers.push(format!("{host}:{port}"));
        }
        let path = match path.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        if path.contains("//") || path.split('/').any(|c| c == "." || c == "..") || path.contains(char::is_whitespace) {
            return Err(error(format!("bad path '{path}'")));
        }
        Ok(ZkUrl { servers, path, credentials })
    }

    /// The connection string ZooKeeper clients take: `host:port,host:port`.
    pub fn connect_string(&self) -> String {
        self.servers.join(",")
    }

    /// The absolute path of child `name` of the group's znode.
    pub fn child(&self, name: &str) -> String {
        if self.path == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.path)
        }
    }
}

fn read_url_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| format!("cannot read {path}: {e}"))?;
    let text = text.trim();
    if text.starts_with("file://") {
        return Err(format!("{path} holds another file:// path"));
    }
    Ok(text.to_string())
}

/// Where an agent or a client finds the master: a fixed `host:port` or a ZooKeeper group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterAddress {
    /// `host:port` (or a URL the caller understands) of one master.
    Fixed(String),
    /// The leader of a master group on ZooKeeper.
    Zk(ZkUrl),
}

impl MasterAddress {
    /// Parses `--<flag>`: `host:port`, `zk://...`, or `file:///path` holding one of those (as Mesos's `--master`).
    pub fn parse(flag: &str, value: &str) -> Result<MasterAddress, UrlError> {
        let value = value.trim();
        let error = |reason: String| UrlError { flag: flag.to_string(), value: value.to_string(), reason };
        if value.is_empty() {
            return Err(error("empty".into()));
        }
        if let Some(path) = value.strip_prefix("file://") {
            let text = read_url_file(path).map_err(error)?;
            return MasterAddress::parse(flag, &text).map_err(|e| UrlError { value: value.to_string(), reason: format!("in {path}: {}", e.reason), ..e });
        }
        if value.starts_with("zk://") {
            return ZkUrl::parse(flag, value).map(MasterAddress::Zk);
        }
        Ok(MasterAddress::Fixed(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_urls_parse_as_mesos_writes_them() {
        let u = ZkUrl::parse("zk", "zk://10.0.0.1:2181,10.0.0.2:2182/mesos").unwrap();
        assert_eq!(u.servers, vec!["10.0.0.1:2181", "10.0.0.2:2182"]);
        assert_eq!(u.path, "/mesos");
        assert_eq!(u.credentials, None);
        assert_eq!(u.connect_string(), "10.0.0.1:2181,10.0.0.2:2182");
        assert_eq!(u.child("json.info_0000000001"), "/mesos/json.info_0000000001");
        let u = ZkUrl::parse("zk", "zk://jo:secret@zk1/a/b/").unwrap();
        assert_eq!((u.servers.clone(), u.path.as_str(), u.credentials.as_deref()), (vec!["zk1:2181".to_string()], "/a/b", Some("jo:secret")));
        assert_eq!(u.to_string(), "zk://jo:***@zk1:2181/a/b");
        let u = ZkUrl::parse("zk", "zk://127.0.0.1:2181").unwrap();
        assert_eq!((u.path.as_str(), u.child("x").as_str()), ("/", "/x"));
    }

    #[test]
    fn bad_zk_urls_name_the_flag() {
        for bad in ["http://h:1/mesos", "zk:///mesos", "zk://h:x/mesos", "zk://h:1,,h:2/m", "zk://:pw@h:1/m", "zk://h:1/a//b", "zk://h:0/m", "zk://h:1/a/../b"] {
            let e = ZkUrl::parse("zk", bad).expect_err(bad);
            assert!(e.to_string().starts_with(&format!("invalid --zk '{bad}': ")), "{e}");
        }
        let e = ZkUrl::parse("master", "file:///nonexistent/zk").unwrap_err();
        assert!(e.to_string().contains("--master") && e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn file_urls_hold_the_url() {
        let dir = std::env::temp_dir().join(format!("mezzo-zk-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("zk");
        std::fs::write(&file, "zk://u:p@h1:2181,h2:2181/mesos\n").unwrap();
        let u = ZkUrl::parse("zk", &format!("file://{}", file.display())).unwrap();
        assert_eq!((u.servers.len(), u.path.as_str(), u.credentials.as_deref()), (2, "/mesos", Some("u:p")));
        assert_eq!(MasterAddress::parse("master", &format!("file://{}", file.display())).unwrap(), MasterAddress::Zk(u));
        std::fs::write(&file, "10.1.1.1:5050").unwrap();
        assert_eq!(MasterAddress::parse("master", &format!("file://{}", file.display())).unwrap(), MasterAddress::Fixed("10.1.1.1:5050".into()));
        std::fs::write(&file, "zk://h:notaport/m").unwrap();
        let e = MasterAddress::parse("master", &format!("file://{}", file.display())).unwrap_err();
        assert!(e.to_string().contains("bad port"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn master_addresses() {
        assert_eq!(MasterAddress::parse("master", "127.0.0.1:5050").unwrap(), MasterAddress::Fixed("127.0.0.1:5050".into()));
        assert!(matches!(MasterAddress::parse("master", "zk://h:1/m").unwrap(), MasterAddress::Zk(_)));
        assert!(MasterAddress::parse("master", " ").is_err());
    }
}
