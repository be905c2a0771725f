//! Executor authentication (Mesos's `--authenticate_http_executors`): each
//! executor gets a JWT (HS256) in `MESOS_EXECUTOR_AUTHENTICATION_TOKEN`
//! whose claims name its framework, executor and container (`fid`, `eid`,
//! `cid`, as Mesos's), and sends it as `Authorization: Bearer <token>` on
//! every call. The agent checks the signature (in constant time), that the
//! claims name the call's framework and executor, and that the container is
//! that executor's current one: a token of an ended container is expired.
//!
//! The signing key is `--jwt_secret_key`'s file, or one the agent makes
//! once (mode 0600) under `<work_dir>/meta`, so that executors recovered
//! after an agent restart still authenticate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the generated key under `<work_dir>/meta`.
pub const GENERATED_KEY_FILE: &str = "jwt_secret_key";
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 4096;
/// The JOSE header of every token this agent issues.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token claims: the executor it was issued to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Framework id.
    pub fid: String,
    /// Executor id.
    pub eid: String,
    /// Container id of the executor's run.
    pub cid: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// not three base64url parts, or parts that do not decode
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// a header naming another algorithm (`none`, RS256...)
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    Algorithm,
    /// the signature does not match the header and claims
    #[error("invalid token signature")]
    Signature,
}

/// The signing key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// reading, creating or writing the key file failed
    #[error("JWT secret key {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    /// the key file is empty
    #[error("JWT secret key {0} is empty")]
    Empty(PathBuf),
}

/// HMAC-SHA256 with a fixed key (RFC 2104): the key's inner and outer
/// hash states are computed once and cloned for each message.
#[derive(Clone)]
struct HmacSha256 {
    inner: Sha256,
    outer: Sha256,
}

impl HmacSha256 {
    fn new(key: &[u8]) -> Self {
        const BLOCK: usize = 64;
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        HmacSha256 { inner: Sha256::new().chain_update(ipad), outer: Sha256::new().chain_update(opad) }
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(message).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }
}

/// Compares in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Issues and verifies executor tokens with one key.
pub struct ExecutorAuth {
    hmac: HmacSha256,
    /// `--authenticate_http_executors`: a call without a token is refused.
    pub required: bool,
}

impl std::fmt::Debug for ExecutorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorAuth").field("required", &self.required).finish_non_exhaustive()
    }
}

impl ExecutorAuth {
    /// Tokens signed with `key`.
    pub fn with_key(key: &[u8], required: bool) -> Self {
        ExecutorAuth { hmac: HmacSha256::new(key), required }
    }

    /// The key from `key_file` (`--jwt_secret_key`), or the one generated
    /// under `meta_dir` (made on first use, mode 0600).
    pub fn load(key_file: Option<&Path>, meta_dir: &Path, required: bool) -> Result<Self, KeyError> {
        let key = match key_file {
            Some(path) => read_key(path)?,
            None => generated_key(&meta_dir.join(GENERATED_KEY_FILE))?,
        };
        Ok(Self::with_key(&key, required))
    }

    /// The token of one executor's run.
    pub fn issue(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut token = URL_SAFE_NO_PAD.encode(HEADER);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.hmac.mac(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }

    /// The claims of a token this agent's key signed.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("longer than 4096 bytes"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed("expected three '.'-separated parts"));
        };
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed("header is not base64url"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        let expected = self.hmac.mac(&token.as_bytes()[..signed_len]);
        if !constant_time_eq(&expected, &signature) {
            return Err(TokenError::Signature);
        }
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed("claims are not fid, eid and cid strings"))
    }
}

fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let key = std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    if key.is_empty() {
        return Err(KeyError::Empty(path.to_path_buf()));
    }
    Ok(key)
}

/// Reads the generated key, making it first when there is none: 32 random
/// bytes, hex encoded, in a file only the agent's user can read.
fn generated_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut random = [0u8; 32];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).map_err(io)?;
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // Written aside and linked into place: a crash never leaves a partial
    // key, and of two agents starting at once both read the same one.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(hex.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => tracing::info!(path = %path.display(), "generated the executors' JWT secret key"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the JWT secret key was readable by others; restricting it to mode 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    read_key(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let mac = HmacSha256::new(&[0x0b; 20]).mac(b"Hi There");
        assert_eq!(hex(&mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        // Test case 2: a short key.
        let mac = HmacSha256::new(b"Jefe").mac(b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let mac = HmacSha256::new(&[0xaa; 131]).mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    fn claims() -> Claims {
        Claims { fid: "F1".into(), eid: "task-1".into(), cid: "c-1".into() }
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let auth = ExecutorAuth::with_key(b"secret", true);
        let token = auth.issue(&claims());
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(auth.verify(&token), Ok(claims()));
    }

    #[test]
    fn other_keys_tampered_claims_and_other_algorithms_are_refused() {
        let auth = ExecutorAuth::with_key(b"secret", true);
        let token = auth.issue(&claims());
        assert_eq!(ExecutorAuth::with_key(b"other", true).verify(&token), Err(TokenError::Signature));
        // Claims of another executor under the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = Claims { eid: "task-2".into(), ..claims() };
        let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap()), parts[2]);
        assert_eq!(auth.verify(&forged), Err(TokenError::Signature));
        // alg=none with no signature.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(auth.verify(&none), Err(TokenError::Algorithm));
        assert!(matches!(auth.verify("abc"), Err(TokenError::Malformed(_))));
        assert!(matches!(auth.verify(&format!("{token}.x")), Err(TokenError::Malformed(_))));
        assert!(matches!(auth.verify(&"a".repeat(5000)), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn generated_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = ExecutorAuth::load(None, dir.path(), true).unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let token = a.issue(&claims());
        let b = ExecutorAuth::load(None, dir.path(), true).unwrap();
        assert_eq!(b.verify(&token), Ok(claims()), "a second load uses the same key");
        // A key made readable by others is restricted again.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        ExecutorAuth::load(None, dir.path(), true).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // --jwt_secret_key names a file: its bytes are the key.
        let keyfile = dir.path().join("key");
        std::fs::write(&keyfile, b"secret").unwrap();
        let c = ExecutorAuth::load(Some(&keyfile), dir.path(), true).unwrap();
        assert_eq!(ExecutorAuth::with_key(b"secret", true).verify(&c.issue(&claims())), Ok(claims()));
        std::fs::write(&keyfile, b"").unwrap();
        assert!(matches!(ExecutorAuth::load(Some(&keyfile), dir.path(), true), Err(KeyError::Empty(_))));
    }
}
