//! The local authorizer: Mesos's ACLs (`--acls`), evaluated as Mesos's
//! `LocalAuthorizer` does (`src/authorizer/local/authorizer.cpp`).
//!
//! ```json
//! {
//!   "permissive": false,
//!   "register_frameworks": [{"principals": {"values": ["web"]}, "roles": {"values": ["*"]}}],
//!   "run_tasks": [{"principals": {"values": ["web"]}, "users": {"values": ["nobody"]}}],
//!   "teardown_frameworks": [{"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}]
//! }
//! ```
//!
//! An entity is `{"values": [...]}` (SOME), `{"type": "ANY"}` or
//! `{"type": "NONE"}`. For a request, the ACLs of its action are tried in
//! order: the first whose subject and object both *match* decides, and
//! allows the request when both also *allow* it; when none matches,
//! `permissive` (default true) decides. A request without a principal is
//! the subject ANY, which only ACLs for ANY (or NONE) principals match.

use std::path::PathBuf;

use serde::Deserialize;

/// Why `--acls` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AclsError {
    /// The file could not be read.
    #[error("failed to read ACLs file '{path}': {source}")]
    Read {
        /// The file named by the flag.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not Mesos's ACLs.
    #[error("invalid ACLs: {0}")]
    Invalid(String),
}

/// The kind of an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum EntityType {
    /// The listed values (Mesos's default).
    #[default]
    Some,
    /// Every value.
    Any,
    /// No value.
    None,
}

/// A set of principals, roles or users in an ACL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// SOME, ANY or NONE.
    #[serde(default, rename = "type")]
    pub kind: EntityType,
    /// The values of a SOME entity.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Entity {
    /// The entity of a request for `value`: SOME with it, ANY without.
    fn request(value: Option<&str>) -> Entity {
        match value {
            Some(v) => Entity {
                kind: EntityType::Some,
                values: vec![v.to_string()],
            },
            None => Entity {
                kind: EntityType::Any,
                values: Vec::new(),
            },
        }
    }

    fn subset_of(&self, acl: &Entity) -> bool {
        self.values.iter().all(|v| acl.values.contains(v))
    }

    /// Whether the ACL entity `acl` applies to this request entity.
    fn matches(&self, acl: &Entity) -> bool {
        match self.kind {
            EntityType::None => acl.kind == EntityType::None,
            EntityType::Any => matches!(acl.kind, EntityType::Any | EntityType::None),
            EntityType::Some => match acl.kind {
                EntityType::Any | EntityType::None => true,
                EntityType::Some => self.subset_of(acl),
            },
        }
    }

    /// Whether the ACL entity `acl` grants this request entity.
    fn allowed_by(&self, acl: &Entity) -> bool {
        match self.kind {
            EntityType::None => acl.kind == EntityType::None,
            EntityType::Any => acl.kind == EntityType::Any,
            EntityType::Some => match acl.kind {
                EntityType::Any => true,
                EntityType::None => false,
                EntityType::Some => self.subset_of(acl),
            },
        }
    }
}

/// `register_frameworks`: which principals may register with which roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterFramework {
    /// Framework principals.
    pub principals: Entity,
    /// Roles they may register with.
    pub roles: Entity,
}

/// `run_tasks`: which principals may run tasks as which users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTask {
    /// Framework principals.
    pub principals: Entity,
    /// Users their tasks may run as.
    pub users: Entity,
}

/// `teardown_frameworks`: which principals may tear down frameworks
/// registered by which principals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownFramework {
    /// Operator principals.
    pub principals: Entity,
    /// Principals of the frameworks they may tear down.
    pub framework_principals: Entity,
}

fn permissive_default() -> bool {
    true
}

/// Mesos's `ACLs` message, the parts this master enforces.
#[derive(Debug, Clone, Deserialize)]
pub struct Acls {
    /// The answer when no ACL of an action matches (Mesos: true).
    #[serde(default = "permissive_default")]
    pub permissive: bool,
    /// `register_frameworks` ACLs, in order.
    #[serde(default)]
    pub register_frameworks: Vec<RegisterFramework>,
    /// `run_tasks` ACLs, in order.
    #[serde(default)]
    pub run_tasks: Vec<RunTask>,
    /// `teardown_frameworks` ACLs, in order.
    #[serde(default)]
    pub teardown_frameworks: Vec<TeardownFramework>,
    /// Other Mesos ACL kinds, which this master has no action for.
    #[serde(flatten)]
    pub unenforced: serde_json::Map<String, serde_json::Value>,
}

impl Default for Acls {
    fn default() -> Self {
        Self {
            permissive: true,
            register_frameworks: Vec::new(),
            run_tasks: Vec::new(),
            teardown_frameworks: Vec::new(),
            unenforced: serde_json::Map::new(),
        }
    }
}

/// The first ACL whose entities match decides; else `permissive`.
fn decide<'a>(
    permissive: bool,
    acls: impl Iterator<Item = (&'a Entity, &'a Entity)>,
    subject: &Entity,
    object: &Entity,
) -> bool {
    for (subjects, objects) in acls {
        if subject.matches(subjects) && object.matches(objects) {
            return subject.allowed_by(subjects) && object.allowed_by(objects);
        }
    }
    permissive
}

