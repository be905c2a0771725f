//! Image references: `[registry/]repository[:tag][@digest]`, with Docker's defaults.

use std::fmt;

use crate::error::ImageError;

/// The registry an unqualified name refers to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference; build one with [`ImageReference::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// The registry host (`host[:port]`); `None` for Docker Hub.
    pub registry: Option<String>,
    /// The repository path; Docker Hub's official images carry the `library/` prefix.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<64 hex>`), when pinned.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parses a reference the way `docker pull` does (`busybox` is `docker.io/library/busybox:latest`).
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let err = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(err("empty reference"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| err(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| err(&r))?;
        }
        if name.is_empty() {
            return Err(err("missing repository name"));
        }
        if name.len() > 255 {
            return Err(err("repository name is longer than 255 characters"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => (Some(first), path),
            _ => (None, name),
        };
        if let Some(registry) = registry {
            validate_registry(registry).map_err(|r| err(&r))?;
        }
        if path.is_empty() {
            return Err(err("missing repository name"));
        }
        for component in path.split('/') {
            validate_component(component).map_err(|r| err(&r))?;
        }
        let registry = registry
            .filter(|r| !matches!(*r, "docker.io" | "index.docker.io" | "registry-1.docker.io"))
            .map(str::to_string);
        let repository = if registry.is_none() && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        // Docker checks the length of the normalized name
        // (`docker.io/library/<name>`), so a reference is not accepted here
        // that its own canonical form would not be.
        let full = registry.as_deref().unwrap_or(DEFAULT_REGISTRY).len() + 1 + repository.len();
        if full > 255 {
            return Err(err(&format!("repository name is longer than 255 characters once normalized ({full}, with its registry)")));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, `docker.io` when none was named.
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// The name as people write it, without tag or digest: `busybox`, `quay.io/ns/app`.
    pub fn familiar_name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.repository),
            // Docker's rule: only an official image (`library/<one component>`)
            // loses the prefix; `library/a/b` stays as it is.
            None => match self.repository.strip_prefix("library/") {
                Some(official) if !official.contains('/') => official.to_string(),
                // A Docker Hub repository whose first component looks like a
                // registry (`docker.io/a.b/c`) keeps the registry: `a.b/c`
                // would name the registry `a.b`. (Docker's own familiar form
                // drops it and is ambiguous there.)
                _ if self.repository.split('/').next().is_some_and(looks_like_registry) => {
                    format!("{DEFAULT_REGISTRY}/{}", self.repository)
                }
                _ => self.repository.clone(),
            },
        }
    }

    /// The short form for messages and archive names: `busybox:latest`.
    pub fn short_name(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }

    /// Whether `other` names the same repository and tag (digests ignored).
    pub(crate) fn same_name_and_tag(&self, other: &ImageReference) -> bool {
        self.registry == other.registry
            && self.repository == other.repository
            && self.tag == other.tag
    }
}

impl fmt::Display for ImageReference {
    /// The canonical, fully qualified form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry_host(), self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Docker's rule: the first component is a registry when it has a '.' or ':' or is `localhost`.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid registry host '{registry}'"))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("invalid registry host '{registry}'"));
        }
        match after {
            "" => return Ok(()),
            p => (
                "",
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("invalid registry host '{registry}'"))?,
                ),
            ),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if !registry.starts_with('[') {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("invalid registry host '{registry}'"));
        }
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid registry port in '{registry}'"));
        }
    }
    Ok(())
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn validate_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("empty path component in repository name".to_string());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".to_string());
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bad = || format!("invalid repository name component '{component}'");
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let bad = || format!("invalid tag '{tag}'");
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return Err(bad()),
    }
    if tag.len() > 128 || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(bad());
    }
    Ok(())
}

/// A digest: `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, encoded) = digest
        .split_once(':')
        .ok_or_else(|| format!("invalid digest '{digest}': expected algorithm:hex"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm '{algorithm}'")),
    };
    if encoded.len() != len
        || !encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "invalid digest '{digest}': expected {len} lowercase hex digits"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (fuzz target `image_reference`): `library/a/b` was
    /// shortened to `a/b`, another repository, in messages and archive names.
    #[test]
    fn short_form_names_the_same_repository() {
        // The last two found by the image_reference fuzzer: a Docker Hub
        // repository whose first component has a '.' or ':' was shortened to
        // a name whose first component reads as a registry.
        for input in ["library/a/b", "library/c/c/c:v1", "busybox", "library/busybox", "a/b", "docker.io/librocker.io/library/bary/bx", "docker.io/a.b/c:v1"] {
            let r = ImageReference::parse(input).unwrap();
            let short = r.short_name();
            assert_eq!(ImageReference::parse(&short).unwrap(), r, "{input} -> {short}");
            assert_eq!(ImageReference::parse(&r.to_string()).unwrap(), r, "{input} -> {r}");
        }
        assert_eq!(ImageReference::parse("library/a/b").unwrap().familiar_name(), "library/a/b");
        assert_eq!(ImageReference::parse("busybox").unwrap().familiar_name(), "busybox");
        assert_eq!(ImageReference::parse("docker.io/a.b/c").unwrap().familiar_name(), "docker.io/a.b/c");
    }

    #[test]
    fn length_limit_is_on_the_normalized_name() {
        // Found by the image_reference fuzzer: a 250-character name passed,
        // and its canonical form `docker.io/library/<name>` (268) did not.
        let long = "a".repeat(250);
        let e = ImageReference::parse(&long).unwrap_err().to_string();
        assert!(e.contains("longer than 255"), "{e}");
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = ImageReference::parse(&fits).unwrap();
        assert_eq!(ImageReference::parse(&r.to_string()).unwrap(), r);
        let e = ImageReference::parse(&format!("{fits}a")).unwrap_err().to_string();
        assert!(e.contains("longer than 255"), "{e}");
    }

    #[test]
    fn component_grammar() {
        for ok in ["a", "abc", "a.b", "a_b", "a__b", "a---b", "a1-2.b_c"] {
            assert!(validate_component(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a._b", ".a", "a/b", "A"] {
            assert!(validate_component(bad).is_err(), "{bad}");
        }
    }
}
