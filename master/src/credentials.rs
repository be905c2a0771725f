//! Credentials as Mesos reads them (`--credentials`, `--credential`,
//! `--http_credentials`), and checks against them.
//!
//! A credentials file is Mesos's JSON, `{"credentials":[{"principal":"p",
//! "secret":"s"}, ...]}`, or its text form, one `principal secret` per line.
//! A single credential (the agent's `--credential`) is `{"principal":"p",
//! "secret":"s"}` or one `principal secret` line. A flag value may name the
//! file as a plain path or with Mesos's `file://` prefix.
//!
//! Secrets are compared in constant time (SHA-256 of both sides, then a
//! comparison that looks at every byte), so a caller learns nothing from the
//! time a refusal takes.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Why credentials could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("failed to read credentials file '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content is neither Mesos's JSON nor its text form.
    #[error("invalid credentials in '{path}': {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// One principal and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub principal: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, not even in a debug log.
        f.debug_struct("Credential")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A set of credentials (the master's `--credentials`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    list: Vec<Credential>,
}

#[derive(serde::Deserialize)]
struct JsonCredential {
    principal: String,
    #[serde(default)]
    secret: String,
}

#[derive(serde::Deserialize)]
struct JsonCredentials {
    credentials: Vec<JsonCredential>,
}

/// The path a flag value names: Mesos accepts `file:///path` and `/path`.
pub fn flag_path(value: &str) -> PathBuf {
    PathBuf::from(value.strip_prefix("file://").unwrap_or(value))
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    warn_if_open(path);
    Ok(text)
}

/// Mesos warns when a credentials file can be read by others; so do we.
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "permissions on the credentials file are too open; it is recommended that it is NOT accessible by others"
            );
        }
    }
}

fn check(principal: &str, secret: &str) -> Result<(), String> {
    if principal.is_empty() {
        return Err("a credential has an empty 'principal'".into());
    }
    if principal.contains('\0') || secret.contains('\0') {
        return Err(format!("the credential of principal '{}' contains NUL", principal.escape_default()));
    }
    if principal.contains(':') {
        // HTTP basic authentication splits on the first ':'.
        return Err(format!("principal '{principal}' must not contain ':'"));
    }
    Ok(())
}

/// Parses the text form: one `principal secret` per line (blank lines skipped).
fn parse_text(text: &str) -> Result<Vec<Credential>, String> {
    let mut list = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            [principal, secret] => {
                check(principal, secret)?;
                list.push(Credential {
                    principal: (*principal).to_string(),
                    secret: (*secret).to_string(),
                });
            }
            _ => return Err(format!("line {} is not 'principal secret'", n + 1)),
        }
    }
    Ok(list)
}

impl Credentials {
    /// Parses Mesos's JSON or text form; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            path: origin.to_path_buf(),
            reason,
        };
        let list = if text.trim_start().starts_with('{') {
            let parsed: JsonCredentials = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
            let mut list = Vec::with_capacity(parsed.credentials.len());
            for c in parsed.credentials {
                check(&c.principal, &c.secret).map_err(invalid)?;
                list.push(Credential {
                    principal: c.principal,
                    secret: c.secret,
                });
            }
            list
        } else {
            parse_text(text).map_err(invalid)?
        };
        if list.is_empty() {
            return Err(invalid("no credentials".into()));
        }
        Ok(Self { list })
    }

    /// Reads the file a flag value names (`/path` or `file:///path`).
    pub fn load(flag_value: &str) -> Result<Self, CredentialsError> {
        let path = flag_path(flag_value);
        let text = read(&path)?;
        Self::parse(&text, &path)
    }

    /// A set made of the given credentials (tests, embedding).
    pub fn from_list(list: Vec<Credential>) -> Self {
        Self { list }
    }

    /// Whether there is no credential at all.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The principals, in file order.
    pub fn principals(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|c| c.principal.as_str())
    }

    /// Whether `principal` with `secret` is one of the credentials. Every
    /// entry is compared, in constant time, whatever matches.
    pub fn authenticate(&self, principal: &str, secret: &str) -> bool {
        let mut ok = false;
        for c in &self.list {
            let p = constant_time_eq(c.principal.as_bytes(), principal.as_bytes());
            let s = constant_time_eq(c.secret.as_bytes(), secret.as_bytes());
            ok |= p & s;
        }
        ok
    }

    /// Checks an `Authorization: Basic <base64(principal:secret)>` header
    /// value; returns the authenticated principal.
    pub fn authenticate_basic(&self, header_value: &str) -> Result<String, BasicAuthError> {
        let (principal, secret) = parse_basic(header_value)?;
        if self.authenticate(&principal, &secret) {
            Ok(principal)
        } else {
            Err(BasicAuthError::Refused)
        }
    }
}

/// Why an HTTP basic `Authorization` header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicAuthError {
    /// Not `Basic <base64>` or not `principal:secret` inside.
    #[error("malformed 'Authorization' header: {0}")]
    Malformed(String),
    /// Well formed, but no credential matches.
    #[error("authentication failed: unknown principal or wrong secret")]
    Refused,
}

