//! Parsing image references the way docker does.

use mezzo_images::{ImageError, ImageReference};

fn parse(s: &str) -> ImageReference {
    ImageReference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn official_image_gets_library_prefix_and_latest() {
    let r = parse("busybox");
    assert_eq!(r.registry, None);
    assert_eq!(r.repository, "library/busybox");
    assert_eq!(r.tag.as_deref(), Some("latest"));
    assert_eq!(r.digest, None);
    assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    assert_eq!(r.short_name(), "busybox:latest");
}

#[test]
fn docker_hub_spellings_are_the_same_image() {
    let canonical = parse("busybox:1.36");
    for s in [
        "docker.io/busybox:1.36",
        "docker.io/library/busybox:1.36",
        "index.docker.io/library/busybox:1.36",
        "library/busybox:1.36",
    ] {
        assert_eq!(parse(s), canonical, "{s}");
    }
    let user = parse("someone/app");
    assert_eq!(user.repository, "someone/app");
    assert_eq!(user.short_name(), "someone/app:latest");
}

#[test]
fn registry_with_port_and_namespace() {
    let r = parse("host:5000/ns/name:tag");
    assert_eq!(r.registry.as_deref(), Some("host:5000"));
    assert_eq!(r.repository, "ns/name");
    assert_eq!(r.tag.as_deref(), Some("tag"));
    assert_eq!(r.to_string(), "host:5000/ns/name:tag");
    assert_eq!(r.short_name(), "host:5000/ns/name:tag");

    let r = parse("localhost/app");
    assert_eq!(r.registry.as_deref(), Some("localhost"));
    assert_eq!(r.repository, "app");

    let r = parse("registry.example.com/app");
    assert_eq!(r.registry.as_deref(), Some("registry.example.com"));
    assert_eq!(r.tag.as_deref(), Some("latest"));

    let r = parse("[::1]:5000/app:v1");
    assert_eq!(r.registry.as_deref(), Some("[::1]:5000"));
}

#[test]
fn digests_pin_without_a_default_tag() {
    let r = parse(&format!("name@sha256:{HEX}"));
    assert_eq!(r.repository, "library/name");
    assert_eq!(r.tag, None);
    assert_eq!(r.digest.as_deref(), Some(format!("sha256:{HEX}").as_str()));
    assert_eq!(
        r.to_string(),
        format!("docker.io/library/name@sha256:{HEX}")
    );

    let r = parse(&format!("quay.io/a/b:v2@sha256:{HEX}"));
    assert_eq!(r.tag.as_deref(), Some("v2"));
    assert_eq!(r.short_name(), format!("quay.io/a/b:v2@sha256:{HEX}"));
}

#[test]
fn display_round_trips() {
    for s in [
        "busybox",
        "a/b:c",
        "host:5000/x/y:z",
        "my-reg.io/p_q/r.s:T_1.0-x",
    ] {
        let r = parse(s);
        assert_eq!(parse(&r.to_string()), r, "{s}");
        assert_eq!(parse(&r.short_name()), r, "{s}");
    }
}

#[test]
fn bad_references_are_refused_with_a_reason() {
    let cases = [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox:a+b", "invalid tag"),
        ("busybox@sha256:abc", "64"),
        ("busybox@md5:0123", "unsupported digest algorithm"),
        ("busybox@", "digest"),
        ("a//b", "empty path component"),
        ("a/b/", "empty path component"),
        ("-a", "invalid repository name component"),
        ("a..b", "invalid repository name component"),
        ("host:port/a", "invalid registry port"),
        ("bad_host.com/a", "invalid registry host"),
        ("busy box", "whitespace"),
        (":tag", "missing repository"),
    ];
    for (input, reason) in cases {
        match ImageReference::parse(input) {
            Err(e @ ImageError::InvalidReference { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(reason), "{input:?}: {msg}");
                assert!(msg.contains(&format!("'{input}'")), "{input:?}: {msg}");
            }
            other => panic!("{input:?} should be refused, got {other:?}"),
        }
    }
    let long = "a".repeat(256);
    assert!(ImageReference::parse(&long).is_err());
    let long_tag = format!("a:{}", "t".repeat(129));
    assert!(ImageReference::parse(&long_tag).is_err());
}

#[test]
fn registry_port_namespace_and_digest() {
    let r = parse(&format!("host:5000/ns/name@sha256:{HEX}"));
    assert_eq!(r.registry.as_deref(), Some("host:5000"));
    assert_eq!(r.repository, "ns/name");
    assert_eq!(r.tag, None);
    assert_eq!(r.digest.as_deref(), Some(format!("sha256:{HEX}").as_str()));
    assert_eq!(r.to_string(), format!("host:5000/ns/name@sha256:{HEX}"));
    // Uppercase hex, a short digest and uppercase names are refused.
    for bad in [
        format!("host:5000/ns/name@sha256:{}", HEX.to_uppercase()),
        format!("host:5000/ns/name@sha256:{}", &HEX[1..]),
        "host:5000/NS/name".to_string(),
        format!("host:5000/ns/name@{HEX}"),
    ] {
        assert!(
            matches!(ImageReference::parse(&bad), Err(ImageError::InvalidReference { .. })),
            "{bad}"
        );
    }
}