impl Acls {
    /// Parses the JSON of `--acls`.
    pub fn parse(text: &str) -> Result<Self, AclsError> {
        let acls: Acls = serde_json::from_str(text).map_err(|e| AclsError::Invalid(e.to_string()))?;
        for name in acls.unenforced.keys() {
            tracing::warn!(acl = %name, "ACLs of this kind are not enforced by mezzo-master (it has no such action)");
        }
        Ok(acls)
    }

    /// Reads `--acls` as Mesos does: inline JSON, or a file named by a
    /// `file://` URL or a path.
    pub fn load(flag_value: &str) -> Result<Self, AclsError> {
        if flag_value.trim_start().starts_with('{') {
            return Self::parse(flag_value);
        }
        let path = PathBuf::from(flag_value.strip_prefix("file://").unwrap_or(flag_value));
        let text = std::fs::read_to_string(&path).map_err(|source| AclsError::Read { path, source })?;
        Self::parse(&text)
    }

    /// Whether `principal` may register a framework with `role`.
    pub fn can_register(&self, principal: Option<&str>, role: &str) -> bool {
        decide(
            self.permissive,
            self.register_frameworks.iter().map(|a| (&a.principals, &a.roles)),
            &Entity::request(principal),
            &Entity::request(Some(role)),
        )
    }

    /// Whether `principal` may run a task as `user`.
    pub fn can_run_as(&self, principal: Option<&str>, user: &str) -> bool {
        decide(
            self.permissive,
            self.run_tasks.iter().map(|a| (&a.principals, &a.users)),
            &Entity::request(principal),
            &Entity::request(Some(user)),
        )
    }

    /// Whether `principal` may tear down a framework registered by
    /// `framework_principal` (ANY when the framework has none).
    pub fn can_teardown(&self, principal: Option<&str>, framework_principal: Option<&str>) -> bool {
        decide(
            self.permissive,
            self.teardown_frameworks.iter().map(|a| (&a.principals, &a.framework_principals)),
            &Entity::request(principal),
            &Entity::request(framework_principal),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tasks_follow_the_first_matching_acl() {
        let acls = Acls::parse(
            r#"{"permissive": false,
                "run_tasks": [
                  {"principals": {"values": ["web"]}, "users": {"values": ["nobody"]}},
                  {"principals": {"values": ["admin"]}, "users": {"type": "ANY"}},
                  {"principals": {"type": "ANY"}, "users": {"values": ["root"]}, "unused": 1}
                ]}"#,
        );
        assert!(acls.is_err(), "unknown fields inside an ACL are refused");
        let acls = Acls::parse(
            r#"{"permissive": false,
                "run_tasks": [
                  {"principals": {"values": ["web"]}, "users": {"values": ["nobody"]}},
                  {"principals": {"values": ["admin"]}, "users": {"type": "ANY"}},
                  {"principals": {"type": "ANY"}, "users": {"type": "NONE"}}
                ]}"#,
        )
        .unwrap();
        assert!(acls.can_run_as(Some("web"), "nobody"));
        // "web" as root: the first ACL does not match (root is not in it), the
        // third matches (ANY principal, NONE users) and refuses.
        assert!(!acls.can_run_as(Some("web"), "root"));
        assert!(acls.can_run_as(Some("admin"), "root"));
        assert!(!acls.can_run_as(None, "nobody"));
        assert!(!acls.can_run_as(Some("other"), "nobody"));
    }

    #[test]
    fn permissive_decides_when_nothing_matches() {
        let open = Acls::parse(r#"{"run_tasks": [{"principals": {"values": ["a"]}, "users": {"values": ["x"]}}]}"#).unwrap();
        assert!(open.permissive);
        assert!(open.can_run_as(Some("b"), "root"));
        let closed = Acls::parse(r#"{"permissive": false}"#).unwrap();
        assert!(!closed.can_register(Some("a"), "*"));
        assert!(!closed.can_teardown(Some("ops"), None));
        assert!(Acls::default().can_register(None, "*"));
    }

    #[test]
    fn register_and_teardown() {
        let acls = Acls::parse(
            r#"{"permissive": false,
                "register_frameworks": [{"principals": {"values": ["web"]}, "roles": {"values": ["*", "web"]}}],
                "teardown_frameworks": [
                  {"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}},
                  {"principals": {"values": ["web"]}, "framework_principals": {"values": ["web"]}}
                ],
                "get_endpoints": [{"principals": {"type": "ANY"}, "paths": {"type": "ANY"}}]}"#,
        )
        .unwrap();
        assert!(acls.can_register(Some("web"), "web"));
        assert!(!acls.can_register(Some("web"), "db"));
        assert!(!acls.can_register(None, "*"));
        assert!(acls.can_teardown(Some("ops"), Some("web")));
        assert!(acls.can_teardown(Some("ops"), None));
        assert!(acls.can_teardown(Some("web"), Some("web")));
        assert!(!acls.can_teardown(Some("web"), Some("db")));
        assert!(!acls.can_teardown(Some("web"), None));
        assert!(acls.unenforced.contains_key("get_endpoints"));
    }
}