/// Splits an `Authorization: Basic ...` header value into principal and secret.
pub fn parse_basic(header_value: &str) -> Result<(String, String), BasicAuthError> {
    let mut parts = header_value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicAuthError::Malformed("expected the 'Basic' scheme".into()));
    }
    let encoded = parts.next().unwrap_or("").trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| BasicAuthError::Malformed(format!("invalid base64: {e}")))?;
    let text = String::from_utf8(decoded).map_err(|_| BasicAuthError::Malformed("not UTF-8".into()))?;
    let (principal, secret) = text
        .split_once(':')
        .ok_or_else(|| BasicAuthError::Malformed("expected 'principal:secret'".into()))?;
    Ok((principal.to_string(), secret.to_string()))
}

/// Reads one credential (the agent's `--credential`): `{"principal":..,
/// "secret":..}`, or one `principal secret` line; also the first entry of a
/// `{"credentials":[...]}` file, as Mesos's agent does.
pub fn load_credential(flag_value: &str) -> Result<Credential, CredentialsError> {
    let path = flag_path(flag_value);
    let text = read(&path)?;
    parse_credential(&text, &path)
}

/// Parses one credential; `origin` names the source in errors.
pub fn parse_credential(text: &str, origin: &Path) -> Result<Credential, CredentialsError> {
    let invalid = |reason: String| CredentialsError::Invalid {
        path: origin.to_path_buf(),
        reason,
    };
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if value.get("credentials").is_some() {
            let set = Credentials::parse(text, origin)?;
            return set.list.into_iter().next().ok_or_else(|| invalid("no credentials".into()));
        }
        let c: JsonCredential = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        check(&c.principal, &c.secret).map_err(invalid)?;
        return Ok(Credential {
            principal: c.principal,
            secret: c.secret,
        });
    }
    let mut list = parse_text(text).map_err(invalid)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => Err(invalid("no credential".into())),
        n => Err(invalid(format!("expected one credential, found {n}"))),
    }
}

/// Compares two byte strings in time that depends only on their lengths'
/// hashes, never on where they differ: both are hashed with SHA-256 and the
/// digests compared byte by byte without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    let mut diff = 0u8;
    for (x, y) in da.iter().zip(db.iter()) {
        diff |= x ^ y;
    }
    // Keep the optimizer from turning the loop into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// A fresh random secret or session token: 64 hex digits (two v4 UUIDs,
/// 244 random bits from the OS's generator).
pub fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// SHA-256 of a secret, what the master keeps instead of the secret.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> PathBuf {
        PathBuf::from("test")
    }

    #[test]
    fn json_and_text_forms_parse() {
        let json = r#"{"credentials":[{"principal":"a","secret":"s1"},{"principal":"b","secret":"s2"}]}"#;
        let c = Credentials::parse(json, &origin()).unwrap();
        assert!(c.authenticate("a", "s1"));
        assert!(c.authenticate("b", "s2"));
        assert!(!c.authenticate("a", "s2"));
        assert!(!c.authenticate("c", "s1"));
        let text = "a s1\n\n  b   s2  \n";
        assert_eq!(Credentials::parse(text, &origin()).unwrap(), c);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for bad in ["", "a\n", "a b c\n", r#"{"credentials":[]}"#, r#"{"credentials":[{"secret":"x"}]}"#, "{oops"] {
            let err = Credentials::parse(bad, &origin()).unwrap_err();
            assert!(err.to_string().contains("invalid credentials"), "{bad}: {err}");
        }
        let err = Credentials::parse("a:b s\n", &origin()).unwrap_err();
        assert!(err.to_string().contains("':'"), "{err}");
    }

    #[test]
    fn single_credential_forms() {
        let c = parse_credential(r#"{"principal":"agent","secret":"pw"}"#, &origin()).unwrap();
        assert_eq!((c.principal.as_str(), c.secret.as_str()), ("agent", "pw"));
        let c = parse_credential("agent pw\n", &origin()).unwrap();
        assert_eq!((c.principal.as_str(), c.secret.as_str()), ("agent", "pw"));
        assert!(parse_credential("a b\nc d\n", &origin()).is_err());
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn files_load_with_and_without_file_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, r#"{"credentials":[{"principal":"p","secret":"s"}]}"#).unwrap();
        let plain = Credentials::load(path.to_str().unwrap()).unwrap();
        let prefixed = Credentials::load(&format!("file://{}", path.display())).unwrap();
        assert_eq!(plain, prefixed);
        let missing = Credentials::load("/nonexistent/creds").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/creds"));
    }

    #[test]
    fn basic_auth() {
        let c = Credentials::from_list(vec![Credential {
            principal: "ops".into(),
            secret: "se:cret".into(),
        }]);
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:se:cret"));
        assert_eq!(c.authenticate_basic(&header).unwrap(), "ops");
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:nope"));
        assert_eq!(c.authenticate_basic(&wrong), Err(BasicAuthError::Refused));
        assert!(matches!(c.authenticate_basic("Bearer x"), Err(BasicAuthError::Malformed(_))));
        assert!(matches!(c.authenticate_basic("Basic !!!"), Err(BasicAuthError::Malformed(_))));
    }

    #[test]
    fn tokens_are_random_and_bearer_parses() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(bearer_token(&format!("Bearer {a}")), Some(a.as_str()));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
